"""Peak memory of DynInt's DGP / DWP layers (forward + backward): low-rank paradigm vs naive B x F x F.

DynInt Sec. 3.5: materializing the instance-aware parameters W^(i) (DGP, eq. 5) or G^(i) o W (DWP, eq. 6) costs
B x F x F; the paper's computational paradigms (eq. 8 and eq. 10, recsys_dist.models.dynint) never build them.
This script runs both in the same process on the same parameters and inputs, checks they give the same output,
and measures the peak of live tensor memory allocated during one forward + backward of one layer.

Method: torch.profiler with profile_memory=True records every CPU tensor allocation and free as a `[memory]`
event (bytes, +alloc / -free, timestamp). Sorting them by time and taking the running sum gives the live bytes
allocated since the profile started; its maximum is the peak. Tensors that exist before (parameters, the input)
are not counted; everything forward + backward allocates (activations saved for backward, gradients,
temporaries) is. No CUDA, no RSS guessing: the numbers are the allocator's own byte counts.

Rows of the layer are R = h * F (subspace crossing), columns D / h. The paradigms' memory is ~B*K*R*(D/h) =
B*K*F*D (DWP) and ~B*(K + R)*(D/h) (DGP), the naive one ~B*R*R: so the low-rank peak grows with B*K and is
flat in h, the naive one grows with B*R^2.

    .venv/bin/python benchmarks/bench_dynint_memory.py            # ~1 min, ~2 GB peak, 1 thread
"""

from __future__ import annotations

import argparse
import platform
from typing import Callable, Dict, List, Tuple

import torch
from torch.profiler import ProfilerActivity, profile

from recsys_dist.models.dynint import DynamicGeneratedLayer, DynamicWeightedLayer

F, D, R_RATIO = 39, 16, 4  # Criteo: 13 bucketized numeric + 26 categorical fields, embedding 16


def naive_dgp(layer: DynamicGeneratedLayer, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Eq. 5 with W^(i) = U diag(sigma^(i)) V^T materialized: [B, R, R]."""
    s = 2.0 * torch.sigmoid(layer.sigma(x0))
    w = torch.matmul(layer.U * s.unsqueeze(1), layer.V.t())  # [B, R, R]
    return x * torch.bmm(w, x0) + x


def naive_dwp(layer: DynamicWeightedLayer, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Eq. 6 with G^(i) = sum_p (u_p v_p^T + 1/K) and G^(i) o W materialized: [B, R, R]."""
    B, R, _ = x0.shape
    u, v = layer.pairs(x0).view(B, 2, layer.rank, R).unbind(1)
    g = torch.matmul(u.transpose(1, 2), v) + 1.0  # [B, R, R]
    return x * torch.bmm(g * layer.weight, x0) + x


def peak_bytes(fn: Callable[[], torch.Tensor]) -> Tuple[int, torch.Tensor]:
    """Peak live bytes allocated during fn() + backward, from the profiler's allocation events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        out.square().sum().backward()
        out = out.detach()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, n in events:
        live += n
        peak = max(peak, live)
    return peak, out


def measure(mode: str, B: int, h: int, K: int) -> Dict[str, float]:
    torch.manual_seed(0)
    R, C = h * F, D // h
    cls = DynamicGeneratedLayer if mode == "dgp" else DynamicWeightedLayer
    layer = cls(R, F * D, K, R_RATIO)
    naive = naive_dgp if mode == "dgp" else naive_dwp
    x0 = (0.1 * torch.randn(B, R, C)).requires_grad_()
    low, out_low = peak_bytes(lambda: layer(x0, x0))
    layer.zero_grad(set_to_none=True)
    x0.grad = None
    full, out_full = peak_bytes(lambda: naive(layer, x0, x0))
    torch.testing.assert_close(out_low, out_full, rtol=1e-4, atol=1e-5)  # same function, other memory
    return {"mode": mode, "B": B, "h": h, "K": K, "R": R, "low_MiB": low / 2**20, "naive_MiB": full / 2**20,
            "low_per_BK": low / (B * K), "ratio": full / low}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="smaller sweep (for a smoke run)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    B = args.batch
    runs: List[Dict[str, float]] = []
    hs = (1, 4) if args.quick else (1, 4, 16)
    for mode in ("dgp", "dwp"):
        for h in hs:  # grows the naive F x F (rows R = h*F), not the low-rank paradigm
            runs.append(measure(mode, B, h, 4))
        for K in (1, 2, 8):  # low-rank memory grows with K
            runs.append(measure(mode, B, hs[-1], K))
        for b in (B // 4, B // 2):  # both grow with B
            runs.append(measure(mode, b, hs[-1], 4))
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, F={F}, D={D}, r={R_RATIO}")
    print(f"{'mode':4} {'B':>5} {'h':>3} {'K':>2} {'R=hF':>5} {'low-rank MiB':>13} {'naive MiB':>10} "
          f"{'low B/(B*K)':>12} {'naive/low':>9}")
    for r in sorted(runs, key=lambda r: (r["mode"], r["h"], r["K"], r["B"])):
        print(f"{r['mode']:4} {r['B']:>5} {r['h']:>3} {r['K']:>2} {r['R']:>5} {r['low_MiB']:>13.2f} "
              f"{r['naive_MiB']:>10.2f} {r['low_per_BK']:>12.0f} {r['ratio']:>9.1f}")
    print("\nratios (naive peak / low-rank peak; growth of the low-rank peak):")
    for mode in ("dgp", "dwp"):
        mine = [r for r in runs if r["mode"] == mode]
        by_h = sorted((r for r in mine if r["K"] == 4 and r["B"] == B), key=lambda r: r["h"])
        by_k = sorted((r for r in mine if r["h"] == hs[-1] and r["B"] == B), key=lambda r: r["K"])
        by_b = sorted((r for r in mine if r["h"] == hs[-1] and r["K"] == 4), key=lambda r: r["B"])
        print(f"{mode}: naive/low at h = {', '.join(str(r['h']) for r in by_h)} (K=4, B={B}): "
              + ", ".join(f"{r['ratio']:.1f}x" for r in by_h))
        print(f"{mode}: low-rank peak h={by_h[-1]['h']} / h={by_h[0]['h']} (R x{by_h[-1]['R'] // by_h[0]['R']}): "
              f"{by_h[-1]['low_MiB'] / by_h[0]['low_MiB']:.2f}x; naive: {by_h[-1]['naive_MiB'] / by_h[0]['naive_MiB']:.1f}x")
        print(f"{mode}: low-rank peak K={by_k[-1]['K']} / K={by_k[0]['K']}: "
              f"{by_k[-1]['low_MiB'] / by_k[0]['low_MiB']:.2f}x; naive: {by_k[-1]['naive_MiB'] / by_k[0]['naive_MiB']:.2f}x")
        print(f"{mode}: low-rank peak B={by_b[-1]['B']} / B={by_b[0]['B']}: "
              f"{by_b[-1]['low_MiB'] / by_b[0]['low_MiB']:.2f}x; naive: {by_b[-1]['naive_MiB'] / by_b[0]['naive_MiB']:.2f}x")


if __name__ == "__main__":
    main()
