"""DLRM (Naumov et al. 2019): bottom MLP on dense features, pairwise dot interaction, top MLP.

    z0 = MLP_bottom(x_dense)                         [B, D]   (last bottom layer width = embedding dim D)
    Z  = [z0; e_1; ...; e_F]                         [B, F+1, D]
    p  = [z0, <Z_i, Z_j> for i < j]                  [B, D + (F+1)F/2]
    y  = MLP_top(p)   (no activation on the output)  [B]

Built from TorchRec's own `torchrec.models.dlrm` DenseArch / InteractionArch / OverArch, so the numbers are
TorchRec's; only the [B, F, D] interface around them is ours.

Args:
    inputs: ArchInputs (num_dense > 0 for the bottom MLP).
    bottom_mlp: widths of the bottom MLP; the last must equal the embedding dim.
    top_mlp: widths of the top MLP; the last must be 1.
    mask_fusion: None, or MaskFusion options (recsys_dist.models.maskfusion) for the top MLP, which then fuses
        the fields [z0; e_1; ...; e_F] into each of its layers.

Example:
    >>> arch = DLRMArch(ArchInputs(13, ("C1", "C2"), 8), bottom_mlp=[16, 8], top_mlp=[16, 1])
    >>> arch(torch.rand(4, 13), torch.rand(4, 2, 8)).shape
    torch.Size([4])
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torchrec.models.dlrm import DenseArch as TorchRecBottom
from torchrec.models.dlrm import InteractionArch, OverArch

from recsys_dist.models.arch import ArchInputs, DenseArch
from recsys_dist.models.maskfusion import MaskFusionDNN


class DLRMArch(DenseArch):
    def __init__(self, inputs: ArchInputs, bottom_mlp: Sequence[int] = (512, 256, 64),
                 top_mlp: Sequence[int] = (512, 512, 256, 1),
                 mask_fusion: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(inputs)
        D, F = inputs.embedding_dim, inputs.num_sparse
        if inputs.num_dense <= 0:
            raise ValueError("dlrm needs dense features for its bottom MLP (dataset has num_dense = 0)")
        if not bottom_mlp or bottom_mlp[-1] != D:
            raise ValueError(f"dlrm: bottom_mlp must end with the embedding dim {D}, got {list(bottom_mlp)}")
        if not top_mlp or top_mlp[-1] != 1:
            raise ValueError(f"dlrm: top_mlp must end with 1, got {list(top_mlp)}")
        self.bottom = TorchRecBottom(in_features=inputs.num_dense, layer_sizes=list(bottom_mlp))
        self.interaction = InteractionArch(num_sparse_features=F)
        top_in = D + (F + 1) * F // 2
        self.mask_fusion = mask_fusion is not None
        self.top = (MaskFusionDNN(top_in, list(top_mlp), F + 1, D, mask_fusion) if self.mask_fusion
                    else OverArch(in_features=top_in, layer_sizes=list(top_mlp)))

    def forward(self, dense: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        z0 = self.bottom(dense)
        x = self.interaction(z0, embeddings)
        if self.mask_fusion:
            return self.top(x, torch.cat([z0.unsqueeze(1), embeddings], dim=1)).squeeze(-1)
        return self.top(x).squeeze(-1)
