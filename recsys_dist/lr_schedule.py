"""The learning-rate schedule of a training run: linear warm-up, then an optional decay to the end of the run.

One factor per step multiplies every learning rate of the run's CombinedOptimizer: the dense optimizer's, the
fused table optimizers' (TorchRec's `EmbeddingFusedOptimizer` hands its param group's lr to the kernel, FBGEMM's
or our lazy Adam's, in `zero_grad`, i.e. before the step's backward) and a search stage's architecture optimizer.

    factor(s) = min(1, (s + 1) / warmup_steps)                          (1 without warm-up)
              * decay(q),  q = clamp((s - decay_start * T) / (T - decay_start * T), 0, 1)
    linear: 1 - (1 - end) q        cosine: end + (1 - end) (1 + cos(pi q)) / 2        none: 1

s = steps already taken (the step being made is s + 1), T = the run's total steps (epochs x steps per epoch, or
train.max_steps), end = `optim.decay_end_factor`. A torch `LambdaLR`: its state (the step count and base lrs) is
in every checkpoint, so a resumed run continues the schedule where it stopped (recsys_dist/checkpoint.py).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from recsys_dist.config import LR_DECAYS


def lr_factor(step: int, total_steps: int, warmup_steps: int = 0, decay: str = "none", decay_start: float = 0.0,
              end_factor: float = 0.0) -> float:
    """The factor on every base learning rate for the step after `step` steps were taken."""
    factor = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if decay == "none":
        return factor
    start = decay_start * total_steps
    q = min(1.0, max(0.0, (step - start) / max(total_steps - start, 1e-9)))
    if decay == "linear":
        return factor * (1.0 - (1.0 - end_factor) * q)
    if decay == "cosine":
        return factor * (end_factor + (1.0 - end_factor) * 0.5 * (1.0 + math.cos(math.pi * q)))
    raise ValueError(f"optim.lr_decay={decay!r} is not one of {', '.join(LR_DECAYS)}")


def build_lr_schedule(optimizer: Any, optim_cfg: Any, total_steps: int) -> Optional[torch.optim.lr_scheduler.LambdaLR]:
    """A LambdaLR over every param group of `optimizer`, or None when the schedule is constant."""
    o = optim_cfg
    if o.warmup_steps <= 0 and o.lr_decay == "none":
        return None
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, o.warmup_steps, o.lr_decay, o.decay_start, o.decay_end_factor))
