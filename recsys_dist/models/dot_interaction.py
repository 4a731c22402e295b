"""DLRM's pairwise dot interaction (Naumov et al. 2019, sec. 2.1.3) with a one-GEMM backward.

    Z = [z0; e_1; ...; e_F]                                   [B, F+1, D]
    p = [z0, <Z_i, Z_j> for 0 <= i < j <= F]                  [B, D + F + F(F-1)/2]

in TorchRec's order (`torchrec.models.dlrm.InteractionArch`: z0, then the upper triangle of Z Z^T row by row),
so the two are interchangeable; `tests/test_dense_kernels.py` checks values and gradients against it.

The forward is TorchRec's (concatenate Z, one bmm for Z Z^T, gather its upper triangle). The backward differs:
autograd runs two bmms (G Z and G^T Z), a scatter and an add; here the symmetric gradient S (S_ij = S_ji =
dL/dp_ij, zero diagonal) is built once and one bmm gives every gradient:
    dZ = S Z,   dz0 = dL/dz0 (the copy in p) + (S Z)_0,   de_j = (S Z)_j
Small batched GEMMs run far below the machine's GEMM peak on CPU (27 x 64 x 27 per sample, ~45 GFLOP/s), so
dropping one halves the interaction's backward (1.75x on fwd + bwd, `benchmarks/bench_dense_arch.py`).

Example:
    >>> inter = DotInteraction(num_sparse_features=2)
    >>> inter(torch.rand(4, 3), torch.rand(4, 2, 3)).shape     # D + F + F(F-1)/2 = 3 + 2 + 1
    torch.Size([4, 6])
"""

from __future__ import annotations

from typing import Any, Tuple

import torch
from torch import nn


class _DotInteraction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z0: torch.Tensor, emb: torch.Tensor, upper: torch.Tensor,
                lower: torch.Tensor) -> torch.Tensor:
        combined = torch.cat([z0.unsqueeze(1), emb], dim=1)                               # Z [B, F+1, D]
        gram = torch.bmm(combined, combined.transpose(1, 2)).flatten(1)                    # Z Z^T [B, (F+1)^2]
        ctx.save_for_backward(combined, upper, lower)
        return torch.cat([z0, gram.index_select(1, upper)], dim=1)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Tuple[Any, ...]:
        combined, upper, lower = ctx.saved_tensors
        B, N, D = combined.shape
        g_pairs = g[:, D:]
        sym = g.new_zeros(B, N * N)
        sym.index_copy_(1, upper, g_pairs).index_copy_(1, lower, g_pairs)                 # S = S^T
        d_combined = torch.bmm(sym.view(B, N, N), combined)                                 # dZ = S Z
        return g[:, :D] + d_combined[:, 0], d_combined[:, 1:], None, None


def dot_interaction(z0: torch.Tensor, emb: torch.Tensor, upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """p = [z0, <z0, e_j>, <e_i, e_j> (i < j)] for z0 [B, D], emb [B, F, D]; upper / lower: flat triangle indices.

    Under autocast (bf16) it still runs in fp32: each output is a sum of D products of embedding values, the
    step's most rounding-sensitive numbers, for ~5% of the DLRM's FLOPs."""
    device = z0.device.type
    if torch.is_autocast_enabled(device):
        with torch.autocast(device, enabled=False):
            return _DotInteraction.apply(z0.float(), emb.float(), upper, lower)
    return _DotInteraction.apply(z0, emb, upper, lower)


torch.fx.wrap("dot_interaction")  # a leaf in TorchRec's pipeline tracing


class DotInteraction(nn.Module):
    """Drop-in for TorchRec's InteractionArch: forward(z0 [B, D], emb [B, F, D]) -> [B, D + F + F(F-1)/2]."""

    def __init__(self, num_sparse_features: int) -> None:
        super().__init__()
        N = num_sparse_features + 1
        i, j = torch.triu_indices(N, N, offset=1)
        self.register_buffer("upper", i * N + j, persistent=False)   # (i, j), i < j, row-major: TorchRec's order
        self.register_buffer("lower", j * N + i, persistent=False)   # the mirrored (j, i)

    def forward(self, z0: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if emb.shape[1] == 0:
            return z0
        return dot_interaction(z0, emb, self.upper, self.lower)
