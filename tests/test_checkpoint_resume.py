"""Sharded checkpoints: exact resume (2 gloo ranks, bitwise on CPU), resharding 2 ranks -> 1 and 4 ranks,
clear errors for incomplete / truncated / other-model checkpoints, atomic layout, the reader's skip-to-position."""

import json
import shutil

import numpy as np
import pytest
import torch

from dist_harness import run_on_ranks
from prepared_fixtures import write_dataset
from recsys_dist.config import load_config

EVERY = 7  # checkpoint period of the straight run (steps 7, 14, 21, 28 of 30; the newest 2 kept)


def _cfg(root, out, *extra):
    return load_config(None, [
        f"data.dir={root}", "data.batch_size=64", "data.eval_batch_size=200", "data.shuffle=true",
        "data.shuffle_buffer_rows=100", "model.embedding_dim=8", "model.arch_args={bottom_mlp: [16, 8], top_mlp: [16, 1]}",
        f"train.out_dir={out}", "train.epochs=2", "train.log_every_steps=5", "train.threads=1",
        "optim.dense=adam", "optim.warmup_steps=5", "sharding.sharding_types=[row_wise]", *extra])


def _resume_ranks(rank, world, root, tmp):
    import torch.distributed as dist

    from recsys_dist.train import train

    out = {}
    out["A"] = train(_cfg(root, tmp / "A", f"train.checkpoint_every_steps={EVERY}"))  # 30 steps straight
    if rank == 0:  # B starts from A's periodic checkpoint at step 21 (epoch 1, step 6 in it)
        (tmp / "B" / "checkpoints").mkdir(parents=True)
        shutil.copytree(tmp / "A" / "checkpoints" / "step_00000021", tmp / "B" / "checkpoints" / "step_00000021")
    dist.barrier()
    out["B"] = train(_cfg(root, tmp / "B"))
    out["C1"] = train(_cfg(root, tmp / "C", "train.max_steps=11"))  # stops at step 11 (mid epoch 0) ...
    out["C"] = train(_cfg(root, tmp / "C"))  # ... and is started again: resumes there
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    root = tmp / "data"
    write_dataset(root, {"train": 960, "val": 100, "test": 150}, vocab=(50, 60, 70))
    r0, r1 = run_on_ranks(_resume_ranks, 2, (root, tmp))
    return tmp, root, r0, r1


