"""The two pieces every MaskFusion baseline shares: the DNN tower and the numeric-feature field.

DNN tower (the "deep part" of the seven arches; MaskFusion eq. 1 without fusion):
    h_t = ReLU(W_t h_{t-1} + b_t), t = 1..l-1;   y = W_l h_{l-1} + b_l           widths e.g. [512, 256, 1]
Every tower is called as `tower(x [B, in], fields [B, n, d]) -> [B, out]`, so an arch swaps the plain tower for
MaskFusion's (recsys_dist.models.maskfusion) with the `mask_fusion` argument and nothing else changes.

Numeric field (MaskFusion Appendix A): the numeric features, concatenated, go through an MLP whose last width is
the embedding dim d ([512, 256, 64, 16] for d = 16) and become one more field beside the n sparse fields.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn
from recsys_dist.models.mlp import MLP

from recsys_dist.models.arch import ArchInputs
from recsys_dist.models.maskfusion import MaskFusionDNN


class DNN(nn.Module):
    """The plain DNN tower: our MLP (TorchRec's, on oneDNN) with ReLU on every layer but the last.

    Args:
        in_features: width of x; layers: widths, e.g. [512, 256, 1].
    Shapes: forward(x [B, in_features], fields [B, n, d] (unused)) -> [B, layers[-1]].

    Example:
        >>> DNN(6, [8, 1])(torch.randn(2, 6), torch.randn(2, 3, 2)).shape
        torch.Size([2, 1])
    """

    def __init__(self, in_features: int, layers: Sequence[int]) -> None:
        super().__init__()
        if not layers:
            raise ValueError("dnn: the DNN tower needs at least one layer, e.g. [512, 256, 1]")
        self.mlp = MLP(in_features, list(layers), activation="relu", activation_on_last=False)

    def forward(self, x: torch.Tensor, fields: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def build_dnn(in_features: int, layers: Sequence[int], num_fields: int, embedding_dim: int,
              mask_fusion: Optional[Mapping[str, Any]] = None, arch: str = "arch") -> nn.Module:
    """The arch's DNN tower: plain, or MaskFusion's when `mask_fusion` is given (e.g. {"variant": "dwmf"})."""
    if not layers or layers[-1] != 1 or any((not isinstance(w, int)) or w <= 0 for w in layers):
        raise ValueError(f"{arch}: dnn must be positive integer widths ending with 1 (the logit), got {list(layers)}")
    if mask_fusion is None:
        return DNN(in_features, layers)
    return MaskFusionDNN(in_features, layers, num_fields, embedding_dim, mask_fusion)


class NumericMLPField(nn.Module):
    """Numeric features -> one extra [B, 1, d] field by an MLP (MaskFusion Appendix A); nothing if num_dense = 0.

    Args:
        inputs: ArchInputs; hidden: widths before the last layer (of width d), Appendix A: [512, 256, 64].
    Shapes: forward(dense [B, num_dense], embeddings [B, F, d]) -> fields [B, F + 1, d] ([B, F, d] if no dense).

    Example:
        >>> nf = NumericMLPField(ArchInputs(13, ("C1", "C2"), 4), hidden=[8])
        >>> nf(torch.rand(2, 13), torch.rand(2, 2, 4)).shape
        torch.Size([2, 3, 4])
    """

    def __init__(self, inputs: ArchInputs, hidden: Sequence[int] = (512, 256, 64)) -> None:
        super().__init__()
        if any((not isinstance(w, int)) or w <= 0 for w in hidden):
            raise ValueError(f"dense_mlp: expected positive integer widths, got {list(hidden)}")
        self.mlp = MLP(inputs.num_dense, list(hidden) + [inputs.embedding_dim]) if inputs.num_dense > 0 else None
        self.num_fields = inputs.num_sparse + (1 if self.mlp is not None else 0)

    def forward(self, dense: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        if self.mlp is None:
            return embeddings
        return torch.cat([self.mlp(dense).unsqueeze(1), embeddings], dim=1)
