"""Train throughput: our full path (Parquet on disk -> ParquetBatchReader -> DMP(CTRTrainModel) -> the train
pipeline `recsys-dist train` uses) vs a reference loop built straight from TorchRec the way
facebookresearch/dlrm's torchrec_dlrm/dlrm_main.py builds it (torchrec.models.dlrm.DLRM + DLRMTrain, tables on
meta, apply_optimizer_in_backward(RowWiseAdagrad), EmbeddingShardingPlanner.collective_plan with the default
sharders, DMP, Adagrad on the dense params in a CombinedOptimizer, TrainPipelineSparseDist, RandomRecDataset
through a DataLoader).

Both models live in the same rank processes (same threads, same process placement), each with its own process
group, and are timed in alternating windows: ours, reference, ours, reference ... after a warm-up of each. The
figure is the median over rounds of (reference seconds per step / ours): >= 1 means ours is at least as fast.

Same model (26 tables of Criteo-Kaggle cardinalities capped at 1M, dim 64, bottom 512-256-64, top
512-512-256-1), same global batch (2048), same optimizers (row-wise Adagrad on tables, Adagrad on dense, lr 0.01,
eps 1e-8), same ids distribution (uniform per table: ours are written to Parquet by this script first).

    .venv/bin/python benchmarks/bench_train_vs_torchrec.py            # 2 ranks x 1 thread (CPU, gloo)
    .venv/bin/python benchmarks/bench_train_vs_torchrec.py --small    # seconds: tiny tables, for smoke tests
    .venv/bin/python benchmarks/bench_train_vs_torchrec.py --set train.pipeline=base --set data.prefetch_batches=0
    .venv/bin/python benchmarks/bench_train_vs_torchrec.py --set train.compile=true   # + compile time, break-even

On a CUDA machine the same command runs unchanged: one rank per GPU, nccl, FBGEMM's fused CUDA kernels, and the
planner may place tables in UVM / UVM caching when HBM is short (or force a kernel with --compute-kernel).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

LR, EPS = 0.01, 1e-8


def _settings(small: bool) -> Dict[str, Any]:
    if small:
        return dict(cap=5000, dim=16, bottom=[32, 16], top=[32, 1], batch=256, warmup=2, rounds=2, steps=3)
    return dict(cap=common.CAP, dim=common.DIM, bottom=list(common.BOTTOM), top=list(common.TOP),
                batch=common.GLOBAL_BATCH, warmup=8, rounds=16, steps=4)


def _plan_summary(plan) -> str:
    kinds: Dict[str, int] = {}
    for module_plan in plan.plan.values():
        for ps in module_plan.values():
            key = f"{ps.sharding_type}/{ps.compute_kernel}"
            kinds[key] = kinds.get(key, 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items()))


@dataclass
class Ours:
    pipeline: Any
    reader: Any  # ParquetBatchReader
    it: Any  # iter(reader), epoch 0
    built: Any  # recsys_dist.job.BuiltModel
    optimizer: Any
    device: Any


def build_ours(data_dir: str, s: Dict[str, Any], overrides: List[str], compute_kernel, arch=None):
    """Exactly what recsys_dist.train.train builds: config -> sharded model, optimizer, reader, pipeline.
    `arch`: (name, arch_args) instead of the foundation DLRM."""
    from recsys_dist.config import load_config, validate
    from recsys_dist.dist_env import setup_process
    from recsys_dist.job import build_sharded_model, make_reader
    from recsys_dist.optim import build_optimizer
    from recsys_dist.train import _make_pipeline

    cfg = load_config(None, [f"data.dir={data_dir}", f"data.batch_size={s['batch']}",
                             f"model.embedding_dim={s['dim']}", f"model.max_rows_per_table={s['cap']}",
                             f"optim.sparse_lr={LR}", f"optim.dense_lr={LR}", f"optim.sparse_eps={EPS}",
                             f"optim.dense_eps={EPS}", "optim.sparse=rowwise_adagrad", "optim.dense=adagrad",
                             *([f"sharding.compute_kernel={compute_kernel}"] if compute_kernel else []),
                             *overrides])
    cfg.model.arch, cfg.model.arch_args = arch or ("dlrm", {"bottom_mlp": s["bottom"], "top_mlp": s["top"]})
    validate(cfg)
    env, _ = setup_process(cfg.train)
    built = build_sharded_model(cfg, env)
    if cfg.train.compile:  # as train.py does
        from recsys_dist.compile import compile_dense_arch

        compile_dense_arch(built.model, cfg.train.compile_cache, env.device)
    optimizer = build_optimizer(built.dmp, built.model.dense_arch.architecture_parameters(), cfg.optim)
    reader = make_reader(cfg, built, env, "train")
    reader.set_epoch(0)
    pipeline = _make_pipeline(cfg, built, optimizer, env)
    return Ours(pipeline, reader, iter(reader), built, optimizer, env.device)


def build_reference(s: Dict[str, Any], rank: int, world: int, device, compute_kernel):
    """dlrm_main.py's construction (torchrec_dlrm), on its own process group."""
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader
    from torchrec import EmbeddingBagCollection
    from torchrec.datasets.criteo import DEFAULT_CAT_NAMES
    from torchrec.datasets.random import RandomRecDataset
    from torchrec.distributed import TrainPipelineSparseDist
    from torchrec.distributed.comm import get_local_size
    from torchrec.distributed.model_parallel import DistributedModelParallel, get_default_sharders
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.storage_reservations import HeuristicalStorageReservation
    from torchrec.distributed.planner.types import ParameterConstraints
    from torchrec.distributed.types import ShardingEnv
    from torchrec.models.dlrm import DLRM, DLRMTrain
    from torchrec.modules.embedding_configs import EmbeddingBagConfig
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter
    from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

    pg = dist.new_group(backend=dist.get_backend())
    rows = common.kaggle_rows(s["cap"])
    local_batch = s["batch"] // world
    tables = [EmbeddingBagConfig(name=f"t_{n}", embedding_dim=s["dim"], num_embeddings=r, feature_names=[n])
              for n, r in zip(DEFAULT_CAT_NAMES, rows)]
    dlrm = DLRM(embedding_bag_collection=EmbeddingBagCollection(tables=tables, device=torch.device("meta")),
                dense_in_features=common.NUM_DENSE, dense_arch_layer_sizes=s["bottom"],
                over_arch_layer_sizes=s["top"], dense_device=device)
    train_model = DLRMTrain(dlrm)
    apply_optimizer_in_backward(RowWiseAdagrad, train_model.model.sparse_arch.parameters(), {"lr": LR, "eps": EPS})
    constraints = ({t.name: ParameterConstraints(compute_kernels=[compute_kernel]) for t in tables}
                   if compute_kernel else None)
    planner = EmbeddingShardingPlanner(
        topology=Topology(local_world_size=get_local_size(), world_size=world, compute_device=device.type),
        batch_size=local_batch, storage_reservation=HeuristicalStorageReservation(percentage=0.05),
        constraints=constraints)
    plan = planner.collective_plan(train_model, get_default_sharders(), pg)
    model = DistributedModelParallel(module=train_model, device=device, plan=plan,
                                     env=ShardingEnv.from_process_group(pg))
    dense = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(model.named_parameters())),
                                  lambda params: torch.optim.Adagrad(params, lr=LR, eps=EPS))
    optimizer = CombinedOptimizer([model.fused_optimizer, dense])
    pipeline = TrainPipelineSparseDist(model, optimizer, device, execute_all_batches=True)
    data = RandomRecDataset(keys=DEFAULT_CAT_NAMES, batch_size=local_batch, hash_sizes=rows, ids_per_feature=1,
                            num_dense=common.NUM_DENSE, manual_seed=rank)
    loader = DataLoader(data, batch_size=None, batch_sampler=None, pin_memory=device.type == "cuda",
                        num_workers=0)
    return pipeline, iter(loader), plan, pg


