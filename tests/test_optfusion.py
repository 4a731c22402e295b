"""OptFusion (WSDM'25): STE (eq. 9-11), level constraint (eq. 5), fusion operations (Table 1, eq. 12-13), the DAG
reducing to stacked / parallel DCN, export / import, Soft / Hard retrain, shapes and gradients."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torchrec.modules.crossnet import CrossNet, VectorCrossNet

from recsys_dist.config import ConfigError, load_config
from recsys_dist.models.arch import ArchInputs
from recsys_dist.models.fusion_ops import AddFusion, AttentionFusion, ConcatFusion, MixedFusion, ProdFusion
from recsys_dist.models.optfusion import OptFusionArch, unit_step_ste
from recsys_dist.models.optfusion_components import CINComponent, CrossNetComponent, CrossNetV2Component
from recsys_dist.models.optfusion_dag import OPS, FusionArchitecture, FusionSpace, render_dot, render_text
from recsys_dist.models.registry import build_arch

NEG = -1e4  # exp(NEG - 0) underflows to exactly 0: softmax(beta) is an exact one-hot in float64


def _inputs(num_dense=2, fields=3, dim=4):
    return ArchInputs(num_dense, tuple(f"C{i}" for i in range(fields)), dim)


def _batch(inputs, B=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, inputs.num_dense, generator=g, dtype=torch.float64),
            torch.randn(B, inputs.num_sparse, inputs.embedding_dim, generator=g, dtype=torch.float64))


# ---- eq. 9-11: the straight-through estimator ----
def test_ste_forward_is_unit_step_and_backward_is_identity():
    x = torch.tensor([-1.0, 0.0, 1e-7, 0.3, 2.0], requires_grad=True)
    y = unit_step_ste(x)
    assert y.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]  # S(x) = 0 for x <= 0, 1 for x > 0, exactly
    g = torch.tensor([0.5, -2.0, 3.0, 7.0, -1.0])
    y.backward(g)
    assert torch.equal(x.grad, g)


# ---- eq. 5 / 10: level constraint and the edge set ----
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_edges_respect_levels_and_are_complete(n):
    space = FusionSpace(n)
    edges = set(space.edges)
    assert len(space.edges) == len(edges) == 2 * n * n + 4 * n + 3  # paper's 2n^2+2n+1, plus S0's 2n+2
    for src, dst in edges:
        assert space.level(src) < space.level(dst), (src, dst)
    comps = space.components
    for a in comps:
        for b in comps:
            assert ((a, b) in edges) == (space.level(a) < space.level(b))  # no other edge, and none missing
    arch = OptFusionArch(_inputs(0, 2, 2), num_components=n)
    assert arch.alpha.shape == (len(space.edges),) and torch.all(arch.alpha == 0.5)  # init 0.5 (Sec. 4.1.4)
    assert arch.beta.shape == (2 * n + 1, len(OPS))
    for c, srcs in arch._inputs.items():  # what the arch really wires
        lo, hi = arch._edge_slice[c]
        assert [space.edges[k] for k in range(lo, hi)] == [(s, c) for s in srcs]
        assert all(space.level(s) < space.level(c) for s in srcs)


@pytest.mark.parametrize("edge", [("C2", "C1"), ("C1", "D1"), ("O", "E"), ("D1", "S0"), ("E", "E")])
def test_architecture_rejects_edges_against_the_levels(edge):
    d = _search_arch().export_architecture()
    d["edges"].append(list(edge))
    with pytest.raises(ValueError, match="level constraint"):
        FusionArchitecture.from_dict(d)


# ---- Table 1 and eq. 12-13: fusion operations ----
def test_operations_formulas_on_two_inputs():
    torch.manual_seed(0)
    d = 3
    x = torch.randn(2, 2, d)
    xi, xj = x[:, 0], x[:, 1]
    assert torch.allclose(AddFusion()(x), xi + xj)
    assert torch.allclose(ProdFusion()(x), xi * xj)
    cat = ConcatFusion(2, d)
    assert cat.proj.weight.shape == (d, 2 * d) and cat.proj.bias is None  # W in R^{d x 2d}
    assert torch.allclose(cat(x), torch.cat([xi, xj], 1) @ cat.proj.weight.T)
    att = AttentionFusion(d)
    W1, b1, w2 = att.W1.weight, att.W1.bias, att.w2.weight.view(d)
    assert W1.shape == (d, d) and b1.shape == (d,) and w2.shape == (d,)
    si = torch.relu(xi @ W1.T + b1) @ w2
    sj = torch.relu(xj @ W1.T + b1) @ w2
    ai, aj = torch.exp(si) / (torch.exp(si) + torch.exp(sj)), torch.exp(sj) / (torch.exp(si) + torch.exp(sj))
    assert torch.allclose(att(x), ai[:, None] * xi + aj[:, None] * xj, atol=1e-6)
    for op in (AddFusion(), ProdFusion(), cat, att):
        assert op(x).shape == (2, d)
    mix = MixedFusion(2, d)
    mix.fusions["CONCAT"], mix.fusions["ATT"] = cat, att
    p = torch.tensor([0.1, 0.2, 0.3, 0.4])
    want = 0.1 * (xi + xj) + 0.2 * xi * xj + 0.3 * cat(x) + 0.4 * att(x)  # eq. 13
    assert torch.allclose(mix(x, None, p), want, atol=1e-6)


def test_operations_with_disconnected_inputs():
    torch.manual_seed(1)
    d = 4
    x = torch.randn(3, 3, d)
    m = torch.tensor([1.0, 0.0, 1.0])
    assert torch.allclose(AddFusion()(x, m), x[:, 0] + x[:, 2])
    assert torch.allclose(ProdFusion()(x, m), x[:, 0] * x[:, 2])  # a cut edge is not a 0 factor
    cat = ConcatFusion(3, d)
    W = cat.proj.weight
    assert torch.allclose(cat(x, m), x[:, 0] @ W[:, :d].T + x[:, 2] @ W[:, 2 * d:].T, atol=1e-6)
    att = AttentionFusion(d)
    assert torch.allclose(att(x, m), att(x[:, [0, 2]]), atol=1e-6)  # softmax over connected inputs only
    one = torch.tensor([0.0, 1.0, 0.0])
    for op in (AddFusion(), ProdFusion(), att):
        assert torch.allclose(op(x, one), x[:, 1], atol=1e-6)  # a single input passes through
    zero = torch.zeros(3)
    for op in (AddFusion(), ProdFusion(), cat, att):
        assert torch.equal(op(x, zero), torch.zeros(3, d))


def test_connection_gradient_passes_through_the_ste():
    # ADD: x' = sum_i S(alpha_i) x_i  =>  dL/dalpha_i = <dL/dx', x_i> (identity backward of S)
    torch.manual_seed(2)
    x = torch.randn(2, 3, 5)
    alpha = torch.tensor([0.5, -0.5, 0.2], requires_grad=True)
    g = torch.randn(2, 5)
    AddFusion()(x, unit_step_ste(alpha)).backward(g)
    assert torch.allclose(alpha.grad, torch.einsum("bd,bmd->m", g, x))
    assert alpha.grad[1] != 0  # a cut edge still learns (it may reconnect)



def test_prod_of_a_cut_edge_is_the_identity_in_selection_soft_and_hard(tmp_path):
    """The chosen PROD convention (docs/arches.md, "PROD and a disconnected input"): a cut input is the factor 1
    (the paper's Table 1 and the authors' Hard retrain), not the factor 0 that the literal eq. 6 o({c_i e_i}) gives
    (the authors' selection / Soft code, torch.prod over c_i e_i). Defects caught: a 0 factor in the selection
    (every component with one cut candidate would see 0 from PROD, a function no retrain runs), a selection that
    disagrees with its Hard retrain on an all-PROD design, and the alpha gradient under PROD not
    (x_i - 1) prod_{k != i} (c_k x_k + 1 - c_k) (a cut edge learns too, as under ADD)."""
    torch.manual_seed(3)
    x = torch.randn(2, 3, 5, dtype=torch.float64)
    alpha = torch.tensor([0.4, -0.3, 0.2], dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 5, dtype=torch.float64)
    out = ProdFusion()(x, unit_step_ste(alpha))
    assert torch.equal(out, x[:, 0] * x[:, 2]) and out.abs().min() > 0  # not prod_i c_i x_i = 0
    out.backward(g)
    f = [x[:, 0], torch.ones_like(x[:, 1]), x[:, 2]]  # the factors: x_i if connected, else 1
    want = torch.stack([(g * (x[:, i] - 1) * f[(i + 1) % 3] * f[(i + 2) % 3]).sum() for i in range(3)])
    assert torch.allclose(alpha.grad, want)

    inputs = _inputs(2, 3, 4)
    search = OptFusionArch(inputs, num_components=2).double()
    cut = {("E", "C1"), ("S0", "D2"), ("E", "O"), ("C2", "O")}  # every PROD component keeps >= 1 input
    _set_design(search, set(search.space.edges) - cut, {c: "PROD" for c in search.space.op_components})
    path = tmp_path / "architecture.json"
    path.write_text(json.dumps(search.export_architecture()))
    torch.set_default_dtype(torch.float64)
    try:
        hard = OptFusionArch(inputs, architecture=str(path), mode="hard", allow_immature=True)
    finally:
        torch.set_default_dtype(torch.float32)
    assert all(hard.fusion[c].ops == ("PROD",) for c in hard.fusion)
    _copy_into_retrain(search, hard)
    dense, emb = _batch(inputs)
    assert torch.allclose(hard(dense, emb), search(dense, emb), rtol=1e-10, atol=1e-12)

# ---- cross components against TorchRec's cross nets and xDeepFM's CIN ----
def test_cross_components_match_torchrec_and_cin_formula():
    torch.manual_seed(3)
    d = 6
    x0 = torch.randn(4, d)
    v1 = CrossNetComponent(d)
    ref1 = VectorCrossNet(d, 1)
    ref1.kernels[0].data.copy_(v1.weight.view(d, 1))
    ref1.bias[0].data.copy_(torch.randn(d, 1))
    v1.bias.data.copy_(ref1.bias[0].view(d))
    assert torch.allclose(v1(x0, x0), ref1(x0), atol=1e-6)
    v2 = CrossNetV2Component(d)
    ref2 = CrossNet(d, 1)
    ref2.kernels[0].data.copy_(v2.weight)
    ref2.bias[0].data.copy_(torch.randn(d, 1))
    v2.bias.data.copy_(ref2.bias[0].view(d))
    assert torch.allclose(v2(x0, x0), ref2(x0), atol=1e-5)
    F_, D = 3, 2
    cin = CINComponent(F_, D)
    a, b = torch.randn(2, F_ * D), torch.randn(2, F_ * D)
    A, Bm = a.view(2, F_, D), b.view(2, F_, D)
    want = torch.zeros(2, F_, D)
    for h in range(F_):  # xDeepFM eq. 6, written out
        for i in range(F_):
            for j in range(F_):
                want[:, h] += cin.weight[h, i, j] * Bm[:, i] * A[:, j]
    assert torch.allclose(cin(a, b), want.flatten(1), atol=1e-5)


# ---- the DAG reduces to DCN with a hand-set alpha / beta ----
def _set_design(arch: OptFusionArch, edges, ops):
    """alpha = +1 on `edges`, -1 elsewhere; beta = an exact one-hot on ops[c] (ADD where not given)."""
    with torch.no_grad():
        for k, e in enumerate(arch.space.edges):
            arch.alpha[k] = 1.0 if e in edges else -1.0
        for r, c in enumerate(arch.space.op_components):
            arch.beta[r] = NEG
            arch.beta[r, OPS.index(ops.get(c, "ADD"))] = 0.0


def _mlp(arch, names):
    layers = []
    for c in names:
        lin = nn.Linear(*arch.deep[c].mlp[0].weight.shape[::-1]).double()
        lin.load_state_dict(arch.deep[c].mlp[0].state_dict())
        layers += [lin, nn.ReLU()]
    return nn.Sequential(*layers)


def test_dag_reduces_to_stacked_dcn():
    inputs = _inputs(2, 3, 4)
    arch = OptFusionArch(inputs, num_components=3).double()
    stacked = {("E", "S0"), ("S0", "D1"), ("D1", "D2"), ("D2", "D3"), ("D3", "O")}
    _set_design(arch, stacked, {"O": "PROD"})  # one input each: any op but CONCAT is the identity
    dense, emb = _batch(inputs)
    x0 = arch.fields(dense, emb).flatten(1)
    d = x0.shape[1]
    cross = VectorCrossNet(d, 1).double()  # DCN: a cross network (S0) then the deep network on top of it
    cross.kernels[0].data.copy_(arch.cross["S0"].weight.view(d, 1))
    cross.bias[0].data.copy_(arch.cross["S0"].bias.view(d, 1))
    want = arch.output(_mlp(arch, ["D1", "D2", "D3"])(cross(x0))).squeeze(-1)
    assert torch.allclose(arch(dense, emb), want, rtol=1e-12, atol=1e-12)


def test_dag_reduces_to_parallel_dcn():
    inputs = _inputs(2, 3, 4)
    arch = OptFusionArch(inputs, num_components=3).double()
    parallel = {("E", "C1"), ("C1", "C2"), ("C2", "C3"), ("E", "D1"), ("D1", "D2"), ("D2", "D3"),
                ("C3", "O"), ("D3", "O")}
    _set_design(arch, parallel, {"O": "CONCAT"})
    dense, emb = _batch(inputs, seed=1)
    x0 = arch.fields(dense, emb).flatten(1)
    d = x0.shape[1]
    cross = VectorCrossNet(d, 3).double()  # DCN (Wang et al. 2017): 3 cross layers || 3 deep layers -> logit
    for layer, c in enumerate(["C1", "C2", "C3"]):
        cross.kernels[layer].data.copy_(arch.cross[c].weight.view(d, 1))
        cross.bias[layer].data.copy_(arch.cross[c].bias.view(d, 1))
    # O's candidate inputs are E, S0, C1, D1, C2, D2, C3, D3: CONCAT's W has one d x d block per input
    W = arch.fusion["O"].fusions["CONCAT"].proj.weight
    blocks = dict(zip(arch._inputs["O"], W.split(d, dim=1)))
    w_logit = arch.output.weight @ torch.cat([blocks["C3"], blocks["D3"]], 1)  # the DCN's combination layer
    want = torch.cat([cross(x0), _mlp(arch, ["D1", "D2", "D3"])(x0)], 1) @ w_logit.T + arch.output.bias
    assert torch.allclose(arch(dense, emb), want.squeeze(-1), rtol=1e-10, atol=1e-12)


# ---- export / import and the retrain stage ----
def _search_arch(n=2, cross_type="crossnet", seed=0, inputs=None):
    torch.manual_seed(seed)
    arch = OptFusionArch(inputs or _inputs(2, 3, 4), num_components=n, cross_type=cross_type).double()
    with torch.no_grad():
        arch.alpha.copy_(torch.randn(arch.alpha.shape) * 0.6 + 0.1)
        arch.alpha[-1] = 0.7  # keep one edge into O
        arch.beta.copy_(torch.randn(arch.beta.shape))
    return arch


def _copy_into_retrain(search: OptFusionArch, retrain: OptFusionArch) -> None:
    """Retrain modules are the search modules restricted to the selected edges (CONCAT keeps its columns)."""
    sd = search.state_dict()
    d = search.num_fields * search.field_dim
    with torch.no_grad():
        for name, t in retrain.state_dict().items():
            if name.startswith("op_weights_"):
                continue
            src = sd[name]
            if name.endswith("fusions.CONCAT.proj.weight"):
                c = name.split(".")[1]
                cols = [search._inputs[c].index(s) for s in retrain._inputs[c]]
                src = torch.cat([src[:, k * d:(k + 1) * d] for k in cols], 1)
            t.copy_(src)


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_export_import_round_trip_and_retrain_equals_search(tmp_path, mode):
    search = _search_arch(n=3)
    exported = search.export_architecture()
    path = tmp_path / "architecture.json"
    path.write_text(json.dumps(exported))
    loaded = FusionArchitecture.load(path)
    run_only = ("selection_steps", "warnings")  # facts of the selection run, not of the architecture
    exported = {k: v for k, v in exported.items() if k not in run_only}
    assert loaded.to_dict() == exported  # round trip
    alpha = search.alpha.detach()
    assert set(loaded.edges) == {e for e, a in zip(search.space.edges, alpha.tolist()) if a > 0}
    p = torch.softmax(search.beta.detach(), 1)
    for r, c in enumerate(search.space.op_components):
        assert loaded.op_weights[c] == pytest.approx(p[r].tolist())
        assert loaded.hard_ops()[c] == OPS[int(p[r].argmax())]

    torch.set_default_dtype(torch.float64)  # the fixed op weights p_j are built as float64 too
    try:
        retrain = OptFusionArch(search.inputs, architecture=str(path), mode=mode, allow_immature=True)
    finally:
        torch.set_default_dtype(torch.float32)
    assert retrain.architecture_parameters() == []
    assert set(retrain._order) == set(loaded.live_components()) - {"E"}  # unused components are not built
    _copy_into_retrain(search, retrain)
    if mode == "hard":  # Hard = search with beta* one-hot on the argmax (Sec. 3.4.2)
        with torch.no_grad():
            hot = torch.full_like(search.beta, NEG)
            hot[torch.arange(len(hot)), search.beta.argmax(1)] = 0.0
            search.beta.copy_(hot)
    dense, emb = _batch(search.inputs)
    assert torch.allclose(retrain(dense, emb), search(dense, emb), rtol=1e-9, atol=1e-10)
    assert retrain.export_architecture() == exported


def test_text_and_dot_diagrams():
    sel = FusionArchitecture(n=2, cross_type="crossnet",
                             edges=[("E", "S0"), ("S0", "D1"), ("D1", "O"), ("E", "C2")],
                             op_weights={c: [0.1, 0.6, 0.2, 0.1] for c in FusionSpace(2).op_components})
    text = render_text(sel)
    assert "4 of 19 edges selected" in text
    assert "<- PROD(D1)" in text and "<- PROD(E)" in text
    assert "C2" in text and "[unused: no path to O]" in text.split("C2")[1].splitlines()[0]
    assert sel.live_components() == ("E", "S0", "D1", "O")
    dot = render_dot(sel)
    assert dot.startswith("digraph") and '"D1" -> "O"' in dot and '"C2" [label="C2\\nPROD", style=dashed]' in dot


# ---- the DenseArch contract ----
@pytest.mark.parametrize("cross_type", ["crossnet", "crossnetv2", "cin"])
@pytest.mark.parametrize("num_dense", [0, 2])
def test_search_shape_and_gradients_reach_every_parameter(cross_type, num_dense):
    inputs = _inputs(num_dense, 3, 4)
    arch = OptFusionArch(inputs, num_components=2, cross_type=cross_type)
    dense, emb = (t.float() for t in _batch(inputs, B=8))
    out = arch(dense, emb)
    assert out.shape == (8,)
    out.sum().backward()
    names = [n for n, p in arch.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert names == []
    assert {id(p) for p in arch.architecture_parameters()} == {id(arch.alpha), id(arch.beta)}
    assert not {id(p) for p in arch.model_parameters()} & {id(arch.alpha), id(arch.beta)}


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_retrain_shape_and_gradients_reach_every_parameter(mode):
    search = _search_arch(n=3, cross_type="crossnetv2").float()
    arch = OptFusionArch(search.inputs, architecture=search.export_architecture(), mode=mode,
                         allow_immature=True)  # random beta: some margins are small
    dense, emb = (t.float() for t in _batch(search.inputs, B=8))
    out = arch(dense, emb)
    assert out.shape == (8,)
    out.sum().backward()
    assert [n for n, p in arch.named_parameters() if p.grad is None] == []
    ops = {len(f.ops) for f in arch.fusion.values()}
    assert ops == ({1} if mode == "hard" else {len(OPS)})


# ---- configuration and errors ----
def test_registry_and_clear_errors(tmp_path):
    arch = build_arch("optfusion", _inputs(), {"num_components": 2})
    assert isinstance(arch, OptFusionArch) and arch.n == 2
    with pytest.raises(ValueError, match="num_components must be an integer >= 1, got 0"):
        OptFusionArch(_inputs(), num_components=0)
    with pytest.raises(ValueError, match="cross_type 'dcn' is not one of"):
        OptFusionArch(_inputs(), cross_type="dcn")
    with pytest.raises(ValueError, match="mode .* is for retraining"):
        OptFusionArch(_inputs(), mode="hard")
    exported = _search_arch(n=2).export_architecture()
    with pytest.raises(ValueError, match="num_components=3 but the architecture has 2"):
        OptFusionArch(_inputs(), architecture=exported, num_components=3)
    with pytest.raises(ValueError, match="mode must be soft or hard"):
        OptFusionArch(_inputs(), architecture=exported, mode="medium")
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "format": "recsys-dist/optfusion-architecture",\n  "edges": [,]\n}')
    with pytest.raises(ValueError, match=r"bad.json:3: not valid JSON"):
        OptFusionArch(_inputs(), architecture=str(bad))
    exported["op_weights"]["C1"] = [0.5, 0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="op_weights.C1 must be 4 non-negative weights"):
        FusionArchitecture.from_dict(exported)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        OptFusionArch(_inputs(), architecture=str(tmp_path / "nope.json"))


@pytest.mark.parametrize("name", ["optfusion_criteo_kaggle", "optfusion_criteo_terabyte",
                                  "optfusion_retrain_criteo_kaggle", "optfusion_retrain_criteo_terabyte"])
def test_presets_load(name):
    from pathlib import Path

    cfg = load_config(Path(__file__).parent.parent / "configs" / f"{name}.yaml")
    assert cfg.model.arch == "optfusion" and cfg.model.embedding_dim == 40 and cfg.data.batch_size == 4096
    assert (cfg.optim.sparse, cfg.optim.sparse_lr, cfg.optim.dense, cfg.optim.dense_lr) == ("adam", 3e-4, "adam", 3e-4)
    assert ("architecture" in cfg.model.arch_args) == ("retrain" in name)
    with pytest.raises(ConfigError, match="has no argument"):
        load_config(Path(__file__).parent.parent / "configs" / f"{name}.yaml", ["model.arch_args.width=3"])


def test_parallel_dag_equals_the_dcn_arch_on_the_same_weights():
    """The same reduction, checked against the project's DCN arch (recsys_dist.models.dcn, DCN eq. 3-5)."""
    dcn_mod = pytest.importorskip("recsys_dist.models.dcn")
    inputs = _inputs(0, 3, 4)  # no numeric features: both arches see x_0 = the flattened embeddings
    arch = OptFusionArch(inputs, num_components=3).double()
    _set_design(arch, {("E", "C1"), ("C1", "C2"), ("C2", "C3"), ("E", "D1"), ("D1", "D2"), ("D2", "D3"),
                       ("C3", "O"), ("D3", "O")}, {"O": "CONCAT"})
    d = arch.num_fields * arch.field_dim
    dcn = dcn_mod.DCNArch(inputs, num_cross_layers=3, dnn=[d, d, d, 1]).double()
    W = dict(zip(arch._inputs["O"], arch.fusion["O"].fusions["CONCAT"].proj.weight.split(d, dim=1)))
    with torch.no_grad():
        for layer, c in enumerate(["C1", "C2", "C3"]):
            dcn.cross.kernels[layer].copy_(arch.cross[c].weight.view(d, 1))
            dcn.cross.bias[layer].copy_(arch.cross[c].bias.view(d, 1))
        dcn.cross_logit.weight.copy_(arch.output.weight @ W["C3"])  # eq. 5's w_logit, cross half
        linears = [m for m in dcn.dnn.modules() if isinstance(m, nn.Linear)]
        assert len(linears) == 4
        for lin, c in zip(linears, ["D1", "D2", "D3"]):
            lin.weight.copy_(arch.deep[c].mlp[0].weight)
            lin.bias.copy_(arch.deep[c].mlp[0].bias)
        linears[3].weight.copy_(arch.output.weight @ W["D3"])  # eq. 5's w_logit, deep half, and b
        linears[3].bias.copy_(arch.output.bias)
    dense, emb = _batch(inputs, seed=2)
    assert torch.allclose(arch(dense, emb), dcn(dense, emb), rtol=1e-10, atol=1e-12)


def test_search_step_allocates_no_stack_of_the_fusion_inputs():
    """Per-step temporaries (issue 17): the fusion operations work on each input [B, d], never on a [B, m, d] stack
    of them. Defect caught: a stack, its masked copy, ATT's projection of it or their gradients (m up to 8 inputs:
    at the preset, batch 4096 and d = 1560, 49-390 MiB each, ~190 per step, every one above glibc's 32 MiB mmap
    threshold and so mmapped and page-faulted again every step). No allocation of a search step (forward, backward,
    Adam) reaches 2 x [B, d] here; with the stacked operations the largest is 8 x [B, d]."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_arch_memory import arch_step_allocations

    torch.manual_seed(0)
    inputs = _inputs(2, 3, 4)  # d = 5 fields x 4 = 20; parameters stay far below B x d
    arch = OptFusionArch(inputs, num_components=3)
    B, d = 512, 20
    dense, emb = torch.rand(B, 2), torch.randn(B, 3, 4, requires_grad=True)
    allocs = arch_step_allocations(arch, dense, emb)
    assert len(allocs) > 100, len(allocs)  # the profiler saw the step
    largest = max(allocs)
    assert largest[0] < 2 * B * d * 4, f"{largest[0]} bytes by {largest[1]} (>= 2 x [B, d] = {2 * B * d * 4})"
