"""OpenMP wait policies for one train process x 2 threads, on a quiet box and beside busy-loop processes.

    .venv/bin/python benchmarks/bench_omp_wait.py [--rounds 3] [--busy 0,1,4] [--steps 120]

`recsys-dist train` (DLRM, configs/dlrm_synthetic.yaml on planted synthetic data, batch 2048, train.threads=2,
no checkpoint / test) with: OMP_WAIT_POLICY=PASSIVE, GOMP_SPINCOUNT=100000 (spin about 1 ms, then sleep),
OMP_WAIT_POLICY=ACTIVE (spin), and nothing set (recsys_dist/omp_wait.py chooses), alternating in rounds, beside
0, 1 or more `while True: pass` processes started for each run. Prints samples/s and the median ratio to PASSIVE
per background. The box's own load (other jobs) adds to the busy loops: the load average is printed per run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

from bench_threads_eval import CONFIG, load, make_data
from common import ROOT, machine

WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "RECSYS_DIST_OMP_WAIT")
CASES: Dict[str, Dict[str, str]] = {
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin 100k": {"GOMP_SPINCOUNT": "100000"},
    "ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
    "default (chosen at start)": {},
}


def run(data: Path, out: Path, steps: int, env: Dict[str, str]) -> float:
    """samples/s of one train run with exactly `env`'s wait variables (none of this process's)."""
    clean = {k: v for k, v in os.environ.items() if k not in WAIT_VARS}
    p = subprocess.run([sys.executable, "-m", "recsys_dist.cli", "train", "--config", CONFIG, f"data.dir={data}",
                    f"train.out_dir={out}", "train.resume=never", "train.test=false", "train.tensorboard=false",
                    "train.checkpoint=false", "train.keep_best=false", f"train.max_steps={steps}", "train.threads=2"],
                   capture_output=True, text=True, cwd=ROOT, env={**clean, "PYTHONPATH": str(ROOT), **env})
    if p.returncode:
        raise SystemExit(f"train with {env} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads((out / "result.json").read_text())["samples_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--busy", default="0,1,4", help="busy-loop processes beside each run, comma-separated")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--rows-per-day", type=int, default=40000)
    a = ap.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as d:
        data = make_data(Path(d), a.rows_per_day)
        for n_busy in (int(x) for x in a.busy.split(",")):
            print(f"\nbeside {n_busy} busy-loop process(es)")
            got: Dict[str, List[float]] = {k: [] for k in CASES}
            for r in range(a.rounds):
                for name, env in CASES.items():
                    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n_busy)]
                    try:
                        l0 = load()
                        sps = run(data, Path(d) / f"run_{n_busy}_{r}_{len(got[name])}_{name[:4]}", a.steps, env)
                    finally:
                        for p in busy:
                            p.kill()
                            p.wait()
                    got[name].append(sps)
                    print(f"  round {r} {name:28s} {sps:9,.0f} samples/s  (load {l0:.1f})", flush=True)
            base = statistics.median(got["PASSIVE"])
            print(f"| beside {n_busy} busy | " + " | ".join(CASES) + " |")
            print("|---|" + "---|" * len(CASES))
            print("| samples/s (median) | " + " | ".join(f"{statistics.median(v):,.0f}" for v in got.values()) + " |")
            print("| vs PASSIVE | " + " | ".join(f"{statistics.median(v) / base:.2f}x" for v in got.values()) + " |")


if __name__ == "__main__":
    main()
