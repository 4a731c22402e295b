"""OptFusion's fusion of one component: per-input [B, d] operations (fusion_ops) vs the stacked [B, m, d] ones.

The reference is the former implementation: the m inputs stacked into [B, m, d], ADD / ATT as einsums over it,
PROD as torch.prod over the masked stack, CONCAT as one linear over the flattened stack. Both sides share the
parameters; forward + backward of eq. 13 (all four operations, a connection mask with one cut edge), CPU-time
clocks, alternating rounds, minor page faults per call, and the largest difference of outputs and gradients.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_fusion_ops.py [--batch 4096 --inputs 8 --dim 1560]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def stacked(mix, xs, mask, weights):
    """The former [B, m, d] formulas of fusion_ops, on `mix`'s parameters."""
    import torch

    x = torch.stack(xs, dim=1)
    m = mask.view(1, -1, 1)
    f = mix.fusions
    add = torch.einsum("bmd,m->bd", x, mask)
    prod = (x * m + (1 - m)).prod(dim=1) * (mask.detach().sum() > 0).to(x.dtype)
    cat = f["CONCAT"].proj((x * m).flatten(1))
    att = f["ATT"]
    s = att.w2(torch.relu(att.W1(x))).squeeze(-1)
    e = torch.exp(s - s.max(dim=1, keepdim=True).values.detach()) * mask.view(1, -1)
    a = e / e.sum(dim=1, keepdim=True).clamp_min(1e-30)
    return (add * weights[0] + prod * weights[1] + cat * weights[2]
            + torch.einsum("bm,bmd->bd", a, x) * weights[3])


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--inputs", type=int, default=8, help="m (OptFusion's output component reads 8)")
    p.add_argument("--dim", type=int, default=1560, help="d = fields x embedding dim (the preset: 39 x 40)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    import torch

    from recsys_dist.dist_env import setup_compute
    from recsys_dist.config import TrainConfig
    from recsys_dist.models.fusion_ops import MixedFusion

    _, tuned = setup_compute(TrainConfig(threads=a.threads), local_world_size=1)  # as `train` runs
    torch.manual_seed(0)
    B, m, d = a.batch, a.inputs, a.dim
    mix = MixedFusion(m, d)
    xs = [torch.relu(torch.randn(B, d)).requires_grad_(True) for _ in range(m)]  # ReLU outputs: exact zeros
    mask = torch.ones(m)
    mask[1] = 0.0
    mask.requires_grad_(True)
    weights = torch.softmax(torch.randn(4), 0)
    g = torch.randn(B, d)

    def call(fn):
        for t in xs + [mask] + list(mix.parameters()):
            t.grad = None
        fn().backward(g)

    sides = {"per-input": lambda: mix(xs, mask, weights), "stacked": lambda: stacked(mix, xs, mask, weights)}
    grads = {}
    for name, fn in sides.items():
        call(fn)
        grads[name] = [t.grad.clone() for t in xs + [mask] + list(mix.parameters())]
    # relative to each gradient's largest entry (the mask's gradient is a sum over B x d terms)
    diff = max(((u - v).abs().max() / v.abs().max().clamp_min(1e-30)).item() for u, v in zip(*grads.values()))
    out_diff = (sides["per-input"]() - sides["stacked"]()).abs().max().item()
    print(f"machine: {common.machine()}")
    print(f"settings: B {B}, m {m}, d {d}, eq. 13 with ADD, PROD, CONCAT, ATT, forward + backward, {a.threads} "
          f"thread(s), CPU-time clocks, {a.rounds} alternating rounds, malloc tuned {tuned}; max |difference| "
          f"output {out_diff:.1e}, gradients (relative to each one's largest entry) {diff:.1e}")
    times = common.alternate_cpu({k: (lambda f=f: call(f)) for k, f in sides.items()}, a.rounds)
    ratio = statistics.median(s / p for s, p in zip(times["stacked"], times["per-input"]))
    print(f"ratio stacked / per-input CPU seconds per call (> 1: per-input faster): {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main()
