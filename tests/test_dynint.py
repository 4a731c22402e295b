"""DynInt (DA eq. 4, DGP eq. 7-8, DWP eq. 9-10, orthogonal regularization eq. 11-12): equation-level tests."""

import math

import pytest
import torch

from recsys_dist.models.arch import ArchInputs
from recsys_dist.models.dynint import DynIntArch, pairwise_abs_cosine
from recsys_dist.models.pin import XDeepIntArch, merge_subspaces
from recsys_dist.models.registry import build_arch

B, F, D = 6, 5, 4


def _inputs(num_dense=0):
    return ArchInputs(num_dense, tuple(f"C{i}" for i in range(F)), D)


def _dynint(mode, **kw):
    torch.manual_seed(0)
    return DynIntArch(_inputs(kw.pop("num_dense", 0)), mode=mode, **kw).double()


def _x0(b=B, seed=1, std=1.0):
    return std * torch.randn(b, F, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _static_like(arch, weights):
    """An xDeepInt with `arch`'s sub-spaces and output layer and the given static W per layer."""
    ref = XDeepIntArch(_inputs(), num_layers=len(weights), num_subspaces=arch.num_subspaces).double()
    with torch.no_grad():
        for layer, w in zip(ref.layers, weights):
            layer.weight.copy_(w)
        ref.out_weight.copy_(arch.out_weight)
        ref.out_bias.copy_(arch.out_bias)
    return ref


def _fix_generator(gen, value):
    """Make a generator DNN output the constant pre-activation `value` (zero last weight, bias = value)."""
    with torch.no_grad():
        gen.net[2].weight.zero_()
        gen.net[2].bias.copy_(torch.as_tensor(value, dtype=gen.net[2].bias.dtype))


def test_da_gates_start_near_one():
    arch = _dynint("da", num_layers=3, num_subspaces=2)
    arch(torch.zeros(64, 0), _x0(b=64, std=0.05))
    gates = torch.stack([layer.last_generated for layer in arch.layers])
    assert gates.shape == (3, 64, 2 * F)
    assert (gates - 1).abs().max() < 0.1 and (gates - 1).abs().mean() < 0.03


def test_da_equals_hand_computation_with_fixed_gates():
    arch = _dynint("da", num_layers=2, num_subspaces=2)
    gate = torch.linspace(0.2, 1.8, 2 * F, dtype=torch.float64)
    for layer in arch.layers:
        _fix_generator(layer.gate, torch.logit(gate / 2))  # 2 * sigmoid(bias) = gate
    x0s = arch.field_map(torch.zeros(B, 0), _x0())
    x = x0s
    for layer in arch.layers:  # eq. 4: X_l = (X_{l-1} o (W X_0)) o G + X_{l-1}
        x = (x * torch.matmul(layer.weight, x0s)) * gate[:, None] + x
    expected = arch.output(merge_subspaces(x, 2))
    torch.testing.assert_close(arch(torch.zeros(B, 0), _x0()), expected)
    # gates of exactly 1 give the static PIN
    for layer in arch.layers:
        _fix_generator(layer.gate, 0.0)
    ref = _static_like(arch, [layer.weight for layer in arch.layers])
    torch.testing.assert_close(arch(torch.zeros(B, 0), _x0()), ref(torch.zeros(B, 0), _x0()))


def test_dgp_with_k_equal_f_and_fixed_sigma_equals_static_pin():
    arch = _dynint("dgp", num_layers=2, rank=F)
    sigma = torch.tensor([0.3, 1.0, 1.7, 0.5, 1.2], dtype=torch.float64)
    for layer in arch.layers:
        _fix_generator(layer.sigma, torch.logit(sigma / 2))
    weights = [layer.U @ torch.diag(sigma) @ layer.V.t() for layer in arch.layers]  # eq. 7
    ref = _static_like(arch, weights)
    torch.testing.assert_close(arch(torch.zeros(B, 0), _x0()), ref(torch.zeros(B, 0), _x0()))


def test_dgp_matches_per_instance_materialized_parameters():
    arch = _dynint("dgp", num_layers=1, rank=3, num_subspaces=2)
    x0 = _x0()
    out = arch(torch.zeros(B, 0), x0)
    layer = arch.layers[0]
    s = layer.last_generated
    x0s = arch.field_map(torch.zeros(B, 0), x0)
    rows = []
    for i in range(B):  # eq. 5 with W^(i) = U diag(sigma^(i)) V^T built explicitly
        w_i = layer.U @ torch.diag(s[i]) @ layer.V.t()
        rows.append(x0s[i] * (w_i @ x0s[i]) + x0s[i])
    torch.testing.assert_close(out, arch.output(merge_subspaces(torch.stack(rows), 2)))


def test_dwp_with_g_one_equals_static_pin():
    arch = _dynint("dwp", num_layers=2, rank=3)
    for layer in arch.layers:
        _fix_generator(layer.pairs, 0.0)  # u = v = 0  ->  G = sum_p (0 + 1/K) = 1
    ref = _static_like(arch, [layer.weight for layer in arch.layers])
    torch.testing.assert_close(arch(torch.zeros(B, 0), _x0()), ref(torch.zeros(B, 0), _x0()))


def test_dwp_matches_per_instance_materialized_weighting():
    arch = _dynint("dwp", num_layers=1, rank=2, num_subspaces=2)
    x0 = _x0()
    out = arch(torch.zeros(B, 0), x0)
    layer = arch.layers[0]
    u, v = layer.last_generated
    x0s = arch.field_map(torch.zeros(B, 0), x0)
    rows = []
    for i in range(B):  # eq. 6 with G^(i) = sum_p (u_p v_p^T + 1/K) built explicitly
        g = sum(torch.outer(u[i, p], v[i, p]) + 1.0 / 2 for p in range(2))
        rows.append(x0s[i] * ((g * layer.weight) @ x0s[i]) + x0s[i])
    torch.testing.assert_close(out, arch.output(merge_subspaces(torch.stack(rows), 2)))


def _cos_sum_by_hand(vectors):
    total = 0.0
    for p in range(len(vectors)):
        for q in range(p):
            a, b = vectors[p].detach(), vectors[q].detach()
            total += abs(float(a @ b) / (math.sqrt(float(a @ a)) * math.sqrt(float(b @ b))))
    return total


def test_dgp_orthogonal_regularizer_equals_hand_computation():
    arch = _dynint("dgp", num_layers=2, rank=3, ortho_lambda=0.01)
    with torch.no_grad():
        for layer in arch.layers:  # not orthogonal any more
            layer.U.normal_()
            layer.V.normal_()
    arch(torch.zeros(B, 0), _x0())
    expected = 0.01 * sum(_cos_sum_by_hand(layer.U.t()) + _cos_sum_by_hand(layer.V.t()) for layer in arch.layers)
    assert arch.regularization_loss().item() == pytest.approx(expected, rel=1e-9)


def test_dgp_regularizer_is_zero_for_orthogonal_columns():
    arch = _dynint("dgp", num_layers=1, rank=3, ortho_lambda=1.0)
    arch(torch.zeros(B, 0), _x0())  # U, V start orthonormal
    assert arch.regularization_loss().item() == pytest.approx(0.0, abs=1e-5)  # float32 init


def test_dwp_orthogonal_regularizer_equals_hand_computation():
    arch = _dynint("dwp", num_layers=2, rank=3, ortho_lambda=0.1, reduction_ratio=1)
    arch(torch.zeros(B, 0), _x0())
    total = 0.0
    for layer in arch.layers:
        u, v = layer.last_generated
        for i in range(B):  # eq. 12: per instance, averaged over the batch (the BCE is a mean too)
            total += (_cos_sum_by_hand(u[i]) + _cos_sum_by_hand(v[i])) / B
    assert arch.regularization_loss().item() == pytest.approx(0.1 * total, rel=1e-9)


def test_no_regularizer_for_da_or_zero_lambda():
    assert _dynint("da", ortho_lambda=1.0).regularization_loss() is None
    arch = _dynint("dwp", ortho_lambda=0.0)
    arch(torch.zeros(B, 0), _x0())
    assert arch.regularization_loss() is None


def test_pairwise_abs_cosine_batched():
    vecs = torch.randn(4, 3, 7, dtype=torch.float64)
    got = pairwise_abs_cosine(vecs)
    for i in range(4):
        assert got[i].item() == pytest.approx(_cos_sum_by_hand(vecs[i]), rel=1e-9)


@pytest.mark.parametrize("mode", ["da", "dgp", "dwp"])
def test_stop_gradient_into_x0_through_generators_but_not_through_pin(mode):
    arch = _dynint(mode, num_layers=2, rank=2, num_subspaces=2)
    emb = _x0().requires_grad_()
    out = arch(torch.zeros(B, 0), emb)
    for layer in arch.layers:
        generated = layer.last_generated if mode != "dwp" else torch.cat(layer.last_generated, dim=-1)
        assert torch.autograd.grad(generated.sum(), emb, retain_graph=True, allow_unused=True)[0] is None
    (grad,) = torch.autograd.grad(out.sum(), emb)
    assert grad.abs().sum() > 0  # X_0 is trained through the PIN itself


@pytest.mark.parametrize("mode", ["da", "dgp", "dwp"])
def test_shape_and_gradients_reach_every_parameter(mode):
    arch = _dynint(mode, num_layers=2, rank=2, num_subspaces=2, num_dense=3, ortho_lambda=0.01)
    with torch.no_grad():
        for layer in arch.layers:
            if mode == "dgp":  # start away from the orthonormal init so eq. 11 has a gradient
                layer.U.normal_()
                layer.V.normal_()
    out = arch(torch.rand(B, 3, dtype=torch.float64), _x0())
    assert out.shape == (B,)
    loss = out.sum()
    reg = arch.regularization_loss()
    if reg is not None:
        loss = loss + reg
    loss.backward()
    for name, p in arch.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_registry_and_bad_arguments():
    arch = build_arch("dynint", _inputs(), {"mode": "dgp", "rank": 3})
    assert isinstance(arch, DynIntArch) and arch.mode == "dgp"
    with pytest.raises(ValueError, match="mode must be one of da, dgp, dwp"):
        DynIntArch(_inputs(), mode="dynamic")
    with pytest.raises(ValueError, match="rank must be >= 1"):
        DynIntArch(_inputs(), mode="dwp", rank=0)
