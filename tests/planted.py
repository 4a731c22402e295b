"""Planted-signal data for the arches' AUC acceptance tests: made once per test session, trained on 2 gloo ranks.

Every planted-AUC test file declares its runs and reads the results of the session's single 2-rank process group
(conftest's `planted_results`: process start-up and imports are paid once, not once per file):

    PLANTED_RUNS = [PlantedRun("dcn", "dcn", {"num_cross_layers": 2, "dnn": [64, 32, 1]})]

    def test_dcn_learns(planted_data, planted_results):
        auc = planted_results[__name__]["dcn"]["test"]["auc"]
        assert planted_data.bayes_auc - 0.02 <= auc <= planted_data.bayes_auc + 0.01

`bayes_auc` is the generator's AUC on exactly the test rows and labels (synth's `bayes_auc_halves`), so the gap is
a paired comparison: re-drawing the labels of the 50k test rows moves it by an sd of ~0.001 (each AUC alone by
~0.002, a fresh 50k-row sample by ~0.003; tests/test_synth.py pins the first two). The whole day's AUC, used
before, differs from the test rows' by 0.0019 for seed 0 (0.7539 vs 0.7558), about 2 sd of the gap's noise.
Where the arches stand against a 0.01 bar: docs/arches.md, "Acceptance on planted data".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Sequence

from dist_harness import run_on_ranks

# 200k train rows (days 0-1), 50k val + 50k test (day 2); the generator's default seed.
# Small enough for 2 cores, big enough that the gap to the generator's AUC is measured to ~0.001 (sd).
DAYS, ROWS_PER_DAY, SEED = 3, 100000, 0

# One fixed setting for every arch (no per-arch tuning): 1 epoch of 98 global batches of 2048 rows.
# - batch 2048 with the learning rates of batch 512 (row-wise Adagrad 0.05, Adam 3e-3) scaled by sqrt(4) = 2:
#   the same AUC as batch 512 (DLRM 0.7435 vs 0.7438) in about a third of the time.
# - sparse_eps 0.01: row-wise Adagrad's first step for an id is lr * g / (|g| + eps); with eps ~ 0 it is a full
#   lr-sized step however tiny g is, so every id seen once or twice (most ids of the big, signal-free fields) gets
#   a random lr-sized embedding. The unweighted FM sum of DeepFM (all 351 field pairs with weight 1) passes those
#   straight into the logit (DeepFM 0.7018 vs DLRM 0.7435 at eps 1e-8); eps 0.01 (~ TF Adagrad's
#   initial_accumulator_value 1e-4) scales such steps with |g| and gives DeepFM 0.7408, DLRM 0.7429.
PLANTED_SETTINGS = (
    "data.batch_size=2048", "data.eval_batch_size=16384", "model.embedding_dim=16",
    "optim.sparse=rowwise_adagrad", "optim.sparse_lr=0.1", "optim.sparse_eps=0.01",
    "optim.dense=adam", "optim.dense_lr=0.006",
    "train.epochs=1", "train.log_every_steps=50", "train.checkpoint=false", "train.tensorboard=false",
)


@dataclass
class PlantedData:
    dir: Path  # prepared dataset (dense: log)
    raw: Path
    bayes_auc: float
    report: Dict[str, Any]


@dataclass(frozen=True)
class Exported:
    """An arch argument standing for the architecture.json an earlier run of the same suite wrote (OptFusion)."""

    run: str


@dataclass
class PlantedRun:
    """One training run: `name` (unique in its suite), the arch, its arguments and extra `overrides`
    (section.key=value, e.g. the paper's architecture learning rate) on top of PLANTED_SETTINGS."""

    name: str
    arch: str
    arch_args: Mapping[str, Any]
    overrides: Sequence[str] = field(default_factory=tuple)


def make_planted(root: Path) -> PlantedData:
    from recsys_dist.config import PrepareConfig, SynthConfig
    from recsys_dist.data.criteo_prepare import prepare_criteo
    from recsys_dist.data.synth import synthesize

    raw, prepared = root / "raw", root / "prepared"
    report = synthesize(SynthConfig(out_dir=str(raw), days=DAYS, rows_per_day=ROWS_PER_DAY, seed=SEED))
    prepare_criteo(PrepareConfig(input=[str(raw)], out_dir=str(prepared), split="day", categorical="vocab",
                                 min_count=2, workers=1))
    # the generator's AUC on exactly the test rows (the day split makes the last day's halves val / test)
    return PlantedData(prepared, raw, report["files"][f"day_{DAYS - 1}"]["bayes_auc_halves"][1], report)


def planted_config(data: PlantedData, out: Path, arch: str, arch_args: Mapping[str, Any],
                   overrides: Sequence[str] = ()):
    """PLANTED_SETTINGS on the planted data; `overrides` (section.key=value) win."""
    from recsys_dist.config import load_config, validate

    cfg = load_config(None, [f"data.dir={data.dir}", f"train.out_dir={out}", *PLANTED_SETTINGS, *overrides])
    cfg.model.arch, cfg.model.arch_args = arch, dict(arch_args)
    validate(cfg)
    return cfg


def _resolve(args: Mapping[str, Any], suite_dir: Path) -> Dict[str, Any]:
    return {k: str(suite_dir / v.run / "architecture.json") if isinstance(v, Exported) else v
            for k, v in args.items()}


def _train_suites(rank, world, data, root, suites):
    import torch.distributed as dist

    from recsys_dist.train import train

    results: Dict[str, Dict[str, Any]] = {}
    for suite, runs in suites.items():
        for run in runs:
            t = time.perf_counter()
            out = root / suite / run.name
            result = train(planted_config(data, out, run.arch, _resolve(run.arch_args, root / suite), run.overrides))
            dist.barrier()  # rank 0's files (architecture.json) are written before a later run reads them
            results.setdefault(suite, {})[run.name] = {
                "test": result["test"], "val": result.get("val"), "architecture": result.get("architecture"),
                "seconds": time.perf_counter() - t}
    return results


def train_suites(data: PlantedData, root: Path, suites: Mapping[str, Sequence[PlantedRun]],
                 world_size: int = 2) -> Dict[str, Dict[str, Any]]:
    """Trains every run of every suite, in order, in one `world_size`-rank gloo process group; returns rank 0's
    {suite: {run name: {"test": metrics, "val": metrics, "architecture": exported JSON path or None,
    "seconds": wall time}}}."""
    suites = {s: list(runs) for s, runs in suites.items()}
    for s, runs in suites.items():
        names = [r.name for r in runs]
        if len(set(names)) != len(names):
            raise ValueError(f"planted suite {s}: run names must be unique, got {names}")
    return run_on_ranks(_train_suites, world_size, (data, root, suites), timeout=1800)[0]


def format_table(data: PlantedData, results: Mapping[str, Any], runs: Sequence[PlantedRun]) -> str:
    """'name: auc (gap, seconds)' for each run, gap = generator AUC - test AUC."""
    return f"generator AUC {data.bayes_auc:.4f}; " + ", ".join(
        f"{r.name}: {results[r.name]['test']['auc']:.4f} ({data.bayes_auc - results[r.name]['test']['auc']:+.4f}, "
        f"{results[r.name]['seconds']:.0f} s)" for r in runs)
