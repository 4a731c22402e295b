"""Formulas rewritten for speed (issue 17, docs/benchmarks.md "Performance III") compute what the straightforward
form computes: values and gradients to every input and parameter, in float64, against the reference written out."""

from __future__ import annotations

import torch
from torchrec.modules.crossnet import VectorCrossNet

from recsys_dist.models.dcn import VectorCross


def _values_and_grads(module_a, module_b, inputs_a, inputs_b, seed=0):
    """Run both with the same upstream gradient; return (out, grads of inputs + parameters) of each."""
    out = []
    for module, inputs in ((module_a, inputs_a), (module_b, inputs_b)):
        y = module(*inputs)
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
        leaves = [t for t in inputs if t.requires_grad] + list(module.parameters())
        out.append((y, torch.autograd.grad(y, leaves, g)))
    return out


def _assert_same(module_a, module_b, *inputs):
    inputs_a = [x.detach().clone().requires_grad_(x.requires_grad) for x in inputs]
    inputs_b = [x.detach().clone().requires_grad_(x.requires_grad) for x in inputs]
    (ya, ga), (yb, gb) = _values_and_grads(module_a, module_b, inputs_a, inputs_b)
    torch.testing.assert_close(ya, yb, rtol=0, atol=1e-12)
    assert len(ga) == len(gb)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_dcn_vector_cross_equals_torchrec_vector_crossnet():
    """Catches a wrong DCN eq. 3 in the elementwise form (x_0 * (x_l w) + b + x_l): a term, a layer or a
    gradient that differs from TorchRec's VectorCrossNet, whose parameters and state-dict keys it keeps."""
    torch.manual_seed(0)
    ours = VectorCross(12, num_layers=3).double()
    ref = VectorCrossNet(12, num_layers=3).double()
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_()
    ref.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(ref.state_dict())
    _assert_same(ours, ref, torch.randn(7, 12, dtype=torch.float64, requires_grad=True))
