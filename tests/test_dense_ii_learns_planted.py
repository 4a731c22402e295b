"""Issue 5's acceptance: xDeepInt, DynInt (DA, DGP, DWP) and DeepMR, trained sharded on 2 gloo ranks, with their
defaults (tests/planted.py; small widths, CPU-frugal) reach the planted-signal generator's AUC within 0.01 (issue
16; runs measured short of it: strict xfails naming the gap, still held to 0.02). The planted data has raw (log)
numeric features, so the numeric-fields path is trained too. All planted runs share one 2-rank process group
(conftest.planted_results)."""

import pytest

from planted import ACCEPT_GAP, GUARD_GAP, PlantedRun, assert_within, gap_cases

pytestmark = pytest.mark.slow  # one shared ~4-minute 2-rank training session (conftest.planted_results)

PLANTED_RUNS = [
    PlantedRun("xdeepint", "xdeepint", {"num_layers": 2, "num_subspaces": 4}),
    PlantedRun("dynint-da", "dynint", {"mode": "da", "num_layers": 2, "num_subspaces": 2, "reduction_ratio": 8}),
    PlantedRun("dynint-dgp", "dynint", {"mode": "dgp", "num_layers": 2, "num_subspaces": 2, "reduction_ratio": 8,
                                        "rank": 8, "ortho_lambda": 0.001}),
    PlantedRun("dynint-dwp", "dynint", {"mode": "dwp", "num_layers": 2, "num_subspaces": 2, "reduction_ratio": 8,
                                        "rank": 2, "ortho_lambda": 0.001}),
    PlantedRun("deepmr", "deepmr", {"width": 32, "num_dnn_layers": 2, "num_heads": 2, "learn_beta": True}),
]

_WHY = "the one epoch's model falls short of the data's floor (0.0054, benchmarks/planted_floor.py); docs/arches.md"
NOT_WITHIN_0_01 = {
    "xdeepint": (0.0109, _WHY),
    "dynint-da": (0.0121, _WHY),
    "dynint-dgp": (0.0146, _WHY),
    "dynint-dwp": (0.0137, _WHY),
    "deepmr": (0.0137, _WHY),
}
NOT_WITHIN_0_02 = {}


@pytest.mark.parametrize("run", gap_cases(PLANTED_RUNS, NOT_WITHIN_0_01, ACCEPT_GAP))
def test_dense_ii_arch_within_0_01_of_bayes_auc(run, planted_data, planted_results):
    """Defect caught: an arch, its defaults or the 2-rank training learning the planted signal worse."""
    assert_within(planted_data, planted_results[__name__], PLANTED_RUNS, run, ACCEPT_GAP)


@pytest.mark.parametrize("run", gap_cases(PLANTED_RUNS, NOT_WITHIN_0_02, GUARD_GAP))
def test_dense_ii_arch_within_0_02_of_bayes_auc(run, planted_data, planted_results):
    """The guard while a run's 0.01 bar is an xfail: a regression of its learning shows."""
    assert_within(planted_data, planted_results[__name__], PLANTED_RUNS, run, GUARD_GAP)
