"""How big a built model is: dense parameters, embedding rows x dims, and the tables' weight memory.

    model_size(built, cfg) -> {"dense_parameters": 123456, "embedding_parameters": 98765432,
                               "embedding_bytes": 395061728}

Embedding bytes are the table weights in model.embedding_dtype (fp32: 4, fp16: 2 bytes a value), before optimizer
state (row-wise Adagrad adds one fp32 per row; Adagrad one per value).
"""

from __future__ import annotations

from typing import Any, Dict


def model_size(built: Any, embedding_dtype: str) -> Dict[str, int]:
    embedding = sum(t.num_embeddings * t.embedding_dim for t in built.features.tables)
    dense = sum(p.numel() for p in built.model.dense_arch.parameters())
    return {"dense_parameters": int(dense), "embedding_parameters": int(embedding),
            "embedding_bytes": int(embedding * (2 if embedding_dtype == "fp16" else 4))}
