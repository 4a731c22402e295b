"""DCN (Wang et al. 2017, "Deep & Cross Network for Ad Click Predictions"): a cross network beside a DNN.

    x_0     = [e_dense, e_1, ..., e_F]  flattened                         [B, N],  N = n d
    x_{l+1} = x_0 x_l^T w_l + b_l + x_l        (DCN eq. 3, w_l, b_l in R^N)  -> VectorCross
    h       = DNN(x_0)                         (DCN eq. 4, last hidden layer h_L)
    logit   = w_logit^T [x_L; h_L] + b         (DCN eq. 5)

A linear map of a concatenation is the sum of linear maps of its parts, so eq. 5 is computed as
`w_c^T x_L + DNN(x_0)` with the DNN's last layer (width 1) holding w_d and b: the DNN tower ends in the logit
and MaskFusion can replace it like in every other arch.

Args:
    inputs: ArchInputs (num_dense may be 0).
    num_cross_layers: L, the number of cross layers.
    dnn: DNN widths, ending with 1 (MaskFusion Appendix A: [512, 256, 1]).
    dense_mlp: hidden widths of the numeric-feature MLP (its last layer, of width d, is added).
    mask_fusion: None, or MaskFusion options for the DNN tower (recsys_dist.models.maskfusion).

Example:
    >>> arch = DCNArch(ArchInputs(13, ("C1", "C2"), 8), num_cross_layers=2, dnn=[16, 1], dense_mlp=[16])
    >>> arch(torch.rand(4, 13), torch.rand(4, 2, 8)).shape
    torch.Size([4])
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn
from torchrec.modules.crossnet import VectorCrossNet

from recsys_dist.models.arch import ArchInputs, DenseArch
from recsys_dist.models.dnn import NumericMLPField, build_dnn


class VectorCross(VectorCrossNet):
    """TorchRec's VectorCrossNet (same parameters, init and state-dict keys) with eq. 3 computed as
    x_0 * (x_l w_l) + b_l + x_l: one [B, N] x [N] product and elementwise ops per layer, where TorchRec's
    `matmul(x_0 [B, N, 1], x_l w_l [B, 1, 1])` runs B batched 1 x 1 matmuls forward and two more in the backward.

    Example:
        >>> VectorCross(6, num_layers=2)(torch.rand(4, 6)).shape
        torch.Size([4, 6])
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x_l = input
        for kernel, bias in zip(self.kernels, self.bias):
            x_l = torch.addcmul(x_l + bias.view(-1), input, x_l @ kernel)  # x_l + b_l + x_0 * (x_l w_l)
        return x_l


class DCNArch(DenseArch):
    def __init__(self, inputs: ArchInputs, num_cross_layers: int = 3, dnn: Sequence[int] = (512, 256, 1),
                 dense_mlp: Sequence[int] = (512, 256, 64), mask_fusion: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(inputs)
        if num_cross_layers < 1:
            raise ValueError(f"dcn: num_cross_layers must be >= 1, got {num_cross_layers}")
        self.fields = NumericMLPField(inputs, dense_mlp)
        n, d = self.fields.num_fields, inputs.embedding_dim
        self.cross = VectorCross(n * d, num_cross_layers)
        self.cross_logit = nn.Linear(n * d, 1, bias=False)  # w_c of eq. 5; b lives in the DNN's last layer
        self.dnn = build_dnn(n * d, dnn, n, d, mask_fusion, arch="dcn")

    def forward(self, dense: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        fields = self.fields(dense, embeddings)
        x0 = fields.flatten(1)
        return (self.cross_logit(self.cross(x0)) + self.dnn(x0, fields)).squeeze(-1)
