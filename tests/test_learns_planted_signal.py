"""Issue 2's acceptance: DLRM trained on 2 ranks reaches the generator's AUC within 0.02 on planted data.
Trained in the session's one 2-rank process group with the other planted runs (conftest.planted_results)."""

import pytest

from planted import PlantedRun

pytestmark = pytest.mark.slow  # one shared ~4-minute 2-rank training session (conftest.planted_results)

PLANTED_RUNS = [PlantedRun("dlrm", "dlrm", {"bottom_mlp": [64, 16], "top_mlp": [64, 32, 1]})]


def test_dlrm_two_ranks_reaches_bayes_auc(planted_data, planted_results):
    auc = planted_results[__name__]["dlrm"]["test"]["auc"]
    print(f"dlrm test AUC {auc:.4f} vs generator {planted_data.bayes_auc:.4f}")
    assert auc >= planted_data.bayes_auc - 0.02, (auc, planted_data.bayes_auc)
    assert auc <= planted_data.bayes_auc + 0.01  # nothing can beat the generator by more than noise
