"""DCN, DCN-V2, IPNN, DeepFM, xDeepFM, AutoInt+: each paper equation against a hand computation on fixed weights,
plus output shape, gradients to every parameter, num_dense = 0, FX tracing (train pipelines trace the model)
and the Criteo presets."""

import itertools

import pytest
import torch
from torchrec.modules.crossnet import CrossNet, LowRankCrossNet, VectorCrossNet
from torchrec.modules.deepfm import FactorizationMachine

from recsys_dist.config import ConfigError, load_config
from recsys_dist.data.criteo_schema import CATEGORICAL_NAMES, NUM_DENSE
from recsys_dist.models.arch import ArchInputs
from recsys_dist.models.autoint import AutoIntArch, InteractingLayer
from recsys_dist.models.dcn import DCNArch
from recsys_dist.models.dcnv2 import DCNv2Arch
from recsys_dist.models.deepfm import DeepFMArch, FMSecondOrder
from recsys_dist.models.dnn import DNN
from recsys_dist.models.ipnn import InnerProducts, IPNNArch
from recsys_dist.models.registry import build_arch
from recsys_dist.models.xdeepfm import CIN, XDeepFMArch

B = 5
INPUTS = ArchInputs(3, ("C1", "C2", "C3"), 4)
SMALL = {
    "dcn": {"num_cross_layers": 2, "dnn": [8, 6, 1], "dense_mlp": [8]},
    "dcnv2": {"num_cross_layers": 2, "dnn": [8, 6, 1], "dense_mlp": [8]},
    "ipnn": {"dnn": [8, 6, 1], "dense_mlp": [8]},
    "deepfm": {"dnn": [8, 6, 1], "dense_mlp": [8]},
    "xdeepfm": {"cin_layers": [4, 2], "dnn": [8, 6, 1], "dense_mlp": [8]},
    "autoint": {"attention_layers": 2, "heads": 2, "attention_dim": 3, "dnn": [8, 6, 1], "dense_mlp": [8]},
}
VARIANTS = [("dcnv2", {"cross": c, "structure": s, "low_rank": 3, "num_experts": 2})
            for c in ("matrix", "low_rank", "mixture") for s in ("stacked", "parallel")]
CASES = [(a, {}) for a in SMALL] + VARIANTS


def _inputs(num_dense=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, num_dense, generator=g), torch.randn(B, 3, 4, generator=g)


