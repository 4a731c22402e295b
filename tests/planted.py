"""Planted-signal data for the arches' AUC acceptance tests: made once per test session, trained on 2 gloo ranks.

Every planted-AUC test file declares its runs and reads the results of the session's single 2-rank process group
(conftest's `planted_results`: process start-up and imports are paid once, not once per file):

    PLANTED_RUNS = [PlantedRun("dcn", "dcn", {"num_cross_layers": 2, "dnn": [64, 32, 1]})]
    NOT_WITHIN_0_01 = {"dcn": "gap 0.0118 (measured ...): why"}      # strict xfails, each with its measured gap

    @pytest.mark.parametrize("run", gap_cases(PLANTED_RUNS, NOT_WITHIN_0_01))
    def test_dcn_learns(run, planted_data, planted_results):
        assert_within(planted_data, planted_results[__name__], PLANTED_RUNS, run, ACCEPT_GAP)

Every arch trains with its defaults (PLANTED_SETTINGS fixes only batch, embedding dim, 1 epoch and, per suite,
small widths). `bayes_auc` is the generator's AUC on exactly the test rows and labels (synth's
`bayes_auc_halves`, 0.7558 for seed 0), so the gap is a paired comparison: re-drawing the labels of the 50k test
rows moves it by an sd of ~0.001 (each AUC alone by ~0.002, a fresh 50k-row sample by ~0.003;
tests/test_synth.py pins the first two).

The floor (benchmarks/planted_floor.py, the same train rows, L2 logistic regression, L-BFGS): a model of the
generator's own inputs (main effects, the planted pair crosses, its 4 dense fields) is 0.0024 below the
generator; every field one-hot plus the planted crosses 0.0054 (L2 3e-4; 0.0075 at 1e-4). So the data allow a gap
well under the 0.01 bar; where an arch is not within it, its training is what falls short, not the data.
Measured gaps per arch and seconds: docs/arches.md, "Acceptance on planted data".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

from dist_harness import run_on_ranks

# The acceptance files (modules of tests/), each with its PLANTED_RUNS.
SUITES = ("test_learns_planted_signal", "test_dense_i_learns_planted", "test_dense_ii_learns_planted",
          "test_optfusion_learns_planted", "test_optinter_learns_planted")

# 200k train rows (days 0-1), 50k val + 50k test (day 2); the generator's default seed.
# Small enough for 2 cores, big enough that the gap to the generator's AUC is measured to ~0.001 (sd).
DAYS, ROWS_PER_DAY, SEED = 3, 100000, 0

# Every arch with its defaults (what `recsys-dist train model.arch=X` gives: the global `optim` defaults or the
# arch's OPTIM_DEFAULTS, recsys_dist/arch_defaults.py), plus only what the test must fix for time: 1 epoch of 98
# global batches of 2048 rows (the default batch), embedding dim 16, and the small widths each suite passes as
# arch arguments.
PLANTED_SETTINGS = (
    "data.batch_size=2048", "data.eval_batch_size=16384", "model.embedding_dim=16",
    "train.epochs=1", "train.log_every_steps=50", "train.checkpoint=false", "train.tensorboard=false",
)

# The one optimizer setting every arch shared before issue 16 asked for the defaults; runs that compare two
# settings of one arch (test_precision) keep it as overrides, so their measured differences stay comparable.
# Row-wise Adagrad lr 0.1 / eps 0.01 on the tables (batch 512's 0.05 scaled by sqrt(4); eps 0.01 scales an id's
# first step with |g| instead of a full lr-sized step), Adam 6e-3 on the dense part.
FIXED_OPTIM = ("optim.sparse=rowwise_adagrad", "optim.sparse_lr=0.1", "optim.sparse_eps=0.01",
               "optim.dense=adam", "optim.dense_lr=0.006")

# Issue 16's bar: test AUC >= the generator's AUC on the test rows - ACCEPT_GAP. A run not within it is a strict
# xfail naming its measured gap, and must still be within GUARD_GAP (so a regression of any arch shows).
ACCEPT_GAP, GUARD_GAP = 0.01, 0.02
NEAR = 0.002
MEASURED = "measured 2026-12-01 with the defaults, 2 ranks"


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
    overrides: Sequence[Union[str, Tuple[str, Exported]]] = field(default_factory=tuple)


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

    # the arch goes through load_config, so its OPTIM_DEFAULTS (not the default arch's) apply
    cfg = load_config(None, [f"data.dir={data.dir}", f"train.out_dir={out}", f"model.arch={arch}",
                             *PLANTED_SETTINGS, *overrides])
    cfg.model.arch_args = dict(arch_args)
    validate(cfg)
    return cfg


def resolve(run: PlantedRun, suite_dir: Path) -> Tuple[Dict[str, Any], List[str]]:
    """The run's arch arguments and overrides with each `Exported` as the path of that run's architecture.json
    (an override `(key, Exported(run))` becomes `key=PATH`)."""
    def path(v: Any) -> Any:
        return str(suite_dir / v.run / "architecture.json") if isinstance(v, Exported) else v

    overrides = [o if isinstance(o, str) else f"{o[0]}={path(o[1])}" for o in run.overrides]
    return {k: path(v) for k, v in run.arch_args.items()}, overrides


def _train_suites(rank, world, data, root, suites):
    import torch.distributed as dist

    from recsys_dist.train import train

    results: Dict[str, Dict[str, Any]] = {}
    for suite, runs in suites.items():
        for run in runs:
            t = time.perf_counter()
            out = root / suite / run.name
            arch_args, overrides = resolve(run, root / suite)
            result = train(planted_config(data, out, run.arch, arch_args, overrides))
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


def gap_cases(runs: Sequence[PlantedRun], not_within: Mapping[str, Tuple[float, str]], bar: float) -> list:
    """pytest params, one per run; the runs in `not_within` ({name: (measured gap, why)}) are xfails, strict unless
    the measured gap is within NEAR of the bar (numerics elsewhere, e.g. a GEMM backend, move a gap by ~0.001)."""
    import pytest

    unknown = sorted(set(not_within) - {r.name for r in runs})
    if unknown:
        raise ValueError(f"not_within names no run: {unknown}")
    cases = []
    for r in runs:
        marks = ()
        if r.name in not_within:
            gap, why = not_within[r.name]
            marks = pytest.mark.xfail(strict=gap - bar > NEAR, reason=f"gap {gap:.4f} > {bar} ({MEASURED}): {why}")
        cases.append(pytest.param(r, id=r.name, marks=marks))
    return cases


def assert_within(data: PlantedData, results: Mapping[str, Any], runs: Sequence[PlantedRun], run: PlantedRun,
                  gap: float) -> None:
    """generator AUC - gap <= the run's test AUC <= generator AUC + 0.01 (nothing beats the generator by more
    than noise); prints the suite's table first."""
    print(format_table(data, results, runs))
    auc, bayes = results[run.name]["test"]["auc"], data.bayes_auc
    assert bayes - gap <= auc <= bayes + 0.01, f"{run.name}: test AUC {auc:.4f}, gap {bayes - auc:+.4f} > {gap}"


def format_table(data: PlantedData, results: Mapping[str, Any], runs: Sequence[PlantedRun]) -> str:
    """'name: auc (gap, seconds)' for each run, gap = generator AUC - test AUC."""
    return f"generator AUC {data.bayes_auc:.4f}; " + ", ".join(
        f"{r.name}: {results[r.name]['test']['auc']:.4f} ({data.bayes_auc - results[r.name]['test']['auc']:+.4f}, "
        f"{results[r.name]['seconds']:.0f} s)" for r in runs)
