"""DynInt-DWP's dense step with the fused layer core (recsys_dist/models/dwp_kernel.py) vs the autograd form it
replaced (`dwp_layer_reference`), at the DynInt preset's shapes, alternating in one process.

The step is bench_arches.py's: forward + backward of the dense arch on [B, F, D] embeddings, BCE + the eq. 12
penalty, the preset's Adam; one thread, CPU-time clocks (time.process_time: what a step costs a core on a shared
box), best of --steps per window, ours and the reference alternating for --rounds; minor page faults per step
from getrusage. glibc's malloc is tuned as `recsys-dist train` does by default (train.tune_malloc) unless
--no-tune-malloc.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_dwp_kernel.py [--rounds 4] [--steps 2] [--batch 4096]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=2, help="steps per window (the best counts)")
    p.add_argument("--batch", type=int, default=None, help="default: the preset's")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-tune-malloc", action="store_true")
    a = p.parse_args(argv)

    import torch

    import recsys_dist.models.dynint as dynint
    from recsys_dist.config import load_config
    from recsys_dist.malloc import keep_freed_memory
    from recsys_dist.models.arch import ArchInputs
    from recsys_dist.models.dwp_kernel import dwp_layer, dwp_layer_reference

    tuned = False if a.no_tune_malloc else keep_freed_memory()
    torch.set_num_threads(a.threads)
    cfg = load_config(common.ROOT / "configs" / "dynint_criteo_kaggle.yaml", [])
    B = a.batch or cfg.data.batch_size
    F, D = 39, cfg.model.embedding_dim  # 26 categorical + 13 bucketized numeric fields
    torch.manual_seed(0)
    arch = dynint.DynIntArch(ArchInputs(0, tuple(f"f{i}" for i in range(F)), D), **cfg.model.arch_args)
    opt = torch.optim.Adam(arch.parameters(), lr=cfg.optim.dense_lr)
    g = torch.Generator().manual_seed(0)
    dense = torch.zeros(B, 0)
    emb = torch.randn(B, F, D, generator=g).mul_(0.05).requires_grad_(True)
    labels = torch.randint(0, 2, (B,), generator=g).float()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        emb.grad = None
        loss = torch.nn.functional.binary_cross_entropy_with_logits(arch(dense, emb), labels)
        reg = arch.regularization_loss()
        (loss if reg is None else loss + reg).backward()
        opt.step()

    def window(layer_fn):
        def run():
            dynint.dwp_layer = layer_fn
            try:
                best, faults = float("inf"), []
                for _ in range(a.steps):
                    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                    t = time.process_time()
                    step()
                    best = min(best, time.process_time() - t)
                    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
                stats[layer_fn].append(min(faults))
                return best
            finally:
                dynint.dwp_layer = dwp_layer
        return run

    stats = {dwp_layer: [], dwp_layer_reference: []}
    print(f"machine: {common.machine()}")
    print(f"settings: DynInt {cfg.model.arch_args}, batch {B}, {F} fields x {D}, {a.threads} thread(s), CPU-time "
          f"clocks, {a.rounds} rounds x best of {a.steps} steps, malloc tuned: {tuned}")
    for fn in (dwp_layer, dwp_layer_reference):  # warm-up: optimizer state, allocator
        window(fn)()
    stats = {dwp_layer: [], dwp_layer_reference: []}
    times = common.alternate({"fused": window(dwp_layer), "autograd": window(dwp_layer_reference)}, a.rounds)
    for r in range(a.rounds):
        print(f"round {r}: fused {times['fused'][r] * 1e3:.0f} ms ({stats[dwp_layer][r]:,} minor faults), "
              f"autograd {times['autograd'][r] * 1e3:.0f} ms ({stats[dwp_layer_reference][r]:,} minor faults) "
              f"per step (CPU), load {os.getloadavg()[0]:.1f}", flush=True)
    med, lo, hi = common.paired_ratio(times["autograd"], times["fused"])
    print(f"samples per CPU-s: fused {B / statistics.median(times['fused']):,.0f}, autograd "
          f"{B / statistics.median(times['autograd']):,.0f}")
    print(f"ratio autograd / fused CPU seconds per step (> 1: fused faster): median {med:.2f} "
          f"(rounds {lo:.2f}-{hi:.2f})")
    return med


if __name__ == "__main__":
    main()
