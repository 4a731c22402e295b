"""Every sharding type on 2 gloo ranks trains exactly like one process on the same global batches.

One pair of rank processes runs all types (spawning is the slow part); each type: plan_sharding (collective)
-> save_plan / load_plan -> DistributedModelParallel with fused row-wise Adagrad (a dense Adagrad for
data_parallel tables, which are never fused) -> a few steps, each rank on its half of the global batch. The test
compares each rank's forward outputs and the gathered tables after the steps with a single-process reference:
a plain EmbeddingBagCollection trained by hand-written row-wise Adagrad (FBGEMM's EXACT_ROWWISE_ADAGRAD:
s_r += mean_d g_rd^2, w_r -= lr g_r / (sqrt(s_r) + eps)) or torch's Adagrad for the data_parallel case.
Row-wise Adagrad is scale-invariant (it passes with the reference's gradients scaled by 7), so a second pair of
ranks trains full models (DLRM and DCNv2: tables + dense arch, CTRTrainModel's loss) with SGD for every type
against the unsharded model in one process, and checks that each rank holds the shards the plan placed on it.
"""

from __future__ import annotations

import os
import tempfile
from typing import Dict, List, Tuple

import pytest
import torch
from torch import nn

from dist_harness import run_on_ranks

FEATURES = (("f0", 40), ("f1", 24), ("f2", 56))
DIM = 8
GLOBAL_BATCH = 8
STEPS = 3
LR, EPS = 0.1, 1e-8
TYPES = ("table_wise", "row_wise", "column_wise", "table_row_wise", "table_column_wise", "data_parallel")


def make_ebc(device: str):
    from torchrec.modules.embedding_configs import EmbeddingBagConfig
    from torchrec.modules.embedding_modules import EmbeddingBagCollection

    return EmbeddingBagCollection(
        tables=[EmbeddingBagConfig(name=f"t_{f}", embedding_dim=DIM, num_embeddings=n, feature_names=[f])
                for f, n in FEATURES], device=torch.device(device))


class Net(nn.Module):
    """ids -> pooled embeddings [B, F*D] in FEATURES order."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.ebc = make_ebc(device)

    def forward(self, kjt):
        d = self.ebc(kjt).to_dict()
        return torch.cat([d[f] for f, _ in FEATURES], dim=1)


def initial_weights() -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {f"t_{f}": torch.randn(n, DIM, generator=g) * 0.5 for f, n in FEATURES}


def batches() -> List[Tuple[List[List[List[int]]], torch.Tensor]]:
    """Per step: ids[sample][feature] (0-3 ids, some empty), labels [B]."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(STEPS):
        ids = [[torch.randint(0, n, (int(torch.randint(0, 4, (1,), generator=g)),), generator=g).tolist()
                for _, n in FEATURES] for _ in range(GLOBAL_BATCH)]
        out.append((ids, torch.randint(0, 2, (GLOBAL_BATCH,), generator=g).float()))
    return out


HEAD = torch.linspace(-1.0, 1.0, len(FEATURES) * DIM)  # a fixed scoring vector: logits = pooled @ HEAD


def kjt_of(ids: List[List[List[int]]]):
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    lengths, values = [], []
    for fi in range(len(FEATURES)):  # key-major layout
        for sample in ids:
            lengths.append(len(sample[fi]))
            values.extend(sample[fi])
    return KeyedJaggedTensor.from_lengths_sync(keys=[f for f, _ in FEATURES], values=torch.tensor(values,
                                               dtype=torch.long), lengths=torch.tensor(lengths, dtype=torch.long))


