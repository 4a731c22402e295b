"""IPNN (Qu et al. 2016, "Product-based Neural Networks for User Response Prediction"): inner-product layer + DNN.

    z     = [e_dense, e_1, ..., e_F]  flattened                       the linear signals l_z   [B, n d]
    p_ij  = <e_i, e_j>,  i < j                                          inner products (PNN Sec. 3.2)  [B, n(n-1)/2]
    l_1   = ReLU(l_z + l_p + b_1) = ReLU(W [z; p] + b_1)                product layer (PNN eq. 3)
    logit = DNN([z; p])                                                  l_1 is the DNN's first layer

The p_ij are all the pairwise inner products (the paper's full form, not its first-order decomposition).

Args:
    inputs: ArchInputs (num_dense may be 0).
    dnn: DNN widths ending with 1; dense_mlp: hidden widths of the numeric-feature MLP.
    mask_fusion: None, or MaskFusion options for the DNN tower.

Example:
    >>> arch = IPNNArch(ArchInputs(13, ("C1", "C2"), 8), dnn=[16, 1], dense_mlp=[16])
    >>> arch(torch.rand(4, 13), torch.rand(4, 2, 8)).shape
    torch.Size([4])
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from recsys_dist.models.arch import ArchInputs, DenseArch
from recsys_dist.models.dnn import NumericMLPField, build_dnn


class InnerProducts(nn.Module):
    """PNN Sec. 3.2 (IPNN): p_ij = <e_i, e_j> for all field pairs i < j, in row-major (i, j) order.

    Shapes: [B, n, d] -> [B, n(n-1)/2].

    Example:
        >>> InnerProducts(3)(torch.ones(2, 3, 4))
        tensor([[4., 4., 4.],
                [4., 4., 4.]])
    """

    def __init__(self, num_fields: int) -> None:
        super().__init__()
        i, j = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("i", i, persistent=False)
        self.register_buffer("j", j, persistent=False)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(fields, fields.transpose(1, 2))  # [B, n, n]
        return gram[:, self.i, self.j]


class IPNNArch(DenseArch):
    def __init__(self, inputs: ArchInputs, dnn: Sequence[int] = (512, 256, 1),
                 dense_mlp: Sequence[int] = (512, 256, 64), mask_fusion: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(inputs)
        self.fields = NumericMLPField(inputs, dense_mlp)
        n, d = self.fields.num_fields, inputs.embedding_dim
        self.products = InnerProducts(n)
        self.dnn = build_dnn(n * d + n * (n - 1) // 2, dnn, n, d, mask_fusion, arch="ipnn")

    def forward(self, dense: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        fields = self.fields(dense, embeddings)
        x = torch.cat([fields.flatten(1), self.products(fields)], dim=1)
        return self.dnn(x, fields).squeeze(-1)
