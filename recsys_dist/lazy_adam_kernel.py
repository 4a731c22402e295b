"""TorchRec's FUSED compute kernel for Adam on CPU: a BaseBatchedEmbeddingBag over `LazyAdamTBE`.

The plan says `fused`, the sharder's fused_params say `optimizer: ADAM` (one spelling on both devices). On CUDA
TorchRec builds FBGEMM's TBE with its fused Adam; on CPU FBGEMM refuses ADAM, so `install()` makes TorchRec's one
factory of pooled kernels (GroupedPooledEmbeddingsLookup._create_embedding_kernel, used by every sharding type:
table-, row-, column-wise, table-row-wise, grid) build `BatchedLazyAdamEmbeddingBag` for that case and defer to
TorchRec for every other. TorchRec offers no registry of kernels, hence this narrow patch, kept in this module.
The fused optimizer is TorchRec's own EmbeddingFusedOptimizer over our buffers, so its state (FBGEMM's names:
`<table>.momentum1` = exp_avg, `<table>.exp_avg_sq`, `<table>.row_counter`) is sharded, checkpointed (DCP) and
loaded like FBGEMM's.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torch import distributed as dist
from torchrec.distributed import embedding_lookup
from torchrec.distributed.batched_embedding_kernel import (
    BaseBatchedEmbeddingBag,
    EmbeddingFusedOptimizer,
)
from torchrec.distributed.composable.table_batched_embedding_slice import TableBatchedEmbeddingSlice
from torchrec.distributed.embedding_kernel import BaseEmbedding
from torchrec.distributed.embedding_types import EmbeddingComputeKernel, GroupedEmbeddingConfig
from torchrec.distributed.types import ShardingType
from torchrec.modules.embedding_configs import DataType
from torchrec.optim.fused import EmptyFusedOptimizer, FusedOptimizer, FusedOptimizerModule
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_dist.lazy_adam import LazyAdamTBE


def wants_lazy_adam(config: GroupedEmbeddingConfig, device: Optional[torch.device]) -> bool:
    """A fused table group whose optimizer is Adam, on a CPU."""
    fused = config.fused_params or {}
    return (config.compute_kernel == EmbeddingComputeKernel.FUSED and fused.get("optimizer") == EmbOptimType.ADAM
            and (device is None or device.type == "cpu"))


class BatchedLazyAdamEmbeddingBag(BaseBatchedEmbeddingBag[torch.Tensor], FusedOptimizerModule):
    """The tables of one group on this rank, trained by lazy Adam in the backward (recsys_dist.lazy_adam)."""

    def __init__(self, config: GroupedEmbeddingConfig, pg: Optional[dist.ProcessGroup] = None,
                 device: Optional[torch.device] = None, sharding_type: Optional[ShardingType] = None) -> None:
        super().__init__(config, pg, device, sharding_type)
        if config.data_type != DataType.FP32:
            raise ValueError(f"Adam on CPU keeps fp32 tables, got {config.data_type.value} "
                             f"(tables {[t.name for t in config.embedding_tables]})")
        fused = config.fused_params or {}
        self._emb_module = LazyAdamTBE(
            self._local_rows, self._local_cols, self._feature_table_map, pooling_mode=self._pooling,
            learning_rate=fused.get("learning_rate", 0.001), beta1=fused.get("beta1", 0.9),
            beta2=fused.get("beta2", 0.999), eps=fused.get("eps", 1e-8),
            weight_decay=fused.get("weight_decay", 0.0), device=device)
        self._optim = EmbeddingFusedOptimizer(config, self._emb_module, pg)  # type: ignore[arg-type]
        self.init_parameters()

    @property
    def emb_module(self) -> LazyAdamTBE:  # type: ignore[override]
        return self._emb_module

    @property
    def fused_optimizer(self) -> FusedOptimizer:
        return self._optim

    def forward(self, features: KeyedJaggedTensor, vbe_output=None, vbe_output_offsets=None) -> torch.Tensor:
        if features.variable_stride_per_key():
            raise NotImplementedError("Adam on CPU: variable batch size per feature is not supported")
        weights = features.weights_or_none()
        return self._emb_module(features.values(), features.offsets(), weights)

    @property  # type: ignore[override]
    def _param_per_table(self) -> Dict[str, TableBatchedEmbeddingSlice]:
        """One parameter per table (a table's column shards on this rank are adjacent in the buffer), each
        carrying its fused optimizer, as TorchRec's FUSED kernel does."""
        out: Dict[str, TableBatchedEmbeddingSlice] = {}
        counts = dict(self.table_name_to_count)
        weights = self._emb_module.split_embedding_weights()
        states = self._emb_module.get_optimizer_state()
        for t, cfg in enumerate(self._config.embedding_tables):
            if cfg.name not in counts:
                continue
            count = counts.pop(cfg.name)
            start = self._emb_module.weights_offsets[t]
            weight = TableBatchedEmbeddingSlice(data=self._emb_module.weights, start_offset=start,
                                                end_offset=start + count * cfg.local_rows * cfg.local_cols,
                                                num_embeddings=-1, embedding_dim=cfg.local_cols)
            weight._in_backward_optimizers = [EmbeddingFusedOptimizer(  # type: ignore[attr-defined]
                config=self._config, emb_module=self._emb_module, pg=self._pg,  # type: ignore[arg-type]
                create_for_table=cfg.name, param_weight_for_table=weight,
                embedding_weights_by_table=weights, all_optimizer_states=states)]
            out[cfg.name] = weight
        return out

    @_param_per_table.setter
    def _param_per_table(self, v: Dict[str, TableBatchedEmbeddingSlice]) -> None:
        self.__dict__["_param_per_table"] = v

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """Fused tables are neither buffers nor trainable parameters of the module (TorchRec's convention)."""
        yield from ()

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        for name, tensor in self.named_split_embedding_weights(prefix, recurse, remove_duplicate):
            param = torch.nn.Parameter(tensor)
            param._in_backward_optimizers = [EmptyFusedOptimizer()]  # type: ignore[attr-defined]
            yield name, param


_original_create = embedding_lookup.GroupedPooledEmbeddingsLookup._create_embedding_kernel


def _create_embedding_kernel(self, config, device, pg, sharding_type, env) -> BaseEmbedding:
    if wants_lazy_adam(config, device):
        return BatchedLazyAdamEmbeddingBag(config=config, pg=pg, device=device, sharding_type=sharding_type)
    return _original_create(self, config, device, pg, sharding_type, env)


def install() -> None:
    """Route CPU + Adam fused table groups to BatchedLazyAdamEmbeddingBag (idempotent)."""
    embedding_lookup.GroupedPooledEmbeddingsLookup._create_embedding_kernel = _create_embedding_kernel
