"""The components of OptFusion's DAG: cross components (three types, Table 6) and deep components.

Every component maps its fused input x_l [B, d] to an output [B, d], d = F' * D (F' fields of dim D), so that any
component's output can feed any higher-level component. Cross components also read x_0 = the embedding
component's output, as in DCN's cross network (the authors' code does the same: `cross_layer(emb, fused)`).

Example:
    >>> x0, xl = torch.rand(4, 3 * 8), torch.rand(4, 3 * 8)
    >>> make_cross_component("cin", num_fields=3, dim=8)(x0, xl).shape
    torch.Size([4, 24])
"""

from __future__ import annotations

import torch
from torch import nn


class CrossNetComponent(nn.Module):
    """One DCN cross layer (Wang et al. 2017, "Deep & Cross Network", eq. 3):

        x_{l+1} = x_0 x_l^T w_l + b_l + x_l          w_l, b_l in R^d

    Args:
        dim: d.
    forward(x0 [B, d], xl [B, d]) -> [B, d]
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(nn.init.xavier_normal_(torch.empty(dim, 1)).view(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x0: torch.Tensor, xl: torch.Tensor) -> torch.Tensor:
        return x0 * (xl @ self.weight).unsqueeze(1) + self.bias + xl


class CrossNetV2Component(nn.Module):
    """One DCN-V2 cross layer (Wang et al. 2021, "DCN V2", eq. 1):

        x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l          W_l in R^{d x d}, b_l in R^d

    Args:
        dim: d.
    forward(x0 [B, d], xl [B, d]) -> [B, d]
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(nn.init.xavier_normal_(torch.empty(dim, dim)))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x0: torch.Tensor, xl: torch.Tensor) -> torch.Tensor:
        return x0 * (xl @ self.weight.T + self.bias) + xl


class CINComponent(nn.Module):
    """One Compressed Interaction Network layer (Lian et al. 2018, "xDeepFM", eq. 6), with H = F' feature maps:

        X^k_{h,*} = sum_{i=1}^{F'} sum_{j=1}^{F'} W^{k,h}_{ij} (X^{k-1}_{i,*} ∘ X^0_{j,*})      W^{k,h} in R^{F' x F'}

    X^{k-1} is the fused input and X^0 the embeddings, both seen as [B, F', D]. The output keeps the feature maps
    [B, F', D] (flattened to [B, d]) instead of xDeepFM's sum pooling, so that it can feed other components.

    Args:
        num_fields: F'. dim: D.
    forward(x0 [B, F' D], xl [B, F' D]) -> [B, F' D]
    """

    def __init__(self, num_fields: int, dim: int) -> None:
        super().__init__()
        self.num_fields, self.dim = num_fields, dim
        self.weight = nn.Parameter(torch.empty(num_fields, num_fields, num_fields))  # [h, i, j]
        nn.init.xavier_uniform_(self.weight.view(num_fields, -1))

    def forward(self, x0: torch.Tensor, xl: torch.Tensor) -> torch.Tensor:
        B = x0.shape[0]
        X0 = x0.view(B, self.num_fields, self.dim)
        Xl = xl.reshape(B, self.num_fields, self.dim)
        # sum_j W[h,i,j] X0[j] first ([B, H, F', D]), then the Hadamard product with X^{k-1}[i] and the sum over i
        return torch.einsum("bid,bhid->bhd", Xl, torch.einsum("hij,bjd->bhid", self.weight, X0)).flatten(1)


def make_cross_component(cross_type: str, num_fields: int, dim: int) -> nn.Module:
    """cross_type: crossnet | crossnetv2 | cin (Table 6); width d = num_fields * dim."""
    if cross_type == "crossnet":
        return CrossNetComponent(num_fields * dim)
    if cross_type == "crossnetv2":
        return CrossNetV2Component(num_fields * dim)
    if cross_type == "cin":
        return CINComponent(num_fields, dim)
    raise ValueError(f"optfusion: cross_type {cross_type!r} is not one of crossnet, crossnetv2, cin")


class DeepComponent(nn.Module):
    """One MLP block (the paper's deep component; three of them = its 3-layer MLP of width dim_emb x num_fields):

        h = Dropout(ReLU(BN(W x + b)))          W in R^{d x d}

    Args:
        dim: d. batch_norm: add BatchNorm1d. dropout: dropout rate.
    forward(x [B, d]) -> [B, d]
    """

    def __init__(self, dim: int, batch_norm: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        layers = [nn.Linear(dim, dim)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(dim))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)

