"""The one dense-arch interface every CTR arch implements.

    logits = arch(dense, embeddings)
        dense:      [B, num_dense] float   (num_dense may be 0: then a [B, 0] tensor)
        embeddings: [B, F, D]      pooled embeddings, F = len(inputs.feature_names), in that order
        logits:     [B]

The sparse arch (sharded EmbeddingBagCollection) produces `embeddings`; an arch never sees ids or tables, so
the same arch trains unsharded, table-wise, row-wise, column-wise or data-parallel.
Arches with a search stage keep architecture parameters apart (`architecture_parameters`); arches with an
auxiliary loss (e.g. DynInt's orthogonal regularization) return it from `regularization_loss`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class ArchInputs:
    """What an arch is built for: the dense width, the sparse feature names (embedding order) and their dim."""

    num_dense: int
    feature_names: Sequence[str]
    embedding_dim: int

    @property
    def num_sparse(self) -> int:
        return len(self.feature_names)


class DenseArch(nn.Module):
    """Base class: subclasses implement `forward(dense [B, num_dense], embeddings [B, F, D]) -> logits [B]`."""

    OPTIM_DEFAULTS: Dict[str, Any] = {}  # the dense optimizer when a config sets none (recsys_dist/arch_defaults.py)

    def __init__(self, inputs: ArchInputs) -> None:
        super().__init__()
        self.inputs = inputs

    def forward(self, dense: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def architecture_parameters(self) -> List[nn.Parameter]:
        """Parameters of a search stage (alpha, beta ...), trained by their own optimizer; [] for most arches."""
        return []

    def regularization_loss(self) -> Optional[torch.Tensor]:
        """An auxiliary loss added to the BCE loss (already weighted), or None."""
        return None

    def paper_ops(self) -> ContextManager[None]:
        """A context in which the arch runs its paper's ops where it executes cheaper ones for the same math (the
        paper model's FLOP count, benchmarks/bench_arches.py); most arches run the paper's ops already."""
        return contextlib.nullcontext()

    def score_chunk_rows(self, rows: int) -> int:
        """Rows per dense pass when scoring (CTRTrainModel.score_chunk_rows), given the per-rank training batch."""
        return rows

    def model_parameters(self) -> List[nn.Parameter]:
        arch_ids = {id(p) for p in self.architecture_parameters()}
        return [p for p in self.parameters() if id(p) not in arch_ids]


def map_row_chunks(fn: Callable[..., torch.Tensor], rows: int, *xs: torch.Tensor) -> torch.Tensor:
    """fn(*xs) for tensors whose dim 0 is the batch, computed over chunks of at most `rows` rows and concatenated
    (fn must treat rows independently); one call when the batch fits."""
    if xs[0].shape[0] <= rows:
        return fn(*xs)
    return torch.cat([fn(*chunk) for chunk in zip(*(x.split(rows) for x in xs))])
