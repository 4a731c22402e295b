"""xDeepFM's CIN, forward + backward: the chunked-GEMM layer (recsys_dist/models/cin_kernel.py) vs the einsum it
replaced (which allocates the [B, H, m, D] outer products every step), same weights, alternating rounds in one
process, best of --reps steps per side and round (the box may be shared), with the CPU seconds (user +
system) each step took and the memory autograd saves for the backward; also the GEMM peak measured in the
same rounds, so each side's time is given against its roofline (FLOPs = 3 x forward: 2 D H_k H_{k-1} m per
sample and layer).

Default: the xdeepfm arch defaults as issue 17 found them: CIN [200, 200, 200], embedding dim 64, 27 fields
(26 categorical + the numeric MLP field), batch 512 (--batch to change).

    .venv/bin/python benchmarks/bench_cin.py [--small] [--batch 512] [--dim 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def cin_flops(m: int, layers, dim: int, split_half: bool = True) -> int:
    """Forward + backward FLOPs per sample of the CIN's eq. 6 contractions (3 GEMM-sized passes)."""
    total, prev = 0, m
    for k, h in enumerate(layers):
        total += 2 * dim * h * prev * m
        prev = h // 2 if split_half and k < len(layers) - 1 else h
    return 3 * total


def saved_mib(forward, x0) -> float:
    """MiB that autograd keeps from the forward for the backward (the activation memory of the CIN)."""
    import torch

    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward(x0)
    del out
    return total[0] / 2**20


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="batch 16, dim 8, CIN [16, 16]: seconds")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's, all cores)")
    p.add_argument("--reps", type=int, default=3, help="steps per side and round; the best counts (a shared box)")
    a = p.parse_args(argv)
    import torch

    from bench_roofline import gemm_gflops
    from recsys_dist.models.xdeepfm import CIN

    if a.threads:
        torch.set_num_threads(a.threads)
    layers, B, D, m = ([16, 16], 16, 8, 27) if a.small else ([200, 200, 200], a.batch, a.dim, 27)
    torch.manual_seed(0)
    cin = CIN(m, layers)
    x0 = torch.randn(B, m, D, requires_grad=True)
    with torch.no_grad():
        gap = (cin(x0) - cin.forward_einsum(x0)).abs().max().item()
    flops = cin_flops(m, layers, D) * B
    print(f"machine: {common.machine()}")
    print(f"settings: CIN {layers}, {m} fields, dim {D}, batch {B}, {torch.get_num_threads()} threads; "
          f"{flops / B / 1e6:.0f} MFLOP per sample (fwd + bwd); max |difference| chunked vs einsum {gap:.1e}")

    def run(forward):
        def step():
            x0.grad = None
            cin.zero_grad(set_to_none=True)
            forward(x0).sum().backward()
        step()  # warm-up
        r0, walls = resource.getrusage(resource.RUSAGE_SELF), []
        for _ in range(a.reps):
            t = time.perf_counter()
            step()
            walls.append(time.perf_counter() - t)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / a.reps
        return min(walls), cpu, (r1.ru_stime - r0.ru_stime) / a.reps

    sides = {"chunked": cin, "einsum": cin.forward_einsum}
    for name, fwd in sides.items():
        print(f"{name}: {saved_mib(fwd, x0):,.0f} MiB saved for the backward")
    res = {k: [] for k in ("chunked", "einsum", "cpu_chunked", "cpu_einsum", "sys_chunked", "sys_einsum", "peak")}
    for i in range(a.rounds):
        res["peak"].append(gemm_gflops(torch.float32))
        for name, fwd in sides.items():
            wall, cpu, sys_s = run(fwd)
            res[name].append(wall)
            res["cpu_" + name].append(cpu)
            res["sys_" + name].append(sys_s)
        roof = flops / (res["peak"][-1] * 1e9)
        print(f"round {i}: GEMM peak {res['peak'][-1]:.0f} GFLOP/s (roofline {common.ms(roof)}); "
              + "; ".join(f"{n} {common.ms(res[n][-1])} wall ({res[n][-1] / roof:.2f}x roofline), CPU "
                          f"{res['cpu_' + n][-1]:.2f} s of which system {res['sys_' + n][-1]:.2f} s" for n in sides))
    med = common.paired_ratio(res["einsum"], res["chunked"])
    roofs = [flops / (g * 1e9) for g in res["peak"]]
    print(f"samples/s: chunked {B / statistics.median(res['chunked']):,.0f}, einsum "
          f"{B / statistics.median(res['einsum']):,.0f}; step / roofline: chunked "
          f"{statistics.median(t / r for t, r in zip(res['chunked'], roofs)):.2f}, einsum "
          f"{statistics.median(t / r for t, r in zip(res['einsum'], roofs)):.2f}")
    cpu = common.paired_ratio(res["cpu_einsum"], res["cpu_chunked"])
    print(f"ratio einsum / chunked CPU seconds per step (user + system): {cpu[0]:.2f}")
    print(f"ratio einsum / chunked CIN step time (> 1: chunked faster): {med[0]:.2f}")
    return med[0]


if __name__ == "__main__":
    main()
