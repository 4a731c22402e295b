"""Precision: bf16 dense path (train.mixed_precision=bf16: the dense arch under torch.autocast, as
CTRTrainModel runs it) and FP16 embedding weights (model.embedding_dtype=fp16: FBGEMM's TBE stores fp16 rows,
on CPU too): speed-ups and test-AUC differences on planted-signal data, all in the same run.

1. Dense step (1 process, every core), alternating fp32 / bf16: the foundation DLRM's dense arch forward +
   loss + backward + Adagrad step at global batch 2048 on pooled embeddings [2048, 26, 64]. Target >= 1.5x.
2. Embedding step (1 process, DMP world 1), alternating fp32 / fp16 tables: the 26 Kaggle tables (capped at
   1M, dim 64), table-wise in FBGEMM's fused TBE with row-wise Adagrad: lookup + backward/update of a batch.
3. AUC: `recsys_dist.train.train` on 2 gloo ranks on planted-signal data (recsys_dist.data.synth ->
   criteo_prepare; test = the last day), same seed, fp32 / bf16 dense / fp16 tables; test AUC differences.
   Target |AUC difference| <= 0.002. Control: fp32 with another train.seed (the run-to-run spread).

    .venv/bin/python benchmarks/bench_precision.py [--small]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def dense_step_times(s: Dict[str, Any], rounds: int, steps: int) -> Dict[str, List[float]]:
    import torch

    from recsys_dist.models.arch import ArchInputs
    from recsys_dist.models.dlrm import DLRMArch
    from recsys_dist.models.model import weighted_bce

    torch.manual_seed(0)
    B, F = s["batch"], 26
    arch = DLRMArch(ArchInputs(common.NUM_DENSE, tuple(f"C{i}" for i in range(F)), s["dim"]),
                    bottom_mlp=s["bottom"], top_mlp=s["top"])
    opt = torch.optim.Adagrad(arch.parameters(), lr=0.01, eps=1e-8)
    dense = torch.rand(B, common.NUM_DENSE)
    emb = torch.rand(B, F, s["dim"], requires_grad=True)
    labels = torch.randint(0, 2, (B,)).float()
    weights = torch.ones(B)

    def step(dtype) -> None:
        opt.zero_grad()
        if dtype is None:
            logits = arch(dense, emb)
        else:  # exactly CTRTrainModel's bf16 path
            with torch.autocast(device_type="cpu", dtype=dtype):
                logits = arch(dense, emb)
            logits = logits.float()
        weighted_bce(logits, labels, weights).backward()
        opt.step()

    def window(dtype):
        return lambda: common.timed(lambda: [step(dtype) for _ in range(steps)]) / steps

    window(None)()
    window(torch.bfloat16)()
    return common.alternate({"fp32": window(None), "bf16": window(torch.bfloat16)}, rounds)


def _embedding_rank(rank: int, world: int, s: Dict[str, Any], rounds: int, steps: int):
    import torch
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.types import ShardingEnv
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from embedding_sharding.planner import plan_sharding
    from embedding_sharding.sharders import CTREmbeddingBagCollectionSharder
    from embedding_sharding.topology import make_topology
    from recsys_dist.config import OptimConfig
    from recsys_dist.models.sparse import SparseArch, TableSpec
    from recsys_dist.optim import fused_params

    import torch.distributed as dist

    rows = common.kaggle_rows(s["cap"])
    tables = [TableSpec(f"C{i + 1}", r, s["dim"]) for i, r in enumerate(rows)]
    B = s["batch"]
    gen = torch.Generator().manual_seed(0)
    ids = torch.cat([torch.randint(0, r, (B,), generator=gen) for r in rows])
    kjt = KeyedJaggedTensor.from_lengths_sync([t.feature for t in tables], ids,
                                              torch.ones(B * len(tables), dtype=torch.int32))
    models = {}
    for dtype in ("fp32", "fp16"):
        arch = SparseArch(tables, device="meta", dtype=dtype)
        sharder = CTREmbeddingBagCollectionSharder(fused_params=fused_params(OptimConfig(), "cpu"))
        plan = plan_sharding(arch, make_topology(world, world, "cpu"), [sharder], batch_size=B,
                             sharding_types=["table_wise"], compute_kernel="fused")  # FBGEMM TBE: both dtypes
        models[dtype] = DistributedModelParallel(arch, env=ShardingEnv.from_process_group(dist.GroupMember.WORLD),
                                                 device=torch.device("cpu"), plan=plan, sharders=[sharder])

    def window(m):
        def run() -> float:
            t = time.perf_counter()
            for _ in range(steps):
                m(kjt).sum().backward()
            return (time.perf_counter() - t) / steps
        return run

    for m in models.values():
        window(m)()
    return common.alternate({k: window(m) for k, m in models.items()}, rounds)


FP16_CPU = "model.fp16_tables_on_cpu=true"  # measured on purpose: refused on CPU without it (table_precision.py)


def _train_rank(rank: int, world: int, data_dir: str, out: str, s: Dict[str, Any], overrides: List[str]):
    from recsys_dist.config import load_config, validate
    from recsys_dist.train import train

    cfg = load_config(None, [f"data.dir={data_dir}", f"data.batch_size={s['auc_batch']}", "data.eval_batch_size=8192",
                             f"model.embedding_dim={s['dim']}", "model.max_rows_per_table=100000",
                             "optim.sparse_lr=0.05", "optim.dense_lr=0.02", f"train.out_dir={out}",
                             f"train.epochs={s['epochs']}", "train.log_every_steps=0", "train.checkpoint=false",
                             "train.tensorboard=false", "train.resume=never", *overrides])
    cfg.model.arch, cfg.model.arch_args = "dlrm", {"bottom_mlp": s["bottom"], "top_mlp": s["top"]}
    validate(cfg)
    return train(cfg)


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true")
    p.add_argument("--skip-auc", action="store_true", help="only the speed parts")
    p.add_argument("--rows-per-day", type=int, default=1_000_000,
                   help="planted rows per day for the AUC runs (3 days: train, validation, test); at 100k the "
                        "run-to-run spread (~0.007) hides a 0.002 difference")
    a = p.parse_args(argv)
    import torch

    from bench_train_vs_torchrec import _settings

    common.quiet()
    s = _settings(a.small)
    rounds, steps = (2, 2) if a.small else (6, 5)
    s.update(epochs=1, auc_batch=512 if a.small else 1024)  # one pass: more epochs overfit at this model size
    days, rows_per_day = (3, 4000) if a.small else (3, a.rows_per_day)
    print(f"machine: {common.machine()}")
    print(f"settings: global batch {s['batch']}, dim {s['dim']}, bottom {s['bottom']}, top {s['top']}, tables "
          f"capped at {s['cap']}; AUC runs: planted data {days} days x {rows_per_day} rows, batch "
          f"{s['auc_batch']}, {s['epochs']} epoch(s), 2 ranks")
    torch.set_num_threads(os.cpu_count() or 1)
    d = dense_step_times(s, rounds, steps)
    dense_speedup = statistics.median(f / b for f, b in zip(d["fp32"], d["bf16"]))
    print(f"dense step ({torch.get_num_threads()} threads): fp32 {common.ms(statistics.median(d['fp32']))}, "
          f"bf16 {common.ms(statistics.median(d['bf16']))}, speed-up {dense_speedup:.2f}x "
          f"(per round: {', '.join(f'{f / b:.2f}' for f, b in zip(d['fp32'], d['bf16']))})")
    e = common.run_ranks(_embedding_rank, 1, (s, rounds, steps), threads=os.cpu_count() or 1)[0]
    emb_speedup = statistics.median(f / h for f, h in zip(e["fp32"], e["fp16"]))
    print(f"embedding step (lookup + fused row-wise Adagrad backward, DMP world 1): fp32 "
          f"{common.ms(statistics.median(e['fp32']))}, fp16 tables {common.ms(statistics.median(e['fp16']))}, "
          f"speed-up {emb_speedup:.2f}x")
    worst = 0.0
    if not a.skip_auc:
        from recsys_dist.config import PrepareConfig, SynthConfig
        from recsys_dist.data.criteo_prepare import prepare_criteo
        from recsys_dist.data.synth import synthesize

        with tempfile.TemporaryDirectory(prefix="bench_precision_") as tmp:
            raw, data = Path(tmp) / "raw", Path(tmp) / "prepared"
            report = synthesize(SynthConfig(out_dir=str(raw), days=days, rows_per_day=rows_per_day, seed=7))
            prepare_criteo(PrepareConfig(input=[str(raw)], out_dir=str(data), split="day", workers=1))
            bayes = report["files"][sorted(report["files"])[-1]]["bayes_auc"]
            variants = {"fp32": [], "bf16 dense": ["train.mixed_precision=bf16"],
                        "fp16 tables": ["model.embedding_dtype=fp16", FP16_CPU],
                        "bf16 dense + fp16 tables": ["train.mixed_precision=bf16", "model.embedding_dtype=fp16",
                                                     FP16_CPU],
                        "fp32, other seed": ["train.seed=1"],  # controls: how much AUC moves run to run
                        "bf16 dense, other seed": ["train.mixed_precision=bf16", "train.seed=1"]}
            aucs = {}
            for name, ov in variants.items():
                res = common.run_ranks(_train_rank, 2, (str(data), str(Path(tmp) / name.replace(" ", "_")), s, ov),
                                       threads=1)[0]
                aucs[name] = res["test"]["auc"]
        print(f"test AUC (Bayes-optimal {bayes:.4f}): " + ", ".join(f"{k} {v:.4f}" for k, v in aucs.items()))
        for k, v in aucs.items():
            if k == "fp32, other seed":
                print(f"AUC difference fp32 seed 1 - fp32 seed 0 (run-to-run control): {v - aucs['fp32']:+.4f}")
            elif k == "bf16 dense, other seed":
                print(f"AUC difference bf16 dense seed 1 - fp32 seed 1: {v - aucs['fp32, other seed']:+.4f}")
                worst = max(worst, abs(v - aucs["fp32, other seed"]))
            elif k != "fp32":
                print(f"AUC difference {k} - fp32: {v - aucs['fp32']:+.4f}")
                worst = max(worst, abs(v - aucs["fp32"]))
        print(f"largest |AUC difference| vs fp32 (target <= 0.002): {worst:.4f}")
    print(f"ratio dense step fp32 / bf16 (target >= 1.5): {dense_speedup:.2f}")
    return dense_speedup


if __name__ == "__main__":
    main()
