"""Scoring runs the dense arch over row chunks (CTRTrainModel.score_chunk_rows; recsys_dist/job.py sets the
per-rank training batch on CPU): the same logits as one pass, and only when scoring."""

from __future__ import annotations

import pytest
import torch

from test_sharding_types import ARCHES, ctr_batch, full_batches, full_model


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_chunked_scoring_gives_the_same_logits_and_only_when_scoring(arch):
    """Would catch: chunks dropped, repeated or reordered (logits differ), a chunked pass in training or under
    autograd (the arch called more than once there), or a chunk size ignored."""
    model = full_model(arch, "cpu")
    calls = []
    model.model.dense_arch.register_forward_hook(lambda mod, inp, out: calls.append(out.shape[0]))
    ids, dense, labels = full_batches()[0]
    batch = ctr_batch(ids, dense, labels)
    B = len(labels)
    model.eval()
    with torch.no_grad():
        whole = model(batch)[1][1]
        assert calls == [B]
        model.score_chunk_rows = 3
        calls.clear()
        chunked = model(batch)[1][1]
    assert calls == [3] * (B // 3) + ([B % 3] if B % 3 else [])
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)
    calls.clear()
    model(batch)  # eval mode with autograd on: one pass
    model.train()
    with torch.no_grad():
        model(batch)  # training mode: one pass
    assert calls == [B, B]


def _built_chunk(rank, world, data_dir):
    from recsys_dist.config import load_config
    from recsys_dist.dist_env import init_distributed
    from recsys_dist.job import build_sharded_model

    cfg = load_config(None, [f"data.dir={data_dir}", "model.embedding_dim=8", "data.batch_size=64",
                             "data.eval_batch_size=256", "model.arch_args={bottom_mlp: [8, 8], top_mlp: [8, 1]}"])
    built = build_sharded_model(cfg, init_distributed("cpu"))
    return [m.score_chunk_rows for m in built.dmp.modules() if type(m).__name__ == "CTRTrainModel"]


def test_the_job_scores_in_per_rank_training_batches_on_cpu(tmp_path):
    """The job's wiring (recsys_dist/job.py): on CPU, train / evaluate score in chunks of the per-rank training
    batch (global 64 on 2 ranks: 32), not the eval batch. Defect caught: the chunk left at 0 (one pass over the
    eval batch), or the global batch used on every rank."""
    from dist_harness import run_on_ranks
    from prepared_fixtures import write_dataset

    write_dataset(tmp_path, {"train": 64, "val": 16, "test": 16})
    assert run_on_ranks(_built_chunk, 2, (tmp_path,), timeout=180) == [[32], [32]]
