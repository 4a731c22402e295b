"""Resuming *training* on another world size and plan: a 2-rank checkpoint resumes on 1 process, whose checkpoint
resumes on 4 ranks, while tables move between data-parallel (dense Adagrad), table-, row- and column-wise (fused
row-wise Adagrad) kernels. Weights carry over bitwise at each load, optimizer state is mapped as
recsys_dist/state_mapping.py says (exactly, approximately, or re-initialized with one warning line), and the chained
run learns a planted signal."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from dist_harness import run_on_ranks
from prepared_fixtures import write_dataset
from recsys_dist.config import load_config
from recsys_dist.state_mapping import column_groups, elementwise_to_rowwise, rowwise_to_elementwise, rowwise_to_rowwise

ROWS, BATCH, EPOCHS = 3072, 128, 3  # 24 steps an epoch: A trains 0-24 (2 ranks), B 24-48 (1), C 48-72 (4)
VOCAB = (50, 60, 70)
WARMUP = 60  # the LR warm-up spans the first two phases: each load must keep every group's place in it
# A: t_s0 data-parallel, t_s1 table-wise, t_s2 row-wise (2 ranks)
PLAN_A = {"t_s0": "[data_parallel]", "t_s1": "[table_wise]", "t_s2": "[row_wise]"}
# B: t_s0 table-wise (exact from A's element-wise sum), t_s1 2 column shards (approximate: splits A's row), t_s2
#    table-wise (as saved) (1 process)
PLAN_B = {"t_s0": "[table_wise]", "t_s1": "[column_wise]\n    min_partition: 4", "t_s2": "[table_wise]"}
# C: t_s0 row-wise (as saved), t_s1 row-wise (exact: joins B's 2 column groups), t_s2 data-parallel (approximate:
#    row-wise -> element-wise) (4 ranks)
PLAN_C = {"t_s0": "[row_wise]", "t_s1": "[row_wise]", "t_s2": "[data_parallel]"}


def _constraints(path, plan):
    path.write_text("tables:\n" + "".join(f"  {t}:\n    sharding_types: {v}\n" for t, v in plan.items()))
    return path


def _plant_labels(root, seed=1):
    """Labels ~ Bernoulli(sigmoid(w0[s0] + w1[s1])); returns the Bayes AUC on the test split."""
    from torchmetrics.functional.classification import binary_auroc

    rng = np.random.default_rng(seed)
    w0, w1 = rng.normal(0, 1.5, VOCAB[0]), rng.normal(0, 1.5, VOCAB[1])
    bayes = None
    for split in ("train", "val", "test"):
        ps, ys = [], []
        for f in sorted((root / split).glob("*.parquet")):
            table = pq.read_table(f)
            p = 1 / (1 + np.exp(-(w0[table["s0"].to_numpy()] + w1[table["s1"].to_numpy()])))
            y = (rng.random(len(p)) < p).astype(np.int8)
            table = table.set_column(table.schema.get_field_index("label"), "label", [y])
            pq.write_table(table, f, row_group_size=32)
            ps.append(p)
            ys.append(y)
        if split == "test":
            bayes = float(binary_auroc(torch.from_numpy(np.concatenate(ps)), torch.from_numpy(np.concatenate(ys))))
    return bayes


def _cfg(root, out, constraints, *extra):
    return load_config(None, [
        f"data.dir={root}", f"data.batch_size={BATCH}", "data.eval_batch_size=512", "data.shuffle=true",
        "data.shuffle_buffer_rows=256", "model.embedding_dim=8",
        "model.arch_args={bottom_mlp: [16, 8], top_mlp: [16, 1]}", "optim.sparse_lr=0.1", "optim.dense_lr=0.02",
        f"optim.warmup_steps={WARMUP}",
        f"train.out_dir={out}", f"train.epochs={EPOCHS}", "train.log_every_steps=8", "train.threads=1",
        "train.tensorboard=false", f"sharding.constraints={constraints}", *extra])


def _phases(rank, world, root, tmp, phases):
    """Trains phases on the one run folder tmp/run (train.resume=auto: each continues from the newest checkpoint, as
    a user would restart a job on another world size); each phase's final checkpoint and plan are kept in
    tmp/<phase> for the comparisons."""
    import shutil

    import torch.distributed as dist

    from recsys_dist.train import train

    results = {}
    for name, max_steps, plan in phases:
        cons = tmp / f"constraints_{name}.yaml"
        if rank == 0:
            _constraints(cons, plan)
        dist.barrier()
        extra = [f"train.max_steps={max_steps}"] if max_steps is not None else []
        results[name] = train(_cfg(root, tmp / "run", cons, *extra))
        if rank == 0:
            shutil.copytree(tmp / "run" / "checkpoint", tmp / name / "checkpoint")
            shutil.copy(tmp / "run" / "plan.json", tmp / name / "plan.json")
        dist.barrier()
    return results


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reshard")
    root = tmp / "data"
    write_dataset(root, {"train": ROWS, "val": 256, "test": 1024}, vocab=VOCAB)
    bayes = _plant_labels(root)
    # X0 loads the previous phase's checkpoint and stops at once: its checkpoint is the state as loaded
    [a, _] = run_on_ranks(_phases, 2, (root, tmp, [("A", 24, PLAN_A)]), silent=True)
    [b] = run_on_ranks(_phases, 1, (root, tmp, [("B0", 24, PLAN_B), ("B", 48, PLAN_B)]), silent=True)
    c = run_on_ranks(_phases, 4, (root, tmp, [("C0", 48, PLAN_C), ("C", None, PLAN_C)]), silent=True)
    return tmp, bayes, {**a, **b, **c[0]}


def _full(ckpt, tmp_path):
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dest = tmp_path / f"{ckpt.parent.name}.pt"
    dcp_to_torch_save(str(ckpt), str(dest))
    return torch.load(dest, weights_only=False)


def _acc(full, table):
    """A table's Adagrad accumulator in a checkpoint: fused momentum1 or the dense optimizer's sum."""
    for param, names in full["optim"]["state"].items():
        if param.endswith(f"embedding_bags.{table}.weight"):
            for name, t in names.items():
                if name in ("sum", f"{table}.momentum1"):
                    return name, t
    raise KeyError(table)


def _plan_types(run):
    doc = json.loads((run / "plan.json").read_text())
    return {name: ps["sharding_type"] for mplan in doc["modules"].values() for name, ps in mplan.items()}


def _events(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_weights_carry_over_bitwise_at_each_load(chain, tmp_path):
    """Catches a weight that does not survive a load into another world size and plan (e.g. a data-parallel
    table's weight read from a sharded one, or a DCP error instead of a load)."""
    tmp, _, res = chain
    assert _plan_types(tmp / "A") == {"t_s0": "data_parallel", "t_s1": "table_wise", "t_s2": "row_wise"}
    assert _plan_types(tmp / "B0")["t_s1"] == "column_wise" and _plan_types(tmp / "B0")["t_s0"] == "table_wise"
    assert _plan_types(tmp / "C0")["t_s2"] == "data_parallel"
    for src, loaded in (("A", "B0"), ("B", "C0")):
        a, b = _full(tmp / src / "checkpoint", tmp_path), _full(tmp / loaded / "checkpoint", tmp_path)
        assert a["model"].keys() == b["model"].keys()
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), f"{src} -> {loaded}: {k}"
    assert [res[n]["world_size"] for n in ("A", "B0", "B", "C0", "C")] == [2, 1, 1, 4, 4]
    assert [res[n]["resumed_from_step"] for n in ("B0", "B", "C0", "C")] == [24, 24, 48, 48]


