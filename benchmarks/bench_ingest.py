"""Ingest: `recsys-dist prepare` (recsys_dist.data.criteo_prepare.prepare_criteo) rows/s and peak RSS vs
TorchRec's `python -m torchrec.datasets.scripts.npy_preproc_criteo` on the same synthetic Criteo day file, and
our peak RSS as the input grows (1x, 4x, 16x).

Every run is its own subprocess (`python bench_ingest.py --child ...`), which reports its wall time; its peak
RSS is the largest sum of VmRSS over its process tree (job + worker processes), sampled every 20 ms from /proc
(getrusage's ru_maxrss is not usable here: Linux carries the forking parent's peak into the child across exec). Speed runs alternate: ours,
TorchRec's, ours, TorchRec's ... on the same file; the ratio is the median of the per-round ratios.

The day file comes from recsys_dist.data.synth (Criteo TSV with a planted signal, 264 bytes a row); 4x / 16x
are that file repeated (the same rows again: the parse and encode work per row is the same). TorchRec's script
loads a whole file into Python lists, so its RSS grows with the file; ours reads 8 MiB blocks without read-ahead.

    .venv/bin/python benchmarks/bench_ingest.py        # 2M-row day file (528 MB); RSS at 2M / 8M / 32M rows (8.4 GB
                                                       # of input at 16x; ~7-13 min on 2 cores)
    .venv/bin/python benchmarks/bench_ingest.py --speed-rows 250000 --rss-rows 250000   # quicker (~2 min)
    .venv/bin/python benchmarks/bench_ingest.py --small    # 20k rows; RSS at 20k / 80k / 320k
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _child(kind: str, day_dir: str, out: str, workers: int) -> None:
    t = time.perf_counter()
    rows = 0
    if kind == "baseline":  # our run's imports alone: what it pays before reading a row
        from recsys_dist.config import PrepareConfig  # noqa: F401
        from recsys_dist.data.criteo_prepare import prepare_criteo  # noqa: F401
    elif kind == "ours":
        from recsys_dist.config import PrepareConfig
        from recsys_dist.data.criteo_prepare import prepare_criteo

        md = prepare_criteo(PrepareConfig(input=[str(Path(day_dir) / "day_0")], out_dir=out, split="ratio",
                                          workers=workers), progress=False)
        rows = sum(s.rows for s in md.splits.values())
    else:
        import contextlib
        import io

        from torchrec.datasets.scripts.npy_preproc_criteo import main as npy_main

        with contextlib.redirect_stdout(io.StringIO()):
            npy_main(["--input_dir", day_dir, "--output_dir", out, "--dataset_name", "criteo_1tb"])
        import numpy as np

        rows = int(np.load(Path(out) / "day_0_labels.npy", mmap_mode="r").shape[0])
    seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "rows": rows, "hwm_mb": _status_kb(os.getpid(), "VmHWM") / 1024}))


def _status_kb(pid: int, key: str) -> int:
    """A /proc/<pid>/status field in kB (0 if the process is gone). VmHWM is the peak RSS of the process's own
    address space: unlike getrusage's ru_maxrss it does not inherit the forking parent's peak across exec."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _tree(root: int) -> List[int]:
    children: Dict[int, List[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def run_child(kind: str, day_dir: Path, workers: int = 1) -> Dict[str, float]:
    """Runs one job in a subprocess; peak RSS = the largest sampled sum of VmRSS over its process tree (every
    20 ms; the job and its worker processes), and the job process's own VmHWM."""
    with tempfile.TemporaryDirectory(prefix=f"ingest_{kind}_") as out:
        p = subprocess.Popen([sys.executable, __file__, "--child", kind, str(day_dir), out, str(workers)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        peak = 0
        while p.poll() is None:
            peak = max(peak, sum(_status_kb(pid, "VmRSS") for pid in _tree(p.pid)))
            time.sleep(0.02)
        stdout, stderr = p.communicate()
        if p.returncode:
            raise RuntimeError(f"{kind} run failed:\n{stderr[-3000:]}")
        r = json.loads(stdout.strip().splitlines()[-1])
        r["rss_mb"] = max(peak / 1024, r["hwm_mb"])
        return r


def make_day(folder: Path, base: Path, copies: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "day_0", "wb") as out:
        for _ in range(copies):
            with open(base, "rb") as f:
                shutil.copyfileobj(f, out, 16 << 20)
    return folder


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true")
    p.add_argument("--speed-rows", type=int, default=2_000_000, help="rows of the speed-test day file")
    p.add_argument("--rss-rows", type=int, default=2_000_000,
                   help="rows of the 1x RSS day file (4x and 16x are this file repeated)")
    p.add_argument("--child", nargs=4, metavar=("KIND", "DAY_DIR", "OUT", "WORKERS"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:  # no `common` here: it imports torch, which `recsys-dist prepare` does not load
        import logging
        import warnings

        warnings.filterwarnings("ignore")
        logging.disable(logging.WARNING)
        return _child(a.child[0], a.child[1], a.child[2], int(a.child[3]))
    import common

    from recsys_dist.config import SynthConfig
    from recsys_dist.data.synth import synthesize

    speed_rows, rss_rows = (20_000, 20_000) if a.small else (a.speed_rows, a.rss_rows)
    unit = math.gcd(speed_rows, rss_rows)  # synthesized once; both day files are copies of it
    rounds = 2
    workers = os.cpu_count() or 1
    print(f"machine: {common.machine()}")
    print(f"settings: speed on a {speed_rows}-row day file ({rounds} alternating rounds); ours with 1 worker "
          f"and with prepare.workers=0 ({workers} here); RSS at {rss_rows} x 1 / 4 / 16 rows (ours, 1 worker)")
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        tmp = Path(tmp)
        synthesize(SynthConfig(out_dir=str(tmp / "synth"), days=1, rows_per_day=unit, seed=0))
        base = tmp / "synth" / "day_0"
        speed_dir = make_day(tmp / "speed", base, speed_rows // unit)
        mb = (speed_dir / "day_0").stat().st_size / 1e6
        res: Dict[str, List[Dict[str, float]]] = {"ours": [], "ours_1w": [], "torchrec": []}
        for _ in range(rounds):
            res["ours"].append(run_child("ours", speed_dir, 0))
            res["torchrec"].append(run_child("torchrec", speed_dir))
            res["ours_1w"].append(run_child("ours", speed_dir, 1))
        for k, runs in res.items():
            for r in runs:
                if r["rows"] != speed_rows:
                    raise RuntimeError(f"{k}: wrote {r['rows']} rows, expected {speed_rows}")
        print(f"day file: {speed_rows} rows, {mb:.0f} MB")
        for i in range(rounds):
            o, w, t = res["ours"][i], res["ours_1w"][i], res["torchrec"][i]
            print(f"round {i}: ours {speed_rows / o['seconds']:,.0f} rows/s (1 worker: "
                  f"{speed_rows / w['seconds']:,.0f}), torchrec {speed_rows / t['seconds']:,.0f} rows/s; peak RSS "
                  f"ours {o['rss_mb']:.0f} MB (all its processes), ours 1 worker {w['rss_mb']:.0f} MB, torchrec "
                  f"{t['rss_mb']:.0f} MB")
        (speed_dir / "day_0").unlink()
        base_mb = run_child("baseline", tmp, 1)["rss_mb"]
        print(f"RSS of our imports alone: {base_mb:.0f} MB")
        rss = {}
        for k in (1, 4, 16):
            d = make_day(tmp / f"rss{k}", base, k * rss_rows // unit)
            r = run_child("ours", d, 1)
            rss[k] = r["rss_mb"]
            (d / "day_0").unlink()
            print(f"ours at {k:>2}x ({k * rss_rows} rows): peak RSS {r['rss_mb']:.0f} MB "
                  f"({r['rss_mb'] - base_mb:.0f} MB above the imports), "
                  f"{k * rss_rows / r['seconds']:,.0f} rows/s")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"RSS growth 16x / 1x input above the imports: {(rss[16] - base_mb) / max(rss[1] - base_mb, 1):.2f}")
    print(f"RSS growth 16x / 1x input (target <= 1.20): {rss[16] / rss[1]:.2f}")
    speed_1w = statistics.median(t["seconds"] / w["seconds"] for t, w in zip(res["torchrec"], res["ours_1w"]))
    print(f"ratio ours (1 worker) / torchrec rows/s: {speed_1w:.2f}")
    ratio = statistics.median(t["seconds"] / o["seconds"] for t, o in zip(res["torchrec"], res["ours"]))
    print(f"ratio ours (prepare.workers=0) / torchrec rows/s (target >= 5): {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main()
