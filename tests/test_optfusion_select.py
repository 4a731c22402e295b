"""OptFusion's selection with the preset's settings really selects, and Hard retraining refuses a selection that
has not decided its operations (issue 16, part 5)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dist_harness import run_on_ranks
from prepared_fixtures import write_planted_pairs
from recsys_dist.config import ConfigError, load_config
from recsys_dist.models.arch import ArchInputs
from recsys_dist.models.optfusion import OptFusionArch
from recsys_dist.models.optfusion_dag import MIN_OP_MARGIN, OPS, FusionArchitecture, FusionSpace

PRESET = Path(__file__).parent.parent / "configs" / "optfusion_criteo_kaggle.yaml"


def _preset():
    p = yaml.safe_load(PRESET.read_text())
    return p["optim"]["arch_lr"], p["model"]["arch_args"]["alpha_init"]


def _select(rank, world, root, out, arch_lr, alpha_init):
    from recsys_dist.train import train

    cfg = load_config(None, [
        f"data.dir={root}", "data.batch_size=256", "data.eval_batch_size=1000", "model.embedding_dim=8",
        "model.arch=optfusion", f"train.out_dir={out}", "train.epochs=2", "train.log_every_steps=0",
        "train.checkpoint=false", "train.tensorboard=false", "optim.dense=adam", "optim.dense_lr=0.006",
        "optim.sparse_lr=0.1", "optim.sparse_eps=0.01", f"optim.arch_lr={arch_lr}"])
    cfg.model.arch_args = {"num_components": 1, "alpha_init": alpha_init}
    return train(cfg)


def test_preset_selection_prunes_edges_on_planted_data(tmp_path):
    """Defect caught: a selection that keeps every edge (with the old preset arch_lr 1e-3 Adam moved no alpha
    from 0.5 to <= 0 in an epoch: 33 of 33 edges kept on real data) or leaves the operations undecided."""
    write_planted_pairs(tmp_path / "data", {"train": 8192, "test": 1000})
    arch_lr, alpha_init = _preset()
    [res] = run_on_ranks(_select, 1, (tmp_path / "data", tmp_path / "sel", arch_lr, alpha_init))
    exported = json.loads(Path(res["architecture"]).read_text())
    total = len(FusionSpace(1).edges)
    assert exported["selection_steps"] == 64
    assert len(exported["edges"]) < total, exported["alpha"]  # some edge was pruned
    assert any(a <= 0 for a in exported["alpha"].values())
    assert exported["immature_components"] == [], exported["op_margins"]


def _arch(op_weights, edges=None):
    space = FusionSpace(1)
    return {"format": "recsys-dist/optfusion-architecture", "version": 1, "num_components": 1,
            "cross_type": "crossnet", "ops": list(OPS), "edges": [list(e) for e in (edges or space.edges)],
            "op_weights": op_weights}


def test_hard_refuses_an_undecided_selection_and_soft_accepts_it():
    """Defect caught: Hard retraining on operation weights within noise of each other (a 40-step selection at
    arch_lr 1e-3 chose PROD for O and D1 by a margin of ~0.004; the Hard model then predicted a constant: the
    product of O's four inputs at initial scale is ~1e-9, its gradient ~1e-11)."""
    near = {c: [0.249, 0.253, 0.249, 0.249] for c in FusionSpace(1).op_components}
    sel = FusionArchitecture.from_dict(_arch(near))
    assert sorted(sel.immature()) == ["C1", "D1", "O"] and all(m < MIN_OP_MARGIN for m in sel.op_margins().values())
    inputs = ArchInputs(0, ("a", "b", "c"), 4)
    with pytest.raises(ConfigError, match=r"not decided the fusion operation of C1, D1, O.*mode: soft"):
        OptFusionArch(inputs, architecture=_arch(near), mode="hard")
    OptFusionArch(inputs, architecture=_arch(near), mode="soft")
    OptFusionArch(inputs, architecture=_arch(near), mode="hard", allow_immature=True)
    decided = {c: [0.1, 0.6, 0.2, 0.1] for c in FusionSpace(1).op_components}
    assert FusionArchitecture.from_dict(_arch(decided)).immature() == []
    OptFusionArch(inputs, architecture=_arch(decided), mode="hard")


def test_single_input_margin_counts_add_prod_att_as_one_choice():
    """Defect caught: a one-input component (ADD = PROD = ATT = its input) called undecided forever because
    ADD and PROD get identical gradients and stay tied."""
    w = {"C1": [0.3, 0.3, 0.1, 0.3], "D1": [0.25] * 4, "O": [0.7, 0.1, 0.1, 0.1]}
    edges = [("E", "S0"), ("E", "C1"), ("E", "O"), ("C1", "O")]  # C1 reads E only; D1 has no path to O
    sel = FusionArchitecture.from_dict(_arch(w, edges))
    assert sel.op_margins() == pytest.approx({"C1": 0.8, "O": 0.6})
    assert sel.immature() == []


def test_cli_hard_retrain_of_an_undecided_selection_exits_2(tmp_path):
    """Defect caught: the refusal surfacing as a traceback mid-job instead of one config error before training."""
    from prepared_fixtures import write_dataset

    write_dataset(tmp_path / "data", {"train": 256, "test": 64}, vocab=(5, 6, 7))
    near = {c: [0.25, 0.26, 0.245, 0.245] for c in FusionSpace(1).op_components}
    (tmp_path / "arch.json").write_text(json.dumps(_arch(near)))
    r = subprocess.run([sys.executable, "-m", "recsys_dist.cli", "train", f"data.dir={tmp_path / 'data'}",
                        f"train.out_dir={tmp_path / 'run'}", "model.arch=optfusion", "model.embedding_dim=4",
                        f"model.arch_args={{architecture: {tmp_path / 'arch.json'}, mode: hard}}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "config error" in r.stderr and "Traceback" not in r.stderr
    assert "has not decided the fusion operation" in r.stderr
