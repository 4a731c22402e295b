"""Planning time and plan quality of `recsys-dist plan` with its default search budget, run as a user runs it.

    .venv/bin/python benchmarks/bench_plan.py [--quick]

1. Quality: Criteo Kaggle and Terabyte (26 tables) on 8 / 16 / 32 H100s, the default budget vs TorchRec's full
   search (`--time-budget 0`), alternating in one run: the estimated slowest-rank step time of both plans and
   their ratio (target: the default within 5 %).
2. Time: criteo-tb+optinter (351 tables) on 16 x 8 H100, the docs' command with no flag: wall time (target 30 s)
   and the process's CPU time (what the wall time would be on an idle machine: planning is single-threaded).
3. Enumeration: TorchRec's enumerator + estimators vs ours (no deep copy of the search space, estimates once
   per distinct shape and shard size) on the 351 tables, with the estimates asserted identical.

Every line carries the load average: the box may be shared, and wall times then stretch; ratios and CPU times
much less.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

from common import ROOT, machine

CLI = [sys.executable, "-m", "recsys_dist.cli", "plan"]


def load() -> str:
    return "load %.1f" % os.getloadavg()[0]


def run_plan(args: List[str], out: Path) -> Tuple[Dict[str, Any], float, float, str]:
    """(report, wall s, child CPU s, stderr) of one `recsys-dist plan ... --format json --out out`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(CLI + args + ["--format", "json", "--out", str(out)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"plan {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    report = json.loads(out.with_name(out.stem + ".report.json").read_text())
    return report, wall, cpu, proc.stderr


def quality(tmp: Path, world_sizes: List[int]) -> None:
    print("\n1. plan quality, default search budget vs TorchRec's full search (--time-budget 0), same run")
    print("| preset | GPUs | default: slowest rank ms | full: slowest rank ms | default / full | default s "
          "(stopped early?) | full s | load |")
    print("|---|---|---|---|---|---|---|---|")
    for preset in ("criteo-kaggle", "criteo-tb"):
        for ws in world_sizes:
            base = ["--preset", preset, "--world-size", str(ws), "--local-world-size", "8", "--gpu", "H100"]
            l0 = load()
            default, t_def, _, _ = run_plan(base, tmp / "default.json")
            full, t_full, _, _ = run_plan(base + ["--time-budget", "0"], tmp / "full.json")
            a, b = default["totals"]["max_rank_total_ms"], full["totals"]["max_rank_total_ms"]
            early = "yes" if default["search"]["stopped_early"] else "no"
            print(f"| {preset} | {ws} | {a:.4f} | {b:.4f} | {a / b:.3f} | {t_def:.1f} ({early}) | {t_full:.1f} "
                  f"| {l0} |", flush=True)


def scale(tmp: Path) -> None:
    print("\n2. criteo-tb+optinter (351 tables) on 16 x 8 H100, the docs' command, no flag")
    l0 = load()
    report, wall, cpu, err = run_plan(["--preset", "criteo-tb+optinter", "--world-size", "128",
                                       "--local-world-size", "8", "--gpu", "H100"], tmp / "big.json")
    s = report["search"]
    print(f"wall {wall:.1f} s (target 30 s: ratio {wall / 30:.2f}), CPU {cpu:.1f} s (ratio {cpu / 30:.2f}); "
          f"enumeration {s['enumerate_s']:.1f} s, search {s['seconds']:.1f} s of a {s['budget_s']:g} s budget; "
          f"{l0} at start, {load()} at end")
    print(f"search: {s['summary']}")
    print(f"plan: {report['totals']['tables_by_sharding_type']}, slowest rank "
          f"{report['totals']['max_rank_total_ms']:.4f} ms/step")
    print("progress lines the user saw (stderr):")
    print("\n".join("  " + line for line in err.strip().splitlines()))


def enumeration() -> None:
    import logging

    from torchrec.distributed.planner.enumerators import EmbeddingEnumerator
    from torchrec.distributed.planner.shard_estimators import EmbeddingPerfEstimator, EmbeddingStorageEstimator

    from embedding_sharding.enumerator import SearchSpaceEnumerator
    from embedding_sharding.estimator import DedupPerfEstimator, SharedShapeEstimates
    from embedding_sharding.planner import table_constraints
    from embedding_sharding.presets import preset_tables
    from embedding_sharding.sharders import CTREmbeddingBagCollectionSharder
    from embedding_sharding.topology import make_topology
    from recsys_dist.models.model import CTRTrainModel, build_model

    logging.getLogger("embedding_sharding").setLevel(logging.WARNING)
    print("\n3. enumeration of criteo-tb+optinter (351 tables) on 128 H100: TorchRec's vs ours, same run")
    model = CTRTrainModel(build_model(preset_tables("criteo-tb+optinter"), 13, "dlrm",
                                      {"bottom_mlp": [512, 256, 128], "top_mlp": [1024, 1024, 512, 256, 1]},
                                      "meta", "meta"))
    topo = make_topology(128, 8, "cuda", gpu="H100")
    pc = table_constraints(model)
    sharders = [CTREmbeddingBagCollectionSharder()]
    ours = SearchSpaceEnumerator(topology=topo, batch_size=512, constraints=pc, estimator=SharedShapeEstimates(
        [DedupPerfEstimator(topo, pc), EmbeddingStorageEstimator(topo, pc)], pc))
    stock = EmbeddingEnumerator(topology=topo, batch_size=512, constraints=pc,
                                estimator=[EmbeddingPerfEstimator(topo, pc), EmbeddingStorageEstimator(topo, pc)])
    found = {}
    for name, enum in (("ours", ours), ("torchrec", stock)):
        l0, c0, t0 = load(), time.process_time(), time.perf_counter()
        options = enum.enumerate(model, sharders)
        found[name] = (time.perf_counter() - t0, time.process_time() - c0, l0,
                       sorted((o.name, o.sharding_type, o.compute_kernel, tuple((s.perf.total, s.storage.hbm,
                              s.storage.ddr) for s in o.shards)) for o in options))
    assert found["ours"][3] == found["torchrec"][3], "estimates differ"
    (w1, c1, l1, _), (w2, c2, l2, _) = found["ours"], found["torchrec"]
    print(f"ours {w1:.1f} s wall / {c1:.1f} s CPU ({l1}); TorchRec's {w2:.1f} s wall / {c2:.1f} s CPU ({l2}); "
          f"speed-up x{c2 / c1:.1f} CPU, x{w2 / w1:.1f} wall; {len(found['ours'][3])} options, identical estimates")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="quality on 8 GPUs only, no enumeration comparison")
    a = ap.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as d:
        quality(Path(d), [8] if a.quick else [8, 16, 32])
        scale(Path(d))
    if not a.quick:
        enumeration()


if __name__ == "__main__":
    main()