@pytest.mark.parametrize("num_dense", [3, 0])
@pytest.mark.parametrize("arch,extra", CASES, ids=[f"{a}-{'-'.join(map(str, e.values()))}" for a, e in CASES])
def test_shape_gradients_and_fx(arch, extra, num_dense):
    torch.manual_seed(0)
    inputs = ArchInputs(num_dense, INPUTS.feature_names, 4)
    model = build_arch(arch, inputs, {**SMALL[arch], **extra})
    dense, emb = _inputs(num_dense)
    emb.requires_grad_(True)
    out = model(dense, emb)
    assert out.shape == (B,)
    out.sum().backward()
    missing = [k for k, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    assert emb.grad.abs().sum() > 0
    traced = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(traced(dense, emb), model(dense, emb))


def test_numeric_features_become_one_field():
    torch.manual_seed(0)
    model = DCNArch(INPUTS, **SMALL["dcn"])
    dense, emb = _inputs()
    fields = model.fields(dense, emb)
    assert fields.shape == (B, 4, 4)
    torch.testing.assert_close(fields[:, 1:], emb)
    torch.testing.assert_close(fields[:, 0], model.fields.mlp(dense))  # Appendix A: MLP [.., d] -> a field
    assert DCNArch(ArchInputs(0, INPUTS.feature_names, 4), **SMALL["dcn"]).fields.num_fields == 3


def test_dcn_cross_layer_by_hand():
    """DCN eq. 3: x_{l+1} = x_0 x_l^T w_l + b_l + x_l."""
    torch.manual_seed(0)
    model = DCNArch(INPUTS, **SMALL["dcn"])
    assert isinstance(model.cross, VectorCrossNet)
    with torch.no_grad():
        for b in model.cross.bias:
            b.normal_()
    x0 = torch.randn(B, 16)
    xl = x0
    for w, b in zip(model.cross.kernels, model.cross.bias):
        xl = x0 * (xl @ w) + b.view(1, -1) + xl
    torch.testing.assert_close(model.cross(x0), xl)


def test_dcn_combination_layer_by_hand():
    """DCN eq. 5: logit = w^T [x_L; h_L] + b, h_L the DNN's last hidden layer."""
    torch.manual_seed(0)
    model = DCNArch(INPUTS, **SMALL["dcn"])
    dense, emb = _inputs()
    x0 = model.fields(dense, emb).flatten(1)
    layers = list(model.dnn.mlp._mlp)
    h = x0
    for p in layers[:-1]:
        h = torch.relu(p._linear(h))
    w = torch.cat([model.cross_logit.weight, layers[-1]._linear.weight], dim=1)
    hand = torch.cat([model.cross(x0), h], dim=1) @ w.T + layers[-1]._linear.bias
    torch.testing.assert_close(model(dense, emb), hand.squeeze(-1))


@pytest.mark.parametrize("cross", ["matrix", "low_rank"])
@pytest.mark.parametrize("structure", ["stacked", "parallel"])
def test_dcnv2_cross_layer_and_structure_by_hand(cross, structure):
    """DCN-V2 eq. 1: x_{l+1} = x_0 * (W_l x_l + b_l) + x_l (W = U V^T for low rank); stacked / parallel."""
    torch.manual_seed(0)
    model = DCNv2Arch(INPUTS, cross=cross, structure=structure, low_rank=3, **SMALL["dcnv2"])
    assert isinstance(model.cross, CrossNet if cross == "matrix" else LowRankCrossNet)
    with torch.no_grad():
        for b in model.cross.bias:
            b.normal_()
    dense, emb = _inputs()
    fields = model.fields(dense, emb)
    x0 = fields.flatten(1)
    xl = x0
    for k in range(2):
        if cross == "matrix":
            W, b = model.cross.kernels[k], model.cross.bias[k].view(-1)
        else:
            W, b = model.cross.W_kernels[k] @ model.cross.V_kernels[k], model.cross.bias[k]
        xl = x0 * (xl @ W.T + b) + xl
    torch.testing.assert_close(model.cross(x0), xl)
    if structure == "stacked":
        hand = model.dnn(xl, fields)
    else:
        hand = model.cross_logit(xl) + model.dnn(x0, fields)
    torch.testing.assert_close(model(dense, emb), hand.squeeze(-1))


def test_ipnn_inner_products_by_hand():
    e = torch.randn(B, 4, 3)
    p = InnerProducts(4)(e)
    hand = torch.stack([(e[:, i] * e[:, j]).sum(-1) for i, j in itertools.combinations(range(4), 2)], dim=1)
    torch.testing.assert_close(p, hand)
    torch.manual_seed(0)
    model = IPNNArch(INPUTS, **SMALL["ipnn"])
    dense, emb = _inputs()
    fields = model.fields(dense, emb)
    x = torch.cat([fields.flatten(1), InnerProducts(4)(fields)], dim=1)  # l_1 = ReLU(W [z; p] + b_1)
    torch.testing.assert_close(model(dense, emb), model.dnn.mlp(x).squeeze(-1))


def test_fm_second_order_by_hand():
    e = torch.randn(B, 4, 3)
    pairs = sum((e[:, i] * e[:, j]).sum(-1) for i, j in itertools.combinations(range(4), 2))
    formula = 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(-1)
    torch.testing.assert_close(FMSecondOrder()(e).squeeze(-1), pairs)
    torch.testing.assert_close(formula, pairs)
    # why not torchrec's FactorizationMachine: it crosses every scalar with every other, not fields
    assert (FactorizationMachine()([e]).squeeze(-1) - pairs).abs().max() > 1e-3


def test_deepfm_is_first_order_plus_fm_plus_dnn():
    torch.manual_seed(0)
    model = DeepFMArch(INPUTS, **SMALL["deepfm"])
    dense, emb = _inputs()
    fields = model.fields(dense, emb)
    w0 = model.first_order.sparse.bias
    first = emb.flatten(1) @ model.first_order.sparse.weight.T + w0 + dense @ model.first_order.dense.weight.T
    hand = first + FMSecondOrder()(fields) + model.dnn.mlp(fields.flatten(1))
    torch.testing.assert_close(model(dense, emb), hand.squeeze(-1))


def test_cin_by_hand():
    """xDeepFM eq. 6-7 with loops over h, i, j; split_half sends half of layer 1 onward, half to the output."""
    torch.manual_seed(0)
    m, d = 3, 4
    x0 = torch.randn(2, m, d)
    for split_half in (False, True):
        cin = CIN(m, [4, 2], split_half=split_half)
        W1, W2 = cin.weights[0], cin.weights[1]
        x1 = torch.zeros(2, 4, d)
        for h in range(4):
            for i in range(m):
                for j in range(m):
                    x1[:, h] += W1[h, i, j] * x0[:, i] * x0[:, j]
        out1, nxt = (x1[:, :2], x1[:, 2:]) if split_half else (x1, x1)
        x2 = torch.zeros(2, 2, d)
        for h in range(2):
            for i in range(nxt.shape[1]):
                for j in range(m):
                    x2[:, h] += W2[h, i, j] * nxt[:, i] * x0[:, j]
        hand = torch.cat([out1.sum(-1), x2.sum(-1)], dim=1)
        assert cin.output_dim == hand.shape[1]
        torch.testing.assert_close(cin(x0), hand)


def test_xdeepfm_sums_linear_cin_dnn():
    torch.manual_seed(0)
    model = XDeepFMArch(INPUTS, **SMALL["xdeepfm"])
    dense, emb = _inputs()
    fields = model.fields(dense, emb)
    hand = (model.first_order(dense, emb) + model.cin_logit(model.cin(fields))
            + model.dnn.mlp(fields.flatten(1)))
    torch.testing.assert_close(model(dense, emb), hand.squeeze(-1))


def test_autoint_attention_by_hand():
    """AutoInt eq. 5-8 with explicit loops over heads, fields m and k."""
    torch.manual_seed(0)
    H, dp, n, d = 2, 3, 4, 5
    layer = InteractingLayer(d, heads=H, attention_dim=dp)
    e = torch.randn(2, n, d)
    WQ, WK, WV, WR = (lin.weight for lin in (layer.query, layer.key, layer.value, layer.res))
    out = torch.zeros(2, n, H * dp)
    for h in range(H):
        sl = slice(h * dp, (h + 1) * dp)
        for mm in range(n):
            psi = torch.stack([((e[:, mm] @ WQ[sl].T) * (e[:, k] @ WK[sl].T)).sum(-1) for k in range(n)], 1)
            alpha = psi.exp() / psi.exp().sum(1, keepdim=True)  # eq. 5
            out[:, mm, sl] = sum(alpha[:, k:k + 1] * (e[:, k] @ WV[sl].T) for k in range(n))  # eq. 6
    hand = torch.relu(out + e @ WR.T)  # eq. 7-8
    torch.testing.assert_close(layer(e), hand)
    torch.testing.assert_close(layer.attention(e).sum(-1), torch.ones(2, H, n))


def test_autoint_plus_joins_attention_and_dnn():
    torch.manual_seed(0)
    model = AutoIntArch(INPUTS, **SMALL["autoint"])
    dense, emb = _inputs()
    fields = model.fields(dense, emb)
    att = model.attention[1](model.attention[0](fields))
    hand = model.attention_logit(att.flatten(1)) + model.dnn.mlp(fields.flatten(1))
    torch.testing.assert_close(model(dense, emb), hand.squeeze(-1))


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match=r"dcn: dnn must be positive integer widths ending with 1.*\[8, 2\]"):
        DCNArch(INPUTS, dnn=[8, 2])
    with pytest.raises(ValueError, match="cross='full' is not one of matrix, low_rank, mixture"):
        DCNv2Arch(INPUTS, cross="full")
    with pytest.raises(ValueError, match="structure='serial'"):
        DCNv2Arch(INPUTS, structure="serial")
    with pytest.raises(ValueError, match="cin_layers .* must be even"):
        XDeepFMArch(INPUTS, cin_layers=[3, 2])
    with pytest.raises(ValueError, match="mask_fusion.variant='x'"):
        IPNNArch(INPUTS, mask_fusion={"variant": "x"})
    with pytest.raises(ConfigError, match="arch 'dcn' has no argument.*cross_layers"):
        load_config("configs/dcn_criteo_kaggle.yaml", ["model.arch_args.cross_layers=2"])


