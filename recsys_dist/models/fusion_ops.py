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

Each operation runs input by input on [B, d] tensors (the arch hands it the list of its m inputs): no [B, m, d]
stack, masked copy, attention projection or gradient of one is allocated. At OptFusion's preset (batch 4096,
d = 1560, m up to 8) those were 49-390 MiB each, ~190 of them per step, all above glibc's 32 MiB mmap threshold,
so each was mapped, page-faulted in and unmapped every step (docs/benchmarks.md, "Per-step temporaries"); a
[B, d] one (24 MiB) is kept and reused by the allocator.

Example:
    >>> x = torch.rand(4, 3, 8)
    >>> MixedFusion(num_inputs=3, dim=8)(x, torch.tensor([1.0, 0.0, 1.0]), torch.full((4,), 0.25)).shape
    torch.Size([4, 8])
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from recsys_dist.models.optfusion_dag import OPS

Inputs = Union[torch.Tensor, Sequence[torch.Tensor]]  # [B, m, d], or the m inputs [B, d]


def _split(x: Inputs) -> List[torch.Tensor]:
    return list(x.unbind(1)) if isinstance(x, torch.Tensor) else list(x)


def _any_connected(mask: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """1.0 if some input is connected, else 0.0 (no gradient: a gate, not a weight)."""
    if mask is None:
        return x.new_ones(())
    return (mask.detach().sum() > 0).to(x.dtype)


def _weighted_sum(xs: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum_i weights_i * xs_i as one [B, d] result (weights: scalars or [B, 1] columns)."""
    out = xs[0] * weights[0]
    for xi, wi in zip(xs[1:], weights[1:]):
        out = torch.addcmul(out, xi, wi)
    return out


class AddFusion(nn.Module):
    """ADD (Table 1): x' = sum_i c_i x_i.  x [B, m, d] or m x [B, d], mask [m] -> [B, d]."""

    def forward(self, x: Inputs, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        xs = _split(x)
        if mask is None:
            out = xs[0]
            for xi in xs[1:]:
                out = out + xi
            return out
        return _weighted_sum(xs, mask.unbind(0))


class ProdFusion(nn.Module):
    """PROD (Table 1): Hadamard product x' = prod_i (c_i x_i + 1 - c_i).  x [B, m, d] or m x [B, d], mask [m]
    -> [B, d]. A chain of products: its backward is prod_{k != i} by the chain rule (torch.prod's backward takes
    a cumprod path over the whole [B, m, d] stack as soon as one factor is 0, e.g. a ReLU output)."""

    def forward(self, x: Inputs, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        xs = _split(x)
        factors = xs if mask is None else [torch.addcmul(1 - ci, xi, ci) for xi, ci in zip(xs, mask.unbind(0))]
        out = factors[0]
        for f in factors[1:]:
            out = out * f
        return out if mask is None else out * _any_connected(mask, xs[0])


class ConcatFusion(nn.Module):
    """CONCAT (Table 1): x' = W [c_1 x_1 || ... || c_m x_m], W in R^{d x m d} (no bias, as Table 1 writes it),
    computed as sum_i (c_i x_i) W_i^T over the column blocks W_i [d, d] of W.

    Args:
        num_inputs: m. dim: d.
    """

    def __init__(self, num_inputs: int, dim: int) -> None:
        super().__init__()
        self.num_inputs, self.dim = num_inputs, dim
        self.proj = nn.Linear(num_inputs * dim, dim, bias=False)

    def forward(self, x: Inputs, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        xs = _split(x)
        if mask is not None:
            xs = [xi * ci for xi, ci in zip(xs, mask.unbind(0))]
        blocks = self.proj.weight.view(self.dim, self.num_inputs, self.dim).unbind(1)
        out = xs[0] @ blocks[0].T
        for xi, wi in zip(xs[1:], blocks[1:]):
            out = torch.addmm(out, xi, wi.T)
        return out


class AttentionFusion(nn.Module):
    """ATT (Table 1): attention pooling a_i = softmax_i(w2^T ReLU(W1 x_i + b1)) over connected inputs.

    Args:
        dim: d (W1 is d x d, w2 and b1 are d-vectors, shared by all inputs).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.W1 = nn.Linear(dim, dim, bias=True)  # W1, b1
        self.w2 = nn.Linear(dim, 1, bias=False)  # w2

    def forward(self, x: Inputs, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        xs = _split(x)
        s = torch.cat([self.w2(torch.relu(self.W1(xi))) for xi in xs], dim=1)  # [B, m]
        if mask is None:
            a = torch.softmax(s, dim=1)
        else:  # a softmax restricted to connected inputs, written so that d a / d c_i exists (for the STE)
            e = torch.exp(s - s.max(dim=1, keepdim=True).values.detach()) * mask.view(1, -1)
            a = e / e.sum(dim=1, keepdim=True).clamp_min(1e-30)
        return _weighted_sum(xs, a.split(1, dim=1))


class MixedFusion(nn.Module):
    """The fusion input of one component, eq. 13: e^_j = sum_o p_j^o o({c_ij e_i}), over the operations `ops`.

    Only the operations in `ops` are built (OptFusion-Hard keeps one; search and Soft keep all four).

    Args:
        num_inputs: m, the number of (candidate) inputs.
        dim: d, the width of every component's output.
        ops: operation names, a subset of ADD, PROD, CONCAT, ATT.

    forward(x [B, m, d] or m x [B, d], mask [m] or None, weights [len(ops)]) -> [B, d]
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

    def forward(self, x: Inputs, mask: Optional[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
        xs = _split(x)
        return _weighted_sum([self.fusions[o](xs, mask) for o in self.ops], weights.unbind(0))
