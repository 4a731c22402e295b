"""Issue 7's acceptance: OptFusion's selection stage and the Soft and Hard retraining of the exported
architecture.json, each trained sharded on 2 gloo ranks, reach the planted-signal generator's AUC within 0.01
(issue 16; runs measured short of it: strict xfails naming the gap, still held to 0.02).

The defaults (tests/planted.py), plus the OptFusion preset's architecture learning rate and alpha init
(configs/optfusion_criteo_kaggle.yaml: Adam 0.3, 0.5, the authors' search.sh) and, to stay CPU-frugal, n = 1
cross and deep component and embedding
dim 8 (the planted pairs have latent dim 4): every deep component is dim_emb x num_fields = 8 x 39 wide (the
paper's width rule). All planted runs share one 2-rank process group (conftest.planted_results); the retrain runs
read the architecture.json the selection run wrote (planted.Exported)."""

import json
from pathlib import Path

import pytest
import yaml

from planted import ACCEPT_GAP, Exported, GUARD_GAP, PlantedRun, assert_within, gap_cases

pytestmark = pytest.mark.slow  # one shared ~4-minute 2-rank training session (conftest.planted_results)

_PRESET = yaml.safe_load((Path(__file__).parent.parent / "configs" / "optfusion_criteo_kaggle.yaml").read_text())
OPTFUSION = ["model.embedding_dim=8", f"optim.arch_lr={_PRESET['optim']['arch_lr']}"]
PLANTED_RUNS = [
    PlantedRun("select", "optfusion", {"num_components": 1, "cross_type": "crossnet",
                                       "alpha_init": _PRESET["model"]["arch_args"]["alpha_init"]}, OPTFUSION),
    PlantedRun("soft", "optfusion", {"architecture": Exported("select"), "mode": "soft"}, OPTFUSION),
    PlantedRun("hard", "optfusion", {"architecture": Exported("select"), "mode": "hard"}, OPTFUSION),
]

_WHY = "the one epoch's model falls short of the data's floor (0.0054, benchmarks/planted_floor.py); docs/arches.md"
NOT_WITHIN_0_01 = {
    "select": (0.0134, _WHY),
    "soft": (0.0116, _WHY),
    "hard": (0.0128, _WHY),
}
NOT_WITHIN_0_02 = {}


@pytest.mark.parametrize("run", gap_cases(PLANTED_RUNS, NOT_WITHIN_0_01, ACCEPT_GAP))
def test_optfusion_select_and_retrain_within_0_01_of_bayes_auc(run, planted_data, planted_results):
    """Defect caught: an arch, its defaults or the 2-rank training learning the planted signal worse."""
    assert_within(planted_data, planted_results[__name__], PLANTED_RUNS, run, ACCEPT_GAP)


@pytest.mark.parametrize("run", gap_cases(PLANTED_RUNS, NOT_WITHIN_0_02, GUARD_GAP))
def test_optfusion_select_and_retrain_within_0_02_of_bayes_auc(run, planted_data, planted_results):
    """The guard while a run's 0.01 bar is an xfail: a regression of its learning shows."""
    assert_within(planted_data, planted_results[__name__], PLANTED_RUNS, run, GUARD_GAP)


def test_retrain_runs_use_the_selected_architecture(planted_results):
    runs = planted_results[__name__]
    selected = json.loads(open(runs["select"]["architecture"]).read())
    for mode in ("soft", "hard"):
        again = json.loads(open(runs[mode]["architecture"]).read())
        assert again["edges"] == selected["edges"] and again["op_weights"] == selected["op_weights"], mode
