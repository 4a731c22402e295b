"""The CPU-fast DLRM pieces compute exactly what TorchRec's modules compute: the one-GEMM-backward dot
interaction (recsys_dist/models/dot_interaction.py), the oneDNN linear (onednn_linear.py), the MLP on it
(mlp.py) and the DLRM built from them, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchrec.models.dlrm import DenseArch, InteractionArch, OverArch
from torchrec.modules.mlp import MLP as TorchRecMLP

from recsys_dist.models.arch import ArchInputs
from recsys_dist.models.dlrm import DLRMArch
from recsys_dist.models.dot_interaction import DotInteraction
from recsys_dist.models.mlp import MLP
from recsys_dist.models import onednn_linear
from recsys_dist.models.onednn_linear import linear, onednn_available


def _grads(out, inputs, g):
    return torch.autograd.grad(out, inputs, g)


@pytest.mark.parametrize("F", [1, 2, 26])
def test_dot_interaction_equals_torchrec_values_and_gradients(F):
    torch.manual_seed(F)
    z0 = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    emb = torch.randn(5, F, 8, dtype=torch.float64, requires_grad=True)
    ref, ours = InteractionArch(F)(z0, emb), DotInteraction(F)(z0, emb)
    assert ours.shape == (5, 8 + F + F * (F - 1) // 2)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(ref)
    for a, b in zip(_grads(ours, (z0, emb), g), _grads(ref, (z0, emb), g)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_dot_interaction_gradcheck_and_pair_order():
    z0 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    emb = torch.randn(3, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(DotInteraction(3), (z0, emb))
    out = DotInteraction(3)(z0, emb)
    Z = torch.cat([z0.unsqueeze(1), emb], 1)
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]   # upper triangle, row by row
    expect = torch.stack([(Z[:, i] * Z[:, j]).sum(-1) for i, j in pairs], 1)
    torch.testing.assert_close(out[:, 4:], expect)
    torch.testing.assert_close(out[:, :4], z0)


def test_dot_interaction_with_no_sparse_fields_is_the_dense_vector():
    z0 = torch.randn(2, 4)
    assert torch.equal(DotInteraction(0)(z0, torch.zeros(2, 0, 4)), z0)


@pytest.fixture
def any_size_on_onednn(monkeypatch):
    """Small shapes run on MKL by choice (onednn_pays); these tests check the oneDNN path's numbers on them."""
    monkeypatch.setattr(onednn_linear, "ONEDNN_MIN_OUT", 0)
    monkeypatch.setattr(onednn_linear, "ONEDNN_MIN_ROWS", 0)


@pytest.mark.parametrize("relu", [True, False])
def test_linear_equals_f_linear_values_and_gradients(relu, any_size_on_onednn):
    torch.manual_seed(0)
    x = torch.randn(33, 17, requires_grad=True)
    w = torch.randn(9, 17, requires_grad=True)
    b = torch.randn(9, requires_grad=True)
    ours = linear(x, w, b, relu)
    ref = F.linear(x, w, b)
    ref = torch.relu(ref) if relu else ref
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    for a, c in zip(_grads(ours, (x, w, b), g), _grads(ref, (x, w, b), g)):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4)
    if relu:
        assert (ours == 0).any() and (ours > 0).any()   # the ReLU mask is exercised


@pytest.mark.skipif(not onednn_available(), reason="torch built without oneDNN")
@pytest.mark.parametrize("rows,features,on_onednn", [(128, (432, 512), False), (128, (256, 1), False),
                                                      (512, (432, 512), True), (512, (13, 512), False),
                                                      (2048, (13, 512), True), (2048, (256, 1), False)])
def test_linear_picks_onednn_only_where_it_paid(rows, features, on_onednn):
    """Catches the path choice drifting from what bench_linear_choice.py measured: MKL for every batch-128 layer
    and for narrow layers (out < 64), oneDNN from 1024 rows or 2^25 multiply-adds on."""
    x = torch.randn(rows, features[0], requires_grad=True)
    w = torch.randn(features[1], features[0], requires_grad=True)
    out = linear(x, w, None, relu=True)
    assert (type(out.grad_fn).__name__ == "_OneDNNLinearBackward") == on_onednn