def _full_state(ckpt, tmp_path):
    """A DCP checkpoint as one plain state dict (shards assembled), read without any process group."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dest = tmp_path / (ckpt.parent.name + "_" + ckpt.name + ".pt")
    dcp_to_torch_save(str(ckpt), str(dest))
    return torch.load(dest, weights_only=False)


def _flat(d, prefix=""):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flat(v, f"{prefix}{k}.")
    elif isinstance(d, (list, tuple)):
        for i, v in enumerate(d):
            yield from _flat(v, f"{prefix}{i}.")
    else:
        yield prefix.rstrip("."), d


def _assert_bitwise_equal(a, b):
    fa, fb = dict(_flat(a)), dict(_flat(b))
    assert fa.keys() == fb.keys()
    tensors = 0
    for k in fa:
        if isinstance(fa[k], torch.Tensor):
            assert torch.equal(fa[k], fb[k]), f"{k} differs (max abs {(fa[k] - fb[k]).abs().max()})"
            tensors += 1
        else:
            assert fa[k] == fb[k], k
    return tensors


def test_exact_resume_is_bitwise(runs, tmp_path):
    tmp, _, r0, r1 = runs
    assert r0["A"]["steps"] == r0["B"]["steps"] == r0["C"]["steps"] == 30
    assert r0["B"]["resumed_from_step"] == 21 and r0["C"]["resumed_from_step"] == 11
    full = _full_state(tmp / "A" / "checkpoint", tmp_path)
    # model (sharded tables, dense params), optimizer (fused row-wise Adagrad state, Adam state), LR schedule
    assert {"model", "optim", "scheduler"} <= full.keys()
    assert any("momentum1" in k for k, _ in _flat(full["optim"]))
    for other in ("B", "C"):
        n = _assert_bitwise_equal(full, _full_state(tmp / other / "checkpoint", tmp_path))
        assert n > 10
        assert r0[other]["test"] == r0["A"]["test"]
    # the straight run's periodic checkpoints: the newest 2 kept; no temporary folders left
    kept = sorted(p.name for p in (tmp / "A" / "checkpoints").iterdir())
    assert kept == ["step_00000021", "step_00000028"]
    info = json.loads((tmp / "A" / "checkpoints" / "step_00000021" / "recsys_dist.json").read_text())
    assert (info["step"], info["epoch"], info["step_in_epoch"], info["world_size"]) == (21, 1, 6, 2)
    events = [json.loads(x) for x in (tmp / "B" / "metrics.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "resume" and events[0]["step"] == 21
    assert [e["step"] for e in events if e["event"] == "train"] == [25, 30]  # nothing counted twice
    assert list((tmp / "A" / "tensorboard").glob("events.out.tfevents.*"))


def test_a_resumed_run_that_differs_would_be_caught(runs, tmp_path):
    """The comparison above can fail: the checkpoint at step 28 is not the final state."""
    tmp, *_ = runs
    with pytest.raises(AssertionError):
        _assert_bitwise_equal(_full_state(tmp / "A" / "checkpoint", tmp_path),
                              _full_state(tmp / "A" / "checkpoints" / "step_00000028", tmp_path))


def _evaluate_ranks(rank, world, run, extra):
    from recsys_dist.evaluate import evaluate

    cfg = load_config(str(run / "config.yaml"), extra)
    return evaluate(cfg, run / "checkpoint", "test")


def test_two_rank_checkpoint_reshards_to_one_and_four_ranks(runs, tmp_path):
    tmp, _, r0, _ = runs
    trained = r0["A"]["test"]
    [one] = run_on_ranks(_evaluate_ranks, 1, (tmp / "A", ["sharding.sharding_types=[table_wise]"]))
    four = run_on_ranks(_evaluate_ranks, 4, (tmp / "A", ["sharding.sharding_types=[table_wise]"]))
    for ev in [one] + four:
        assert ev["rows"] == 150
        assert ev["auc"] == pytest.approx(trained["auc"], abs=1e-6)
        assert ev["logloss"] == pytest.approx(trained["logloss"], abs=1e-6)
    assert four[0]["world_size"] == 4 and one["world_size"] == 1


def _error_ranks(rank, world, run, bad):
    from recsys_dist.checkpoint import CheckpointError
    from recsys_dist.evaluate import evaluate

    messages = {}
    for name, (ckpt, extra) in bad.items():
        cfg = load_config(str(run / "config.yaml"), extra)
        try:
            evaluate(cfg, ckpt, "test")
            messages[name] = None
        except CheckpointError as e:
            messages[name] = str(e)
    return messages


def test_corrupt_or_mismatched_checkpoints_fail_clearly(runs, tmp_path):
    tmp, *_ = runs
    good = tmp / "A" / "checkpoint"
    truncated = tmp_path / "truncated"
    shutil.copytree(good, truncated)
    shard = sorted(truncated.glob("*.distcp"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    incomplete = tmp_path / "incomplete"
    shutil.copytree(good, incomplete)
    (incomplete / "recsys_dist.json").unlink()
    bad = {
        "dim": (good, ["model.embedding_dim=16", "model.arch_args={bottom_mlp: [16, 16], top_mlp: [16, 1]}"]),
        "arch": (good, ["model.arch_args={bottom_mlp: [32, 8], top_mlp: [16, 1]}"]),
        "truncated": (truncated, []),
        "incomplete": (incomplete, []),
    }
    [msg] = run_on_ranks(_error_ranks, 1, (tmp / "A", bad))
    assert "model.embedding_dim: checkpoint 8, this job 16" in msg["dim"]
    assert "table t_s0: checkpoint [rows, dim] [50, 8], this job [50, 16]" in msg["dim"]
    assert "model.arch_args" in msg["arch"] and "[32, 8]" in msg["arch"]
    assert shard.name in msg["truncated"] and "truncated" in msg["truncated"]
    assert "incomplete checkpoint" in msg["incomplete"]


def test_find_latest_skips_partial_writes_and_prune_keeps_newest(runs, tmp_path):
    from recsys_dist.checkpoint import find_latest, prune

    tmp, *_ = runs
    run = tmp_path / "run"
    shutil.copytree(tmp / "A" / "checkpoints", run / "checkpoints")
    assert find_latest(run) == run / "checkpoints" / "step_00000028"
    # a crash while writing step 35 leaves a .tmp folder and no marker: never taken for a checkpoint
    shutil.copytree(run / "checkpoints" / "step_00000028", run / "checkpoints" / ".step_00000035.tmp")
    (run / "checkpoints" / ".step_00000035.tmp" / "recsys_dist.json").unlink()
    shutil.copytree(run / "checkpoints" / "step_00000028", run / "checkpoints" / "step_00000042")
    (run / "checkpoints" / "step_00000042" / "recsys_dist.json").unlink()
    assert find_latest(run) == run / "checkpoints" / "step_00000028"
    shutil.copytree(tmp / "A" / "checkpoint", run / "checkpoint")  # the final one (step 30) wins
    assert find_latest(run) == run / "checkpoint"
    prune(run / "checkpoints", 1)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        ".step_00000035.tmp", "step_00000028", "step_00000042"]  # incomplete ones are not counted as kept


@pytest.mark.parametrize("shuffle", [False, True])
def test_reader_resumes_at_any_step_exactly(tmp_path, shuffle):
    from pipelines.parquet_input import ParquetBatchReader

    root = tmp_path / "data"
    write_dataset(root, {"train": 700}, multi="s1")
    reader = ParquetBatchReader(root, "train", 20, rank=1, world_size=2, shuffle=shuffle, seed=3,
                                shuffle_buffer_rows=64, prefetch=0)
    reader.set_epoch(2)
    full = [b.dense_features[:, 0].numpy() for b in reader]
    assert len(full) == len(reader) == 17
    for start in (0, 1, 4, 16, 17):
        reader.set_epoch(2, start)
        tail = [b.dense_features[:, 0].numpy() for b in reader]
        assert len(tail) == 17 - start
        for a, b in zip(full[start:], tail):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="start_step 18"):
        reader.set_epoch(0, 18)
