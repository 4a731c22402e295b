"""Which fp32 GEMM trains each MLP layer faster on this CPU: oneDNN's (`torch.ops.mkldnn._linear_pointwise`) or
MKL's (`F.linear`), per shape, and what the shape rule of `recsys_dist.models.onednn_linear.onednn_pays` saves on
whole dense steps.

    1. per shape    forward + backward (ReLU where the MLP has one) of the preset MLP layers at batch 128 / 512 /
                    1024 / 2048, oneDNN and MKL alternating (--rounds), CPU-time clock, one thread; prints what
                    `onednn_pays` picks and whether it is the faster one.
    2. dense steps  DCN, AutoInt (batch 128) and DLRM (batch 2048) at their Criteo-Kaggle presets: forward +
                    backward + the preset's dense optimizer, with the rule vs every layer on oneDNN (what
                    `linear` did before the rule), alternating, CPU clock.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_linear_choice.py [--rounds 5] [--skip-shapes] [--small]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

# (in, out, relu): the numeric-feature MLP 13-512-256-64(-16) and the DNN 432-512-256-1 of the dim-16 presets
SHAPES = [(13, 512, True), (512, 256, True), (256, 64, True), (64, 16, False), (432, 512, True), (256, 1, False)]
STEPS = {"dcn": ("dcn_criteo_kaggle", 13, 26), "autoint": ("autoint_criteo_kaggle", 13, 26),
         "dlrm": ("dlrm_criteo_kaggle", 13, 26)}


def _cpu_window(fn, reps: int) -> float:
    t = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - t) / reps


def per_shape(rounds: int, row_counts=(128, 512, 1024, 2048), shapes=SHAPES) -> None:
    import torch
    import torch.nn.functional as F

    from recsys_dist.models import onednn_linear as L

    def layer(rows, i, o, relu, onednn):
        x = torch.randn(rows, i, requires_grad=True)
        w = torch.randn(o, i, requires_grad=True)
        b = torch.randn(o, requires_grad=True)
        g = torch.randn(rows, o)

        def run():
            if onednn:
                y = L._OneDNNLinear.apply(x, w, b, relu)
            else:
                y = F.linear(x, w, b)
                y = torch.relu(y) if relu else y
            y.backward(g)
        return run

    agree = total = 0
    for rows in row_counts:
        for i, o, relu in shapes:
            reps = max(20, int(4e7 / (rows * max(i, o) * 2)))
            reps = reps if len(shapes) == len(SHAPES) else 20  # --small
            one, mkl = layer(rows, i, o, relu, True), layer(rows, i, o, relu, False)
            _cpu_window(one, 5), _cpu_window(mkl, 5)
            t_one, t_mkl = [], []
            for _ in range(rounds):
                t_one.append(_cpu_window(one, reps))
                t_mkl.append(_cpu_window(mkl, reps))
            med, lo, hi = common.paired_ratio(t_one, t_mkl)
            picks = L.onednn_pays(rows, i, o)
            faster = "oneDNN" if med < 1 else "MKL"
            total += 1
            agree += (picks == (med < 1))
            print(f"{rows} x {i}->{o}{' relu' if relu else ''}: oneDNN {statistics.median(t_one) * 1e6:,.0f} us, "
                  f"MKL {statistics.median(t_mkl) * 1e6:,.0f} us, oneDNN / MKL {med:.2f} ({lo:.2f}-{hi:.2f}); "
                  f"faster {faster}, rule picks {'oneDNN' if picks else 'MKL'} [load {os.getloadavg()[0]:.1f}]",
                  flush=True)
    print(f"rule picks the faster path for {agree} of {total} shapes")


def dense_steps(rounds: int, steps: int, names=tuple(STEPS)) -> None:
    import torch

    from recsys_dist.config import load_config
    from recsys_dist.models import onednn_linear as L
    from recsys_dist.models.arch import ArchInputs
    from recsys_dist.models.registry import build_arch
    from recsys_dist.optim import _torch_optimizer

    rule = L.onednn_pays
    for name in names:
        preset, num_dense, num_sparse = STEPS[name]
        cfg = load_config(common.ROOT / "configs" / f"{preset}.yaml", [])
        B, D = cfg.data.batch_size, cfg.model.embedding_dim
        torch.manual_seed(0)
        arch = build_arch(cfg.model.arch, ArchInputs(num_dense, tuple(f"C{i}" for i in range(num_sparse)), D),
                          cfg.model.arch_args)
        o = cfg.optim
        opt = _torch_optimizer(o.dense, list(arch.parameters()), o.dense_lr, o.dense_eps, o.weight_decay)
        g = torch.Generator().manual_seed(0)
        dense = torch.rand(B, num_dense, generator=g)
        emb = torch.randn(B, num_sparse, D, generator=g).mul_(0.05).requires_grad_(True)
        labels = torch.randint(0, 2, (B,), generator=g).float()

        def step():
            opt.zero_grad(set_to_none=True)
            emb.grad = None
            torch.nn.functional.binary_cross_entropy_with_logits(arch(dense, emb), labels).backward()
            opt.step()

        def window(choice):
            def run():
                L.onednn_pays = choice
                try:
                    best = float("inf")
                    for _ in range(steps):
                        t = time.process_time()
                        step()
                        best = min(best, time.process_time() - t)
                    return best
                finally:
                    L.onednn_pays = rule
            return run

        always = lambda rows, i, o: True  # noqa: E731  (linear before the rule)
        window(rule)(), window(always)()
        times = common.alternate({"rule": window(rule), "oneDNN": window(always)}, rounds)
        med, lo, hi = common.paired_ratio(times["oneDNN"], times["rule"])
        print(f"{name} (batch {B}): rule {statistics.median(times['rule']) * 1e3:.2f} ms, every layer on oneDNN "
              f"{statistics.median(times['oneDNN']) * 1e3:.2f} ms per step (CPU); ratio oneDNN / rule {med:.2f} "
              f"(rounds {lo:.2f}-{hi:.2f}) [load {os.getloadavg()[0]:.1f}]", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="dense steps per window (the best counts)")
    p.add_argument("--skip-shapes", action="store_true")
    p.add_argument("--small", action="store_true", help="batch 128, two shapes, the DCN step, one round (smoke)")
    a = p.parse_args(argv)
    if a.small:
        a.rounds, a.steps = 1, 1
    import torch

    torch.set_num_threads(1)
    print(f"machine: {common.machine()}")
    print(f"settings: 1 thread, CPU-time clocks, {a.rounds} alternating rounds")
    if not a.skip_shapes:
        per_shape(a.rounds, *(((128,), SHAPES[:2]) if a.small else ()))
    dense_steps(a.rounds, a.steps, ("dcn",) if a.small else tuple(STEPS))


if __name__ == "__main__":
    main()
