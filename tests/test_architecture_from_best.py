"""A search stage's architecture.json comes from the best validation checkpoint, not from the last step's weights."""

from __future__ import annotations

import json

import torch

from checkpoint_state import full_state
from dist_harness import run_on_ranks
from prepared_fixtures import write_planted_pairs
from recsys_dist.config import load_config
from recsys_dist.models.optinter import METHODS


def _search(rank, world, root, out):
    from recsys_dist.train import train

    # min_delta 1e9: only the first validation (epoch 0 of 2) is ever an improvement, so the best is not the last epoch
    return train(load_config(None, [
        f"data.dir={root}", "data.batch_size=256", "data.eval_batch_size=512", "model.embedding_dim=4",
        "model.arch=optinter", "model.arch_args={methods: search, mlp: [16]}", "data.cross_pairs=all",
        f"train.out_dir={out}", "train.epochs=2", "train.log_every_steps=0", "train.threads=1",
        "train.tensorboard=false", "train.test=false", "train.keep_best=true",
        "train.early_stopping.min_delta=1000000000", "optim.arch_lr=0.3", "optim.dense=adam",
        "optim.dense_lr=0.005", "optim.sparse_lr=0.05", "sharding.sharding_types=[data_parallel]"]))


def test_optinter_search_exports_the_best_checkpoints_choice(tmp_path):
    """Defect caught: architecture.json written from the live (last-epoch) alphas while the run keeps an earlier
    best checkpoint, so the retrain follows a choice that validation did not select (issue 16)."""
    root, out = tmp_path / "data", tmp_path / "run"
    write_planted_pairs(root, {"train": 1024, "val": 256})
    [res] = run_on_ranks(_search, 1, (root, out))
    assert res["best"]["step"] == 4 and res["steps"] == 8 and res["architecture_step"] == 4
    exported = json.loads((out / "architecture.json").read_text())

    def alphas(ckpt):
        state = full_state(ckpt, tmp_path / "host")["model"]
        [key] = [k for k in state if k.endswith("combination.alpha")]
        return state[key]

    best, last = alphas(out / "best_checkpoint"), alphas(out / "checkpoint")
    assert not torch.allclose(best, last, atol=1e-3)  # the alphas moved after the best epoch
    got = torch.tensor(list(exported["alpha"].values()))
    torch.testing.assert_close(got, best, atol=1e-6, rtol=0)
    want = {n: METHODS[int(a.argmax())] for n, a in zip(exported["alpha"], best)}
    assert exported["methods"] == want
    last_methods = {n: METHODS[int(a.argmax())] for n, a in zip(exported["alpha"], last)}
    assert last_methods != want  # the last epoch would have chosen differently