def loss_of(pooled: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(pooled @ HEAD, labels)


def reference(sharding_type: str, column_blocks: Dict[str, List[Tuple[int, int]]]):
    """Single process: outputs per step [B, F*D] and final tables.

    Row-wise Adagrad keeps one state per row of each *shard*: a column-wise split gives a row one state per
    column block (mean of g^2 over that block's columns). `column_blocks` are the plan's column ranges per table
    ([(0, DIM)] when columns are not split)."""
    net = Net("cpu")
    w0 = initial_weights()
    params = dict(net.ebc.embedding_bags.named_parameters())
    with torch.no_grad():
        for name, w in w0.items():
            params[f"{name}.weight"].copy_(w)
    dense = torch.optim.Adagrad(net.parameters(), lr=LR, eps=EPS) if sharding_type == "data_parallel" else None
    state = {k: torch.zeros(len(column_blocks[k.removesuffix(".weight")]), p.shape[0]) for k, p in params.items()}
    outs = []
    for ids, labels in batches():
        pooled = net(kjt_of(ids))
        outs.append(pooled.detach().clone())
        net.zero_grad()
        loss_of(pooled, labels).backward()
        with torch.no_grad():
            if dense is not None:
                dense.step()
            else:  # FBGEMM EXACT_ROWWISE_ADAGRAD
                for k, p in params.items():
                    for b, (c0, c1) in enumerate(column_blocks[k.removesuffix(".weight")]):
                        g = p.grad[:, c0:c1]
                        state[k][b] += (g**2).mean(dim=1)
                        p[:, c0:c1] -= LR * g / (state[k][b].sqrt() + EPS)[:, None]
    return outs, {k.removesuffix(".weight"): p.detach().clone() for k, p in params.items()}


def _local_tables(state_dict) -> Dict[str, list]:
    """table -> [(offsets, tensor)] of this rank's shards (a replicated table: one full 'shard' at 0, 0)."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    out: Dict[str, list] = {}
    for key, value in state_dict.items():
        if "embedding_bags." not in key:
            continue
        name = key.split("embedding_bags.")[1].removesuffix(".weight")
        if isinstance(value, ShardedTensor):
            out[name] = [(list(s.metadata.shard_offsets), s.tensor.detach().clone()) for s in value.local_shards()]
        else:
            out[name] = [([0, 0], value.detach().clone())]
    return out


def _fill_from(state_dict, full: Dict[str, torch.Tensor]) -> None:
    """Write the reference initial weights into this rank's shards (in place: the state dict views the weights)."""
    for name, shards in _local_tables(state_dict).items():
        key = next(k for k in state_dict if k.endswith(f"embedding_bags.{name}.weight"))
        value = state_dict[key]
        tensors = [s.tensor for s in value.local_shards()] if hasattr(value, "local_shards") else [value]
        with torch.no_grad():
            for (off, _), t in zip(shards, tensors):
                t.copy_(full[name][off[0]:off[0] + t.shape[0], off[1]:off[1] + t.shape[1]])


def plan_one_type(sharding_type: str, sharder, world_size: int, pg):
    """(Net on meta, its plan with every table of `sharding_type`) on `world_size` CPU ranks (a collective)."""
    from torchrec.distributed.planner.types import ParameterConstraints

    from embedding_sharding.planner import plan_sharding
    from embedding_sharding.topology import make_topology

    model = Net("meta")
    # min_partition 4 < DIM: column-wise types really split the 8 columns into 2 shards
    constraints = {f"t_{f}": ParameterConstraints(min_partition=4) for f, _ in FEATURES}
    plan = plan_sharding(model, make_topology(world_size, world_size, "cpu"), [sharder], constraints=constraints,
                         sharding_types=[sharding_type], pg=pg)
    return model, plan


def worker(rank: int, world_size: int, plan_dir: str):
    import torch.distributed as dist
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.types import ShardingEnv
    from torchrec.optim.keyed import KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    from embedding_sharding.plan_file import load_plan, save_plan
    from embedding_sharding.sharders import CTREmbeddingBagCollectionSharder

    pg = dist.group.WORLD
    half = GLOBAL_BATCH // world_size
    results = {}
    for st in TYPES:
        sharder = CTREmbeddingBagCollectionSharder(
            fused_params={"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": LR, "eps": EPS})
        model, plan = plan_one_type(st, sharder, world_size, pg)
        path = os.path.join(plan_dir, f"{st}.json")
        if rank == 0:
            save_plan(plan, path, {"world_size": world_size, "local_world_size": world_size, "device": "cpu"},
                      module=model)
        dist.barrier()
        loaded = load_plan(path, model, world_size, device="cpu")
        assert str(loaded) == str(plan), f"{st}: plan file round trip changed the plan"
        dmp = DistributedModelParallel(model, env=ShardingEnv.from_process_group(pg), device=torch.device("cpu"),
                                       plan=loaded, sharders=[sharder])
        _fill_from(dmp.state_dict(), initial_weights())
        dense_params = dict(in_backward_optimizer_filter(dmp.named_parameters()))
        dense = (KeyedOptimizerWrapper(dense_params, lambda ps: torch.optim.Adagrad(ps, lr=LR, eps=EPS))
                 if dense_params else None)
        outs = []
        for ids, labels in batches():
            mine = slice(rank * half, (rank + 1) * half)
            pooled = dmp(kjt_of(ids[mine]))
            outs.append(pooled.detach().clone())
            loss_of(pooled, labels[mine]).backward()
            if dense is not None:
                dense.step()
                dense.zero_grad()
        shard_plan = {name: (p.sharding_type, len(p.sharding_spec.shards) if p.sharding_spec else 0,
                             sorted({(s.shard_offsets[1], s.shard_offsets[1] + s.shard_sizes[1])
                                     for s in p.sharding_spec.shards}) if p.sharding_spec else [(0, DIM)])
                      for name, p in loaded.plan["ebc"].items()}
        # numpy, not tensors: torch's queue shares tensors through the sender's memory, which dies with it
        tables = {n: [(off, t.numpy()) for off, t in shards] for n, shards in _local_tables(dmp.state_dict()).items()}
        results[st] = {"outs": [o.numpy() for o in outs], "tables": tables, "plan": shard_plan,
                       "dense_params": sorted(dense_params)}
    return results


@pytest.fixture(scope="module")
def runs():
    with tempfile.TemporaryDirectory() as d:
        return run_on_ranks(worker, world_size=2, args=(d,), timeout=300)


@pytest.mark.parametrize("sharding_type", TYPES)
def test_same_as_single_process(runs, sharding_type):
    plan = runs[0][sharding_type]["plan"]
    ref_outs, ref_tables = reference(sharding_type, {name: blocks for name, (_, _, blocks) in plan.items()})
    half = GLOBAL_BATCH // 2
    for rank, res in enumerate(runs):
        r = res[sharding_type]
        assert r["plan"] == plan, "ranks got different plans"
        for name, (st, n_shards, _) in r["plan"].items():
            assert st == sharding_type
            if sharding_type in ("column_wise", "table_column_wise", "row_wise", "table_row_wise"):
                assert n_shards == 2, f"{name}: {sharding_type} plan has {n_shards} shard(s), expected 2"
        if sharding_type == "data_parallel":
            assert len(r["dense_params"]) == len(FEATURES)  # DP tables reach the dense optimizer
        for step, (out, ref) in enumerate(zip(r["outs"], ref_outs)):
            torch.testing.assert_close(torch.from_numpy(out), ref[rank * half:(rank + 1) * half], atol=1e-5, rtol=1e-5,
                                       msg=lambda m: f"{sharding_type} rank {rank} step {step} forward: {m}")
    # gather the tables from both ranks' shards; every element must be covered exactly once (DP: twice, equal)
    for name, ref in ref_tables.items():
        full = torch.full_like(ref, float("nan"))
        covered = torch.zeros_like(ref)
        for res in runs:
            for off, t in res[sharding_type]["tables"][name]:
                t = torch.from_numpy(t)
                full[off[0]:off[0] + t.shape[0], off[1]:off[1] + t.shape[1]] = t
                covered[off[0]:off[0] + t.shape[0], off[1]:off[1] + t.shape[1]] += 1
        expect = 2 if sharding_type == "data_parallel" else 1
        assert bool((covered == expect).all()), f"{sharding_type} {name}: shards do not tile the table"
        assert not torch.equal(full, initial_weights()[name]), f"{sharding_type} {name}: did not train"
        torch.testing.assert_close(full, ref, atol=1e-5, rtol=1e-5,
                                   msg=lambda m: f"{sharding_type} {name} after {STEPS} steps: {m}")
    if sharding_type == "data_parallel":
        for name in ref_tables:
            torch.testing.assert_close(torch.from_numpy(runs[0][sharding_type]["tables"][name][0][1]),
                                       torch.from_numpy(runs[1][sharding_type]["tables"][name][0][1]))


# -- a full arch (sparse + dense) with SGD, 2 ranks vs one process, for every sharding type -----------------------
# Row-wise Adagrad (above) is scale-invariant: a gradient off by any factor (e.g. summed over ranks instead of
# averaged) updates the same. Plain SGD on tables and dense params is not, so these runs catch that.
ARCHES = {"dlrm": {"bottom_mlp": [8, DIM], "top_mlp": [8, 1]},
          "dcnv2": {"num_cross_layers": 2, "low_rank": 4, "dnn": [8, 1], "dense_mlp": [8]}}
NUM_DENSE = 3
SGD_LR = 0.5


def full_batches():
    """Per step: (ids, dense [B, 3], labels [B]) for the global batch."""
    g = torch.Generator().manual_seed(2)
    return [(ids, torch.rand(GLOBAL_BATCH, NUM_DENSE, generator=g), labels) for ids, labels in batches()]


def ctr_batch(ids, dense, labels):
    from pipelines.batch import CTRBatch

    return CTRBatch(dense_features=dense, sparse_features=kjt_of(ids), labels=labels,
                    weights=torch.ones(len(labels)))


def full_model(arch: str, sparse_device: str):
    from recsys_dist.models.model import CTRTrainModel, build_model
    from recsys_dist.models.sparse import TableSpec

    tables = [TableSpec(f, n, DIM) for f, n in FEATURES]
    torch.manual_seed(0)  # the same dense init in every process (tables on meta draw no random numbers)
    model = CTRTrainModel(build_model(tables, NUM_DENSE, arch, ARCHES[arch], sparse_device="meta"))
    if sparse_device == "meta":
        return model
    unsharded = CTRTrainModel(build_model(tables, NUM_DENSE, arch, ARCHES[arch], sparse_device=sparse_device))
    dense = {k: v for k, v in model.state_dict().items() if "embedding_bags." not in k}
    assert not unsharded.load_state_dict(dense, strict=False).unexpected_keys
    return unsharded


def full_reference(arch: str, embedding_l2: float = 0.0):
    """One process, unsharded: per step the logits [B]; then the tables and dense parameters after the steps.
    SGD on everything with the mean loss over the global batch (plus `embedding_l2`'s penalty when > 0)."""
    model = full_model(arch, "cpu")
    model.embedding_l2 = embedding_l2
    w0 = initial_weights()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embedding_bags." in name:
                p.copy_(w0[name.split("embedding_bags.")[1].removesuffix(".weight")])
    opt = torch.optim.SGD(model.parameters(), lr=SGD_LR)
    logits = []
    for ids, dense, labels in full_batches():
        loss, (_, out, _) = model(ctr_batch(ids, dense, labels))
        logits.append(out.detach().clone())
        opt.zero_grad()
        loss.backward()
        opt.step()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tables = {k.split("embedding_bags.")[1].removesuffix(".weight"): v for k, v in state.items() if "embedding_bags." in k}
    dense = {k: v for k, v in state.items() if "embedding_bags." not in k}
    return logits, tables, dense


def sharded_sgd_run(arch: str, sharding_type: str, rank: int, world_size: int, embedding_l2: float = 0.0):
    """full_reference's steps on `world_size` gloo ranks, every table sharded as `sharding_type`: this rank's half
    of each global batch, fused SGD on the tables, SGD on the dense part. Returns (plan, per-step logits, this
    rank's table shards {table: [(offsets, array)]}, the dense state {name: array})."""
    import torch.distributed as dist
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner.types import ParameterConstraints
    from torchrec.distributed.types import ShardingEnv
    from torchrec.optim.keyed import KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    from embedding_sharding.planner import plan_sharding
    from embedding_sharding.sharders import CTREmbeddingBagCollectionSharder
    from embedding_sharding.topology import make_topology

    pg = dist.group.WORLD
    half = GLOBAL_BATCH // world_size
    mine = slice(rank * half, (rank + 1) * half)
    sharder = CTREmbeddingBagCollectionSharder(
        fused_params={"optimizer": EmbOptimType.EXACT_SGD, "learning_rate": SGD_LR})
    model = full_model(arch, "meta")
    model.embedding_l2 = embedding_l2
    constraints = {f"t_{f}": ParameterConstraints(min_partition=4) for f, _ in FEATURES}
    plan = plan_sharding(model, make_topology(world_size, world_size, "cpu"), [sharder],
                         constraints=constraints, sharding_types=[sharding_type], pg=pg)
    dmp = DistributedModelParallel(model, env=ShardingEnv.from_process_group(pg), device=torch.device("cpu"),
                                   plan=plan, sharders=[sharder])
    _fill_from(dmp.state_dict(), initial_weights())
    dense = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(dmp.named_parameters())),
                                  lambda ps: torch.optim.SGD(ps, lr=SGD_LR))
    logits = []
    for ids, dense_x, labels in full_batches():
        loss, (_, out, _) = dmp(ctr_batch(ids[mine], dense_x[mine], labels[mine]))
        logits.append(out.detach().numpy().copy())
        loss.backward()
        dense.step()
        dense.zero_grad()
    state = dmp.state_dict()
    tables = {n: [(off, t.numpy()) for off, t in shards] for n, shards in _local_tables(state).items()}
    dense_state = {k.removeprefix("_dmp_wrapped_module.").replace("module.", "", 1): v.detach().numpy().copy()
                   for k, v in state.items() if "embedding_bags." not in k and torch.is_tensor(v)}
    return plan, logits, tables, dense_state


