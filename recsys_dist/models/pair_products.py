"""Hadamard products of field pairs, e[:, i] * e[:, j], without gathering either side (OptInter eq. 14, 18).

Pairs listed as (i, j), (i, j + 1), ... (i, j + n - 1) form a run: their products are one broadcast multiply of
e[:, i:i+1] by the contiguous slice e[:, j:j+n]. All 325 pairs of 26 fields in the usual order are 25 runs, so
no [B, P, d] gather of either side is made. `mixed_pair_products` also folds in eq. 18's weighting
(p_f e_f + p_m e_m) and computes its gradients run by run, so forward and backward allocate one [B, P, d] output
(and one [B, P, d] gradient of e_m) instead of the gathered sides, the product and each weighted term.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

Run = Tuple[int, int, int, int]  # (first output position, i, first j, n pairs)


def pair_runs(pairs: Sequence[Tuple[int, int]]) -> List[Run]:
    """Pairs -> runs (start, i, j, n): positions start..start+n-1 are (i, j), (i, j + 1), ..., (i, j + n - 1)."""
    runs: List[Run] = []
    for k, (i, j) in enumerate(pairs):
        if runs:
            s, ri, rj, n = runs[-1]
            if ri == i and rj + n == j:
                runs[-1] = (s, ri, rj, n + 1)
                continue
        runs.append((k, i, j, 1))
    return runs


def _w(w: torch.Tensor, s: int, n: int) -> torch.Tensor:
    return w[s:s + n].view(1, n, 1)


class _MixedPairProducts(torch.autograd.Function):
    @staticmethod
    def forward(ctx, e: torch.Tensor, w_f: Optional[torch.Tensor], e_m: Optional[torch.Tensor],
                w_m: Optional[torch.Tensor], prefix: Optional[torch.Tensor], runs: Tuple[Run, ...],
                num_pairs: int) -> torch.Tensor:
        k = 0 if prefix is None else prefix.shape[1]
        out = e.new_empty(e.shape[0], k + num_pairs, e.shape[2])
        if prefix is not None:
            out[:, :k].copy_(prefix)
        for s, i, j, n in runs:
            o = out[:, k + s:k + s + n]
            torch.mul(e[:, i:i + 1], e[:, j:j + n], out=o)
            if w_f is not None:
                o.mul_(_w(w_f, s, n))
            if e_m is not None:
                o.addcmul_(e_m[:, s:s + n], _w(w_m, s, n))
        ctx.runs, ctx.k = runs, k
        ctx.save_for_backward(e, w_f, e_m, w_m)
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        e, w_f, e_m, w_m = ctx.saved_tensors
        need_e, need_wf, need_em, need_wm, need_prefix = ctx.needs_input_grad[:5]
        g_prefix, g = (g[:, :ctx.k] if need_prefix else None), g[:, ctx.k:]
        g_e = torch.zeros_like(e) if need_e else None
        g_wf = torch.zeros_like(w_f) if need_wf else None
        g_em = (g * w_m.view(1, -1, 1)) if need_em else None
        g_wm = torch.zeros_like(w_m) if need_wm else None
        for s, i, j, n in ctx.runs:  # every temporary is [B, n, d] (n <= fields - 1): no [B, P, d] copies
            g_s = g[:, s:s + n]
            e_i, e_j = e[:, i:i + 1], e[:, j:j + n]
            if need_wm:
                g_wm[s:s + n] = (g_s * e_m[:, s:s + n]).sum((0, 2))
            if need_wf:
                g_wf[s:s + n] = (g_s * e_i * e_j).sum((0, 2))
            if need_e:
                g_f = g_s * _w(w_f, s, n) if w_f is not None else g_s  # d loss / d (e_i e_j)
                g_e[:, j:j + n].addcmul_(g_f, e_i)
                g_e[:, i] += (g_f * e_j).sum(1)
        return g_e, g_wf, g_em, g_wm, g_prefix, None, None


def mixed_pair_products(e: torch.Tensor, runs: Sequence[Run], num_pairs: int, w_f: Optional[torch.Tensor] = None,
                        e_m: Optional[torch.Tensor] = None, w_m: Optional[torch.Tensor] = None,
                        prefix: Optional[torch.Tensor] = None) -> torch.Tensor:
    """[B, P, d] with out[:, k] = w_f[k] e[:, i_k] * e[:, j_k] (+ w_m[k] e_m[:, k]) for the pairs of `runs`.

    e [B, F, d]; w_f, w_m [P] or None (weight 1 / no memorized term); e_m [B, P, d] in pair order; prefix
    [B, K, d] or None: the output is then [B, K + P, d], cat([prefix, products]) made in one buffer.
    Same values as the gathered form; gradients equal to rounding (sums in another order).

    Example:
        >>> e = torch.randn(2, 3, 4)
        >>> out = mixed_pair_products(e, pair_runs([(0, 1), (0, 2), (1, 2)]), 3)
        >>> torch.equal(out, e[:, [0, 0, 1]] * e[:, [1, 2, 2]])
        True
    """
    if (e_m is None) != (w_m is None):
        raise ValueError("e_m and w_m go together")
    return _MixedPairProducts.apply(e, w_f, e_m, w_m, prefix, tuple(runs), num_pairs)
