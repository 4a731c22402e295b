"""PIN / xDeepInt (DynInt paper eq. 1-3, xDeepInt subspace crossing): equation-level tests."""

import pytest
import torch

from recsys_dist.models.arch import ArchInputs
from recsys_dist.models.pin import PINLayer, XDeepIntArch, merge_subspaces, split_subspaces
from recsys_dist.models.registry import build_arch, validate_arch_args

B, F, D = 5, 4, 6


def _inputs(num_dense=0, f=F, d=D):
    return ArchInputs(num_dense, tuple(f"C{i}" for i in range(f)), d)


def _arch(**kw):
    torch.manual_seed(0)
    return XDeepIntArch(_inputs(kw.pop("num_dense", 0)), **kw).double()


def _x0(b=B, f=F, d=D, seed=1):
    return torch.randn(b, f, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _output_by_hand(arch, x):
    """Eq. 2 without sigmoid on a merged [B, F, D] map: sum_d (sum_f w_f X[f, d] + b)."""
    b, f, d = x.shape
    out = torch.zeros(b, dtype=x.dtype)
    for i in range(b):
        for col in range(d):
            out[i] += sum(arch.out_weight[j] * x[i, j, col] for j in range(f)) + arch.out_bias
    return out


def test_zero_weight_pin_layer_is_identity():
    layer = PINLayer(F).double()
    with torch.no_grad():
        layer.weight.zero_()
    x, x0 = _x0(seed=2), _x0(seed=3)
    torch.testing.assert_close(layer(x, x0), x, rtol=0, atol=0)


def test_split_and_merge_subspaces_are_inverse_and_ordered():
    x = _x0()
    s = split_subspaces(x, 3)
    assert s.shape == (B, 3 * F, 2)
    torch.testing.assert_close(s[:, 1 * F + 2], x[:, 2, 2:4])  # sub-space 1 of field 2 is row 1*F + 2
    torch.testing.assert_close(merge_subspaces(s, 3), x)


def test_vector_wise_h1_equals_hand_computation():
    arch = _arch(num_layers=1, num_subspaces=1)
    x0 = _x0()
    W = arch.layers[0].weight
    x1 = torch.empty_like(x0)
    for i in range(B):
        for f in range(F):  # one weight per field pair, shared by all D coordinates
            x1[i, f] = x0[i, f] * sum(W[f, g] * x0[i, g] for g in range(F)) + x0[i, f]
    torch.testing.assert_close(arch(torch.zeros(B, 0), x0), _output_by_hand(arch, x1))


def test_bit_wise_h_equals_d_equals_hand_computation():
    arch = _arch(num_layers=1, num_subspaces=D)
    assert arch.layers[0].weight.shape == (F * D, F * D)
    x0 = _x0()
    W = arch.layers[0].weight
    x1 = torch.empty_like(x0)
    for i in range(B):
        for f in range(F):
            for s in range(D):  # every coordinate (f, s) has its own weight to every (g, t)
                wx = sum(W[s * F + f, t * F + g] * x0[i, g, t] for g in range(F) for t in range(D))
                x1[i, f, s] = x0[i, f, s] * wx + x0[i, f, s]
    torch.testing.assert_close(arch(torch.zeros(B, 0), x0), _output_by_hand(arch, x1))


def test_subspaces_with_block_diagonal_weight_reduce_to_vector_wise():
    """h sub-spaces whose cross-sub-space weights are 0 and blocks equal W_1 compute the h = 1 layer."""
    vec = _arch(num_layers=1, num_subspaces=1)
    sub = _arch(num_layers=1, num_subspaces=3)
    with torch.no_grad():
        sub.layers[0].weight.copy_(torch.block_diag(*[vec.layers[0].weight] * 3))
        sub.out_weight.copy_(vec.out_weight)
        sub.out_bias.copy_(vec.out_bias)
    x0 = _x0()
    torch.testing.assert_close(sub(torch.zeros(B, 0), x0), vec(torch.zeros(B, 0), x0))
    with torch.no_grad():  # a cross-sub-space weight makes it bit-wise: the result changes
        sub.layers[0].weight[0, F] = 0.5
    assert not torch.allclose(sub(torch.zeros(B, 0), x0), vec(torch.zeros(B, 0), x0))


def test_l_layers_give_a_polynomial_of_degree_l_plus_1():
    arch = _arch(num_layers=2, num_subspaces=2)
    x0 = _x0(b=1)
    ts = torch.arange(6, dtype=torch.float64)
    ys = torch.stack([arch(torch.zeros(1, 0), t * x0)[0] for t in ts]) - arch.out_bias * D
    diffs = [ys]
    for _ in range(4):
        diffs.append(diffs[-1][1:] - diffs[-1][:-1])
    assert diffs[3].abs().max() > 1e-6  # degree 3 term present
    torch.testing.assert_close(diffs[4], torch.zeros_like(diffs[4]), atol=1e-9, rtol=0)


def test_raw_dense_features_become_fields():
    arch = _arch(num_layers=2, num_subspaces=2, num_dense=3)
    assert arch.num_fields == F + 3
    dense, x0 = torch.rand(B, 3, dtype=torch.float64), _x0()
    ref = XDeepIntArch(_inputs(0, f=F + 3), num_layers=2, num_subspaces=2).double()
    ref.load_state_dict({k: v for k, v in arch.state_dict().items() if not k.startswith("fields.")})
    fields = torch.cat([dense.unsqueeze(-1) * arch.fields.weight, x0], dim=1)
    torch.testing.assert_close(arch(dense, x0), ref(torch.zeros(B, 0), fields))


def test_shape_and_gradients_reach_every_parameter():
    arch = _arch(num_layers=3, num_subspaces=2, num_dense=2)
    emb = _x0().requires_grad_()
    out = arch(torch.rand(B, 2, dtype=torch.float64), emb)
    assert out.shape == (B,)
    out.sum().backward()
    for name, p in arch.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert emb.grad.abs().sum() > 0


def test_registry_and_bad_arguments():
    arch = build_arch("xdeepint", _inputs(), {"num_layers": 2, "num_subspaces": 3})
    assert isinstance(arch, XDeepIntArch)
    with pytest.raises(KeyError, match="num_heads"):
        validate_arch_args("xdeepint", {"num_heads": 2})
    with pytest.raises(ValueError, match="divisor of the embedding dim 6"):
        XDeepIntArch(_inputs(), num_subspaces=4)


@pytest.mark.parametrize("arch", ["xdeepint", "dynint", "deepmr"])
@pytest.mark.parametrize("dataset", ["criteo_kaggle", "criteo_terabyte"])
def test_presets_load_and_build_on_bucketized_criteo(arch, dataset):
    from pathlib import Path

    from recsys_dist.config import load_config

    cfg = load_config(Path(__file__).parent.parent / "configs" / f"{arch}_{dataset}.yaml")
    assert cfg.model.arch == arch and cfg.prepare.dense == "bucketize" and cfg.model.embedding_dim == 16
    fields = ArchInputs(0, tuple(f"I{i}" for i in range(1, 14)) + tuple(f"C{i}" for i in range(1, 27)), 16)
    model = build_arch(arch, fields, cfg.model.arch_args)  # I1..I13 arrive as 13 more sparse fields
    assert model(torch.zeros(2, 0), torch.rand(2, 39, 16)).shape == (2,)
