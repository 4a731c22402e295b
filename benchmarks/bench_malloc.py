"""Page faults and step time of our train step with and without `train.tune_malloc` (recsys_dist/malloc.py).

The foundation DLRM through the path `recsys-dist train` runs (build_ours: config -> sharded model, fused
optimizers, Parquet reader, TrainPipelineSparseDist), one process with every core (DMP world 1). mallopt is
process-wide and read at the first allocation, so each side runs in a fresh process; the sides alternate.
Per process: warm-up steps, then a window of steps with the minor page faults (getrusage) counted.

    .venv/bin/python benchmarks/bench_malloc.py [--small] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def _child(data_dir: str, tuned: bool, small: bool, steps: int) -> None:
    from bench_train_vs_torchrec import _settings, build_ours

    s = _settings(small)
    o = build_ours(data_dir, s, [f"train.tune_malloc={str(tuned).lower()}"], None)
    common.step_window(o.pipeline, o.it, s["warmup"])
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    sec = common.step_window(o.pipeline, o.it, steps)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    print(json.dumps({"step": sec, "faults": faults}))


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--child", choices=["tuned", "default"], help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        common.quiet()
        import torch.distributed as dist

        _child(a.data, a.child == "tuned", a.small, a.steps)
        dist.destroy_process_group()
        return 0.0
    from bench_train_vs_torchrec import _settings
    from recsys_dist.data.criteo_schema import KAGGLE_ROWS

    s = _settings(a.small)
    steps = 3 if a.small else a.steps
    print(f"machine: {common.machine()}")
    print(f"settings: 1 process x {os.cpu_count()} threads, global batch {s['batch']}, dim {s['dim']}, bottom "
          f"{s['bottom']}, top {s['top']}, tables capped at {s['cap']}, {s['warmup']} warm-up + {steps} timed steps "
          f"per process, {a.rounds} alternations")
    res = {"default": [], "tuned": []}
    with tempfile.TemporaryDirectory(prefix="bench_malloc_") as tmp:
        cards = KAGGLE_ROWS if not a.small else [min(r, s["cap"]) for r in KAGGLE_ROWS]
        common.write_criteo_like(Path(tmp), (s["warmup"] + steps + 4) * s["batch"], cards, rows_per_file=65536)
        for r in range(a.rounds):
            for side in ("default", "tuned"):
                cmd = [sys.executable, __file__, "--child", side, "--data", tmp, "--steps", str(steps)]
                out = subprocess.run(cmd + (["--small"] if a.small else []), capture_output=True, text=True,
                                     timeout=1800)
                if out.returncode != 0:
                    raise SystemExit(f"child {side} failed:\n{out.stderr[-3000:]}")
                res[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
            d, t = res["default"][-1], res["tuned"][-1]
            print(f"round {r}: default {common.ms(d['step'])}/step, {d['faults']:,.0f} minor faults/step; "
                  f"tune_malloc {common.ms(t['step'])}/step, {t['faults']:,.0f} minor faults/step; "
                  f"ratio {d['step'] / t['step']:.2f}")
    ratio = statistics.median(d["step"] / t["step"] for d, t in zip(res["default"], res["tuned"]))
    faults = [statistics.median(x["faults"] for x in res[k]) for k in ("default", "tuned")]
    print(f"minor page faults per step (medians): default {faults[0]:,.0f}, tune_malloc {faults[1]:,.0f}")
    print(f"ratio step time default / tune_malloc (> 1: tuning helps): {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main()
