"""OptInter's pair products by runs of slices (recsys_dist/models/pair_products.py) vs the gathered form, in one
process, alternating: training samples/s (the train pipeline) and scoring rows/s (score_split on the val split),
by wall clock and by CPU time, and scoring / training of each.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_optinter_pairs.py --data DIR [--rounds 3] [--steps 10] \\
        [section.key=value ...]

DIR is a prepared dataset with a val split (e.g. the planted acceptance data). The overrides pick the OptInter
stage, e.g. model.arch=optinter data.cross_pairs=all "model.arch_args={methods: search}". Results:
docs/benchmarks.md, "Scoring in row chunks; OptInter's scoring".
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
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per round and variant")
    ap.add_argument("overrides", nargs="*", help="section.key=value, e.g. model.arch=optinter")
    a = ap.parse_args()
    from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

    from recsys_dist.job import make_reader
    from recsys_dist.models.optinter import CombinationBlock
    from recsys_dist.optim import build_optimizer
    from recsys_dist.train import score_split

    logging.disable(logging.WARNING)
    print(machine())
    with one_process_job(a.data, a.overrides) as (cfg, env, threads, built):
        block = next(m for m in built.dmp.modules() if isinstance(m, CombinationBlock))
        runs = block.runs
        opt = build_optimizer(built.dmp, built.model.dense_arch.architecture_parameters(), cfg.optim)
        reader = make_reader(cfg, built, env, "train")
        rows, batch = built.metadata.splits["val"].rows, cfg.data.batch_size
        print(f"settings: {' '.join(a.overrides)}; train batch {batch}, {a.steps} steps; eval batch "
              f"{cfg.data.eval_batch_size}, {rows} val rows; {len(runs)} runs of {block.num_factorized} factorized "
              f"pairs; {threads} thread(s)")
        got = {"runs": [], "gathered": []}
        for r in range(a.rounds):
            for name in ("runs", "gathered") if r % 2 == 0 else ("gathered", "runs"):
                block.runs = runs if name == "runs" else None
                reader.set_epoch(len(got["runs"]) + len(got["gathered"]), 0)
                pipe = TrainPipelineSparseDist(built.dmp, opt, env.device, execute_all_batches=True)
                it = iter(reader)
                for _ in range(3):  # warm-up: fill the pipeline
                    pipe.progress(it)
                w0, c0 = time.perf_counter(), time.process_time()
                for _ in range(a.steps):
                    float(pipe.progress(it)[0])
                train = (a.steps * batch / (time.perf_counter() - w0), a.steps * batch / (time.process_time() - c0))
                pipe.detach()
                del pipe
                w0, c0 = time.perf_counter(), time.process_time()
                auc = score_split(built, cfg, env, "val").compute()["auc"]
                score = (rows / (time.perf_counter() - w0), rows / (time.process_time() - c0))
                got[name].append((train, score))
                print(f"round {r} {name:>8s}: train {train[0]:,.0f} samples/s ({train[1]:,.0f} per CPU-s), score "
                      f"{score[0]:,.0f} rows/s ({score[1]:,.0f} per CPU-s), scoring / training {score[0] / train[0]:.2f}x "
                      f"(CPU {score[1] / train[1]:.2f}x), val AUC {auc:.6f} [load {os.getloadavg()[0]:.1f}]", flush=True)
        med = {n: [statistics.median(x[k][c] for x in g) for k in (0, 1) for c in (0, 1)] for n, g in got.items()}
        print("medians (train/s, train per CPU-s, score/s, score per CPU-s): "
              + "; ".join(f"{n} " + ", ".join(f"{v:,.0f}" for v in m) for n, m in med.items()))
        print(f"runs / gathered: training {med['runs'][1] / med['gathered'][1]:.2f}x, scoring "
              f"{med['runs'][3] / med['gathered'][3]:.2f}x (CPU time); scoring / training (CPU time): runs "
              f"{med['runs'][3] / med['runs'][1]:.2f}x, gathered {med['gathered'][3] / med['gathered'][1]:.2f}x")


if __name__ == "__main__":
    main()
