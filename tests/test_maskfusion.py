"""MaskFusion (seed 000): eq. 1-6 by hand, the four variants, the wrapper on every arch, the parameter report."""

import pytest
import torch

from recsys_dist.config import load_config
from recsys_dist.models.arch import ArchInputs
from recsys_dist.models.maskfusion import (FieldInstanceNorm, MaskController, MaskFusionDNN, MaskFusionOptions,
                                           count_parameters, extra_parameters)
from recsys_dist.models.registry import build_arch

B, N, D, L = 5, 4, 3, 3  # batch, fields, dim, DNN layers


def _fields(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, N, D, generator=g) * 3 + 1


@pytest.mark.parametrize("variant,last", [("fwm", 1), ("fwmf", 1), ("dwmf", D)])
def test_masks_softmax_over_layers_per_field(variant, last):
    torch.manual_seed(0)
    mc = MaskController(variant, L, N, D, generator=[8, 6])
    if variant == "fwm":
        torch.nn.init.normal_(mc.beta)
    e = _fields()
    m = mc(e)
    assert m.shape == (1 if variant == "fwm" else B, L, N, last)  # DwMF: n*d values per layer
    torch.testing.assert_close(m.sum(dim=1), torch.ones(m.shape[0], N, last))  # eq. 4: sums to 1 over l
    alpha = mc.logits(e)
    hand = alpha.exp() / alpha.exp().sum(dim=1, keepdim=True)
    torch.testing.assert_close(m, hand)


def test_adaptive_masks_differ_per_instance_shared_mask_does_not():
    torch.manual_seed(0)
    e = _fields()
    fwmf = MaskController("fwmf", L, N, D, generator=[8])(e)
    assert (fwmf[0] - fwmf[1]).abs().max() > 1e-4
    fwm = MaskController("fwm", L, N, D)
    torch.testing.assert_close(fwm(e), torch.full((1, L, N, 1), 1.0 / L))  # initialized to equal weights


def test_generator_is_mlp_of_E_then_output_layer():
    torch.manual_seed(0)
    mc = MaskController("dwmf", L, N, D, generator=[8, 6])
    e = _fields()
    g = mc.generators[1]
    h = e.flatten(1)
    for lin in [m for m in g.modules() if isinstance(m, torch.nn.Linear)][:-1]:
        h = torch.relu(lin(h))
    alpha1 = g[-1](h)  # eq. 3: alpha_t = MLP_phi_t(E), linear output of width n*d
    torch.testing.assert_close(mc.logits(e)[:, 1], alpha1.view(B, N, D))


def test_instance_norm_per_field():
    e = torch.randn(B, N, 16, generator=torch.Generator().manual_seed(0)) * 3 + 1
    y = FieldInstanceNorm(eps=1e-5)(e)
    torch.testing.assert_close(y.mean(-1), torch.zeros(B, N), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(B, N), atol=1e-3, rtol=0)
    hand = (e - e.mean(-1, keepdim=True)) / torch.sqrt(e.var(-1, unbiased=False, keepdim=True) + 1e-5)  # eq. 6
    torch.testing.assert_close(y, hand)
    assert count_parameters(FieldInstanceNorm()) == 0  # gamma = 1, beta = 0 fixed


def _hand_forward(dnn: MaskFusionDNN, x, e, masks):
    """eq. 1, 2, 5, 6 written out: h^_{t-1} = [m_t * IN(E), h_{t-1}], h_t = ReLU(W_t h^_{t-1} + b_t)."""
    mu, var = e.mean(-1, keepdim=True), e.var(-1, unbiased=False, keepdim=True)
    en = (e - mu) / torch.sqrt(var + dnn.options.eps)
    h = x
    for t, lin in enumerate(dnn.linears):
        m = torch.ones(1, N, 1) if masks is None else masks[:, t]
        z = torch.cat([(m * en).reshape(x.shape[0], N * D), h], dim=1) @ lin.weight.T + lin.bias
        h = z if t == len(dnn.linears) - 1 else torch.relu(z)
    return h


@pytest.mark.parametrize("variant", ["fusion", "fwm", "fwmf", "dwmf"])
def test_fusion_layers_by_hand(variant):
    torch.manual_seed(1)
    dnn = MaskFusionDNN(7, [6, 5, 1], N, D, {"variant": variant, "generator": [8]})
    if variant == "fwm":
        torch.nn.init.normal_(dnn.controller.beta)
    x, e = torch.randn(B, 7), _fields()
    assert [lin.in_features for lin in dnn.linears] == [N * D + 7, N * D + 6, N * D + 5]  # E fused into all l
    torch.testing.assert_close(dnn(x, e), _hand_forward(dnn, x, e, dnn.masks(e)))


