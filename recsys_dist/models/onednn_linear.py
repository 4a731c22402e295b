"""y = act(x W^T + b) for training, with oneDNN's fp32 GEMM on CPU.

On CPU torch runs fp32 `F.linear` and its backward on MKL's sgemm. On the machines measured here (AVX-512 x86)
oneDNN's GEMM, which torch ships and calls through `torch.ops.mkldnn._linear_pointwise`, is 1.2-1.4x faster for
the forward and the input gradient at the MLP shapes of these models (`benchmarks/bench_roofline.py`), and fuses
the ReLU into the forward. The weight gradient stays on MKL (`mm`), which is as fast there.

`linear` picks the oneDNN path only where it is exact fp32 eager training on CPU: fp32 tensors, autocast off,
oneDNN built in, not under torch.compile (train.compile: Inductor cannot lower this op and picks its own GEMMs).
Everywhere else (CUDA, bf16 / autocast, no oneDNN) it is `F.linear` + ReLU, so the numbers are the same up to
fp32 summation order. Backward: g' = g * 1[y > 0] (ReLU), dx = g' W, dW = g'^T x, db = sum_b g'.

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


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], relu: bool) -> torch.Tensor:
    """act(x [B, in] W^T [in, out] + b [out]) -> [B, out], act = ReLU if `relu` else identity."""
    if (_ONEDNN and x.dim() == 2 and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling()):  # under train.compile, Inductor generates the GEMMs itself
        return _OneDNNLinear.apply(x, weight, bias, relu)
    y = F.linear(x, weight, bias)
    return torch.relu(y) if relu else y
