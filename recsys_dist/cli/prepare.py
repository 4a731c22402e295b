"""Convert raw Criteo TSV (day_N / train.txt, optionally .gz), or your own CSV / Parquet click log described by a
schema file (--schema, see docs/own_data.md), into Parquet shards + metadata.json.

Categorical fields: hash (id = int(hex, 16) mod prepare.hash_cap, empty -> 0) or vocab (0 empty, 1 OOV, 2.. values
seen >= prepare.min_count times in the train split). Dense fields: log (ln(1 + max(x, 0))), bucketize
(floor(ln(x)^2) for x > 2, as sparse features) or minmax ((x - min) / (max - min), train min / max, clipped) or standardize ((x - mean) / std, train
statistics, clipped to +-5). Split: day (last day halves into val / test), ratio (seeded), auto,
criteo_kaggle, criteo_terabyte. Bad rows are counted, skipped and recorded (file:line: reason): every one in
OUT/bad_rows.jsonl, the counts and first ones in metadata.json and on stderr; --strict stops at the first one
instead. A truncated or corrupt .gz keeps the rows before the damage and is reported apart.

examples:
  recsys-dist prepare --input data/raw --out data/prepared
  recsys-dist prepare --input day_0.gz day_1.gz day_2.gz prepare.categorical=vocab prepare.min_count=20
  recsys-dist prepare --input train.txt prepare.dense=bucketize prepare.split=ratio --strict
  recsys-dist prepare --schema schema.yaml --input clicks.csv --out data/own     # your own data
  recsys-dist prepare --schema schema.yaml --input train=tr.csv val=va.csv "test=te_*.csv"   # your own split
  recsys-dist prepare --input train.txt prepare.split=criteo_kaggle    # days 1-6 train, day 7 val / test
  recsys-dist prepare --config configs/optinter_search_criteo_kaggle.yaml   # + OptInter's cross counting pass
      (runs when data.cross_pairs is set and data.cross_min_count > 1; training then reuses the counts)
"""

from __future__ import annotations

import argparse
import sys

from recsys_dist.cli.common import bounded, config_from_args

RANK0_ONLY = True  # under a multi-rank launch, rank 0 does the work

FLAGS = (("input", "prepare.input"), ("out", "prepare.out_dir"), ("strict", "prepare.strict"),
         ("workers", "prepare.workers"), ("categorical", "prepare.categorical"), ("dense", "prepare.dense"),
         ("schema", "prepare.schema"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", nargs="+", metavar="PATH", help="raw files or folders (prepare.input); with --schema "
                   "also train=PATH val=PATH test=PATH: a split you already have, kept as given (globs allowed)")
    p.add_argument("--out", metavar="DIR", help="output dataset folder (prepare.out_dir)")
    p.add_argument("--strict", action="store_true", default=None, help="fail at the first bad row (prepare.strict)")
    p.add_argument("--workers", type=bounded(int, "prepare.workers"), help="processes, 0 = one per core (prepare.workers)")
    p.add_argument("--categorical", choices=("hash", "vocab"), help="prepare.categorical")
    p.add_argument("--dense", choices=("log", "bucketize", "minmax", "standardize"), help="prepare.dense")
    p.add_argument("--schema", metavar="YAML", help="own CSV / Parquet data: its schema file (prepare.schema); "
                   "the Criteo options above then do not apply")


def run(args: argparse.Namespace) -> int:
    from recsys_dist.data.bad_rows import PrepareConfigError
    from recsys_dist.data.criteo_prepare import PrepareError, prepare_criteo

    _overrides_after_input(args)
    job = config_from_args(args, FLAGS)
    cfg = job.prepare
    try:
        if cfg.schema:
            from recsys_dist.data.tabular_prepare import prepare_tabular

            md = prepare_tabular(cfg)
        else:
            md = prepare_criteo(cfg)
    except PrepareConfigError as e:  # the command or the schema, not the data: exit 2 as any config error
        print(f"recsys-dist prepare: config error: {e}", file=sys.stderr)
        return 2
    except PrepareError as e:
        print(f"recsys-dist prepare: error: {e}", file=sys.stderr)
        return 1
    for name, s in md.splits.items():
        ctr = s.positives / s.rows if s.rows else 0.0
        print(f"  {name:<6} {s.rows:>11} rows in {len(s.files)} file(s)  ctr {ctr:.4f}")
    from recsys_dist.data.oov_report import summary_lines, warning_lines

    for line in summary_lines(md.source.get("oov", {})):
        print(line)
    for line in warning_lines(md.source.get("oov", {})):
        print(line, file=sys.stderr)
    for line in summary_lines(md.source.get("oov_hashed", {}), hashed=True):
        print(line)
    for line in warning_lines(md.source.get("oov_hashed", {}), hashed=True):
        print(line, file=sys.stderr)
    if md.source.get("numeric_clipped"):
        from recsys_dist.data.numeric_transforms import report_lines

        summary, warnings = report_lines(md.source["numeric_clipped"],
                                         {k: v["transform"] for k, v in md.source.get("numeric", {}).items()})
        print("\n".join(summary))
        for line in warnings:
            print(line, file=sys.stderr)
    bad = md.bad_rows
    print(f"  bad rows skipped: {bad.get('count', 0)}" + (f" {bad['by_reason']} (all in {cfg.out_dir}/"
                                                          f"{bad.get('file')})" if bad.get("count") else ""))
    for d in bad.get("damaged_files", []):
        print(f"  damaged file: {d['file']}: {d['detail']} after line {d['last_line']}")
    tables = ", ".join(f"{f.name}:{f.num_embeddings}" for f in md.sparse_features)
    print(f"  tables ({md.sparse_features[0].encoding if md.sparse_features else '-'}): {tables}")
    print(f"  dense: {', '.join(md.dense_features) or '-'} ({md.dense_transform})")
    print(f"wrote {cfg.out_dir}/metadata.json")
    if job.data.cross_pairs is not None and job.data.cross_min_count > 1:
        _count_crosses(job, md)
    return 0


def _overrides_after_input(args: argparse.Namespace) -> None:
    """`--input train.txt prepare.dense=bucketize` (as the docs write it): argparse's nargs="+" takes the override
    as a path; a `section.key=value` item that is no existing path is an override again."""
    import dataclasses
    import os
    import re

    from recsys_dist.config import JobConfig

    sections = "|".join(f.name for f in dataclasses.fields(JobConfig))
    override = re.compile(rf"^({sections})\.[A-Za-z_][\w.]*=")
    moved = [x for x in args.input or [] if override.match(x) and not os.path.exists(x)]
    if moved:
        args.input = [x for x in args.input if x not in moved]
        args.overrides = list(args.overrides) + moved


def _count_crosses(job, md) -> None:
    """OptInter's frequency filter as a step of prepare: the counting pass over the new train split, cached in
    <out_dir>/cross_counts/ where training (data.dir = this folder) finds it instead of counting on first use."""
    import time

    from recsys_dist.data.cross_features import cross_features

    job.data.dir = job.prepare.out_dir
    t = time.perf_counter()
    tables, _ = cross_features(job, md)
    kept = sum(t.num_embeddings - 1 for t in tables)
    print(f"  cross features: {len(tables)} pair(s), {kept:,} frequent cross ids kept "
          f"(min count {job.data.cross_min_count})  [{time.perf_counter() - t:.1f}s]")
