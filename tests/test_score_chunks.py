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