def full_worker(rank: int, world_size: int, plan_dir: str):
    results = {}
    for arch in ARCHES:
        for st in TYPES:
            plan, logits, tables, dense_state = sharded_sgd_run(arch, st, rank, world_size)
            [ebc_plan] = plan.plan.values()
            placement = {name: ("replicated" if p.sharding_spec is None else
                                sorted((s.placement.rank(), tuple(s.shard_offsets), tuple(s.shard_sizes))
                                       for s in p.sharding_spec.shards), p.sharding_type)
                         for name, p in ebc_plan.items()}
            results[(arch, st)] = {"logits": logits, "tables": tables, "placement": placement,
                                   "dense": dense_state}
    return results


@pytest.fixture(scope="module")
def full_runs():
    with tempfile.TemporaryDirectory() as d:
        return run_on_ranks(full_worker, world_size=2, args=(d,), timeout=600)


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_full_arch_with_sgd_same_as_single_process(full_runs, arch):
    """DLRM and DCNv2 (sparse + dense arch, CTRTrainModel's loss) trained with SGD on 2 ranks, for every sharding
    type, equal the unsharded model trained on the global batches in one process: logits each step, every table
    and every dense parameter after the steps. Each rank's table shards are where the plan put them.

    Defect caught: gradients of tables or dense params scaled (e.g. summed over ranks, or the reference's scaled by
    7: seen failing), a shard held by a rank the plan did not give it, a sharding type that trains differently."""
    ref_logits, ref_tables, ref_dense = full_reference(arch)
    half = GLOBAL_BATCH // 2
    for st in TYPES:
        runs = [res[(arch, st)] for res in full_runs]
        placement = runs[0]["placement"]
        assert runs[1]["placement"] == placement, f"{arch} {st}: ranks got different plans"
        for name, (where, sharding_type) in placement.items():
            assert sharding_type == st
            for rank, r in enumerate(runs):  # each rank holds exactly the shards the plan placed on it
                held = sorted(tuple(off) for off, _ in r["tables"][name])
                planned = ([(0, 0)] if where == "replicated" else
                           sorted(off for rk, off, _ in where if rk == rank))
                assert held == planned, f"{arch} {st} {name} rank {rank}: holds {held}, plan says {planned}"
            if st in ("row_wise", "column_wise", "table_row_wise", "table_column_wise"):
                assert len({rk for rk, _, _ in where}) == 2, f"{arch} {st} {name}: not split over both ranks"
        for rank, r in enumerate(runs):
            for step, (out, ref) in enumerate(zip(r["logits"], ref_logits)):
                torch.testing.assert_close(torch.from_numpy(out), ref[rank * half:(rank + 1) * half], atol=1e-5,
                                           rtol=1e-5, msg=lambda m: f"{arch} {st} rank {rank} step {step}: {m}")
            for k, ref in ref_dense.items():
                key = next((d for d in r["dense"] if d.endswith(k.removeprefix("model."))), None)
                assert key is not None, f"{arch} {st}: dense parameter {k} not found in {sorted(r['dense'])[:5]}"
                torch.testing.assert_close(torch.from_numpy(r["dense"][key]), ref, atol=1e-5, rtol=1e-5,
                                           msg=lambda m: f"{arch} {st} rank {rank} {k}: {m}")
        for name, ref in ref_tables.items():
            full = torch.full_like(ref, float("nan"))
            for r in runs:
                for off, t in r["tables"][name]:
                    t = torch.from_numpy(t)
                    full[off[0]:off[0] + t.shape[0], off[1]:off[1] + t.shape[1]] = t
            assert not torch.equal(full, initial_weights()[name]), f"{arch} {st} {name}: did not train"
            torch.testing.assert_close(full, ref, atol=1e-5, rtol=1e-5, msg=lambda m: f"{arch} {st} {name}: {m}")
