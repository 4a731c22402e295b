"""Small prepared datasets written straight with pyarrow (the metadata.json contract), for pipeline tests."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys_dist.data.metadata import Metadata, SparseFeature, SplitInfo


def write_dataset(root: Path, rows: Dict[str, int], rows_per_file: int = 100, row_group: int = 32,
                  num_dense: int = 3, vocab: Sequence[int] = (7, 11, 13), multi: Optional[str] = None,
                  seed: int = 0) -> Metadata:
    """Rows carry their global index in dense column d0 (as float) so tests can tell which rows they got.
    `multi` names a sparse feature stored as a list column with 0..3 ids per row."""
    rng = np.random.default_rng(seed)
    sparse = [SparseFeature(f"s{i}", v, multi_valued=(f"s{i}" == multi)) for i, v in enumerate(vocab)]
    dense = [f"d{i}" for i in range(num_dense)]
    splits = {}
    for split, n in rows.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        files, counts = [], []
        for k, start in enumerate(range(0, n, rows_per_file)):
            m = min(rows_per_file, n - start)
            cols = {"label": pa.array(rng.integers(0, 2, m).astype(np.int8))}
            for j, d in enumerate(dense):
                cols[d] = pa.array((np.arange(start, start + m) if j == 0 else rng.random(m)).astype(np.float32))
            for f in sparse:
                if f.multi_valued:
                    cols[f.name] = pa.array([list(rng.integers(0, f.num_embeddings, rng.integers(0, 4)))
                                             for _ in range(m)], type=pa.list_(pa.int64()))
                else:
                    cols[f.name] = pa.array(rng.integers(0, f.num_embeddings, m).astype(np.int64))
            name = f"{split}/part-{k:05d}.parquet"
            pq.write_table(pa.table(cols), root / name, row_group_size=row_group)
            files.append(name)
            counts.append(m)
        splits[split] = SplitInfo(files=files, rows=n, rows_per_file=counts)
    md = Metadata(dense_features=dense, sparse_features=sparse, splits=splits, dense_transform="none")
    md.save(root)
    return md


PAIR_FIELDS, PAIR_VOCAB, PLANTED_PAIRS = 6, 8, (("s0", "s3"), ("s2", "s5"))


def write_planted_pairs(root: Path, rows: Dict[str, int], seed: int = 0) -> None:
    """PAIR_FIELDS categorical fields, uniform ids; the logit is the sum over PLANTED_PAIRS of a random +-1 table
    T[v_a, v_b] with row and column means removed (no main effects: only the pair's cross carries the signal)."""
    rng = np.random.default_rng(seed)
    tables = {}
    for pair in PLANTED_PAIRS:
        t = rng.choice([-1.0, 1.0], (PAIR_VOCAB, PAIR_VOCAB))
        t = t - t.mean(0, keepdims=True) - t.mean(1, keepdims=True) + t.mean()
        tables[pair] = 3.0 * t / t.std()
    splits = {}
    for split, n in rows.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        ids = {f"s{k}": rng.integers(0, PAIR_VOCAB, n) for k in range(PAIR_FIELDS)}
        logit = sum(tab[ids[a], ids[b]] for (a, b), tab in tables.items())
        cols = {"label": pa.array((rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)),
                "d0": pa.array(rng.random(n).astype(np.float32))}
        cols.update({k: pa.array(v.astype(np.int64)) for k, v in ids.items()})
        pq.write_table(pa.table(cols), root / f"{split}/part-0.parquet", row_group_size=1024)
        splits[split] = SplitInfo([f"{split}/part-0.parquet"], n, [n])
    Metadata(dense_features=["d0"], sparse_features=[SparseFeature(f"s{k}", PAIR_VOCAB) for k in range(PAIR_FIELDS)],
             splits=splits, dense_transform="none").save(root)
