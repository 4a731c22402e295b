"""Issue 2's acceptance, issue 16's bar: DLRM with its defaults, trained on 2 ranks, reaches the generator's AUC on
planted data (tests/planted.py). Trained in the session's one 2-rank process group with the other planted runs
(conftest.planted_results). Measured gaps and the floor: docs/arches.md, "Acceptance on planted data"."""

import pytest

from planted import ACCEPT_GAP, GUARD_GAP, PlantedRun, assert_within, gap_cases

pytestmark = pytest.mark.slow  # one shared ~4-minute 2-rank training session (conftest.planted_results)

PLANTED_RUNS = [PlantedRun("dlrm", "dlrm", {"bottom_mlp": [64, 16], "top_mlp": [64, 32, 1]})]
_WHY = "the one epoch's model falls short of the data's floor (0.0054, benchmarks/planted_floor.py); docs/arches.md"
NOT_WITHIN_0_01 = {
    "dlrm": (0.0138, _WHY),
}
NOT_WITHIN_0_02 = {}


@pytest.mark.parametrize("run", gap_cases(PLANTED_RUNS, NOT_WITHIN_0_01, ACCEPT_GAP))
def test_dlrm_two_ranks_within_0_01_of_bayes_auc(run, planted_data, planted_results):
    """Defect caught: DLRM (or its defaults, or the 2-rank training) learning the planted signal worse than it can."""
    assert_within(planted_data, planted_results[__name__], PLANTED_RUNS, run, ACCEPT_GAP)


@pytest.mark.parametrize("run", gap_cases(PLANTED_RUNS, NOT_WITHIN_0_02, GUARD_GAP))
def test_dlrm_two_ranks_within_0_02_of_bayes_auc(run, planted_data, planted_results):
    """The guard while the 0.01 bar is an xfail: a regression of DLRM's learning shows."""
    assert_within(planted_data, planted_results[__name__], PLANTED_RUNS, run, GUARD_GAP)
