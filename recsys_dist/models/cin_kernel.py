"""One CIN layer (xDeepFM eq. 6) as chunked GEMMs, without keeping the [B, H, m, D] outer products.

    X^k[b, k, d] = sum_h sum_m W[k, h, m] X^{k-1}[b, h, d] X^0[b, m, d]

Seen per (b, d) row, this is one GEMM: Z[n, (h, m)] = X^{k-1}[n, h] X^0[n, m] (the outer product of the row's
two field vectors), then X^k[n, :] = Z[n, :] W^T with W viewed as [K, H m]. The rows n = (b, d) are processed in
chunks of about CHUNK_ELEMENTS values of Z (each costs 2K FLOPs of GEMM per value written, so Z need not
fit in cache), so Z lives in a few reused buffers instead of one B x D x H x m tensor
that is allocated and freed every step; the backward rebuilds each chunk's Z rather than saving it:

    dW    = sum_chunks dX^k[n, :]^T Z[n, :]                    (GEMM)
    dZ    = dX^k[n, :] W                                      (GEMM)
    dX^{k-1}[n, h] = sum_m dZ[n, h, m] X^0[n, m]     dX^0[n, m] = sum_h dZ[n, h, m] X^{k-1}[n, h]

Layout: rows first, i.e. X^{k-1} as [B, D, H] and X^0 as [B, D, m] (the CIN keeps its maps in that layout).
Under autocast the layer runs in the autocast dtype (like a linear layer) and returns that dtype.

Args:
    xk: [B, D, H]; x0: [B, D, m]; weight: [K, H, m].
Returns:
    [B, D, K]

Example:
    >>> cin_layer(torch.randn(2, 4, 3), torch.randn(2, 4, 5), torch.randn(6, 3, 5)).shape
    torch.Size([2, 4, 6])
"""

from __future__ import annotations

from typing import Tuple

import torch

CHUNK_ELEMENTS = 1 << 22  # values of Z per chunk: 16 MiB in fp32 (under glibc's 32 MiB mmap ceiling: reused)


def _rows_per_chunk(h: int, m: int) -> int:
    return max(1, CHUNK_ELEMENTS // (h * m))


def _outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[n, H] x [n, m] -> [n, H m], row-wise outer products."""
    return (a.unsqueeze(2) * b.unsqueeze(1)).flatten(1)


class _CINLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xk: torch.Tensor, x0: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        B, D, H = xk.shape
        m = x0.shape[2]
        K = weight.shape[0]
        a, b = xk.reshape(B * D, H), x0.reshape(B * D, m)
        w = weight.reshape(K, H * m)
        out = torch.empty(B * D, K, dtype=xk.dtype, device=xk.device)
        step = _rows_per_chunk(H, m)
        for s in range(0, B * D, step):
            torch.mm(_outer(a[s:s + step], b[s:s + step]), w.t(), out=out[s:s + step])
        ctx.save_for_backward(xk, x0, weight)
        return out.view(B, D, K)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xk, x0, weight = ctx.saved_tensors
        B, D, H = xk.shape
        m = x0.shape[2]
        K = weight.shape[0]
        a, b = xk.reshape(B * D, H), x0.reshape(B * D, m)
        w = weight.reshape(K, H * m)
        g = grad.to(xk.dtype).reshape(B * D, K)
        grad_a, grad_b = torch.empty_like(a), torch.empty_like(b)
        grad_w = torch.zeros_like(w)
        step = _rows_per_chunk(H, m)
        for s in range(0, B * D, step):
            a_s, b_s, g_s = a[s:s + step], b[s:s + step], g[s:s + step]
            grad_w.addmm_(g_s.t(), _outer(a_s, b_s))
            dz = torch.mm(g_s, w).view(-1, H, m)
            torch.bmm(dz, b_s.unsqueeze(2), out=grad_a[s:s + step].unsqueeze(2))
            torch.bmm(a_s.unsqueeze(1), dz, out=grad_b[s:s + step].unsqueeze(1))
        return grad_a.view(B, D, H), grad_b.view(B, D, m), grad_w.view(K, H, m)


@torch.fx.wrap
def cin_layer(xk: torch.Tensor, x0: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """See the module docstring. An fx leaf: TorchRec's train pipelines fx-trace the model around it."""
    device = xk.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device_type=device, enabled=False):
            return _CINLayer.apply(xk.to(dtype), x0.to(dtype), weight.to(dtype))
    dtype = torch.promote_types(torch.promote_types(xk.dtype, x0.dtype), weight.dtype)
    return _CINLayer.apply(xk.to(dtype), x0.to(dtype), weight.to(dtype))
