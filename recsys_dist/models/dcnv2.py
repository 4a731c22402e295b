"""DCN-V2 (Wang et al. 2021, "DCN V2: Improved Deep & Cross Network ..."): matrix cross layers, stacked or parallel.

    x_0     = [e_dense, e_1, ..., e_F]  flattened                       [B, N],  N = n d
    x_{l+1} = x_0 * (W_l x_l + b_l) + x_l                   (DCN-V2 eq. 1; W_l in R^{N x N})  cross="matrix"
    x_{l+1} = x_0 * (U_l (V_l^T x_l) + b_l) + x_l           (low rank r)                       cross="low_rank"
    x_{l+1} = sum_i G_i(x_l) E_i(x_l) + x_l,
              E_i(x_l) = x_0 * (U_li g(C_li g(V_li^T x_l)) + b_l)   (mixture of K low-rank experts)  cross="mixture"
    stacked:  logit = DNN(x_L)
    parallel: logit = w_c^T x_L + DNN(x_0)                  (= w^T [x_L; h_L] + b, as in DCN)

The cross layers are TorchRec's CrossNet / LowRankCrossNet / LowRankMixtureCrossNet.

Args:
    inputs: ArchInputs (num_dense may be 0).
    num_cross_layers: L.
    cross: matrix | low_rank | mixture.
    structure: stacked | parallel.
    low_rank: r (low_rank, mixture); num_experts: K (mixture).
    dnn: DNN widths ending with 1; dense_mlp: hidden widths of the numeric-feature MLP.
    mask_fusion: None, or MaskFusion options for the DNN tower.

Example:
    >>> arch = DCNv2Arch(ArchInputs(13, ("C1", "C2"), 8), cross="mixture", low_rank=4, num_experts=2,
    ...                  structure="stacked", dnn=[16, 1], dense_mlp=[16])
    >>> arch(torch.rand(4, 13), torch.rand(4, 2, 8)).shape
    torch.Size([4])
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn
from torchrec.modules.crossnet import CrossNet, LowRankCrossNet, LowRankMixtureCrossNet

from recsys_dist.models.arch import ArchInputs, DenseArch
from recsys_dist.models.dnn import NumericMLPField, build_dnn

CROSS_TYPES = ("matrix", "low_rank", "mixture")
STRUCTURES = ("stacked", "parallel")


class DCNv2Arch(DenseArch):
    def __init__(self, inputs: ArchInputs, num_cross_layers: int = 3, cross: str = "matrix",
                 structure: str = "parallel", low_rank: int = 64, num_experts: int = 4,
                 dnn: Sequence[int] = (512, 256, 1), dense_mlp: Sequence[int] = (512, 256, 64),
                 mask_fusion: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(inputs)
        if cross not in CROSS_TYPES:
            raise ValueError(f"dcnv2: cross={cross!r} is not one of {', '.join(CROSS_TYPES)}")
        if structure not in STRUCTURES:
            raise ValueError(f"dcnv2: structure={structure!r} is not one of {', '.join(STRUCTURES)}")
        for name, value in (("num_cross_layers", num_cross_layers), ("low_rank", low_rank),
                            ("num_experts", num_experts)):
            if value < 1:
                raise ValueError(f"dcnv2: {name} must be >= 1, got {value}")
        self.fields = NumericMLPField(inputs, dense_mlp)
        n, d = self.fields.num_fields, inputs.embedding_dim
        N = n * d
        if cross == "matrix":
            self.cross = CrossNet(N, num_cross_layers)
        elif cross == "low_rank":
            self.cross = LowRankCrossNet(N, num_cross_layers, low_rank=low_rank)
        else:
            self.cross = LowRankMixtureCrossNet(N, num_cross_layers, num_experts=num_experts, low_rank=low_rank)
        self.structure = structure
        self.cross_logit = nn.Linear(N, 1, bias=False) if structure == "parallel" else None
        self.dnn = build_dnn(N, dnn, n, d, mask_fusion, arch="dcnv2")

    def forward(self, dense: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        fields = self.fields(dense, embeddings)
        x0 = fields.flatten(1)
        xl = self.cross(x0)
        if self.cross_logit is None:  # stacked
            return self.dnn(xl, fields).squeeze(-1)
        return (self.cross_logit(xl) + self.dnn(x0, fields)).squeeze(-1)
