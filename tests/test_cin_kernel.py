"""xDeepFM's CIN as chunked GEMMs (recsys_dist/models/cin_kernel.py) against the einsum it replaced, which
materializes the [B, H, m, D] outer products: values and gradients (inputs and weights) equal, for chunks that
split the rows unevenly, one row, or all rows at once; under bf16 autocast close to fp32; fx-traceable."""

import pytest
import torch

import recsys_dist.models.cin_kernel as ck
from recsys_dist.models.xdeepfm import CIN, XDeepFMArch
from recsys_dist.models.arch import ArchInputs


@pytest.mark.parametrize("chunk", [1, 37, 1 << 20], ids=["one-value", "uneven", "all-rows"])
@pytest.mark.parametrize("split_half", [True, False])
def test_chunked_cin_equals_the_einsum_in_values_and_gradients(monkeypatch, chunk, split_half):
    """Catches a wrong contraction index, a chunk boundary dropped or counted twice (forward or dW accumulation),
    or a wrong dX^{k-1} / dX^0 in the hand-written backward."""
    monkeypatch.setattr(ck, "CHUNK_ELEMENTS", chunk)
    torch.manual_seed(0)
    cin = CIN(5, [6, 4, 3], split_half=split_half).double()
    x0 = torch.randn(7, 5, 3, dtype=torch.double, requires_grad=True)
    g = torch.randn(7, cin.output_dim, dtype=torch.double)
    got = cin(x0)
    (got * g).sum().backward()
    got_grads = [x0.grad.clone()] + [w.grad.clone() for w in cin.weights]
    x0.grad = None
    cin.zero_grad()
    want = cin.forward_einsum(x0)
    (want * g).sum().backward()
    want_grads = [x0.grad] + [w.grad for w in cin.weights]
    torch.testing.assert_close(got, want)
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_cin_layer_gradcheck():
    """Second, independent check of the backward: finite differences on one layer with chunked rows."""
    torch.manual_seed(0)
    args = (torch.randn(3, 2, 4, dtype=torch.double, requires_grad=True),
            torch.randn(3, 2, 5, dtype=torch.double, requires_grad=True),
            torch.randn(6, 4, 5, dtype=torch.double, requires_grad=True))
    old = ck.CHUNK_ELEMENTS
    ck.CHUNK_ELEMENTS = 40  # 2 rows a chunk
    try:
        assert torch.autograd.gradcheck(ck.cin_layer, args)
    finally:
        ck.CHUNK_ELEMENTS = old


def test_bf16_autocast_runs_in_bf16_and_stays_close():
    """Under the bf16 autocast of train.mixed_precision the layer computes in bf16 (like a linear layer) and its
    gradients reach fp32 parameters; values near the fp32 ones."""
    torch.manual_seed(0)
    model = XDeepFMArch(ArchInputs(3, ("C1", "C2", "C3"), 8), cin_layers=[8, 4], dnn=[8, 1], dense_mlp=[8])
    dense, emb = torch.rand(16, 3), torch.randn(16, 3, 8)
    want = model(dense, emb)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fields = model.fields(dense, emb)
        maps = fields.transpose(1, 2)
        assert ck.cin_layer(maps, maps, model.cin.weights[0]).dtype == torch.bfloat16
        got = model(dense, emb)
    got.float().sum().backward()
    assert all(w.grad is not None and w.grad.dtype == torch.float32 for w in model.cin.weights)
    torch.testing.assert_close(got.float(), want, atol=0.05, rtol=0.05)
