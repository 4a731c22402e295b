"""OptFusion's fusion operations (Table 1) and their weighted mixture (eq. 12-13).

Every operation fuses the outputs of m lower-level components, stacked as x [B, m, d], into one [B, d] input of the
next component. `mask` [m] is the connection vector c(G_i, G_j) in {0, 1} (from the straight-through estimator
during search, so it carries gradient to alpha; None = all connected). Table 1 writes each operation for two inputs
x_i, x_j; with m inputs:

    ADD:     x' = sum_i c_i x_i
    PROD:    x' = prod_i (c_i x_i + (1 - c_i))          (a disconnected input is the identity 1, not a 0 factor)
    CONCAT:  x' = W [c_1 x_1 || ... || c_m x_m],        W in R^{d x m d}   (d x 2d for m = 2)
    ATT:     a_i = c_i exp(w2^T ReLU(W1 x_i + b1)) / sum_k c_k exp(w2^T ReLU(W1 x_k + b1)),   x' = sum_i a_i x_i
             W1 in R^{d x d}, w2, b1 in R^d            (attention pooling over the connected inputs)

A component with no connected input receives 0 from every operation. Eq. 12-13 (selection stage):

    p_j^o = exp(beta_j^o) / sum_{o'} exp(beta_j^{o'}),      e^_j = sum_o p_j^o * o({c_ij e_i})

Example:
    >>> x = torch.rand(4, 3, 8)
    >>> MixedFusion(num_inputs=3, dim=8)(x, torch.tensor([1.0, 0.0, 1.0]), torch.full((4,), 0.25)).shape
    torch.Size([4, 8])
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import nn

from recsys_dist.models.optfusion_dag import OPS


def _any_connected(mask: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """1.0 if some input is connected, else 0.0 (no gradient: a gate, not a weight)."""
    if mask is None:
        return x.new_ones(())
    return (mask.detach().sum() > 0).to(x.dtype)


class AddFusion(nn.Module):
    """ADD (Table 1): x' = sum_i c_i x_i.  x [B, m, d], mask [m] -> [B, d]."""

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if mask is None:
            return x.sum(dim=1)
        return torch.einsum("bmd,m->bd", x, mask)


class ProdFusion(nn.Module):
    """PROD (Table 1): Hadamard product x' = prod_i (c_i x_i + 1 - c_i).  x [B, m, d], mask [m] -> [B, d]."""

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if mask is None:
            return x.prod(dim=1)
        m = mask.view(1, -1, 1)
        return (x * m + (1 - m)).prod(dim=1) * _any_connected(mask, x)


class ConcatFusion(nn.Module):
    """CONCAT (Table 1): x' = W [c_1 x_1 || ... || c_m x_m], W in R^{d x m d} (no bias, as Table 1 writes it).

    Args:
        num_inputs: m. dim: d.
    """

    def __init__(self, num_inputs: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(num_inputs * dim, dim, bias=False)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if mask is not None:
            x = x * mask.view(1, -1, 1)
        return self.proj(x.flatten(1))


class AttentionFusion(nn.Module):
    """ATT (Table 1): attention pooling a_i = softmax_i(w2^T ReLU(W1 x_i + b1)) over connected inputs.

    Args:
        dim: d (W1 is d x d, w2 and b1 are d-vectors, shared by all inputs).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.W1 = nn.Linear(dim, dim, bias=True)  # W1, b1
        self.w2 = nn.Linear(dim, 1, bias=False)  # w2

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        s = self.w2(torch.relu(self.W1(x))).squeeze(-1)  # [B, m]
        if mask is None:
            a = torch.softmax(s, dim=1)
        else:  # a softmax restricted to connected inputs, written so that d a / d c_i exists (for the STE)
            e = torch.exp(s - s.max(dim=1, keepdim=True).values.detach()) * mask.view(1, -1)
            a = e / e.sum(dim=1, keepdim=True).clamp_min(1e-30)
        return torch.einsum("bm,bmd->bd", a, x)


class MixedFusion(nn.Module):
    """The fusion input of one component, eq. 13: e^_j = sum_o p_j^o o({c_ij e_i}), over the operations `ops`.

    Only the operations in `ops` are built (OptFusion-Hard keeps one; search and Soft keep all four).

    Args:
        num_inputs: m, the number of (candidate) inputs.
        dim: d, the width of every component's output.
        ops: operation names, a subset of ADD, PROD, CONCAT, ATT.

    forward(x [B, m, d], mask [m] or None, weights [len(ops)]) -> [B, d]
    """

    def __init__(self, num_inputs: int, dim: int, ops: Sequence[str] = OPS) -> None:
        super().__init__()
        unknown = [o for o in ops if o not in OPS]
        if unknown or not ops:
            raise ValueError(f"optfusion: fusion operations must be a non-empty subset of {OPS}, got {list(ops)}")
        self.ops = tuple(ops)
        builders = {"ADD": lambda: AddFusion(), "PROD": lambda: ProdFusion(),
                    "CONCAT": lambda: ConcatFusion(num_inputs, dim), "ATT": lambda: AttentionFusion(dim)}
        self.fusions: Dict[str, nn.Module] = nn.ModuleDict({o: builders[o]() for o in self.ops})

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
        out = None
        for k, o in enumerate(self.ops):
            y = self.fusions[o](x, mask)
            out = y * weights[k] if out is None else out + y * weights[k]
        return out
