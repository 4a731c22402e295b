"""DeepMR's dense arch, forward + backward: the cheaper ops (deepmr.py) vs the paper's ops (`reference_ops`).

The paper's ops: Q, K, V projected to head width d_o/H (one [B N, 3 d_o] GEMM output), fused attention at d_o/H,
FFN on every field row then summed, the whole batch at once. The cheaper ops: attention at input width D on e
itself (q = e W^Q W^K^T, W^V applied after the softmax; only where D < d_o/H), FFN's second layer on the summed
rows, the attention branch over batch chunks of at most `--chunk-mib` MiB per [rows, N, d_o] activation. Same
parameters; the preset's shapes (configs/deepmr_criteo_kaggle.yaml: batch 4096, 39 fields x 16, d_o 256, 8 heads,
dropout 0.35, train mode), CPU-time clocks, alternating rounds, minor page faults per call, the largest
difference of outputs and gradients (dropout off for that check).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_deepmr_attention.py [--rounds 3] [--chunk-mib 4,16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=None, help="default: the preset's")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--chunk-mib", default="16", help="comma-separated chunk sizes of the cheaper side, MiB")
    a = p.parse_args(argv)
    import torch

    from recsys_dist.config import TrainConfig, load_config
    from recsys_dist.dist_env import setup_compute
    from recsys_dist.models.arch import ArchInputs
    from recsys_dist.models.deepmr import DeepMRArch, reference_ops

    _, tuned = setup_compute(TrainConfig(threads=a.threads), local_world_size=1)  # as `train` runs
    cfg = load_config(common.ROOT / "configs" / "deepmr_criteo_kaggle.yaml")
    B, D, N = a.batch or cfg.data.batch_size, cfg.model.embedding_dim, 39
    torch.manual_seed(0)
    arch = DeepMRArch(ArchInputs(0, tuple(f"C{i}" for i in range(N)), D), **cfg.model.arch_args)
    with torch.no_grad():  # trained-like: ReZero alphas off 0, so every op is on the gradient's path
        arch.dnn.alpha.fill_(0.5)
        for block in arch.attention:
            block.alpha.fill_(0.5)
    dense, g = torch.zeros(B, 0), torch.Generator().manual_seed(0)
    emb = torch.randn(B, N, D, generator=g).mul_(0.05).requires_grad_(True)
    weight = torch.randn(B, generator=g)

    def call() -> list:
        for t in [emb] + list(arch.parameters()):
            t.grad = None
        (arch(dense, emb) * weight).sum().backward()
        return [emb.grad] + [q.grad for q in arch.parameters()]

    def paper():
        with reference_ops():
            return call()

    def cheaper(mib):
        def run():
            arch.CHUNK_BYTES = int(mib * (1 << 20))
            return call()
        return run

    sides = {"paper ops": paper, **{f"cheaper ops, chunks {m} MiB": cheaper(float(m)) for m in a.chunk_mib.split(",")}}
    arch.eval()  # dropout off for the difference check
    with torch.no_grad():
        with reference_ops():
            ref_out = arch(dense, emb)
        out_diff = max((arch(dense, emb) - ref_out).abs().max().item() for _ in [0])
    ref = [t.clone() for t in paper()]
    diff = max(((u - v).abs().max() / v.abs().max().clamp_min(1e-30)).item()
               for name, fn in sides.items() if name != "paper ops" for u, v in zip(fn(), ref))
    arch.train()
    print(f"machine: {common.machine()}")
    print(f"settings: B {B}, {N} fields x {D}, arch_args {cfg.model.arch_args}, forward + backward of the dense "
          f"arch, {a.threads} thread(s), CPU-time clocks, {a.rounds} alternating rounds, malloc tuned {tuned}; "
          f"max |difference| output {out_diff:.1e}, gradients (relative to each one's largest entry) {diff:.1e}")
    times = common.alternate_cpu(sides, a.rounds, note=lambda s: f" = {B / s:,.0f} samples per CPU-s")
    ratios = {}
    for name in list(sides)[1:]:
        ratios[name] = statistics.median(p / c for p, c in zip(times["paper ops"], times[name]))
        print(f"ratio paper ops / {name}, CPU seconds per call (> 1: cheaper faster): {ratios[name]:.2f}")
    return ratios


if __name__ == "__main__":
    main()
