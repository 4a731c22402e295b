"""Scaling with tables and ranks: train step time through our full path with 0, 50 and 325 OptInter cross
tables (recsys_dist.data.cross_features via data.cross_pairs) added to the 26 Criteo tables, and the base model
on 1 vs 2 ranks.

Tables: Kaggle cardinalities capped at 100k, cross tables at data.cross_table_rows=20000 (hashed), dim 16; arch
DeepFM (its dense cost is linear in the number of fields, so the added cost is the lookups, the bytes and a
wider first layer). All three table counts are built in the same 2 rank processes and timed in alternating
windows. For each it prints lookups and embedding bytes per step and the step time per lookup: with FBGEMM's
TBE (one batched kernel over all of a rank's tables) the cost should follow lookups and bytes, not the
number of tables. 1 vs 2 ranks: the foundation DLRM (bench_train_vs_torchrec's settings) in separate spawns,
alternated (1, 2, 1, 2, 1, 2), same global batch, same total cores (1 x 2 threads vs 2 x 1 thread).

    .venv/bin/python benchmarks/bench_table_scaling.py [--small]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

FIELDS = [f"C{i}" for i in range(1, 27)]


def _pairs(n: int) -> List[str]:
    out = [f"{FIELDS[i]},{FIELDS[j]}" for i in range(26) for j in range(i + 1, 26)]
    return out[:n]


def _arch(s: Dict[str, Any]):
    return "deepfm", {"dnn": s["dnn"], "dense_mlp": s["dense_mlp"]}


def _overrides(n_cross: int, s: Dict[str, Any]) -> List[str]:
    if n_cross == 0:
        return []
    pairs = "all" if n_cross == 325 else "[" + ",".join(f"'{p}'" for p in _pairs(n_cross)) + "]"
    return [f"data.cross_pairs={pairs}", f"data.cross_table_rows={s['cross_rows']}"]


def _window(o, steps: int) -> float:
    return common.step_window(o.pipeline, o.it, steps)


def _tables_rank(rank: int, world: int, data_dir: str, s: Dict[str, Any], counts: List[int]):
    from bench_train_vs_torchrec import build_ours

    built = {n: build_ours(data_dir, s, _overrides(n, s), None, arch=_arch(s)) for n in counts}
    for o in built.values():
        _window(o, s["warmup"])
    times = common.alternate({n: (lambda o=o: _window(o, s["steps"])) for n, o in built.items()}, s["rounds"])
    tables = {n: len(o.built.features.tables) for n, o in built.items()}
    return {"times": times, "tables": tables}


def _ranks_rank(rank: int, world: int, data_dir: str, s: Dict[str, Any]):
    """The foundation DLRM (bench_train_vs_torchrec's settings) on `world` ranks."""
    from bench_train_vs_torchrec import build_ours

    o = build_ours(data_dir, s, [], None)
    _window(o, s["warmup"])
    return _window(o, s["steps"])


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true")
    a = p.parse_args(argv)
    from recsys_dist.data.criteo_schema import KAGGLE_ROWS

    if a.small:
        s = dict(cap=2000, dim=8, batch=256, cross_rows=500, dnn=[32, 1], dense_mlp=[16, 8], warmup=2, rounds=2,
                 steps=2)
        counts = [0, 50]
    else:
        s = dict(cap=100_000, dim=16, batch=2048, cross_rows=20_000, dnn=[256, 256, 1], dense_mlp=[64, 16],
                 warmup=4, rounds=4, steps=6)
        counts = [0, 50, 325]
    cores = os.cpu_count() or 1
    print(f"machine: {common.machine()}")
    print(f"settings: global batch {s['batch']}, dim {s['dim']}, base tables capped at {s['cap']}, cross tables "
          f"{s['cross_rows']} rows, deepfm dnn {s['dnn']}; cross tables {counts}; 2 ranks x {cores // 2} threads")
    steps_needed = s["warmup"] + s["rounds"] * s["steps"] + 4
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        common.write_criteo_like(Path(tmp), max(steps_needed, 40) * s["batch"], KAGGLE_ROWS, rows_per_file=65536)
        r = common.run_ranks(_tables_rank, 2, (tmp, s, counts), threads=max(1, cores // 2))[0]
        from bench_train_vs_torchrec import _settings

        dlrm = _settings(a.small)
        dlrm["steps"] = 3 if a.small else 16
        ranks: Dict[int, List[float]] = {1: [], 2: []}
        for _ in range(2 if a.small else 3):
            for w in (1, 2):
                ranks[w].append(common.run_ranks(_ranks_rank, w, (tmp, dlrm), threads=max(1, cores // w))[0])
    base = statistics.median(r["times"][0])
    for n in counts:
        t = statistics.median(r["times"][n])
        fields = 26 + n
        lookups = s["batch"] * fields
        mb = lookups * s["dim"] * 4 * 3 / 1e6  # forward read + backward read/write of each looked-up row
        print(f"{n:>3} cross tables ({r['tables'][n]} tables, {lookups:,} lookups, ~{mb:.0f} MB/step): "
              f"step {common.ms(t)}, x{t / base:.2f} vs 0, {t / lookups * 1e9:.0f} ns per lookup")
    r1, r2 = statistics.median(ranks[1]), statistics.median(ranks[2])
    print(f"foundation DLRM, global batch {dlrm['batch']}: 1 rank x {cores} threads: {common.ms(r1)}/step; "
          f"2 ranks x {max(1, cores // 2)} threads: "
          f"{common.ms(r2)}/step (per spawn: 1 rank {', '.join(common.ms(x) for x in ranks[1])}; "
          f"2 ranks {', '.join(common.ms(x) for x in ranks[2])})")
    most = counts[-1]
    growth = (statistics.median(r["times"][most]) / base) / ((26 + most) / 26)
    print(f"ratio 2 ranks / 1 rank step time: {r2 / r1:.2f}")
    print(f"ratio step growth / lookup growth at {most} cross tables (<= 1: cost follows lookups): {growth:.2f}")
    return growth


if __name__ == "__main__":
    main()
