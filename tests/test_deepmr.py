"""DeepMR (eq. 1-10): ReZero blocks, the attention branch, the beta mixture."""

import math

import pytest
import torch

from recsys_dist.models.arch import ArchInputs
from recsys_dist.models.deepmr import DeepMRArch, ReZeroDNN, ReZeroSelfAttention
from recsys_dist.models.registry import build_arch

B, N, D = 4, 3, 8


def _inputs(num_dense=0):
    return ArchInputs(num_dense, tuple(f"C{i}" for i in range(N)), D)


def _arch(**kw):
    torch.manual_seed(0)
    return DeepMRArch(_inputs(kw.pop("num_dense", 0)), **kw).double()


def _emb(seed=1):
    return torch.randn(B, N, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_rezero_dnn_is_the_projection_at_init_and_follows_eq_4():
    torch.manual_seed(0)
    dnn = ReZeroDNN(N * D, 6, num_layers=2).double()
    x = _emb().flatten(1)
    torch.testing.assert_close(dnn(x), dnn.project(x))  # every ReZero layer is the identity at alpha = 0
    with torch.no_grad():
        dnn.alpha.copy_(torch.tensor([0.5, -2.0]))
    h = dnn.project(x)
    for j, layer in enumerate(dnn.layers):  # l_{j+1} = l_j + alpha_j ReLU(l_j W_j + b_j)
        h = h + dnn.alpha[j] * torch.relu(h @ layer.weight.t() + layer.bias)
    torch.testing.assert_close(dnn(x), h)


def _attention_by_hand(block, e, heads):
    wq, wk, wv = block.qkv.weight.chunk(3, dim=0)  # each [d_o, D]
    d_h = wq.shape[0] // heads
    out = torch.zeros(e.shape[0], e.shape[1], wq.shape[0], dtype=e.dtype)
    for b in range(e.shape[0]):
        for h in range(heads):
            rows = slice(h * d_h, (h + 1) * d_h)
            q, k, v = e[b] @ wq[rows].t(), e[b] @ wk[rows].t(), e[b] @ wv[rows].t()
            out[b, :, rows] = torch.softmax(q @ k.t() / math.sqrt(d_h), dim=-1) @ v  # eq. 6, concat eq. 7
    return out


@pytest.mark.parametrize("residual", ["mul", "add"])
def test_rezero_attention_is_identity_at_init_and_follows_eq_6_to_8(residual):
    torch.manual_seed(0)
    block = ReZeroSelfAttention(D, D, num_heads=2, residual=residual).double()
    e = _emb()
    block(e)
    torch.testing.assert_close(block.last_residual, e)  # alpha_SA = 0: Z = E
    with torch.no_grad():
        block.alpha.fill_(0.7)
    out = block(e)
    sa = _attention_by_hand(block, e, heads=2)
    z = e + 0.7 * (sa * e if residual == "mul" else sa)
    torch.testing.assert_close(block.last_residual, z)
    ffn = torch.nn.functional.leaky_relu(z @ block.ffn1.weight.t() + block.ffn1.bias, 0.01)
    torch.testing.assert_close(out, ffn @ block.ffn2.weight.t() + block.ffn2.bias)  # eq. 8


def test_beta_zero_and_one_reduce_to_one_branch():
    e = _emb()
    for beta, kept in ((0.0, 1), (1.0, 0)):
        arch = _arch(width=8, num_heads=2, beta=beta)
        o_sa, o_dnn = arch.branches(torch.zeros(B, 0), e)
        torch.testing.assert_close(arch(torch.zeros(B, 0), e), (o_sa, o_dnn)[kept].sum(-1))
        dropped = arch.attention if beta == 0.0 else arch.dnn  # the other branch's weights do not matter
        with torch.no_grad():
            for p in dropped.parameters():
                p.add_(torch.randn_like(p))
        torch.testing.assert_close(arch(torch.zeros(B, 0), e), (o_sa, o_dnn)[kept].sum(-1))


def test_beta_mixture_eq_9_10_and_positional_encoding_eq_1():
    arch = _arch(width=8, num_heads=2, beta=0.3)
    e = _emb()
    o_sa, o_dnn = arch.branches(torch.zeros(B, 0), e)
    torch.testing.assert_close(arch(torch.zeros(B, 0), e), (0.3 * o_sa + 0.7 * o_dnn).sum(-1))
    # the DNN branch at init is the projection of the flattened e + P
    torch.testing.assert_close(o_dnn, arch.dnn.project((e + arch.position).flatten(1)))


def test_wider_branches_project_the_attention_residual():
    arch = _arch(width=12, num_heads=3, num_attention_layers=2)
    e = _emb()
    arch(torch.zeros(B, 0), e)
    first = arch.attention[0]
    torch.testing.assert_close(first.last_residual, first.res(e + arch.position))
    assert arch.attention[1].res is None  # second block is already d_o wide


@pytest.mark.parametrize("learn_beta", [False, True])
def test_shape_and_gradients_reach_every_parameter(learn_beta):
    arch = _arch(width=8, num_heads=2, num_dnn_layers=2, num_dense=2, learn_beta=learn_beta)
    assert isinstance(arch.beta, torch.nn.Parameter) == learn_beta
    with torch.no_grad():  # ReZero alphas start at 0, which blocks the gradient of the layers they scale
        arch.dnn.alpha.fill_(0.5)
        for block in arch.attention:
            block.alpha.fill_(0.5)
    out = arch(torch.rand(B, 2, dtype=torch.float64), _emb())
    assert out.shape == (B,)
    out.sum().backward()
    for name, p in arch.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_alphas_receive_gradient_at_init():
    arch = _arch(width=8, num_heads=2)
    arch(torch.zeros(B, 0), _emb()).sum().backward()
    assert arch.dnn.alpha.grad.abs().sum() > 0 and arch.attention[0].alpha.grad.abs() > 0


def test_registry_and_bad_arguments():
    assert isinstance(build_arch("deepmr", _inputs(), {"width": 8, "num_heads": 4}), DeepMRArch)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        DeepMRArch(_inputs(), width=10, num_heads=4)
    with pytest.raises(ValueError, match="attention_residual must be 'mul' or 'add'"):
        DeepMRArch(_inputs(), attention_residual="cat")


def test_dropout_in_training_only_and_in_both_branches():
    """Defect caught: the paper's dropout (0.35-0.45) missing from a branch, or still dropping units at eval."""
    torch.manual_seed(0)
    arch = DeepMRArch(ArchInputs(0, ("C1", "C2", "C3"), 8), width=8, num_heads=2, num_dnn_layers=1, dropout=0.5)
    with torch.no_grad():  # ReZero alphas off 0 so the dropped activations reach the output
        arch.dnn.alpha.fill_(1.0)
        arch.attention[0].alpha.fill_(1.0)
    e = torch.rand(64, 3, 8)
    arch.train()
    o_sa1, o_dnn1 = arch.branches(torch.zeros(64, 0), e)
    o_sa2, o_dnn2 = arch.branches(torch.zeros(64, 0), e)
    assert not torch.allclose(o_sa1, o_sa2) and not torch.allclose(o_dnn1, o_dnn2)  # fresh masks each call
    arch.eval()
    assert torch.equal(arch(torch.zeros(64, 0), e), arch(torch.zeros(64, 0), e))
    with pytest.raises(ValueError, match="dropout"):
        DeepMRArch(ArchInputs(0, ("C1",), 8), width=8, num_heads=2, dropout=1.0)


@pytest.mark.parametrize("name", ["deepmr_criteo_kaggle", "deepmr_criteo_terabyte"])
def test_presets_use_the_papers_dropout(name):
    from pathlib import Path

    from recsys_dist.config import load_config

    cfg = load_config(Path(__file__).parent.parent / "configs" / f"{name}.yaml")
    assert cfg.model.arch_args["dropout"] == 0.35  # Frappe / LastFM's best (Sec. 4.1.3)
    assert (cfg.optim.sparse, cfg.optim.sparse_lr, cfg.optim.dense, cfg.optim.dense_lr) == ("adam", 1e-4, "adam", 1e-4)


def _narrow_arch(chunk_rows=None, **kw):
    """D = 4 < d_o / H = 8: the first block attends at input width; the second (width 16) projects Q, K, V."""
    torch.manual_seed(0)
    arch = DeepMRArch(ArchInputs(2, ("C1", "C2", "C3"), 4), width=16, num_heads=2, num_dnn_layers=1,
                      num_attention_layers=2, learn_beta=True, **kw)
    with torch.no_grad():  # ReZero alphas off 0 so every attention weight reaches the output
        arch.dnn.alpha.fill_(0.5)
        for block in arch.attention:
            block.alpha.fill_(0.8)
        for block in arch.attention:
            block.qkv.weight.mul_(4.0)  # scores of order 1: a wrong softmax scale shows
    if chunk_rows is not None:
        arch.CHUNK_BYTES = chunk_rows * 5 * 16 * 4  # [rows, N = 2 + 3 fields, d_o] fp32
    return arch


def _output_and_grads(arch, dense, emb):
    for p in arch.parameters():
        p.grad = None
    emb = emb.detach().requires_grad_(True)
    out = arch(dense, emb)
    (out * torch.linspace(-1, 1, out.shape[0])).sum().backward()
    return [out.detach(), emb.grad] + [p.grad for _, p in arch.named_parameters()]


@pytest.mark.parametrize("chunk_rows", [None, 3])
def test_cheaper_ops_match_the_papers_ops(chunk_rows):
    """Speed (issue 17): attention at input width D on e (q = e W^Q W^K^T, V projected after the softmax), FFN's
    second layer on the field-summed rows and the branch over batch chunks give the paper's output and the same
    gradient for every parameter and the embeddings (fp32). Defects caught: a wrong softmax scale (1/sqrt(D)
    instead of 1/sqrt(d_o/H)), heads' W^V mixed up, the FFN bias counted once instead of N times, chunks lost or
    reordered, and the cheaper attention never running (the first block's Q/K/V projection is not called)."""
    from recsys_dist.models.deepmr import reference_ops

    arch = _narrow_arch(chunk_rows)
    g = torch.Generator().manual_seed(3)
    dense, emb = torch.rand(7, 2, generator=g), torch.randn(7, 3, 4, generator=g)
    calls = {"qkv": 0, "rows": []}
    arch.attention[0].qkv.register_forward_hook(lambda *a: calls.__setitem__("qkv", calls["qkv"] + 1))
    arch.attention[0].register_forward_pre_hook(lambda m, a: calls["rows"].append(a[0].shape[0]))
    fast = _output_and_grads(arch, dense, emb)
    assert calls["qkv"] == 0 and calls["rows"] == ([7] if chunk_rows is None else [3, 3, 1])
    with reference_ops():
        ref = _output_and_grads(arch, dense, emb)
    assert calls["qkv"] == 1 and calls["rows"][-1] == 7
    names = ["output", "embeddings"] + [n for n, _ in arch.named_parameters()]
    for name, f, r in zip(names, fast, ref):
        torch.testing.assert_close(f, r, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_step_allocates_no_whole_batch_attention_activation():
    """Per-step temporaries (issue 17): the attention branch runs over batch chunks, so none of its [rows, N, d_o]
    activations or gradients spans the batch. Defect caught: the branch on the whole batch (at the preset, batch
    4096 x 39 fields x d_o 256: 156 MiB per activation, 468 MiB for the Q/K/V projection, 26 per step above glibc's
    32 MiB mmap threshold, so mmapped and page-faulted again every step). Here no allocation of a step (forward,
    backward, Adam) reaches half a whole-batch [B, N, d_o]; the inputs [B, N, D] are a quarter of it."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_arch_memory import arch_step_allocations

    arch = _narrow_arch(chunk_rows=16)
    B = 512
    dense, emb = torch.rand(B, 2), torch.randn(B, 3, 4, requires_grad=True)
    allocs = arch_step_allocations(arch, dense, emb)
    assert len(allocs) > 100, len(allocs)  # the profiler saw the step
    largest, whole = max(allocs), B * 5 * 16 * 4
    assert largest[0] < whole // 2, f"{largest[0]} bytes by {largest[1]} (>= half a [B, N, d_o] = {whole // 2})"
