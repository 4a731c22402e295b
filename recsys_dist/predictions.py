"""Per-row predictions of a split, in input order, for offline analysis (`recsys-dist evaluate --predictions`).

The eval reader gives rank r the contiguous rows [r * ceil(N / W), (r + 1) * ceil(N / W)) of the split, in file
order, and pads the last batches with weight-0 rows. Dropping the padding and concatenating the ranks' rows in
rank order therefore restores the split's row order on any world size.

    recsys-dist evaluate --run-dir runs/own --split test --predictions runs/own/test_predictions.parquet

Columns: `row` (int64, 0-based position in the split), `label` (int8), `logit` and `prediction` (= sigmoid(logit),
float32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recsys_dist.config import JobConfig
from recsys_dist.dist_env import DistEnv
from recsys_dist.job import BuiltModel
from recsys_dist.train import score_split


def predict_split(built: BuiltModel, cfg: JobConfig, env: DistEnv, split: str) -> torch.Tensor:
    """[3, N] (logits, labels, weights) of every row of `split` in input order, gathered on every rank."""
    out = score_split(built, cfg, env, split).gathered()  # ranks in rank order = the split's row order
    rows = built.metadata.split(split).rows
    if out.shape[1] != rows:
        raise RuntimeError(f"predictions: scored {out.shape[1]} rows of split {split}, metadata says {rows}")
    return out


def write_predictions(gathered: torch.Tensor, path: str | Path) -> Path:
    """Writes the output of predict_split as Parquet (atomically: a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    logits = gathered[0].numpy().astype(np.float32)
    table = pa.table({
        "row": pa.array(np.arange(logits.size, dtype=np.int64)),
        "label": pa.array(gathered[1].numpy().astype(np.int8)),
        "logit": pa.array(logits),
        "prediction": pa.array(torch.sigmoid(gathered[0]).numpy().astype(np.float32)),
    })
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path
