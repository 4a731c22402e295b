"""The CTR model = SparseArch (tables, sharded by DMP) + a DenseArch (data-parallel), and its training wrapper."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_dist.embedding_l2 import embedding_l2
from recsys_dist.models.arch import ArchInputs, DenseArch, map_row_chunks
from recsys_dist.models.registry import build_arch
from recsys_dist.models.sparse import SparseArch, TableSpec


class CTRModel(nn.Module):
    """logits [B] = dense_arch(dense [B, num_dense], sparse_arch(ids) [B, F, D])."""

    def __init__(self, sparse_arch: SparseArch, dense_arch: DenseArch) -> None:
        super().__init__()
        self.sparse_arch = sparse_arch
        self.dense_arch = dense_arch

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        return self.dense_arch(dense, self.sparse_arch(sparse))


def build_model(
    tables: Sequence[TableSpec],
    num_dense: int,
    arch: str,
    arch_args: dict,
    sparse_device: torch.device | str = "meta",
    dense_device: torch.device | str = "cpu",
    embedding_dtype: str = "fp32",
) -> CTRModel:
    """Tables on `sparse_device` ("meta" for DMP to materialize its shards), dense arch on `dense_device`;
    `embedding_dtype` (fp32 | fp16) is the tables' weight type."""
    sparse = SparseArch(tables, device=sparse_device, dtype=embedding_dtype)
    inputs = ArchInputs(num_dense=num_dense, feature_names=tuple(sparse.feature_names),
                        embedding_dim=sparse.embedding_dim)
    dense = build_arch(arch, inputs, arch_args).to(dense_device)
    return CTRModel(sparse, dense)


class CTRTrainModel(nn.Module):
    """batch -> (loss, (loss, logits, labels)): the shape TorchRec's train pipelines expect (as DLRMTrain).

    The loss is the mean BCE over rows with weight > 0 plus the arch's regularization loss, if any, plus
    `embedding_l2` times the looked-up embeddings' L2 (optim.embedding_l2: recsys_dist/embedding_l2.py).
    `autocast_dtype` runs the dense arch under torch.autocast (bf16), embeddings stay fp32.

    Scoring (eval mode, no autograd) runs the dense arch over `score_chunk_rows` rows at a time (0: the whole
    batch): its output is per row, and an arch's per-row activations (OptInter: [B, 325, d] per pair method,
    DLRM: [B, F, F] interactions) at an eval batch of 8192+ rows are fresh page-faulted allocations that miss
    the caches, so a large eval batch scored slower per row than the training batch (docs/benchmarks.md).
    """

    def __init__(self, model: CTRModel, autocast_dtype: Optional[torch.dtype] = None,
                 embedding_l2: float = 0.0, score_chunk_rows: int = 0) -> None:
        super().__init__()
        self.model = model
        self.autocast_dtype = autocast_dtype
        self.embedding_l2 = float(embedding_l2)
        self.score_chunk_rows = int(score_chunk_rows)

    def _dense_logits(self, dense: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        arch = self.model.dense_arch
        if self.autocast_dtype is not None:
            # the device from a parameter, not from the batch: TorchRec's pipelines fx-trace this forward
            with torch.autocast(device_type=_device_type(arch), dtype=self.autocast_dtype):
                return arch(dense, embeddings).float()
        return arch(dense, embeddings)

    def forward(self, batch) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        embeddings = self.model.sparse_arch(batch.sparse_features)
        if not self.training and not torch.is_grad_enabled() and self.score_chunk_rows > 0:
            logits = map_row_chunks(self._dense_logits, self.score_chunk_rows, batch.dense_features, embeddings)
        else:
            logits = self._dense_logits(batch.dense_features, embeddings)
        loss = weighted_bce(logits, batch.labels, batch.weights)
        reg = self.model.dense_arch.regularization_loss()
        if reg is not None:
            loss = loss + reg
        if self.embedding_l2 > 0:
            loss = loss + embedding_l2(embeddings, batch.weights, self.embedding_l2)
        return loss, (loss.detach(), logits.detach(), batch.labels)


def _device_type(module: nn.Module) -> str:
    for p in module.parameters():
        return p.device.type
    return "cpu"


@torch.fx.wrap
def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    per_row = nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
    return (per_row * weights).sum() / weights.sum().clamp_min(1.0)
