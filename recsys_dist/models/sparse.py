"""The sparse arch: one EmbeddingBagCollection table per sparse feature, built where DMP can shard it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from torch import nn
from torchrec.modules.embedding_configs import DataType, EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor


@dataclass(frozen=True)
class TableSpec:
    feature: str
    num_embeddings: int
    embedding_dim: int
    pooling: str = "sum"  # sum | mean
    avg_ids_per_sample: float = 1.0

    @property
    def table_name(self) -> str:
        return f"t_{self.feature}"


EMBEDDING_DTYPES = {"fp32": DataType.FP32, "fp16": DataType.FP16}


def table_configs(tables: Sequence[TableSpec], dtype: str = "fp32") -> List[EmbeddingBagConfig]:
    """TorchRec table configs; `dtype` is the weights' storage type (fp16 halves table memory and bytes)."""
    if dtype not in EMBEDDING_DTYPES:
        raise ValueError(f"embedding dtype {dtype!r}: expected one of {', '.join(EMBEDDING_DTYPES)}")
    return [
        EmbeddingBagConfig(
            name=t.table_name,
            embedding_dim=t.embedding_dim,
            num_embeddings=t.num_embeddings,
            feature_names=[t.feature],
            pooling=PoolingType.MEAN if t.pooling == "mean" else PoolingType.SUM,
            data_type=EMBEDDING_DTYPES[dtype],
        )
        for t in tables
    ]


class SparseArch(nn.Module):
    """KeyedJaggedTensor of ids -> pooled embeddings [B, F, D] in `feature_names` order.

    Args:
        tables: one TableSpec per feature (all of the same embedding_dim).
        device: "meta" to build without memory (DMP materializes the shards), or a real device.
        dtype: table weights' type, "fp32" or "fp16" (sharded: FBGEMM's TBE stores fp16 rows and returns fp32
            pooled embeddings; unsharded EmbeddingBag needs fp32 on CPU).

    Example:
        >>> arch = SparseArch([TableSpec("C1", 10, 4), TableSpec("C2", 20, 4)], device="cpu")
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(["C1", "C2"], torch.tensor([1, 2, 3, 4]),
        ...                                            torch.tensor([1, 1, 1, 1]))
        >>> arch(kjt).shape
        torch.Size([2, 2, 4])
    """

    def __init__(self, tables: Sequence[TableSpec], device: Optional[torch.device | str] = None,
                 dtype: str = "fp32") -> None:
        super().__init__()
        dims = {t.embedding_dim for t in tables}
        if len(dims) != 1:
            raise ValueError(f"all tables need one embedding_dim for the [B, F, D] interface, got {sorted(dims)}")
        self.tables = list(tables)
        self.feature_names = [t.feature for t in tables]
        self.embedding_dim = dims.pop()
        self.ebc = EmbeddingBagCollection(tables=table_configs(tables, dtype), device=torch.device(device or "cpu"))

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        return stack_pooled(self.ebc(features), self.feature_names, self.embedding_dim)


@torch.fx.wrap
def stack_pooled(kt: KeyedTensor, names: List[str], dim: int) -> torch.Tensor:
    """KeyedTensor [B, F*D] -> [B, F, D] in `names` order (a view when the keys are already in order)."""
    values = kt.values()
    if list(kt.keys()) == names:
        return values.view(values.shape[0], len(names), dim)
    d = kt.to_dict()
    return torch.stack([d[n] for n in names], dim=1)
