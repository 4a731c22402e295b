"""Raw numeric (dense) features as extra embedding fields, for arches that work on a field map [B, F, D].

Field-map arches (PIN / xDeepInt, DynInt, DeepMR) want every feature as a D-dim field vector. With
`prepare.dense: bucketize` the numeric Criteo features already arrive as categorical fields (num_dense = 0) and
this module is not used. With raw dense features (log-transformed, num_dense > 0) each numeric feature j gets a
learned vector v_j and becomes the field x_j * v_j (as AutoInt / DeepMR eq. 1 embed a numeric field: x W):

    E_num = [x_1 v_1; ...; x_n v_n]          [B, n, D]
    X_0   = concat(E_num, embeddings, dim=1) [B, n + F, D]

Args:
    num_dense: n, the number of numeric features (0 is allowed: the module is then a pass-through).
    embedding_dim: D.

Example:
    >>> fields = NumericFields(num_dense=3, embedding_dim=4)
    >>> fields(torch.rand(2, 3), torch.rand(2, 5, 4)).shape
    torch.Size([2, 8, 4])
"""

from __future__ import annotations

import torch
from torch import nn


class NumericFields(nn.Module):
    def __init__(self, num_dense: int, embedding_dim: int) -> None:
        super().__init__()
        if num_dense < 0:
            raise ValueError(f"num_dense must be >= 0, got {num_dense}")
        self.num_dense = num_dense
        self.weight = nn.Parameter(torch.empty(num_dense, embedding_dim)) if num_dense > 0 else None
        if self.weight is not None:
            nn.init.normal_(self.weight, std=0.01)

    def num_fields(self, num_sparse: int) -> int:
        return self.num_dense + num_sparse

    def forward(self, dense: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            return embeddings
        if dense.shape[1] != self.num_dense:
            raise ValueError(f"expected dense [B, {self.num_dense}], got {list(dense.shape)}")
        numeric = dense.unsqueeze(-1) * self.weight  # [B, n, D]
        return torch.cat([numeric.to(embeddings.dtype), embeddings], dim=1)
