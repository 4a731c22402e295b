"""Sharders: TorchRec's EmbeddingBagCollectionSharder, with row-wise sharding offered on CPU too.

The stock sharder lists row_wise / table_row_wise / grid_shard for "cuda" only, so on a CPU (gloo) cluster the
planner cannot place a table row-wise. Their CPU kernels exist and match the unsharded result (STACK.md), so this
sharder offers the full CUDA list on every device; `allowed` narrows it (e.g. from the config).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.types import ShardingType

SHARDING_TYPES = (
    ShardingType.TABLE_WISE.value,
    ShardingType.ROW_WISE.value,
    ShardingType.COLUMN_WISE.value,
    ShardingType.TABLE_ROW_WISE.value,
    ShardingType.TABLE_COLUMN_WISE.value,
    ShardingType.DATA_PARALLEL.value,
    ShardingType.GRID_SHARD.value,
)


class CTREmbeddingBagCollectionSharder(EmbeddingBagCollectionSharder):
    """EmbeddingBagCollectionSharder offering the CUDA sharding types on every device.

    Args:
        fused_params: FBGEMM TBE parameters (optimizer, learning_rate, eps ...), as the stock sharder.
        allowed: if given, only these sharding types are offered.
    """

    def __init__(self, fused_params: Optional[Dict[str, Any]] = None,
                 allowed: Optional[Sequence[str]] = None, **kwargs: Any) -> None:
        super().__init__(fused_params=fused_params, **kwargs)
        if allowed is not None:
            bad = [t for t in allowed if t not in SHARDING_TYPES]
            if bad:
                raise ValueError(f"unknown sharding type(s) {bad}; known: {', '.join(SHARDING_TYPES)}")
        self._allowed = list(allowed) if allowed is not None else None

    def sharding_types(self, compute_device_type: str) -> List[str]:
        types = super().sharding_types("cuda" if compute_device_type == "cpu" else compute_device_type)
        if self._allowed is not None:
            types = [t for t in types if t in self._allowed]
        return types
