"""Scoring a split with the dense arch run over row chunks (CTRTrainModel.score_chunk_rows, the per-rank training
batch on CPU) vs over the whole eval batch, alternating in one process: rows per CPU-second and the AUC of each
(equal: the chunks change only how the rows are grouped).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_score_chunks.py --data DIR [--rounds 3] [section.key=value ...]

DIR is a prepared dataset with a val split (e.g. the planted acceptance data: tests/planted.make_planted, or
`recsys-dist synth` + `prepare`). Results: docs/benchmarks.md, "Scoring in row chunks".
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time

from common import machine, one_process_job


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("overrides", nargs="*", help="section.key=value, e.g. model.arch=optinter")
    a = ap.parse_args()
    from recsys_dist.train import score_split

    logging.disable(logging.WARNING)
    print(machine())
    with one_process_job(a.data, a.overrides) as (cfg, env, threads, built):
        model = next(m for m in built.dmp.modules() if hasattr(m, "score_chunk_rows"))
        chunk, rows = model.score_chunk_rows, built.metadata.splits["val"].rows
        print(f"settings: {' '.join(a.overrides)}; eval batch {cfg.data.eval_batch_size}, chunk {chunk} rows, "
              f"{rows} val rows, {threads} thread(s), CPU-time clocks")
        got = {0: [], chunk: []}
        for r in range(a.rounds):
            for c in (0, chunk) if r % 2 == 0 else (chunk, 0):
                model.score_chunk_rows = c
                t0 = time.process_time()
                auc = score_split(built, cfg, env, "val").compute()["auc"]
                got[c].append(rows / (time.process_time() - t0))
                print(f"round {r}: {'chunks of ' + str(c) if c else 'whole batch':>16s} {got[c][-1]:,.0f} rows per "
                      f"CPU-s, val AUC {auc:.6f} [load {os.getloadavg()[0]:.1f}]", flush=True)
        print(f"ratio chunked / whole rows per CPU-s (> 1: chunks faster): "
              f"{statistics.median(got[chunk]) / statistics.median(got[0]):.2f}")


if __name__ == "__main__":
    main()
