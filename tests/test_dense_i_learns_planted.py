"""Issue 4's acceptance: each arch with MaskFusion, trained sharded on 2 gloo ranks, reaches the planted-signal
generator's AUC within 0.02. One 2-rank process group trains all of them in turn (small widths, CPU-frugal);
the four MaskFusion variants are spread over the arches. Plain towers: tests/test_learns_planted_signal.py (DLRM)."""

import pytest

from dist_harness import run_on_ranks
from planted import planted_config

MF = {"generator": [32]}
SMALL_DNN = {"dnn": [64, 32, 1], "dense_mlp": [32]}
RUNS = [
    ("dlrm", {"bottom_mlp": [32, 16], "top_mlp": [64, 32, 1], "mask_fusion": {"variant": "dwmf", **MF}}),
    ("dcn", {"num_cross_layers": 2, **SMALL_DNN, "mask_fusion": {"variant": "dwmf", **MF}}),
    ("dcnv2", {"num_cross_layers": 2, "cross": "mixture", "low_rank": 16, "num_experts": 2, "structure": "stacked",
               **SMALL_DNN, "mask_fusion": {"variant": "fwmf", **MF}}),
    ("ipnn", {**SMALL_DNN, "mask_fusion": {"variant": "fwm"}}),
    ("deepfm", {**SMALL_DNN, "mask_fusion": {"variant": "fusion"}}),
    ("xdeepfm", {"cin_layers": [16, 16], **SMALL_DNN, "mask_fusion": {"variant": "dwmf", **MF}}),
    ("autoint", {"attention_layers": 1, "heads": 2, "attention_dim": 8, **SMALL_DNN,
                 "mask_fusion": {"variant": "fwmf", **MF}}),
]


def _train_all(rank, world, data, root):
    from recsys_dist.train import train

    results = []
    for k, (arch, args) in enumerate(RUNS):
        cfg = planted_config(data, root / f"{k}_{arch}", arch, args)
        results.append(train(cfg)["test"]["auc"])
    return results


@pytest.mark.slow
def test_dense_i_arches_with_maskfusion_reach_bayes_auc(planted_data, tmp_path):
    aucs = run_on_ranks(_train_all, 2, (planted_data, tmp_path))[0]
    bayes = planted_data.bayes_auc
    report = ", ".join(f"{a}{'+' + r['mask_fusion']['variant'] if 'mask_fusion' in r else ''}: {auc:.4f}"
                       for (a, r), auc in zip(RUNS, aucs))
    print(f"generator AUC {bayes:.4f}; {report}")
    for (arch, args), auc in zip(RUNS, aucs):
        assert bayes - 0.02 <= auc <= bayes + 0.01, (arch, args, auc, bayes)
