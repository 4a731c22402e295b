"""Binary CTR metrics over weighted predictions, gathered across ranks (torchmetrics computes them)."""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.distributed as dist
from torchmetrics.functional.classification import binary_auroc


class PredictionBuffer:
    """Collects (logits, labels, weights) per step; `compute()` gathers all ranks and returns AUC / logloss."""

    def __init__(self) -> None:
        self.logits: List[torch.Tensor] = []
        self.labels: List[torch.Tensor] = []
        self.weights: List[torch.Tensor] = []

    def add(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> None:
        keep = weights > 0
        self.logits.append(logits.detach().float()[keep].cpu())
        self.labels.append(labels.detach()[keep].cpu())
        self.weights.append(weights.detach()[keep].cpu())

    def local(self) -> torch.Tensor:
        """[3, n]: logits, labels, weights of this rank."""
        if not self.logits:
            return torch.zeros(3, 0)
        return torch.stack([torch.cat(self.logits), torch.cat(self.labels).float(), torch.cat(self.weights)])

    def gathered(self) -> torch.Tensor:
        mine = self.local()
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return mine
        parts: List[object] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, mine)
        return torch.cat(parts, dim=1)  # type: ignore[arg-type]

    def compute(self) -> Dict[str, float]:
        return binary_metrics(self.gathered())


def binary_metrics(t: torch.Tensor) -> Dict[str, float]:
    logits, labels, weights = t[0], t[1], t[2]
    n = int(labels.numel())
    if n == 0:
        return {"auc": float("nan"), "logloss": float("nan"), "rows": 0, "ctr": float("nan")}
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, weight=weights, reduction="sum")
    auc = binary_auroc(torch.sigmoid(logits), labels.long()) if 0 < labels.sum() < n else torch.tensor(float("nan"))
    return {
        "auc": float(auc),
        "logloss": float(loss / weights.sum()),
        "rows": n,
        "ctr": float(labels.mean()),
    }
