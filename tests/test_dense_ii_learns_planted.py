"""Issue 5's acceptance: xDeepInt, DynInt (DA, DGP, DWP) and DeepMR, trained sharded on 2 gloo ranks, reach the
planted-signal generator's AUC within 0.02 (tests/planted.py's one fixed setting for every arch; small widths,
CPU-frugal). The planted data has raw (log) numeric features, so the numeric-fields path is trained too.
All planted runs share one 2-rank process group (conftest.planted_results)."""

import pytest

from planted import PlantedRun, format_table

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


@pytest.mark.parametrize("run", PLANTED_RUNS, ids=lambda r: r.name)
def test_dense_ii_arch_reaches_bayes_auc(run, planted_data, planted_results):
    results = planted_results[__name__]
    print(format_table(planted_data, results, PLANTED_RUNS))
    auc, bayes = results[run.name]["test"]["auc"], planted_data.bayes_auc
    assert bayes - 0.02 <= auc <= bayes + 0.01, (run.name, auc, bayes)