def test_optimizer_state_is_mapped_where_the_math_allows(chain, tmp_path):
    """Catches a table that changed kernel getting a wrong accumulator: row-wise must be the row mean of the
    element-wise sum (A -> B0 t_s0), the width-weighted mean of column groups it joins (B -> C0 t_s1); unchanged
    layouts load as saved; approximations spread each group's value over its columns."""
    tmp, _, _ = chain
    A, B0 = _full(tmp / "A" / "checkpoint", tmp_path), _full(tmp / "B0" / "checkpoint", tmp_path)
    B, C0 = _full(tmp / "B" / "checkpoint", tmp_path), _full(tmp / "C0" / "checkpoint", tmp_path)
    name, a0 = _acc(A, "t_s0")
    assert name == "sum" and a0.shape == (VOCAB[0], 8) and a0.abs().sum() > 0
    torch.testing.assert_close(_acc(B0, "t_s0")[1], a0.mean(dim=1), rtol=1e-6, atol=0)
    torch.testing.assert_close(_acc(B0, "t_s1")[1], _acc(A, "t_s1")[1].repeat(2), rtol=0, atol=0)
    assert torch.equal(_acc(B0, "t_s2")[1], _acc(A, "t_s2")[1])
    b1 = _acc(B, "t_s1")[1]
    assert b1.shape == (2 * VOCAB[1],) and not torch.equal(b1[:VOCAB[1]], b1[VOCAB[1]:])
    torch.testing.assert_close(_acc(C0, "t_s1")[1], (b1[:VOCAB[1]] + b1[VOCAB[1]:]) / 2, rtol=1e-6, atol=0)
    assert torch.equal(_acc(C0, "t_s0")[1], _acc(B, "t_s0")[1])
    name, c2 = _acc(C0, "t_s2")
    assert name == "sum" and torch.equal(c2, _acc(B, "t_s2")[1][:, None].expand(VOCAB[2], 8))
    steps = [t for p, s in C0["optim"]["state"].items() if p.endswith("t_s2.weight")
             for n, t in s.items() if n == "step"]
    assert [float(s) for s in steps] == [48.0]
    dense = [p for p in A["optim"]["state"] if "dense_arch" in p]
    for p in dense:  # dense parameters' Adagrad state: as saved, through every load
        assert torch.equal(A["optim"]["state"][p]["sum"], B0["optim"]["state"][p]["sum"]), p
        assert torch.equal(B["optim"]["state"][p]["sum"], C0["optim"]["state"][p]["sum"]), p
    resumes = [e for e in _events(tmp / "run") if e["event"] == "resume"]
    assert [(e["step"], e["world_size"]) for e in resumes] == [(24, 1), (24, 1), (48, 4), (48, 4)]
    assert resumes[0]["optimizer_state"] == {"exact": ["t_s0"], "approximate": ["t_s1"], "reinitialized": []}
    assert resumes[2]["optimizer_state"] == {"exact": ["t_s1"], "approximate": ["t_s2"], "reinitialized": []}
    none = {"exact": [], "approximate": [], "reinitialized": []}  # same world size and plan: all as saved
    assert resumes[1]["optimizer_state"] == resumes[3]["optimizer_state"] == none


