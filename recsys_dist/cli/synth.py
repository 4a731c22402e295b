"""Write Criteo-format click logs with a planted, learnable signal, and print the generator's own (Bayes) AUC.

Rows come from a known logistic model (main effects of some categorical fields, planted pairwise interactions
<u_f[v_f], u_g[v_g]>, a dense effect through log1p(I_d); Zipf value frequencies, empty fields). Files: day_0 ..
day_{N-1} (layout terabyte) or train.txt (layout kaggle), optionally .gz, plus synth_report.json with the
parameters, the planted pairs and the Bayes AUC overall and per file.

examples:
  recsys-dist synth --out data/raw
  recsys-dist synth synth.days=24 synth.rows_per_day=1000000 synth.gzip=true
  recsys-dist synth --layout kaggle synth.rows_per_day=50000
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from recsys_dist.cli.common import bounded, config_from_args

RANK0_ONLY = True  # under a multi-rank launch, rank 0 does the work

RAW_NAME = re.compile(r"^(day_\d+|train\.txt)(\.gz)?$")  # what `prepare --input DIR` reads of a folder

FLAGS = (("out", "synth.out_dir"), ("days", "synth.days"), ("rows_per_day", "synth.rows_per_day"),
         ("layout", "synth.layout"), ("gzip", "synth.gzip"), ("seed", "synth.seed"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="DIR", help="output folder (synth.out_dir)")
    p.add_argument("--days", type=bounded(int, "synth.days"), help="number of day files (synth.days)")
    p.add_argument("--rows-per-day", dest="rows_per_day", type=bounded(int, "synth.rows_per_day"), help="rows per day (synth.rows_per_day)")
    p.add_argument("--layout", choices=("terabyte", "kaggle"), help="day_N files or one train.txt (synth.layout)")
    p.add_argument("--gzip", action="store_true", default=None, help="write .gz files (synth.gzip=true)")
    p.add_argument("--seed", type=bounded(int, "synth.seed"), help="generator seed (synth.seed)")


def run(args: argparse.Namespace) -> int:
    from recsys_dist.data.synth import REPORT_FILE, synthesize

    cfg = config_from_args(args, FLAGS).synth
    try:
        rep = synthesize(cfg, progress=True)
    except ValueError as e:
        print(f"recsys-dist synth: error: {e}", file=sys.stderr)
        return 2
    for name, f in rep["files"].items():
        print(f"  {name:<14} {f['rows']:>10} rows  ctr {f['positives'] / f['rows']:.4f}  bayes auc {f['bayes_auc']:.4f}")
    print(f"wrote {rep['rows']} rows to {cfg.out_dir} in {rep['seconds']:.1f} s "
          f"({rep['rows'] / max(rep['seconds'], 1e-9):,.0f} rows/s); planted pairs: "
          + ", ".join("x".join(p) for p in rep["planted_pairs"]))
    print(f"bayes auc {rep['bayes_auc']:.4f} (the generator's own AUC; report: {cfg.out_dir}/{REPORT_FILE})")
    stale = sorted(p.name for p in Path(cfg.out_dir).iterdir() if RAW_NAME.match(p.name) and p.name not in rep["files"])
    if stale:
        print(f"recsys-dist synth: warning: {cfg.out_dir} also holds {', '.join(stale)}, not written by this run (nor "
              f"described by {REPORT_FILE}); `prepare --input {cfg.out_dir}` would read them too: delete them or "
              f"synthesize into an empty folder", file=sys.stderr)
    return 0
