"""The foundation DLRM's dense step: ours (oneDNN MLPs + one-GEMM-backward interaction) vs TorchRec's modules.

Reference: `torchrec.models.dlrm` DenseArch (bottom MLP), InteractionArch and OverArch (top MLP), the layers
TorchRec's DLRM and our earlier DLRMArch are built from, holding the same weights as ours (outputs checked equal).
One step = forward of bottom MLP, interaction and top MLP on [B, 13] dense and [B, 26, 64] embeddings, BCE loss,
backward (embeddings get a gradient, as in training), fused Adagrad on the dense parameters. Also timed apart:
the interaction alone (fwd + bwd) and the top MLP alone (fwd + bwd). One process, every core, alternating
windows of each pair; per-round ratios, median last.

    .venv/bin/python benchmarks/bench_dense_arch.py [--small] [--rounds 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def _reference(ours):
    """TorchRec's DenseArch / InteractionArch / OverArch holding `ours`'s weights (same parameter order)."""
    import torch

    bottom = [lin.out_features for lin in ours.bottom.modules() if isinstance(lin, torch.nn.Linear)]
    top = [lin.out_features for lin in ours.top.modules() if isinstance(lin, torch.nn.Linear)]
    ref = common.torchrec_dlrm_dense(ours.inputs.num_dense, ours.inputs.num_sparse, bottom, top)
    with torch.no_grad():
        for d, s_ in zip(ref.parameters(), ours.parameters(), strict=True):
            assert d.shape == s_.shape
            d.copy_(s_)
    return ref


def _window(fn: Callable[[], None], steps: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="batch 256, seconds")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    a = p.parse_args(argv)
    import torch
    import torch.nn.functional as Fn

    from recsys_dist.models.arch import ArchInputs
    from recsys_dist.models.dlrm import DLRMArch
    from recsys_dist.models.onednn_linear import onednn_available

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    B = 256 if a.small else common.GLOBAL_BATCH
    F, D = 26, common.DIM
    print(f"machine: {common.machine()}")
    print(f"settings: 1 process x {torch.get_num_threads()} threads, batch {B}, dim {D}, bottom {list(common.BOTTOM)},"
          f" top {list(common.TOP)}, {F} sparse fields; oneDNN linear available: {onednn_available()}")
    ours = DLRMArch(ArchInputs(common.NUM_DENSE, tuple(f"C{i}" for i in range(F)), D),
                    bottom_mlp=common.BOTTOM, top_mlp=common.TOP)
    ref = _reference(ours)
    dense, label = torch.rand(B, common.NUM_DENSE), torch.randint(0, 2, (B,)).float()
    emb = torch.randn(B, F, D, requires_grad=True)
    with torch.no_grad():
        gap = (ours(dense, emb) - ref(dense, emb)).abs().max().item()
    print(f"max |logit difference| ours vs reference on the same weights: {gap:.2e}")
    assert gap < 1e-3, gap

    def dense_step(model, opt):
        def run():
            opt.zero_grad(set_to_none=True)
            emb.grad = None
            Fn.binary_cross_entropy_with_logits(model(dense, emb), label).backward()
            opt.step()
        return run

    z0 = torch.randn(B, D, requires_grad=True)
    g_inter = torch.randn(B, D + (F + 1) * F // 2)
    top_in = torch.randn(B, g_inter.shape[1], requires_grad=True)
    g_top = torch.randn(B, 1)

    def fwd_bwd(fn, *args, grad):
        def run():
            fn(*args).backward(grad)
        return run

    pairs: Dict[str, Dict[str, Callable[[], None]]] = {
        "dense step": {"ours": dense_step(ours, torch.optim.Adagrad(ours.parameters(), lr=0.01, fused=True)),
                       "reference": dense_step(ref, torch.optim.Adagrad(ref.parameters(), lr=0.01, fused=True))},
        "interaction": {"ours": fwd_bwd(ours.interaction, z0, emb, grad=g_inter),
                        "reference": fwd_bwd(ref.interaction, z0, emb, grad=g_inter)},
        "top MLP": {"ours": fwd_bwd(ours.top, top_in, grad=g_top),
                    "reference": fwd_bwd(ref.top, top_in, grad=g_top)},
    }
    result = 0.0
    for name, runs in pairs.items():
        times: Dict[str, List[float]] = {"ours": [], "reference": []}
        for _ in range(a.rounds):
            for side in ("ours", "reference"):
                times[side].append(_window(runs[side], a.steps))
        ratio, lo, hi = common.paired_ratio(times["reference"], times["ours"])
        print(f"{name:12s} ours {common.ms(statistics.median(times['ours']))}  reference "
              f"{common.ms(statistics.median(times['reference']))}  ratio reference/ours {ratio:.2f} "
              f"(min {lo:.2f}, max {hi:.2f})")
        if name == "dense step":
            result = ratio
    print(f"ratio reference / ours dense step time (> 1: ours faster): {result:.2f}")
    return result


if __name__ == "__main__":
    main()
