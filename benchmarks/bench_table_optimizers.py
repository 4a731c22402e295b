"""Does a table optimizer's step cost follow the rows a batch touches, or the table's size?

One table, dim 16, the same batch (2048 bags x 8 ids, uniform over the first 100k rows) looked up in a 100k-row
and in a 10M-row table; a step is the pooled lookup + backward with the table update (+ optimizer.step() where
the update is not fused). Per optimizer the two sizes are timed in alternating rounds (CPU seconds of this
process on one thread, robust on a shared box) and the median of the per-round ratios 10M / 100k is printed:
  lazy_adam      ours (recsys_dist.lazy_adam.LazyAdamTBE, optim.sparse=adam on CPU)
  fbgemm_rowwise FBGEMM's fused CPU EXACT_ROWWISE_ADAGRAD (optim.sparse=rowwise_adagrad)
  dense_adam     TorchRec's DENSE kernel (FBGEMM's DenseTableBatchedEmbeddingBagsCodegen) + torch's fused Adam:
                 a gradient the size of the table, an update of every row (the alternative to ours)
Memory at 10M rows: 0.64 GB per fp32 copy of the table (lazy Adam 3 copies, dense Adam 4).

    .venv/bin/python benchmarks/bench_table_optimizers.py [--small] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import torch  # noqa: E402

DIM, BAGS, IDS_PER_BAG, TOUCHED_RANGE = 16, 2048, 8, 100_000


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    indices = torch.randint(0, TOUCHED_RANGE, (BAGS * IDS_PER_BAG,), generator=g)
    offsets = torch.arange(0, BAGS * IDS_PER_BAG + 1, IDS_PER_BAG)
    upstream = torch.randn(BAGS, DIM, generator=g)
    return indices, offsets, upstream


def lazy_adam(rows: int) -> Callable[[], None]:
    from recsys_dist.lazy_adam import LazyAdamTBE

    tbe = LazyAdamTBE([rows], [DIM], [0], learning_rate=1e-3)
    tbe.weights.uniform_(-0.01, 0.01)
    indices, offsets, upstream = batch()
    return lambda: (tbe(indices, offsets) * upstream).sum().backward()


def fbgemm_rowwise(rows: int) -> Callable[[], None]:
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice,
        SplitTableBatchedEmbeddingBagsCodegen,
    )

    tbe = SplitTableBatchedEmbeddingBagsCodegen([(rows, DIM, EmbeddingLocation.HOST, ComputeDevice.CPU)],
                                                optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD, learning_rate=0.01)
    indices, offsets, upstream = batch()
    return lambda: (tbe(indices, offsets) * upstream).sum().backward()


def dense_adam(rows: int) -> Callable[[], None]:
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import DenseTableBatchedEmbeddingBagsCodegen

    tbe = DenseTableBatchedEmbeddingBagsCodegen([(rows, DIM)], use_cpu=True)
    opt = torch.optim.Adam(tbe.parameters(), lr=1e-3, fused=True)
    indices, offsets, upstream = batch()

    def step():
        (tbe(indices, offsets) * upstream).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=False)

    return step


def cpu_seconds_per_step(fn: Callable[[], None], steps: int) -> float:
    t = time.process_time()
    for _ in range(steps):
        fn()
    return (time.process_time() - t) / steps


def compare(name: str, make: Callable[[int], Callable[[], None]], big: int, small: int, steps: int,
            rounds: int) -> Dict[str, float]:
    fns = {small: make(small), big: make(big)}
    for fn in fns.values():  # warm-up: first-touch of the state pages, allocator
        cpu_seconds_per_step(fn, 2)
    times: Dict[int, List[float]] = common.alternate(
        {n: (lambda fn=fn: cpu_seconds_per_step(fn, steps)) for n, fn in fns.items()}, rounds)
    med, lo, hi = common.paired_ratio(times[big], times[small])
    out = {"small_ms": statistics.median(times[small]) * 1e3, "big_ms": statistics.median(times[big]) * 1e3,
           "ratio": med, "ratio_min": lo, "ratio_max": hi}
    print(f"{name:15s} {small:>11,} rows {out['small_ms']:8.2f} ms   {big:>11,} rows {out['big_ms']:8.2f} ms   "
          f"ratio {med:6.2f} (rounds {lo:.2f}-{hi:.2f})", flush=True)
    del fns
    gc.collect()
    return out


def main(argv=None) -> Dict[str, Dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="1M vs 100k rows, 1 round (a smoke run)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-dense", action="store_true", help="skip the DENSE-kernel alternative (4 table copies)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    big, rounds = (1_000_000, 1) if a.small else (10_000_000, a.rounds)
    print(common.machine())
    print(f"one table, dim {DIM}, batch {BAGS} bags x {IDS_PER_BAG} ids over rows [0, {TOUCHED_RANGE:,}); "
          f"CPU ms per step (lookup + backward + update), medians of {rounds} alternating rounds")
    res = {"lazy_adam": compare("lazy_adam", lazy_adam, big, TOUCHED_RANGE, 10, rounds),
           "fbgemm_rowwise": compare("fbgemm_rowwise", fbgemm_rowwise, big, TOUCHED_RANGE, 10, rounds)}
    if not a.no_dense:
        res["dense_adam"] = compare("dense_adam", dense_adam, big, TOUCHED_RANGE, 2, rounds)
    return res


if __name__ == "__main__":
    main()
