"""Input pipeline: batches/s of Parquet -> CTRBatch (ParquetBatchReader, as `recsys-dist train` configures it:
shuffle buffer, ids taken modulo the 1M cap) on one core, against the train step rate, in the same run.

2 ranks x 1 thread (one core each). Each rank alternates: a reader window (one full pass over its share of
the data with prefetch=0, so the reading runs on the rank's own thread and core, Parquet decode + shuffle
included) and a train window (steps of the full train pipeline on batches already in memory, so no reading).
The ratio reader batches/s / train steps/s says how many times faster than the trainer the reader is on one
core, i.e. 1 / ratio of a core is what the background prefetch thread costs the training. Target >= 5.

    .venv/bin/python benchmarks/bench_input_pipeline.py [--small]    # --small: tiny tables, 1 rank, in-process
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def _rank(rank: int, world: int, data_dir: str, s: Dict[str, Any]):
    import torch.distributed as dist

    from bench_train_vs_torchrec import build_ours

    o = build_ours(data_dir, s, ["data.prefetch_batches=0"], None)
    pipe, reader = o.pipeline, o.reader
    cached = [b for b, _ in zip(reader, range(8))]
    epoch = [0]

    def read_window() -> float:
        epoch[0] += 1
        reader.set_epoch(epoch[0])
        dist.barrier()
        t = time.perf_counter()
        n = sum(1 for _ in reader)
        return (time.perf_counter() - t) / n

    train_it = itertools.cycle(cached)

    def train_window() -> float:
        return common.step_window(pipe, train_it, s["steps"])

    read_window()
    train_window()
    return common.alternate({"read": read_window, "train": train_window}, s["rounds"]) | {
        "batches_per_pass": len(reader)}


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true")
    a = p.parse_args(argv)
    from bench_train_vs_torchrec import _settings
    from recsys_dist.data.criteo_schema import KAGGLE_ROWS

    s = _settings(a.small)
    s["rounds"], s["steps"] = (2, 3) if a.small else (5, 8)
    passes = 16 if a.small else 64  # global batches per reader pass
    world = 1 if a.small else 2  # --small: one rank in this process (fast, for the smoke test)
    print(f"machine: {common.machine()}")
    print(f"settings: {world} rank(s) x 1 thread, global batch {s['batch']} ({s['batch'] // world} per rank), "
          f"dim {s['dim']}, "
          f"tables capped at {s['cap']}, reader pass of {passes} batches per rank, shuffle on")
    with tempfile.TemporaryDirectory(prefix="bench_input_") as tmp:
        cards = KAGGLE_ROWS if not a.small else [min(r, 50 * s["cap"]) for r in KAGGLE_ROWS]
        common.write_criteo_like(Path(tmp), passes * s["batch"], cards, rows_per_file=65536, row_group=16384)
        r = common.run_ranks(_rank, world, (tmp, s), threads=1)[0]
    for i, (rd, tr) in enumerate(zip(r["read"], r["train"])):
        print(f"round {i}: reader {common.ms(rd)}/batch ({1 / rd:,.0f} batches/s), train {common.ms(tr)}/step "
              f"({1 / tr:,.1f} steps/s), ratio {tr / rd:.1f}")
    med = statistics.median(tr / rd for rd, tr in zip(r["read"], r["train"]))
    print(f"ratio reader batches/s on one core / train steps/s (target >= 5): {med:.1f}")
    return med


if __name__ == "__main__":
    main()
