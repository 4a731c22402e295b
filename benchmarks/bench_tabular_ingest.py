"""Own-data ingest (`recsys-dist prepare --schema`) on shapes of real click logs: the same N rows with ISO-8601
times (the baseline), Avazu's `%y%m%d%H` hours read by `timestamp: {column: ts, format: ...}`, and with a newline
inside a quoted field in 10% of the records (RFC 4180 records over several lines). Each run is a CLI subprocess;
rounds alternate the cases; prints each case's median seconds, its ratio to the ISO file's, and the load average.

    .venv/bin/python benchmarks/bench_tabular_ingest.py              # 1M rows, 3 rounds (~2 min on 2 cores)
    .venv/bin/python benchmarks/bench_tabular_ingest.py --rows 50000 --rounds 1
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

import numpy as np

SCHEMA = ("label: clicked\ntimestamp: {ts}\nsplit: {{val: 0.1, test: 0.1}}\n"
          "categorical:\n  - {{column: user, hash_cap: 1000}}\n")
CASES = {"iso": "ts", "hour": '{column: ts, format: "%y%m%d%H"}', "multiline": "ts"}


def write_inputs(folder: Path, n: int) -> None:
    t = np.datetime64("2014-10-21T00") + (np.arange(n) * 37 % 240).astype("timedelta64[h]")
    iso = t.astype("datetime64[s]").astype(str)
    hour = np.char.add(np.char.add(np.char.add([x[2:4] for x in iso], [x[5:7] for x in iso]),
                                   [x[8:10] for x in iso]), [x[11:13] for x in iso])
    users = np.char.add("u", (np.arange(n) % 5000).astype(str))
    noted = np.where(np.arange(n) % 10 == 0, np.char.add(np.char.add('"', users), '\nnote"'), users)
    labels = (np.arange(n) % 3 == 0).astype(int).astype(str)
    for name, ts, user in (("iso", iso, users), ("hour", hour, users), ("multiline", iso, noted)):
        rows = np.char.add(np.char.add(np.char.add(ts, ","), user), np.char.add(",", labels))
        (folder / f"{name}.csv").write_text("ts,user,clicked\n" + "\n".join(rows.tolist()) + "\n")
        (folder / f"{name}.yaml").write_text(SCHEMA.format(ts=CASES[name]))


def run(folder: Path, name: str) -> float:
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "recsys_dist.cli", "prepare", "--schema", str(folder / f"{name}.yaml"),
                        "--input", str(folder / f"{name}.csv"), "--out", str(folder / f"out_{name}")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{name}: prepare failed:\n{r.stderr[-2000:]}")
    bad = json.loads((folder / f"out_{name}" / "metadata.json").read_text())["bad_rows"]["count"]
    if bad:  # every case reads every row: the same work
        raise SystemExit(f"{name}: {bad} bad rows:\n{r.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_inputs(folder, args.rows)
        times = {name: [] for name in CASES}
        for _ in range(args.rounds):
            for name in CASES:
                times[name].append(run(folder, name))
    base = statistics.median(times["iso"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:10s} {args.rows} rows: median {med:.2f} s ({', '.join(f'{x:.2f}' for x in ts)}), "
              f"x{med / base:.2f} of iso")
    print("load average:", open("/proc/loadavg").read().split()[:3], f"cpus {os.cpu_count()}")


if __name__ == "__main__":
    main()
