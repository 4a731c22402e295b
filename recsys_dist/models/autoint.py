"""AutoInt+ (Song et al. 2019, "AutoInt: Automatic Feature Interaction Learning via Self-Attentive Neural Networks").

Interacting layer, for field m and head h (AutoInt eq. 5-8):
    alpha^h_{m,k} = exp(psi^h(e_m, e_k)) / sum_l exp(psi^h(e_m, e_l)),  psi^h(e_m, e_k) = <W^h_Q e_m, W^h_K e_k>
    e~^h_m        = sum_k alpha^h_{m,k} (W^h_V e_k)                                         [d']
    e~_m          = e~^1_m (+) ... (+) e~^H_m                   concatenation over heads     [H d']
    e^Res_m       = ReLU(e~_m + W_Res e_m)
Output and AutoInt+ (the attention joined with a DNN):
    logit = w^T [e^Res_1 (+) ... (+) e^Res_n] + b + DNN([e_dense, e_1, ..., e_F])   (AutoInt eq. 9, + DNN)

No 1/sqrt(d') scaling: psi is the plain inner product, as the paper writes it.

Args:
    inputs: ArchInputs (num_dense may be 0).
    attention_layers: stacked interacting layers; heads: H; attention_dim: d'.
    residual: add W_Res e_m (eq. 8).
    dnn: DNN widths ending with 1; dense_mlp: hidden widths of the numeric-feature MLP.
    mask_fusion: None, or MaskFusion options for the DNN tower.

Example:
    >>> arch = AutoIntArch(ArchInputs(13, ("C1", "C2"), 8), attention_layers=1, heads=2, attention_dim=4,
    ...                    dnn=[16, 1], dense_mlp=[16])
    >>> arch(torch.rand(4, 13), torch.rand(4, 2, 8)).shape
    torch.Size([4])
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from recsys_dist.models.arch import ArchInputs, DenseArch
from recsys_dist.models.dnn import NumericMLPField, build_dnn


class InteractingLayer(nn.Module):
    """One AutoInt interacting layer (eq. 5-8): multi-head self-attention over fields with a residual.

    Args:
        in_dim: d of the input fields; heads: H; attention_dim: d'; residual: add W_Res e_m.
    Shapes: [B, n, in_dim] -> [B, n, H * d'].

    Example:
        >>> InteractingLayer(8, heads=2, attention_dim=4)(torch.randn(3, 5, 8)).shape
        torch.Size([3, 5, 8])
    """

    def __init__(self, in_dim: int, heads: int, attention_dim: int, residual: bool = True) -> None:
        super().__init__()
        self.heads, self.attention_dim = heads, attention_dim
        out = heads * attention_dim
        self.query = nn.Linear(in_dim, out, bias=False)
        self.key = nn.Linear(in_dim, out, bias=False)
        self.value = nn.Linear(in_dim, out, bias=False)
        self.res = nn.Linear(in_dim, out, bias=False) if residual else None

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # [B, n, H d'] -> [B, H, n, d']
        return x.view(x.shape[0], x.shape[1], self.heads, self.attention_dim).transpose(1, 2)

    def attention(self, e: torch.Tensor) -> torch.Tensor:
        """alpha [B, H, n, n] (eq. 5-6)."""
        scores = self._split(self.query(e)) @ self._split(self.key(e)).transpose(2, 3)
        return torch.softmax(scores, dim=-1)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        heads = self.attention(e) @ self._split(self.value(e))  # eq. 6: [B, H, n, d']
        out = heads.transpose(1, 2).reshape(e.shape[0], e.shape[1], -1)  # eq. 7: concat heads
        if self.res is not None:
            out = out + self.res(e)
        return torch.relu(out)  # eq. 8


class AutoIntArch(DenseArch):
    def __init__(self, inputs: ArchInputs, attention_layers: int = 3, heads: int = 2, attention_dim: int = 32,
                 residual: bool = True, dnn: Sequence[int] = (512, 256, 1),
                 dense_mlp: Sequence[int] = (512, 256, 64), mask_fusion: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(inputs)
        for name, value in (("attention_layers", attention_layers), ("heads", heads),
                            ("attention_dim", attention_dim)):
            if value < 1:
                raise ValueError(f"autoint: {name} must be >= 1, got {value}")
        self.fields = NumericMLPField(inputs, dense_mlp)
        n, d = self.fields.num_fields, inputs.embedding_dim
        dims = [d] + [heads * attention_dim] * attention_layers
        self.attention = nn.Sequential(*[InteractingLayer(dims[i], heads, attention_dim, residual)
                                         for i in range(attention_layers)])
        self.attention_logit = nn.Linear(n * dims[-1], 1)  # eq. 9
        self.dnn = build_dnn(n * d, dnn, n, d, mask_fusion, arch="autoint")

    def forward(self, dense: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        fields = self.fields(dense, embeddings)
        y = self.attention_logit(self.attention(fields).flatten(1)) + self.dnn(fields.flatten(1), fields)
        return y.squeeze(-1)
