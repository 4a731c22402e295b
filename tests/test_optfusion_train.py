"""OptFusion through the train job on 2 gloo ranks: selection stage (alpha, beta trained by their own optimizer,
architecture.json written), then Soft and Hard retraining from that file. Tiny widths: a wiring test, not AUC."""

import json

from dist_harness import run_on_ranks
from prepared_fixtures import write_dataset
from recsys_dist.config import load_config
from recsys_dist.models.optfusion_dag import FusionArchitecture


def _cfg(root, out, arch_args, *extra):
    cfg = load_config(None, [
        f"data.dir={root}", "data.batch_size=128", "data.eval_batch_size=256", "model.embedding_dim=4",
        "model.arch=optfusion", f"train.out_dir={out}", "train.epochs=1", "train.log_every_steps=2",
        "train.checkpoint=false", "optim.dense=adam", "optim.dense_lr=0.003", "optim.arch_lr=0.01", *extra])
    cfg.model.arch_args = dict(arch_args)
    return cfg


def _select_then_retrain(rank, world, root, tmp):
    import torch.distributed as dist

    from recsys_dist.train import train

    search = train(_cfg(root, tmp / "search", {"num_components": 1}))
    dist.barrier()  # rank 0 has written architecture.json
    path = str(tmp / "search" / "architecture.json")
    soft = train(_cfg(root, tmp / "soft", {"architecture": path, "mode": "soft"}))
    hard = train(_cfg(root, tmp / "hard", {"architecture": path, "mode": "hard", "allow_immature": True}))  # 8 steps
    return search, soft, hard


def test_select_then_retrain_on_two_ranks(tmp_path):
    root = tmp_path / "data"
    write_dataset(root, {"train": 1024, "val": 128, "test": 256}, vocab=(20, 30, 40))
    (s0, soft0, hard0), (s1, soft1, hard1) = run_on_ranks(_select_then_retrain, 2, (root, tmp_path))
    assert s0["architecture"] == str(tmp_path / "search" / "architecture.json")
    exported = json.loads((tmp_path / "search" / "architecture.json").read_text())
    sel = FusionArchitecture.from_dict(exported)
    assert sel.n == 1 and len(exported["alpha"]) == 2 * 1 + 4 + 3
    assert any(abs(a - 0.5) > 1e-4 for a in exported["alpha"].values())  # alpha was trained (arch optimizer)
    assert any(abs(w - 0.25) > 1e-4 for ws in exported["op_weights"].values() for w in ws)  # and beta
    for run, (r0, r1) in {"soft": (soft0, soft1), "hard": (hard0, hard1)}.items():
        assert r0["test"] == r1["test"] and r0["test"]["rows"] == 256
        again = json.loads((tmp_path / run / "architecture.json").read_text())
        assert again["edges"] == exported["edges"] and again["op_weights"] == exported["op_weights"]