def _rank(rank: int, world: int, data_dir: str, s: Dict[str, Any], overrides: List[str], compute_kernel):
    import torch

    o = build_ours(data_dir, s, overrides, compute_kernel)
    ours, ours_it, ours_plan, device = o.pipeline, o.it, o.built.plan, o.device
    ref, ref_it, ref_plan, ref_pg = build_reference(s, rank, world, device, compute_kernel)

    window = common.step_window
    t = time.perf_counter()
    window(ours, ours_it, s["warmup"], None)  # with train.compile: the first step compiles
    warmup_s = time.perf_counter() - t
    window(ref, ref_it, s["warmup"], ref_pg)
    times = common.alternate({"ours": lambda: window(ours, ours_it, s["steps"], None),
                              "reference": lambda: window(ref, ref_it, s["steps"], ref_pg)}, s["rounds"])
    compile_s = None
    if "train.compile=true" in overrides:
        from recsys_dist.compile import compile_seconds

        compile_s = compile_seconds()
    return {"times": times, "plans": {"ours": _plan_summary(ours_plan), "reference": _plan_summary(ref_plan)},
            "threads": torch.get_num_threads(), "device": str(device), "warmup_s": warmup_s,
            "compile_s": compile_s}


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="tiny settings (seconds), for smoke tests")
    p.add_argument("--ranks", type=int, default=None, help="ranks (default: GPUs if any, else 2)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads per rank (default: cores / ranks)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="steps per timed window")
    p.add_argument("--compute-kernel", default=None, help="force a kernel on both sides (e.g. fused_uvm_caching)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override of our config (e.g. train.pipeline=base); the reference is unchanged")
    a = p.parse_args(argv)
    import os

    import torch

    s = _settings(a.small)
    if a.rounds:
        s["rounds"] = a.rounds
    if a.steps:
        s["steps"] = a.steps
    world = a.ranks or (torch.cuda.device_count() if torch.cuda.is_available() else 2)
    threads = a.threads or max(1, (os.cpu_count() or 1) // world)
    steps_needed = s["warmup"] + s["rounds"] * s["steps"] + 4  # + the pipeline's look-ahead
    rows = steps_needed * s["batch"]
    print(f"machine: {common.machine()}")
    print(f"settings: {world} ranks x {threads} threads, global batch {s['batch']}, dim {s['dim']}, "
          f"bottom {s['bottom']}, top {s['top']}, tables capped at {s['cap']}, warm-up {s['warmup']} steps, "
          f"{s['rounds']} rounds x {s['steps']} steps each side; our overrides: {a.set or 'none'}")
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        t = time.perf_counter()
        from recsys_dist.data.criteo_schema import KAGGLE_ROWS

        # the data keeps Kaggle's full cardinalities; model.max_rows_per_table caps the tables (ids mod cap)
        cards = KAGGLE_ROWS if not a.small else [min(r, 50 * s["cap"]) for r in KAGGLE_ROWS]
        common.write_criteo_like(Path(tmp), rows, cards, rows_per_file=65536, row_group=16384)
        print(f"wrote {rows} rows of Parquet in {time.perf_counter() - t:.1f} s")
        res = common.run_ranks(_rank, world, (tmp, s, a.set, a.compute_kernel), threads=threads)
    r0 = res[0]
    print(f"device {r0['device']}, {r0['threads']} threads per rank")
    print(f"plan ours:      {r0['plans']['ours']}")
    print(f"plan reference: {r0['plans']['reference']}")
    ours, ref = r0["times"]["ours"], r0["times"]["reference"]
    for i, (o, r) in enumerate(zip(ours, ref)):
        print(f"round {i}: ours {common.ms(o)}/step  reference {common.ms(r)}/step  ratio {r / o:.3f}")
    med, lo, hi = common.paired_ratio(ref, ours)
    print(f"samples/s: ours {s['batch'] / sorted(ours)[len(ours) // 2]:,.0f}, "
          f"reference {s['batch'] / sorted(ref)[len(ref) // 2]:,.0f} (medians)")
    if r0["compile_s"] is not None:
        ours_med, ref_med = sorted(ours)[len(ours) // 2], sorted(ref)[len(ref) // 2]
        gain = ref_med - ours_med
        print(f"compile: {r0['compile_s']:.1f} s (rank 0, within the {s['warmup']}-step warm-up of "
              f"{r0['warmup_s']:.1f} s); " + (f"repaid after {r0['compile_s'] / gain:,.0f} steps against the "
                                               f"reference loop" if gain > 0 else "not repaid against the reference"))
    print(f"ratio reference/ours step time (>= 1: ours at least as fast): {med:.3f} (min {lo:.3f}, max {hi:.3f})")
    return med


if __name__ == "__main__":
    main()