@pytest.mark.skipif(not onednn_available(), reason="torch built without oneDNN")
def test_onednn_path_is_taken_for_cpu_fp32_also_without_bias_and_on_a_transposed_input(any_size_on_onednn):
    torch.manual_seed(3)
    x = torch.randn(7, 12).t().requires_grad_()          # [12, 7], not contiguous
    w = torch.randn(5, 7, requires_grad=True)
    out = linear(x, w, None, relu=False)
    assert type(out.grad_fn).__name__ == "_OneDNNLinearBackward"
    ref = F.linear(x, w)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    for a, c in zip(_grads(out, (x, w), g), _grads(ref, (x, w), g)):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4)


def test_linear_under_bf16_autocast_falls_back_to_autocast_linear():
    x, w, b = torch.randn(4, 6), torch.randn(3, 6), torch.randn(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = linear(x, w, b, relu=True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), torch.relu(F.linear(x, w, b)), rtol=2e-2, atol=2e-2)


def test_mlp_is_torchrec_mlp_with_same_state_and_numbers():
    torch.manual_seed(1)
    ref = TorchRecMLP(11, [16, 8, 1], activation="relu", activation_on_last=False)
    ours = MLP(11, [16, 8, 1], activation="relu", activation_on_last=False)
    ours.load_state_dict(ref.state_dict())   # same names and shapes
    x = torch.randn(20, 11, requires_grad=True)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)
    ours(x).sum().backward()
    got = [p.grad.clone() for p in ours.parameters()] + [x.grad.clone()]
    x.grad = None
    ref(x).sum().backward()
    want = [p.grad for p in ref.parameters()] + [x.grad]
    for a, c in zip(got, want):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)


def test_dlrm_equals_torchrec_dense_interaction_over_arch():
    torch.manual_seed(2)
    F, D = 4, 8
    ours = DLRMArch(ArchInputs(13, tuple(f"C{i}" for i in range(F)), D), bottom_mlp=[16, D], top_mlp=[32, 16, 1])
    bottom, inter = DenseArch(13, [16, D]), InteractionArch(F)
    top = OverArch(D + (F + 1) * F // 2, [32, 16, 1])
    ref_params = list(bottom.parameters()) + list(top.parameters())
    with torch.no_grad():
        for r, o in zip(ref_params, ours.parameters(), strict=True):
            r.copy_(o)
    dense = torch.rand(10, 13)
    emb = torch.randn(10, F, D, requires_grad=True)
    out = ours(dense, emb)
    ref = top(inter(bottom(dense), emb)).squeeze(-1)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    g = torch.randn(10)
    got = _grads(out, [emb] + list(ours.parameters()), g)
    want = _grads(ref, [emb] + ref_params, g)
    for a, c in zip(got, want):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)


def test_dlrm_rejects_a_top_mlp_without_hidden_layer():
    with pytest.raises(ValueError, match="top_mlp must have at least two widths"):
        DLRMArch(ArchInputs(13, ("C1",), 4), bottom_mlp=[4], top_mlp=[1])


def test_under_bf16_autocast_the_interaction_and_the_logit_stay_fp32():
    torch.manual_seed(4)
    F_, D = 3, 8
    arch = DLRMArch(ArchInputs(13, tuple(f"C{i}" for i in range(F_)), D), bottom_mlp=[16, D], top_mlp=[16, 1])
    z0, emb = torch.randn(6, D), torch.randn(6, F_, D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inter = arch.interaction(z0, emb)
        hidden = arch.top[0](inter)
        logits = arch(torch.rand(6, 13), emb)
    assert inter.dtype == torch.float32 and logits.dtype == torch.float32
    assert hidden.dtype == torch.bfloat16                       # the MLPs do run in bf16
    torch.testing.assert_close(inter, arch.interaction(z0, emb), rtol=0, atol=0)
