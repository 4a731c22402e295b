"""Issue 5's acceptance: xDeepInt, DynInt (DA, DGP, DWP) and DeepMR, trained sharded on 2 gloo ranks, reach the
planted-signal generator's AUC within 0.02. One 2-rank process group trains all of them in turn (small widths,
CPU-frugal). The planted data has raw (log) numeric features, so the numeric-fields path is trained too."""

from dist_harness import run_on_ranks
from planted import planted_config

RUNS = [
    ("xdeepint", {"num_layers": 2, "num_subspaces": 4}),
    ("dynint", {"mode": "da", "num_layers": 2, "num_subspaces": 2, "reduction_ratio": 8}),
    ("dynint", {"mode": "dgp", "num_layers": 2, "num_subspaces": 2, "reduction_ratio": 8, "rank": 8,
                "ortho_lambda": 0.001}),
    ("dynint", {"mode": "dwp", "num_layers": 2, "num_subspaces": 2, "reduction_ratio": 8, "rank": 2,
                "ortho_lambda": 0.001}),
    ("deepmr", {"width": 32, "num_dnn_layers": 2, "num_heads": 2, "learn_beta": True}),
]


def _train_all(rank, world, data, root):
    from recsys_dist.train import train

    results = []
    for k, (arch, args) in enumerate(RUNS):
        cfg = planted_config(data, root / f"{k}_{arch}", arch, args, ["train.epochs=1"])
        results.append(train(cfg)["test"]["auc"])
    return results


def test_dense_ii_arches_reach_bayes_auc(planted_data, tmp_path):
    aucs = run_on_ranks(_train_all, 2, (planted_data, tmp_path))[0]
    bayes = planted_data.bayes_auc
    report = ", ".join(f"{a}{'-' + r['mode'] if 'mode' in r else ''}: {auc:.4f}" for (a, r), auc in zip(RUNS, aucs))
    print(f"generator AUC {bayes:.4f}; {report}")
    for (arch, args), auc in zip(RUNS, aucs):
        assert bayes - 0.02 <= auc <= bayes + 0.01, (arch, args, auc, bayes)