@pytest.mark.parametrize("arch", sorted(SMALL) + ["maskfusion"])
@pytest.mark.parametrize("dataset", ["kaggle", "terabyte"])
def test_criteo_presets_load_and_build(arch, dataset):
    cfg = load_config(f"configs/{arch}_criteo_{dataset}.yaml")
    assert cfg.model.embedding_dim == 16 and cfg.data.batch_size == 128  # MaskFusion Appendix A
    assert (cfg.optim.dense, cfg.optim.dense_lr, cfg.optim.sparse, cfg.optim.sparse_lr) == ("adagrad", 0.01,
                                                                                           "adagrad", 0.01)
    # MaskFusion on Kaggle prepares with DLRM's day split (its paper), in a folder of its own (test_preset_protocols)
    assert cfg.data.dir.endswith("prepared_days" if (arch, dataset) == ("maskfusion", "kaggle") else "prepared")
    model = build_arch(cfg.model.arch, ArchInputs(NUM_DENSE, CATEGORICAL_NAMES, 16), cfg.model.arch_args)
    towers = [m for m in model.modules() if isinstance(m, DNN)]
    if arch != "maskfusion":
        assert cfg.model.arch == arch
        assert [p._linear.out_features for p in towers[0].mlp._mlp] == [512, 256, 1]
        assert [p._linear.out_features for p in model.fields.mlp._mlp] == [512, 256, 64, 16]
    out = model(torch.rand(2, NUM_DENSE), torch.randn(2, len(CATEGORICAL_NAMES), 16))
    assert out.shape == (2,)
