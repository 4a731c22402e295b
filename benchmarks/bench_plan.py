"""Wall time to plan Criteo-TB (26 MLPerf tables) + OptInter's 325 cross tables for 16 nodes x 8 GPUs.

    .venv/bin/python benchmarks/bench_plan.py [--time-budget 5]

Prints the end-to-end planning time (model on meta -> ShardingPlan + report) against the 30 s target, and, as
a same-run reference, TorchRec's stock per-shard estimator vs embedding_sharding.estimator.DedupPerfEstimator
on the enumeration stage (26 tables, 128 ranks), which dominates at this scale.
"""

from __future__ import annotations

import argparse
import logging
import time

from torchrec.distributed.planner.enumerators import EmbeddingEnumerator
from torchrec.distributed.planner.estimator.estimator import EmbeddingPerfEstimatorFactory
from torchrec.distributed.planner.constants import DEFAULT_PERF_ESTIMATOR
from torchrec.distributed.planner.shard_estimators import EmbeddingStorageEstimator

from embedding_sharding.estimator import DedupPerfEstimator
from embedding_sharding.planner import make_plan
from embedding_sharding.presets import preset_tables
from embedding_sharding.report import build_report
from embedding_sharding.sharders import CTREmbeddingBagCollectionSharder
from embedding_sharding.topology import make_topology
from recsys_dist.models.model import CTRTrainModel, build_model

DLRM = {"bottom_mlp": [512, 256, 128], "top_mlp": [1024, 1024, 512, 256, 1]}


def model(preset: str):
    return CTRTrainModel(build_model(preset_tables(preset), 13, "dlrm", DLRM, "meta", "meta"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--time-budget", type=float, default=5.0)
    ap.add_argument("--nodes", type=int, default=16)
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    ws = args.nodes * 8
    topo = make_topology(ws, 8, "cuda", gpu="A100-80")
    sharders = [CTREmbeddingBagCollectionSharder()]

    # reference: the enumeration stage with TorchRec's estimator vs ours (same inputs, 26 tables)
    small = model("criteo-tb")
    times = {}
    for name, perf in (("torchrec", EmbeddingPerfEstimatorFactory.create(DEFAULT_PERF_ESTIMATOR, topology=topo)),
                       ("dedup", DedupPerfEstimator(topo))):
        enum = EmbeddingEnumerator(topology=topo, batch_size=64,
                                   estimator=[perf, EmbeddingStorageEstimator(topology=topo)])
        t0 = time.perf_counter()
        options = enum.enumerate(small, sharders)
        times[name] = time.perf_counter() - t0
        totals = sorted(round(sum(s.perf.total for s in o.shards), 9) for o in options)
        times[name + "_perf"] = totals
    assert times["torchrec_perf"] == times["dedup_perf"], "estimates differ"
    print(f"enumerate criteo-tb (26 tables) on {ws} ranks: torchrec estimator {times['torchrec']:.2f} s, "
          f"dedup {times['dedup']:.2f} s, speed-up x{times['torchrec'] / times['dedup']:.1f} (same estimates)")

    big = model("criteo-tb+optinter")
    t0 = time.perf_counter()
    result = make_plan(big, topo, sharders, batch_size=64, time_budget_s=args.time_budget)
    report = build_report(result)
    wall = time.perf_counter() - t0
    tot = report["totals"]
    print(f"plan criteo-tb+optinter ({tot['tables']} tables, {tot['rows']:,} rows) on {args.nodes} x 8 A100-80: "
          f"{wall:.1f} s wall (search budget {args.time_budget:g} s), target 30 s: ratio {wall / 30:.2f}; "
          f"types {tot['tables_by_sharding_type']}, slowest rank {tot['max_rank_total_ms']:.2f} ms/step")


if __name__ == "__main__":
    main()
