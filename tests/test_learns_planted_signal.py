"""Issue 2's acceptance: DLRM trained on 2 ranks reaches the generator's AUC within 0.02 on planted data."""

from planted import train_planted


def test_dlrm_two_ranks_reaches_bayes_auc(planted_data, tmp_path):
    result = train_planted(planted_data, tmp_path / "run", "dlrm",
                           {"bottom_mlp": [64, 16], "top_mlp": [64, 32, 1]})
    auc = result["test"]["auc"]
    print(f"dlrm test AUC {auc:.4f} vs generator {planted_data.bayes_auc:.4f}")
    assert auc >= planted_data.bayes_auc - 0.02, (auc, planted_data.bayes_auc)
    assert auc <= planted_data.bayes_auc + 0.01  # nothing can beat the generator by more than noise