def test_learning_rates_follow_their_param_groups(chain, tmp_path):
    """Catches param groups (one per fused kernel, one dense) matched by position when their number or order
    changes with the plan: a table group would get the dense optimizer's learning rate, or the LR schedule's
    per-group base rates would be misaligned."""
    tmp, _, _ = chain
    for name, step in (("B0", 24), ("C0", 48)):
        full = _full(tmp / name / "checkpoint", tmp_path)
        groups = full["optim"]["param_groups"]
        # the dense optimizer's keys start with "dense.", the fused ones' not
        wants = [0.02 if all(p.startswith("dense.") for p in g["params"]) else 0.1 for g in groups]
        assert sorted(set(wants)) == [0.02, 0.1]
        for group, want in zip(groups, wants):
            assert group["lr"] == pytest.approx(want * (step + 1) / WARMUP, rel=1e-6), (name, group["params"][:2])
        if name == "B0":  # one process: the schedule's per-group base rates are its groups'
            assert full["scheduler"]["base_lrs"] == pytest.approx(wants, rel=1e-6)
        assert full["scheduler"]["last_epoch"] == step


def test_the_chained_run_finishes_and_learns(chain):
    tmp, bayes, res = chain
    assert res["C"]["steps"] == EPOCHS * ROWS // BATCH
    assert bayes > 0.75
    assert res["C"]["test"]["auc"] > bayes - 0.08, (res["C"]["test"], bayes)


def test_column_groups_and_the_mapping_math():
    """Catches wrong column groups (grid sharding, whose row-wise state is laid out per node, must be refused)
    and a wrong conversion or exactness flag."""
    assert column_groups([((0, 0), (10, 8))], 10, 8) == ((0, 8),)
    assert column_groups([((0, 0), (5, 8)), ((5, 0), (5, 8))], 10, 8) == ((0, 8),)  # row-wise
    assert column_groups([((0, 4), (10, 4)), ((0, 0), (10, 4))], 10, 8) == ((0, 4), (4, 4))  # column-wise
    assert column_groups([((0, 0), (5, 4)), ((5, 0), (5, 4)), ((0, 4), (5, 4)), ((5, 4), (5, 4))], 10, 8) is None
    e = torch.arange(24, dtype=torch.float32).reshape(3, 8)
    r2 = elementwise_to_rowwise(e, ((0, 2), (2, 6)))
    assert torch.equal(r2, torch.cat([e[:, :2].mean(1), e[:, 2:].mean(1)]))
    joined, exact = rowwise_to_rowwise(r2, ((0, 2), (2, 6)), ((0, 8),), 3)
    assert exact and torch.allclose(joined, e.mean(1))
    split, exact = rowwise_to_rowwise(joined, ((0, 8),), ((0, 4), (4, 4)), 3)
    assert not exact and torch.equal(split, joined.repeat(2))
    spread = rowwise_to_elementwise(r2, ((0, 2), (2, 6)), 3, 8)
    assert torch.equal(spread[:, :2], e[:, :2].mean(1, keepdim=True).expand(3, 2))
    assert torch.equal(spread[:, 2:], e[:, 2:].mean(1, keepdim=True).expand(3, 6))


