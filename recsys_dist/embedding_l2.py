"""L2 penalty on the embeddings a batch looks up (`optim.embedding_l2`), added to the training loss.

    penalty = lambda * sum_b w_b sum_f ||e_bf||^2 / sum_b w_b

e_bf is row b's pooled embedding of field f (the [B, F, D] the dense arch reads; for one id per field, the table
row itself) and w_b the row weight (0 for padding), so it is a per-sample mean like the BCE it is added to.
Its gradient reaches only the rows looked up, through whatever backward the tables have (FBGEMM's fused kernels,
lazy Adam, a data-parallel table): a row seen c times in a batch of B gets 2 lambda c w / B, i.e. the
frequency-weighted L2 of DeepCTR's `l2_reg_embedding` / FuxiCTR's `embedding_regularizer` applied per batch
(rows not in the batch are untouched, as lazy training wants). Every table optimizer gets it the same way on CPU
and CUDA, unlike `optim.weight_decay` (FBGEMM's CPU row-wise Adagrad ignores it).

Sharded on W ranks each rank adds its own rows' mean; TorchRec's all-to-all backward divides the table gradients
by W and DDP averages the dense ones, so the update equals one process's on the whole batch
(tests/test_embedding_l2.py).
"""

from __future__ import annotations

import torch


@torch.fx.wrap
def embedding_l2(embeddings: torch.Tensor, weights: torch.Tensor, lam: float) -> torch.Tensor:
    """lambda * (weighted mean over rows of the summed squares of `embeddings` [B, F, D]); a scalar."""
    per_row = embeddings.float().pow(2).sum(dim=(1, 2))
    return lam * (per_row * weights).sum() / weights.sum().clamp_min(1.0)
