"""The fused DynInt-DWP layer core (recsys_dist/models/dwp_kernel.py) computes what the plain autograd form of eq. 10
and eq. 12 computes: values and gradients to the pairs, X_0 and W, in float64."""

from __future__ import annotations

import pytest
import torch

import recsys_dist.models.dwp_kernel as kernel
import recsys_dist.models.dynint as dynint
from recsys_dist.models.dwp_kernel import dwp_layer, dwp_layer_reference as reference
from recsys_dist.models.dynint import DynIntArch
from recsys_dist.models.arch import ArchInputs


def _inputs(B, K, R, C, seed=0):
    g = torch.Generator().manual_seed(seed)
    pairs = torch.randn(B, 2, K, R, generator=g, dtype=torch.float64)
    x0 = torch.randn(B, R, C, generator=g, dtype=torch.float64)
    weight = torch.randn(R, R, generator=g, dtype=torch.float64)
    return pairs, x0, weight


def _values_and_grads(fn, pairs, x0, weight, use_out=True, use_penalty=True, seed=1):
    leaves = [t.detach().clone().requires_grad_() for t in (pairs, x0, weight)]
    out, penalty = fn(*leaves)
    g = torch.Generator().manual_seed(seed)
    loss = 0.0
    if use_out:
        loss = loss + (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    if use_penalty:
        loss = loss + (penalty * torch.randn(penalty.shape, generator=g, dtype=penalty.dtype)).sum()
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [out, penalty] + [torch.zeros_like(t) if gr is None else gr for t, gr in zip(leaves, grads)]


def _assert_same(pairs, x0, weight, **kw):
    """The kernel against dwp_layer_reference, the autograd form DynamicWeightedLayer ran before the kernel."""
    for a, b in zip(_values_and_grads(dwp_layer, pairs, x0, weight, **kw),
                    _values_and_grads(reference, pairs, x0, weight, **kw)):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("B,K,R,C", [(5, 3, 7, 1), (4, 2, 6, 3), (3, 1, 4, 2)])
def test_values_and_gradients_equal_the_autograd_form(B, K, R, C):
    """Catches a wrong term in the fused forward or backward (a dropped W X_0, dv summed over the wrong axis, a
    missing cosine-norm gradient): any of them moves a value or gradient far beyond 1e-12."""
    _assert_same(*_inputs(B, K, R, C))


def test_across_chunks(monkeypatch):
    """Catches chunk bookkeeping errors (a chunk's rows, Z or Y, or dW accumulated from one chunk only)."""
    monkeypatch.setattr(kernel, "CHUNK_BYTES", 2 * (3 + 1) * 2 * 5 * 8)  # 2 instances per chunk at K=3, R=5, C=2
    assert kernel._chunk_rows(3, 2, 5, 8) == 2
    _assert_same(*_inputs(7, 3, 5, 2))


def test_zero_and_tiny_pair_vectors():
    """Catches a NaN / inf gradient for a zero pair vector (the generator's output at init can be exactly 0) and a
    norm below F.normalize's eps, where the reference divides by eps and passes no gradient through the norm."""
    pairs, x0, weight = _inputs(4, 3, 6, 1)
    pairs[0] = 0.0
    pairs[1, 0, 1] = 0.0
    pairs[2, 1, 2] *= 1e-14
    _assert_same(pairs, x0, weight)
    grads = _values_and_grads(dwp_layer, pairs, x0, weight)
    assert all(torch.isfinite(t).all() for t in grads)


@pytest.mark.parametrize("use_out,use_penalty", [(True, False), (False, True)])
def test_one_output_unused(use_out, use_penalty):
    """Catches a backward that assumes both outputs get a gradient (lambda = 0 leaves the penalty out of the loss)."""
    _assert_same(*_inputs(3, 2, 5, 2), use_out=use_out, use_penalty=use_penalty)


def test_dynint_dwp_arch_equals_the_autograd_form():
    """The whole DWP arch (3 layers, sub-spaces, penalty through regularization_loss) with the kernel against the
    same arch whose layers run the reference: loss and every parameter's and the embeddings' gradient."""
    torch.manual_seed(0)
    arch = DynIntArch(ArchInputs(2, ("C1", "C2", "C3"), 8), mode="dwp", num_layers=3, num_subspaces=4, rank=3,
                      reduction_ratio=2, ortho_lambda=0.1).double()
    emb = torch.randn(6, 3, 8, dtype=torch.float64, requires_grad=True)
    dense = torch.rand(6, 2, dtype=torch.float64)

    def loss_and_grads():
        loss = arch(dense, emb).square().sum() + arch.regularization_loss()
        return [loss, *torch.autograd.grad(loss, [emb, *arch.parameters()])]

    ours = loss_and_grads()
    dynint.dwp_layer = reference
    try:
        ref = loss_and_grads()
    finally:
        dynint.dwp_layer = dwp_layer
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_autocast_runs_the_gemms_in_bf16():
    """Under CPU bf16 autocast the layer returns float32 close to the float32 result (GEMMs in bf16, as the
    autograd form's matmuls were), and its backward runs."""
    pairs, x0, weight = (t.float() for t in _inputs(4, 2, 8, 2))
    want, want_pen = dwp_layer(pairs, x0, weight)
    pairs.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, got_pen = dwp_layer(pairs, x0, weight)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0.05, atol=0.05 * want.abs().max().item())
    torch.testing.assert_close(got_pen, want_pen)
    (got.sum() + got_pen.sum()).backward()
    assert torch.isfinite(pairs.grad).all()
