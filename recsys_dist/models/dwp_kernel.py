"""DynInt-DWP's layer core (eq. 9-10 and the eq. 12 penalty) as one autograd Function, chunked over the batch.

    A[b]       = W X_0 + sum_p u_p o (W (v_p o X_0))                    (the eq. 10 form of (G^(i) o W) X_0)
    penalty[b] = sum_{p<q} |cos(u_p, u_q)| + |cos(v_p, v_q)|             (eq. 12's per-instance layer term)

with X_0 [R, C] and the K generated pairs u_p, v_p in R^R of instance b. The plain autograd form
(`dwp_layer_reference`, what DynamicWeightedLayer ran before) builds v o X_0, W (v o X_0) and u o W (v o X_0) as
[B, K, R, C] tensors, their gradients again in the backward, normalizes the [B, K, R] pairs for the cosines and
stacks the gradients of u and v into the generator's output: ~20 passes over 40 MB tensors per layer at the
DynInt preset (B = 4096, K = 4, R = 624, C = 1), each freshly page-faulted (over glibc's 32 MiB mmap ceiling).
Here, per chunk of instances (every buffer <= ~16 MiB, reused by malloc):

    Z = [X_0; v_1 o X_0; ...; v_K o X_0]   as [n (K+1) C, R] rows   ->   Y = Z W^T   (ONE GEMM; W X_0 is Y_0)
    A = Y_0 + sum_p u_p o Y_p
    cosines from the K x K Gram matrix a a^T and the row norms (no normalized copy of the pairs)

    backward:  dY = [dA; u_p o dA]    du_p = sum_c dA o Y_p    dW += dY^T Z    dZ = dY W
               dX_0 = dZ_0 + sum_p v_p o dZ_p                  dv_p = sum_c dZ_p o X_0
               d(pairs) += M a with M (K x K) = dGram + dGram^T + diag(dnorm / norm): one small bmm per side

and writes d(pairs) straight into the generator's output layout. Same math as the reference (values and gradients
equal in float64, tests/test_dwp_kernel.py), including F.normalize's eps clamp and a zero pair vector's zero
gradient. Under autocast the GEMMs run in the autocast dtype and the rest in float32, like the autograd form.

Args:
    pairs: [B, 2, K, R], the generator's output (u = pairs[:, 0], v = pairs[:, 1]); x0: [B, R, C]; weight: [R, R].
Returns:
    (A [B, R, C], penalty [B])

Example:
    >>> a, pen = dwp_layer(torch.randn(3, 2, 2, 5), torch.randn(3, 5, 4), torch.randn(5, 5))
    >>> a.shape, pen.shape
    (torch.Size([3, 5, 4]), torch.Size([3]))
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch.nn import functional as F

CHUNK_BYTES = 16 * 1024 * 1024  # the largest per-chunk buffer (Z, Y, dY, dZ): under glibc's 32 MiB mmap ceiling
COS_EPS = 1e-12  # F.normalize's default eps, as pairwise_abs_cosine uses it


def _chunk_rows(k: int, c: int, r: int, itemsize: int) -> int:
    return max(1, CHUNK_BYTES // ((k + 1) * c * r * itemsize))


def pairwise_abs_cosine(vectors: torch.Tensor) -> torch.Tensor:
    """sum_{p>q} |cos(a_p, a_q)| over the K vectors a_p of `vectors` [..., K, R] -> [...] (eq. 11-12 terms)."""
    unit = F.normalize(vectors, dim=-1, eps=COS_EPS)
    cos = torch.matmul(unit, unit.transpose(-1, -2))
    return torch.triu(cos.abs(), diagonal=1).sum(dim=(-1, -2))


def _mul_sum_c(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """sum_c a o b over dim 2 (the C columns) of [n, K, C, R] operands into out [n, K, R]; one pass when C = 1."""
    if a.shape[2] == 1 and b.shape[2] == 1:
        return torch.mul(a.squeeze(2), b.squeeze(2), out=out)
    return torch.sum(a * b, dim=2, out=out)


def _cosines(a: torch.Tensor, eps: float) -> Tuple[torch.Tensor, tuple]:
    """sum_{p<q} |cos(a_p, a_q)| of a [n, K, R] -> [n], and what the backward needs."""
    gram = torch.bmm(a, a.transpose(1, 2))
    norm = torch.linalg.vector_norm(a, dim=-1)
    d = norm.clamp_min(eps)  # F.normalize divides by max(||a||, eps)
    cos = gram / (d.unsqueeze(-1) * d.unsqueeze(-2))
    return torch.triu(cos.abs(), diagonal=1).sum(dim=(-1, -2)), (norm, d, cos)


def _cosines_backward(grad: torch.Tensor, saved: tuple, eps: float) -> torch.Tensor:
    """M [n, K, K] with d(penalty)/da = M a, from the upstream gradient [n] of `_cosines`."""
    norm, d, cos = saved
    gcos = torch.triu(torch.sgn(cos), diagonal=1) * grad[:, None, None]  # |.|' = sgn (0 at 0, as torch.abs)
    ggram = gcos / (d.unsqueeze(-1) * d.unsqueeze(-2))
    gc = gcos * cos
    gd = -(gc.sum(-1) + gc.sum(-2)) / d
    gnorm = torch.where(norm >= eps, gd, torch.zeros_like(gd))  # clamp_min passes the gradient where norm >= eps
    scale = (gnorm / norm).masked_fill(norm == 0, 0)  # d||a||/da = a / ||a||, 0 at a = 0 (torch's norm backward)
    return ggram + ggram.transpose(1, 2) + torch.diag_embed(scale)


class _DWPLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pairs: torch.Tensor, x0: torch.Tensor, weight: torch.Tensor, gemm_dtype: torch.dtype):
        ctx.set_materialize_grads(False)
        B, _, K, R = pairs.shape
        C = x0.shape[2]
        x0t = x0.transpose(1, 2)  # [B, C, R]: each (instance, column) is one GEMM row
        wt = weight.t().to(gemm_dtype)
        out = x0.new_empty(B, C, R)
        penalty = x0.new_empty(B)
        zs, ys, cos_saved = [], [], []
        step = _chunk_rows(K, C, R, x0.element_size())
        for s in range(0, B, step):
            u, v, xt = pairs[s:s + step, 0], pairs[s:s + step, 1], x0t[s:s + step]
            n = u.shape[0]
            z = x0.new_empty(n, K + 1, C, R)
            z[:, 0].copy_(xt)
            torch.mul(v.unsqueeze(2), xt.unsqueeze(1), out=z[:, 1:])
            y = torch.mm(z.view(-1, R).to(gemm_dtype), wt).to(x0.dtype).view(n, K + 1, C, R)
            torch.sum(u.unsqueeze(2) * y[:, 1:], dim=1, out=out[s:s + step]).add_(y[:, 0])
            pen_u, saved_u = _cosines(u, COS_EPS)
            pen_v, saved_v = _cosines(v, COS_EPS)
            torch.add(pen_u, pen_v, out=penalty[s:s + step])
            zs.append(z)
            ys.append(y)
            cos_saved.append((saved_u, saved_v))
        ctx.save_for_backward(pairs, weight, *zs, *ys)
        ctx.cos_saved, ctx.step, ctx.gemm_dtype = cos_saved, step, gemm_dtype
        return out.transpose(1, 2), penalty

    @staticmethod
    def backward(ctx, grad_out: Optional[torch.Tensor], grad_penalty: Optional[torch.Tensor]):
        pairs, weight, *rest = ctx.saved_tensors
        zs, ys = rest[:len(rest) // 2], rest[len(rest) // 2:]
        B, _, K, R = pairs.shape
        C = zs[0].shape[2]
        grad_pairs = torch.zeros_like(pairs) if grad_out is None else torch.empty_like(pairs)
        grad_x0t = None if grad_out is None else pairs.new_empty(B, C, R)
        grad_w = None if grad_out is None else torch.zeros_like(weight)
        w = weight.to(ctx.gemm_dtype)
        gt_all = None if grad_out is None else grad_out.transpose(1, 2)
        for i, s in enumerate(range(0, B, ctx.step)):
            z, y = zs[i], ys[i]
            u, v = pairs[s:s + ctx.step, 0], pairs[s:s + ctx.step, 1]
            gu, gv = grad_pairs[s:s + ctx.step, 0], grad_pairs[s:s + ctx.step, 1]
            if grad_out is not None:
                gt = gt_all[s:s + ctx.step]  # [n, C, R]
                n = gt.shape[0]
                gy = torch.empty_like(y)
                gy[:, 0].copy_(gt)
                torch.mul(u.unsqueeze(2), gt.unsqueeze(1), out=gy[:, 1:])
                _mul_sum_c(gt.unsqueeze(1), y[:, 1:], gu)
                gy2 = gy.view(-1, R).to(ctx.gemm_dtype)
                grad_w.add_(torch.mm(gy2.t(), z.view(-1, R).to(ctx.gemm_dtype)).to(grad_w.dtype))
                gz = torch.mm(gy2, w).to(z.dtype).view(n, K + 1, C, R)
                torch.sum(v.unsqueeze(2) * gz[:, 1:], dim=1, out=grad_x0t[s:s + ctx.step]).add_(gz[:, 0])
                _mul_sum_c(gz[:, 1:], z[:, :1], gv)
            if grad_penalty is not None:
                saved_u, saved_v = ctx.cos_saved[i]
                gp = grad_penalty[s:s + ctx.step]
                gu.baddbmm_(_cosines_backward(gp, saved_u, COS_EPS), u)
                gv.baddbmm_(_cosines_backward(gp, saved_v, COS_EPS), v)
        grad_x0 = None if grad_x0t is None else grad_x0t.transpose(1, 2)
        return grad_pairs, grad_x0, grad_w, None


@torch.fx.wrap
def dwp_layer(pairs: torch.Tensor, x0: torch.Tensor, weight: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """See the module docstring. An fx leaf: TorchRec's train pipelines fx-trace the model around it."""
    device = x0.device.type
    dtype = torch.promote_types(torch.promote_types(pairs.dtype, x0.dtype), weight.dtype)
    gemm_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else dtype
    with torch.autocast(device_type=device, enabled=False):
        return _DWPLayer.apply(pairs.to(dtype), x0.to(dtype), weight.to(dtype), gemm_dtype)


def dwp_layer_reference(pairs: torch.Tensor, x0: torch.Tensor, weight: torch.Tensor
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The same two outputs in plain autograd ops, the form the kernel replaced (tests and
    benchmarks/bench_dwp_kernel.py compare against it)."""
    u, v = pairs.unbind(1)
    penalty = pairwise_abs_cosine(u) + pairwise_abs_cosine(v)
    wvx = torch.matmul(weight, v.unsqueeze(-1) * x0.unsqueeze(1))  # W (v_p o X_0): [B, K, R, C]
    return torch.matmul(weight, x0) + (u.unsqueeze(-1) * wvx).sum(dim=1), penalty