def _reinit_ranks(rank, world, root, tmp):
    import logging

    from recsys_dist.dist_env import init_distributed
    from recsys_dist.job import build_sharded_model, load_checkpoint
    from recsys_dist.optim import build_optimizer
    from recsys_dist.train import _init_lazy_optimizer_state, train

    logging.disable(logging.NOTSET)  # the harness's silent mode turned warnings off
    records = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    logging.getLogger("recsys_dist").addHandler(handler)
    dp = _constraints(tmp / "dp.yaml", {"t_s0": "[data_parallel]"})
    tw = _constraints(tmp / "tw.yaml", {"t_s0": "[table_wise]"})
    train(_cfg(root, tmp / "adam", dp, "optim.dense=adam", "train.max_steps=3"))  # t_s0: dense Adam
    cfg = _cfg(root, tmp / "x", tw, "optim.dense=adam")  # t_s0: fused row-wise Adagrad
    built = build_sharded_model(cfg, init_distributed("cpu"))
    optimizer = build_optimizer(built.dmp, [], cfg.optim)
    _init_lazy_optimizer_state(optimizer)
    momentum = [t for k, s in optimizer.state_dict()["state"].items() if "t_s0" in k for t in s.values()][0]
    for shard in momentum.local_shards():
        shard.tensor.fill_(7.0)  # whatever a fresh optimizer held: re-initialized means zero
    del records[:]
    info = load_checkpoint(built, tmp / "adam" / "checkpoint", optimizer, cfg=cfg)
    state = optimizer.state_dict()["state"]
    momentum = [t for k, s in state.items() if "t_s0" in k for t in s.values()][0]
    return {"summary": info["optimizer_state"], "warnings": [r for r in records if "optimizer state" in r],
            "momentum_zero": all(bool((s.tensor == 0).all()) for s in momentum.local_shards())}


def test_unmappable_state_is_reinitialized_with_one_warning(tmp_path):
    """Catches a raw DCP 'Missing key' error, or a silent half-load, when a table moves from a data-parallel
    table's dense Adam to fused row-wise Adagrad (no mapping exists)."""
    root = tmp_path / "data"
    write_dataset(root, {"train": 512, "val": 64, "test": 64}, vocab=VOCAB)
    [out] = run_on_ranks(_reinit_ranks, 1, (root, tmp_path), silent=True)
    assert out["summary"] == {"exact": [], "approximate": [], "reinitialized": ["t_s0"]}
    assert len(out["warnings"]) == 1, out["warnings"]
    assert "re-initialized for t_s0 (state exp_avg, exp_avg_sq, step -> row-wise Adagrad)" in out["warnings"][0]
    assert out["momentum_zero"]


def test_cli_resume_on_two_ranks_into_table_wise_tables(tmp_path):
    """Catches DCP's pre-2.4 key fallback taking over a resume: when this job loads only part of the checkpoint
    (optimizer state that is mapped) and a rank holds no shard of a table-wise table, DefaultLoadPlanner re-keys
    the job's state the 2.3 way and asks for `optim.param_groups`, which no checkpoint has (docs/launch.md's
    `torchx ... -j 1x2` then `-j 2x1` on one run folder died so). Driven like the docs: `recsys-dist train` under
    torchrun, twice on one run folder, the second with another plan."""
    from test_cli_launch import failure_text, torchrun

    root, run = tmp_path / "data", tmp_path / "run"
    write_dataset(root, {"train": 1024, "val": 128, "test": 128}, vocab=VOCAB)
    common = [f"data.dir={root}", f"data.batch_size={BATCH // 2}", "model.embedding_dim=8",
              "model.arch_args={bottom_mlp: [16, 8], top_mlp: [16, 1]}", "optim.dense=adagrad",
              f"train.out_dir={run}", "train.threads=1", "train.tensorboard=false"]
    for name, types, steps in (("dp", "[data_parallel]", 4), ("tw", "[table_wise]", 8)):
        cons = _constraints(tmp_path / f"{name}.yaml", {t: types for t in ("t_s0", "t_s1", "t_s2")})
        r = torchrun("train", *common, f"sharding.constraints={cons}", f"train.max_steps={steps}", check=False)
        assert r.returncode == 0, f"{name}: exit {r.returncode}\n{failure_text(r)}"
    assert {t for _, t in _plan_types(run).items()} == {"table_wise"}
    resume = [e for e in _events(run) if e["event"] == "resume"]
    assert [e["step"] for e in resume] == [4]
    assert sorted(resume[0]["optimizer_state"]["exact"]) == ["t_s0", "t_s1", "t_s2"]  # element-wise -> row-wise
    assert json.loads((run / "result.json").read_text())["steps"] == 8
