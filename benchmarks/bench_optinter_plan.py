"""The sharding plan of OptInter on Criteo Kaggle: 26 base tables + 325 cross tables (OptInter-M), and a retrain
that keeps 117 of them (Table VI's Criteo count), planned by embedding_sharding for a hypothetical cluster.

No data is needed: the model is built on the meta device from Criteo Kaggle's raw cardinalities
(criteo_schema.KAGGLE_ROWS) and cross tables of min(rows_i * rows_j, cross_table_rows) rows, i.e. the size
before the min-count filter (an upper bound: the filter only shrinks them). Prints, per case, the sharding types
and compute kernels the planner chose, table counts, bytes per rank, planning time (wall and CPU: the box may be
shared) with the default search budget, and whether the search stopped early.

    .venv/bin/python benchmarks/bench_optinter_plan.py [--world 8] [--gpu A100-80] [--dim 20]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections import Counter

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedding_sharding.planner import make_plan  # noqa: E402
from embedding_sharding.sharders import CTREmbeddingBagCollectionSharder
from embedding_sharding.topology import GPU_PRESETS, make_topology
from recsys_dist.data.criteo_schema import CATEGORICAL_NAMES, KAGGLE_ROWS
from recsys_dist.data.cross_features import make_pairs
from recsys_dist.models.model import CTRTrainModel, build_model
from recsys_dist.models.sparse import TableSpec


def tables_for(pairs, dim: int, cross_rows: int):
    rows = dict(zip(CATEGORICAL_NAMES, KAGGLE_ROWS))
    base = [TableSpec(n, r, dim) for n, r in rows.items()]
    return base + [TableSpec(p.name, p.buckets, dim) for p in make_pairs(pairs, rows, cross_rows)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", type=int, default=8)
    ap.add_argument("--gpu", default="A100-80", choices=sorted(GPU_PRESETS))
    ap.add_argument("--dim", type=int, default=20)
    ap.add_argument("--cross-rows", type=int, default=4194304)
    ap.add_argument("--kept", type=int, default=117, help="memorized pairs kept by the retrain case")
    a = ap.parse_args()
    names = list(CATEGORICAL_NAMES)
    all_pairs = [(names[i], names[j]) for i in range(26) for j in range(i + 1, 26)]
    kept = sorted(random.Random(0).sample(all_pairs, a.kept), key=all_pairs.index)
    topo = make_topology(a.world, a.world, "cuda", gpu=a.gpu)
    print(f"topology: {a.world} x {a.gpu}, dim {a.dim}, cross tables capped at {a.cross_rows} rows")
    print("| case | tables | rows | GiB (fp32) | sharding types | kernels | max GiB / rank | plan s wall / CPU "
          "| search | load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case, pairs in (("base only (26)", []), ("OptInter-M (26 + 325)", all_pairs),
                        (f"retrain (26 + {a.kept})", kept)):
        tables = tables_for(pairs, a.dim, a.cross_rows)
        model = CTRTrainModel(build_model(tables, 13, "optinter", {
            "methods": "memorize" if pairs else "naive", "mlp": [700] * 5}))
        sharder = CTREmbeddingBagCollectionSharder()
        load = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        res = make_plan(model, topo, [sharder], batch_size=2000 // a.world)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        search = "stopped early" if res.search.stopped_early else "complete"
        [plan] = res.plan.plan.values()
        types = Counter(p.sharding_type for p in plan.values())
        kernels = Counter(p.compute_kernel for p in plan.values())
        per_rank = Counter()
        for o in res.options:
            for s in o.shards:
                per_rank[s.rank] += s.storage.hbm + s.storage.ddr
        rows = sum(t.num_embeddings for t in tables)
        print(f"| {case} | {len(tables)} | {rows / 1e6:.0f}M | {rows * a.dim * 4 / 2**30:.1f} | "
              f"{dict(types)} | {dict(kernels)} | {max(per_rank.values()) / 2**30:.1f} | {secs:.1f} / {cpu:.1f} | {search} | {load:.1f} |")


if __name__ == "__main__":
    main()
