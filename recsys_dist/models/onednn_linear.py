"""y = act(x W^T + b) for training, with oneDNN's fp32 GEMM on CPU.

On CPU torch runs fp32 `F.linear` and its backward on MKL's sgemm. On the machines measured here (AVX-512 x86)
oneDNN's GEMM, which torch ships and calls through `torch.ops.mkldnn._linear_pointwise`, is 1.2-1.4x faster for
the forward and the input gradient at the MLP shapes of these models (`benchmarks/bench_roofline.py`), and fuses
the ReLU into the forward. The weight gradient stays on MKL (`mm`), which is as fast there.

`linear` picks the oneDNN path only where it is exact fp32 eager training on CPU: fp32 tensors, autocast off,
oneDNN built in, not under torch.compile (train.compile: Inductor cannot lower this op and picks its own GEMMs),
and only for GEMMs large enough to pay its fixed cost (`onednn_pays`): at batch 128 every MLP layer of the DCN /
AutoInt presets ran fp32 forward + backward on MKL in less CPU than on oneDNN (1.01-2.9x; ~130 us per call more on
oneDNN), at batch 2048 the wide layers ran faster on oneDNN (0.67-0.86x) and the narrow ones (out <= 16) did not
(`benchmarks/bench_linear_choice.py`, docs/benchmarks.md "Part 3, continued").
Everywhere else (CUDA, bf16 / autocast, no oneDNN, small GEMMs) it is `F.linear` + ReLU, so the numbers are the
same up to fp32 summation order. Backward: g' = g * 1[y > 0] (ReLU), dx = g' W, dW = g'^T x, db = sum_b g'.

Example:
    >>> x, w, b = torch.randn(4, 3), torch.randn(2, 3), torch.randn(2)
    >>> torch.allclose(linear(x, w, b, relu=True), torch.relu(x @ w.T + b), atol=1e-6)
    True
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F


def onednn_available() -> bool:
    """True when this torch build has oneDNN and exposes its fused linear op."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_ONEDNN = onednn_available()


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], relu: bool) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "relu" if relu else "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                relu: bool) -> torch.Tensor:
        y = _onednn_linear(x, weight, bias, relu)
        ctx.relu = relu
        ctx.save_for_backward(x, weight, y if relu else None)
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        x, weight, y = ctx.saved_tensors
        if ctx.relu:
            g = torch.ops.aten.threshold_backward(g, y, 0)
        g = g.contiguous()
        dx = _onednn_linear(g, weight.t(), None, False) if ctx.needs_input_grad[0] else None
        dw = g.t().mm(x) if ctx.needs_input_grad[1] else None
        db = g.sum(0) if ctx.needs_input_grad[2] else None
        return dx, dw, db, None


# oneDNN's GEMM pays its fixed cost from these sizes on (measured: benchmarks/bench_linear_choice.py)
ONEDNN_MIN_OUT = 64            # output features: narrower layers (the last 1-wide layer, 16-wide fields) ran on MKL
ONEDNN_MIN_ROWS = 1024         # batch rows from which a layer of >= ONEDNN_MIN_OUT outputs ran faster on oneDNN
ONEDNN_MIN_MACS = 1 << 25      # or multiply-adds per forward (rows x in x out) from which it did at fewer rows


def onednn_pays(rows: int, in_features: int, out_features: int) -> bool:
    """True when a fp32 linear of this shape trains faster on oneDNN's GEMM than on MKL's (see the module doc)."""
    return out_features >= ONEDNN_MIN_OUT and (rows >= ONEDNN_MIN_ROWS
                                               or rows * in_features * out_features >= ONEDNN_MIN_MACS)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], relu: bool) -> torch.Tensor:
    """act(x [B, in] W^T [in, out] + b [out]) -> [B, out], act = ReLU if `relu` else identity."""
    if (_ONEDNN and x.dim() == 2 and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling()  # under train.compile, Inductor generates the GEMMs itself
            and onednn_pays(x.shape[0], weight.shape[1], weight.shape[0])):
        return _OneDNNLinear.apply(x, weight, bias, relu)
    y = F.linear(x, weight, bias)
    return torch.relu(y) if relu else y
