"""A small, non-Criteo click log with a planted signal, and its schema file: the worked example of docs/own_data.md.

    python -m recsys_dist.data.example_clicklog --out data/example --rows 20000            # clicks.csv
    python -m recsys_dist.data.example_clicklog --out data/example --format parquet        # clicks.parquet

Columns: `ts` (ISO-8601, increasing over `days`), `user_id` / `item_id` / `device` (strings), `tags` (1-4 of 12
tags, "|"-separated in CSV, a list column in Parquet), `price` (log-normal), `clicked` (0/1). The label is drawn
from a known logistic model:

    logit p = b + a_device[d] + w_item[i] + mean_{t in tags} v_tag[t] + <u_user[u], c_cat(i)> - 0.8 z_price

with z_price = standardized log(price), cat(i) the item's category (of 6) and u_user, c_cat in R^3: a main effect
per categorical field, a multi-valued field whose tags matter through their mean, a user x item interaction and a
numeric effect. b is set so the click rate is ~`ctr`. `example_report.json` holds the Bayes AUC (the AUC of the
true probabilities against the drawn labels), the best any model can reach on this data. Same arguments, same bytes.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsys_dist.data.synth import bayes_auc

SCHEMA_YAML = """\
# recsys-dist prepare --schema: the example click log (recsys_dist/data/example_clicklog.py)
label: clicked
timestamp: ts                 # time-ordered split: the newest rows are val / test
split: {val: 0.1, test: 0.1}
categorical:
  - {column: user_id, min_count: 2, name: user}
  - {column: item_id, min_count: 1, name: item}
  - {column: device, name: device}
multi_valued:
  - {column: tags, separator: "|", pooling: mean, max_length: 4}
numeric:
  - {column: price, transform: log}
cross_pairs: [[user, item]]
"""

TAGS = ("sports", "news", "music", "film", "games", "food", "travel", "tech", "style", "kids", "home", "auto")
DEVICES = ("mobile", "desktop", "tablet")


def generate(rows: int = 20000, users: int = 60, items: int = 50, days: int = 14, ctr: float = 0.3,
             seed: int = 0) -> Dict[str, Any]:
    """Columns of the example click log (numpy / lists) and the true click probabilities, in time order."""
    rng = np.random.default_rng(seed)
    a_device = rng.normal(0, 0.4, len(DEVICES))
    w_item = rng.normal(0, 0.7, items)
    v_tag = rng.normal(0, 1.0, len(TAGS))
    u_user = rng.normal(0, 0.8, (users, 3))
    c_cat = rng.normal(0, 0.8, (6, 3))
    item_cat = rng.integers(0, 6, items)
    zipf = 1.0 / np.arange(1, items + 1) ** 0.8
    user = rng.integers(0, users, rows)
    item = rng.choice(items, rows, p=zipf / zipf.sum())
    device = rng.choice(len(DEVICES), rows, p=[0.6, 0.3, 0.1])
    n_tags = rng.integers(1, 5, rows)
    tag_ids = [rng.choice(len(TAGS), k, replace=False) for k in n_tags]
    log_price = rng.normal(3.0, 1.0, rows)
    tag_mean = np.array([v_tag[t].mean() for t in tag_ids])
    z = a_device[device] + w_item[item] + tag_mean + (u_user[user] * c_cat[item_cat[item]]).sum(1) \
        - 0.8 * (log_price - 3.0)
    lo, hi = -20.0, 20.0  # bias b: bisection so that the mean click probability is ctr
    for _ in range(60):
        b = (lo + hi) / 2
        lo, hi = (b, hi) if (1 / (1 + np.exp(-(z + b)))).mean() < ctr else (lo, b)
    p = 1 / (1 + np.exp(-(z + b)))
    clicked = (rng.random(rows) < p).astype(np.int8)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    seconds = np.sort(rng.integers(0, days * 86400, rows))
    ts = [(start + timedelta(seconds=int(s))).strftime("%Y-%m-%dT%H:%M:%S") for s in seconds]
    return {"ts": ts, "user_id": [f"u{u:04d}" for u in user], "item_id": [f"item-{i:03d}" for i in item],
            "device": [DEVICES[d] for d in device], "tags": [[TAGS[t] for t in ts_] for ts_ in tag_ids],
            "price": np.round(np.exp(log_price), 2), "clicked": clicked, "p": p}


def write_example(out: str | Path, rows: int = 20000, fmt: str = "csv", seed: int = 0, **kw: Any) -> Dict[str, Any]:
    """Writes clicks.csv (or clicks.parquet), schema.yaml and example_report.json into `out`; returns the report."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"format {fmt!r} is not csv or parquet")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    d = generate(rows, seed=seed, **kw)
    tags = (pa.array(d["tags"], pa.list_(pa.string())) if fmt == "parquet"
            else pa.array(["|".join(t) for t in d["tags"]]))
    table = pa.table({"ts": d["ts"], "user_id": d["user_id"], "item_id": d["item_id"], "device": d["device"],
                      "tags": tags, "price": d["price"], "clicked": d["clicked"]})
    data = out / f"clicks.{fmt}"
    if fmt == "csv":
        pacsv.write_csv(table, data, pacsv.WriteOptions(quoting_style="none"))
    else:
        pq.write_table(table, data)
    (out / "schema.yaml").write_text(SCHEMA_YAML)
    split = int(rows * 0.9)  # the time split's test part is the newest 10%
    report = {"rows": rows, "seed": seed, "ctr": float(d["clicked"].mean()),
              "bayes_auc": bayes_auc(d["p"], d["clicked"]),
              "bayes_auc_newest_10pct": bayes_auc(d["p"][split:], d["clicked"][split:]),
              "data": str(data), "schema": str(out / "schema.yaml")}
    (out / "example_report.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m recsys_dist.data.example_clicklog", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--format", choices=("csv", "parquet"), default="csv")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    report = write_example(args.out, args.rows, args.format, args.seed)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
