"""Two measurements of the train job on a shared CPU box: thread layout beside a busy process, and scoring speed.

    .venv/bin/python benchmarks/bench_threads_eval.py [--rounds 2] [--skip-threads] [--skip-eval] [--eval-ranks 1,2]

1. Threads under load: `recsys-dist train` (DLRM on planted synthetic data, configs/dlrm_synthetic.yaml, one
   process) with train.threads=1, train.threads=2 with libgomp's default wait policy (spin, then sleep),
   train.threads=2 with OMP_WAIT_POLICY=PASSIVE (waiting threads sleep) and both unset (the defaults:
   recsys_dist/__init__.py, recsys_dist/threads.py), each beside one busy-loop process (`while True: pass`) started for the run, alternating in rounds. Prints train seconds,
   samples/s and the val AUC of each, and the load average.
2. Evaluation throughput: in one process (world of one, the job's own code: build_sharded_model, the train
   pipeline, score_split), alternating: N training steps (samples/s) and scoring the val split (samples/s, the
   function `evaluate` and train's validation call), with the ratio per round; then the same on 2 gloo ranks under
   torchrun (global samples/s: both ranks step together), `--eval-ranks`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from common import ROOT, machine

CONFIG = str(ROOT / "configs" / "dlrm_synthetic.yaml")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def cli(*args: str, timeout: float = 3600, env: Dict[str, str] = {}) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "recsys_dist.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**ENV, **env}, timeout=timeout)
    if proc.returncode:
        raise SystemExit(f"recsys-dist {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc


def make_data(root: Path, rows_per_day: int) -> Path:
    over = [f"synth.out_dir={root / 'raw'}", f"synth.rows_per_day={rows_per_day}",
            f"prepare.input=[{root / 'raw'}]", f"prepare.out_dir={root / 'prepared'}"]
    cli("synth", "--config", CONFIG, *over)
    cli("prepare", "--config", CONFIG, *over)
    return root / "prepared"


def load() -> float:
    return os.getloadavg()[0]


def threads_under_load(data: Path, out: Path, rounds: int, epochs: int) -> None:
    print(f"\n1. recsys-dist train (dlrm_synthetic, 1 process, {epochs} epoch(s)) beside one busy-loop process")
    # OMP_WAIT_POLICY="" keeps recsys_dist from setting PASSIVE: libgomp's default (spin, then sleep)
    cases = {"threads=1": (["train.threads=1"], {}),
             "threads=2, libgomp default wait": (["train.threads=2"], {"OMP_WAIT_POLICY": ""}),
             "threads=2, passive wait": (["train.threads=2"], {"OMP_WAIT_POLICY": "PASSIVE"}),
             "default (threads unset)": ([], {})}
    got: Dict[str, List[dict]] = {k: [] for k in cases}
    for r in range(rounds):
        for name, (extra, env) in cases.items():
            run = out / f"{name.replace(' ', '_').replace(',', '')}_{r}"
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                l0 = load()
                t0 = time.perf_counter()
                cli("train", "--config", CONFIG, f"data.dir={data}", f"train.out_dir={run}",
                           f"train.epochs={epochs}", "train.checkpoint=false", "train.tensorboard=false",
                           "train.log_every_steps=20", *extra, env=env)
                wall = time.perf_counter() - t0
            finally:
                busy.kill()
                busy.wait()
            res = json.loads((run / "result.json").read_text())
            start = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
            threads = start.get("threads", "?")
            got[name].append({"train_s": res["train_seconds"], "sps": res["samples_per_s"], "wall": wall,
                              "auc": res.get("val", {}).get("auc", float("nan")), "load": l0, "threads": threads})
            g = got[name][-1]
            print(f"  round {r} {name:32s} threads {g['threads']}: train {g['train_s']:.1f} s "
                  f"({g['sps']:,.0f} samples/s), val AUC {g['auc']:.4f}, wall {g['wall']:.1f} s, load {l0:.1f}",
                  flush=True)
    base = statistics.median(g["train_s"] for g in got["threads=1"])
    print("| case | threads | train s (median) | vs threads=1 | val AUC |\n|---|---|---|---|---|")
    for name, gs in got.items():
        t = statistics.median(g["train_s"] for g in gs)
        print(f"| {name} | {gs[0]['threads']} | {t:.1f} | {t / base:.2f}x | {gs[-1]['auc']:.4f} |")


def _eval_vs_train(data: str, steps: int, rounds: int, overrides: Sequence[str] = (),
                   config: Optional[str] = CONFIG) -> List[dict]:
    import logging

    import torch
    from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

    from recsys_dist.config import load_config
    from recsys_dist.dist_env import setup_process
    from recsys_dist.job import build_sharded_model, make_reader
    from recsys_dist.optim import build_optimizer
    from recsys_dist.train import score_split

    import torch.distributed as dist

    logging.disable(logging.WARNING)
    cfg = load_config(config, [f"data.dir={data}", *overrides])
    env, threads = setup_process(cfg.train)
    built = build_sharded_model(cfg, env)
    opt = build_optimizer(built.dmp, built.model.dense_arch.architecture_parameters(), cfg.optim)
    reader = make_reader(cfg, built, env, "train")
    val_rows = built.metadata.splits["val"].rows
    out = []
    epoch = 0
    for _ in range(rounds):
        reader.set_epoch(epoch, 0)
        epoch += 1
        pipe = TrainPipelineSparseDist(built.dmp, opt, env.device, execute_all_batches=True)
        it = iter(reader)
        for _ in range(5):  # warm-up: fill the pipeline
            pipe.progress(it)
        dist.barrier()  # ranks start each timed part together (a no-op in a world of one)
        t0 = time.perf_counter()
        for _ in range(steps):
            float(pipe.progress(it)[0])
        train_sps = steps * cfg.data.batch_size / (time.perf_counter() - t0)
        pipe.detach()  # as train's validation does; the next round starts a new pipeline, as a new epoch does
        dist.barrier()
        t0 = time.perf_counter()
        score_split(built, cfg, env, "val")
        eval_sps = val_rows / (time.perf_counter() - t0)
        out.append({"train_sps": train_sps, "eval_sps": eval_sps, "threads": threads, "world": env.world_size,
                    "load": os.getloadavg()[0], "train_batch": cfg.data.batch_size,
                    "eval_batch": cfg.data.eval_batch_size, "val_rows": val_rows})
        del pipe
    torch.distributed.destroy_process_group()
    return out


RESULT = "bench_threads_eval result: "


def eval_throughput(data: Path, steps: int, rounds: int, ranks: int, overrides: Sequence[str] = (),
                    config: Optional[str] = CONFIG) -> None:
    if ranks == 1:
        print(f"\n2. scoring the val split vs training, same process, alternating ({rounds} rounds)"
              + (f"; {' '.join(overrides)}" if overrides else ""))
        rs = _eval_vs_train(str(data), steps, rounds, overrides, config)
    else:
        print(f"\n2b. the same on {ranks} gloo ranks (torchrun --standalone --nproc_per_node {ranks}), global "
              f"samples/s, alternating ({rounds} rounds)")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               __file__, "--eval-worker", str(data), "--steps", str(steps), "--rounds", str(rounds),
               f"--config={config or 'none'}", *(f"--set={o}" for o in overrides)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=3600)
        lines = [x for x in proc.stdout.splitlines() if x.startswith(RESULT)]
        if proc.returncode or not lines:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        rs = json.loads(lines[0][len(RESULT):])
    for i, r in enumerate(rs):
        print(f"  round {i}: train {r['train_sps']:,.0f} samples/s (batch {r['train_batch']}), score val "
              f"{r['eval_sps']:,.0f} samples/s (batch {r['eval_batch']}, {r['val_rows']} rows): "
              f"{r['eval_sps'] / r['train_sps']:.2f}x; {r['world']} rank(s) x {r['threads']} thread(s), "
              f"load {r['load']:.1f}")
    ratios = [r["eval_sps"] / r["train_sps"] for r in rs]
    print(f"scoring / training samples/s: median {statistics.median(ratios):.2f}x "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f}; target >= 3x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rows-per-day", type=int, default=40000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=60, help="timed training steps per round (section 2)")
    ap.add_argument("--skip-threads", action="store_true")
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--eval-ranks", default="1,2", help="world sizes of section 2, e.g. 1,2")
    ap.add_argument("--config", default=CONFIG,
                    help="section 2's config file (default: %(default)s; 'none': the built-in defaults)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override of section 2's config, e.g. --config none --set model.arch=optinter")
    ap.add_argument("--data", type=Path, help="a prepared dataset to use instead of synthesizing one")
    ap.add_argument("--eval-worker", metavar="DATA", help=argparse.SUPPRESS)  # one rank of section 2b
    a = ap.parse_args()
    if a.eval_worker:
        rs = _eval_vs_train(a.eval_worker, a.steps, a.rounds, a.set, None if a.config == "none" else a.config)
        if os.environ.get("RANK", "0") == "0":
            print(RESULT + json.dumps(rs), flush=True)
        return
    print(machine())
    with tempfile.TemporaryDirectory() as d:
        data = a.data or make_data(Path(d), a.rows_per_day)
        if not a.skip_eval:
            for ranks in map(int, a.eval_ranks.split(",")):
                eval_throughput(data, a.steps, a.rounds + 1, ranks, a.set, None if a.config == "none" else a.config)
        if not a.skip_threads:
            threads_under_load(data, Path(d) / "runs", a.rounds, a.epochs)


if __name__ == "__main__":
    main()
