"""Roofline: this machine's matmul GFLOP/s (fp32, bf16) and memory bandwidth, the foundation DLRM's FLOPs and
embedding bytes per step, and our measured train step against the time those limits allow.

    FLOPs/step     counted by torch.utils.flop_counter.FlopCounterMode over the dense arch's forward + backward
                   (bottom MLP, interaction, top MLP, loss) at the global batch: the matmuls and bmms.
    bytes/step     embedding traffic: the forward reads B*F*D fp32 values; FBGEMM's fused row-wise Adagrad
                   backward reads and writes each looked-up row (+ its one momentum value), 2*B*F*(D+1)*4 bytes.
    roofline time  max(FLOPs / matmul peak, bytes / copy bandwidth), peak and bandwidth measured here.

Timed in one process with all cores (DMP world 1: the layout docs/benchmarks.md recommends for one small box),
alternating: GEMM peak, copy bandwidth, train window, GEMM peak ... so load changes hit all of them alike.
The last line is step time / roofline time in fp32 (target <= 1.15).

    .venv/bin/python benchmarks/bench_roofline.py [--small] [--ranks 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def gemm_gflops(dtype, n: int = 1024, m: int = 2048, reps: int = 8, clock=time.perf_counter) -> float:
    """Best-of GFLOP/s of [m, n] @ [n, n] at `dtype`, with torch's current threads: the better of MKL
    (torch.matmul) and oneDNN (the fused linear op recsys_dist's MLPs use on CPU), so the peak is this machine's
    best GEMM, whichever library reaches it. `clock`: time.process_time gives GFLOP per CPU-second (one thread:
    the rate of one core, whatever else runs on the box)."""
    import torch

    from recsys_dist.models.onednn_linear import onednn_available

    a = torch.randn(m, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    gemms = [lambda: torch.matmul(a, b)]
    if onednn_available() and a.device.type == "cpu":
        gemms.append(lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], ""))
    best = float("inf")
    for gemm in gemms:
        gemm()
        for _ in range(reps):
            t = clock()
            gemm()
            best = min(best, clock() - t)
    return 2 * m * n * n / best / 1e9


def copy_gbps(mib: int = 256, reps: int = 5) -> float:
    """Best-of GB/s (read + write bytes) of copying a `mib` MiB fp32 tensor."""
    import torch

    src = torch.rand(mib * 2**18)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.numel() * 4 / best / 1e9


def count_flops(s: Dict[str, Any], batch: int) -> int:
    """Forward + backward FLOPs of the DLRM dense arch (and loss) on a [batch] step, counted on TorchRec's own
    formulation (common.torchrec_dlrm_dense: plain matmuls and bmms that FlopCounterMode sees; ours runs the same
    math through oneDNN ops it does not count, and one interaction bmm fewer in the backward)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    F = 26
    arch = common.torchrec_dlrm_dense(common.NUM_DENSE, F, s["bottom"], s["top"])
    dense = torch.rand(batch, common.NUM_DENSE)
    emb = torch.rand(batch, F, s["dim"], requires_grad=True)  # the embeddings get a gradient too
    with FlopCounterMode(display=False) as fc:
        logits = arch(dense, emb)
        torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones(batch)).backward()
    return fc.get_total_flops()


def embedding_bytes(s: Dict[str, Any], batch: int) -> int:
    F, D = 26, s["dim"]
    return batch * F * D * 4 + 2 * batch * F * (D + 1) * 4


def _rank(rank: int, world: int, data_dir: str, s: Dict[str, Any]):
    import torch
    import torch.distributed as dist

    from bench_train_vs_torchrec import build_ours

    o = build_ours(data_dir, s, [], None)
    pipe, it = o.pipeline, o.it

    def window() -> float:
        return common.step_window(pipe, it, s["steps"])

    window() if s["warmup"] else None
    out: Dict[str, list] = {"fp32": [], "bf16": [], "copy": [], "step": []}
    for _ in range(s["rounds"]):
        if rank == 0:  # the machine's limits: measured with every core, as the ranks together use them
            others = torch.get_num_threads()
            torch.set_num_threads(os.cpu_count() or 1)
        dist.barrier()
        if rank == 0:
            out["fp32"].append(gemm_gflops(torch.float32))
            out["bf16"].append(gemm_gflops(torch.bfloat16))
            out["copy"].append(copy_gbps())
            torch.set_num_threads(others)
        dist.barrier()
        out["step"].append(window())
    return out


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true")
    p.add_argument("--ranks", type=int, default=1, help="train ranks (default 1 process with every core)")
    a = p.parse_args(argv)
    from bench_train_vs_torchrec import _settings
    from recsys_dist.data.criteo_schema import KAGGLE_ROWS

    s = _settings(a.small)
    s["rounds"], s["steps"] = (2, 3) if a.small else (5, 10)
    threads = max(1, (os.cpu_count() or 1) // a.ranks)
    flops = count_flops(s, s["batch"])
    nbytes = embedding_bytes(s, s["batch"])
    print(f"machine: {common.machine()}")
    print(f"settings: {a.ranks} rank(s) x {threads} threads, global batch {s['batch']}, dim {s['dim']}, "
          f"bottom {s['bottom']}, top {s['top']}, tables capped at {s['cap']}")
    print(f"model: {flops / 1e9:.2f} GFLOP per step (fwd + bwd), {nbytes / 1e6:.1f} MB embedding traffic per step")
    rows = (s["warmup"] + s["rounds"] * s["steps"] + 4) * s["batch"]
    with tempfile.TemporaryDirectory(prefix="bench_roofline_") as tmp:
        cards = KAGGLE_ROWS if not a.small else [min(r, 50 * s["cap"]) for r in KAGGLE_ROWS]
        common.write_criteo_like(Path(tmp), rows, cards, rows_per_file=65536)
        r = common.run_ranks(_rank, a.ranks, (tmp, s), threads=threads)[0]
    ratios = []
    for i in range(s["rounds"]):
        roof = max(flops / (r["fp32"][i] * 1e9), nbytes / (r["copy"][i] * 1e9))
        ratios.append(r["step"][i] / roof)
        print(f"round {i}: fp32 {r['fp32'][i]:.0f} GFLOP/s, bf16 {r['bf16'][i]:.0f} GFLOP/s, copy "
              f"{r['copy'][i]:.1f} GB/s, step {common.ms(r['step'][i])}, fp32 roofline {common.ms(roof)}, "
              f"ratio {ratios[-1]:.2f}")
    fp32, bf16, bw = (statistics.median(r[k]) for k in ("fp32", "bf16", "copy"))
    print(f"medians: fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s ({bf16 / fp32:.2f}x), copy {bw:.1f} GB/s; "
          f"compute {common.ms(flops / (fp32 * 1e9))} (fp32) / {common.ms(flops / (bf16 * 1e9))} (bf16), "
          f"embedding bytes {common.ms(nbytes / (bw * 1e9))}")
    med = statistics.median(ratios)
    print(f"ratio step time / fp32 roofline time (target <= 1.15): {med:.2f}")
    return med


if __name__ == "__main__":
    main()