def test_fwm_with_equal_masks_reduces_to_fusion():
    """Equal beta -> every mask is 1/l; Fusion (mask 1) with its E columns scaled by 1/l computes the same."""
    torch.manual_seed(2)
    fwm = MaskFusionDNN(7, [6, 5, 1], N, D, {"variant": "fwm"})
    with torch.no_grad():
        fwm.controller.beta.fill_(0.37)
    fusion = MaskFusionDNN(7, [6, 5, 1], N, D, {"variant": "fusion"})
    with torch.no_grad():
        for lf, lw in zip(fusion.linears, fwm.linears):
            lf.weight.copy_(lw.weight)
            lf.weight[:, : N * D] /= L
            lf.bias.copy_(lw.bias)
    x, e = torch.randn(B, 7), _fields()
    torch.testing.assert_close(fwm(x, e), fusion(x, e))
    with torch.no_grad():  # and unequal masks do change the output
        fwm.controller.beta[0, 0] += 1.0
    assert (fwm(x, e) - fusion(x, e)).abs().max() > 1e-6


def test_options_are_checked():
    with pytest.raises(ValueError, match=r"mask_fusion.variant='mask' is not one of fusion, fwm, fwmf, dwmf"):
        MaskFusionOptions.parse({"variant": "mask"})
    with pytest.raises(ValueError, match="unknown key.*generators"):
        MaskFusionOptions.parse({"generators": [1]})
    with pytest.raises(ValueError, match="generator"):
        MaskFusionOptions.parse({"generator": [0]})
    with pytest.raises(ValueError, match="embedding_dim >= 2"):
        MaskFusionDNN(3, [1], 2, 1, {})


SMALL = {
    "dlrm": {"bottom_mlp": [8, 4], "top_mlp": [8, 6, 1]},
    "dcn": {"num_cross_layers": 2, "dnn": [8, 6, 1], "dense_mlp": [8]},
    "dcnv2": {"num_cross_layers": 2, "structure": "stacked", "dnn": [8, 6, 1], "dense_mlp": [8]},
    "ipnn": {"dnn": [8, 6, 1], "dense_mlp": [8]},
    "deepfm": {"dnn": [8, 6, 1], "dense_mlp": [8]},
    "xdeepfm": {"cin_layers": [4, 2], "dnn": [8, 6, 1], "dense_mlp": [8]},
    "autoint": {"attention_layers": 1, "heads": 2, "attention_dim": 2, "dnn": [8, 6, 1], "dense_mlp": [8]},
}


@pytest.mark.parametrize("arch", sorted(SMALL))
@pytest.mark.parametrize("variant", ["fusion", "fwm", "dwmf"])
def test_wraps_the_dnn_tower_of_every_arch(arch, variant):
    torch.manual_seed(0)
    inputs = ArchInputs(3, ("C1", "C2", "C3"), 4)
    mf = {"variant": variant, "generator": [8]}
    model = build_arch(arch, inputs, {**SMALL[arch], "mask_fusion": mf})
    tower = [m for m in model.modules() if isinstance(m, MaskFusionDNN)]
    assert len(tower) == 1 and [lin.out_features for lin in tower[0].linears] == [8, 6, 1]
    n = 4  # three sparse fields + the numeric field
    out = model(torch.rand(6, 3), torch.randn(6, 3, 4))
    assert out.shape == (6,)
    out.sum().backward()
    missing = [k for k, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    # the fused fields are the arch's n fields: fused columns = n * d in every layer
    base = build_arch(arch, inputs, SMALL[arch])
    fused_cols = sum(n * 4 * lin.out_features for lin in tower[0].linears)
    ctrl = count_parameters(tower[0].controller) if tower[0].controller is not None else 0
    assert count_parameters(model) - count_parameters(base) == fused_cols + ctrl


def test_extra_parameters_report_matches_hand_count():
    inputs = ArchInputs(13, tuple(f"C{i}" for i in range(26)), 16)
    args = {"dnn": [512, 256, 1], "dense_mlp": [512, 256, 64]}
    rep = extra_parameters("deepfm", inputs, args, {"variant": "dwmf", "generator": [512, 256]}, embedding_rows=1000)
    n, d = 27, 16
    fused = n * d * (512 + 256 + 1)
    generator = (n * d * 512 + 512) + (512 * 256 + 256) + (256 * n * d + n * d)
    assert rep["extra"] == fused + 3 * generator
    assert rep["embedding"] == 1000 * 16
    assert rep["extra_fraction"] == pytest.approx(rep["extra"] / (rep["embedding"] + rep["base_dense"]))


def test_preset_and_overrides_select_the_variant():
    cfg = load_config("configs/maskfusion_criteo_kaggle.yaml", ["model.arch_args.mask_fusion.variant=fwmf"])
    assert cfg.model.arch_args["mask_fusion"]["variant"] == "fwmf"
    assert cfg.model.embedding_dim == 16 and cfg.data.batch_size == 128
    assert cfg.optim.dense == "adagrad" and cfg.optim.dense_lr == 0.01
    inputs = ArchInputs(13, tuple(f"C{i}" for i in range(26)), cfg.model.embedding_dim)
    model = build_arch(cfg.model.arch, inputs, cfg.model.arch_args)
    tower = [m for m in model.modules() if isinstance(m, MaskFusionDNN)][0]
    assert tower.options.variant == "fwmf" and tower.options.generator == (512, 256)
    assert [lin.out_features for lin in tower.linears] == [512, 256, 1]
    assert tower.controller.generators[0][-1].out_features == 27  # FwMF: one mask value per field
