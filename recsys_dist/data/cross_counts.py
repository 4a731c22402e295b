"""The counting pass of OptInter's frequency filter: which cross buckets occur >= N times in the train split.

One pass over the train split's Parquet files, row group by row group; per pair a saturating counter per bucket
(uint8 when N <= 255: memory = sum over pairs of S bytes, independent of the number of rows; transient memory is
one row group). Exact pairs (S = rows_i * rows_j, see cross_features) count every cross value exactly. Hashed
pairs merge the values that share a bucket, so counts can only be too high: a frequent cross is never dropped,
and a rare cross is kept (shares its bucket's id) when its bucket is frequent anyway; benchmarks/
cross_count_collisions.py measures how often.

Result per pair: the sorted frequent buckets, stored as
    <data.dir>/cross_counts/<train fingerprint>-min<N>/<CixCj>.<rows_i>x<rows_j>.s<S>.npy   + manifest.json
so later runs (and a retrain with fewer pairs) reuse them. In a multi-rank job rank 0 counts the missing pairs
while the other ranks wait at a barrier.

    frequent = frequent_buckets(Path("data/prepared"), md, pairs, min_count=20)   # {"C1xC2": int64 [k], ...}
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pyarrow.parquet as pq

from recsys_dist.data.cross_features import CrossPair
from recsys_dist.data.metadata import Metadata

log = logging.getLogger("recsys_dist")


COUNT_RULE = 2  # 2: crosses with an OOV side are not counted (raw-value counting, cross_features); in the key


def counts_dir(root: Path, md: Metadata, min_count: int) -> Path:
    train = md.split("train")
    key = json.dumps({"files": train.files, "rows": train.rows_per_file, "rule": COUNT_RULE}, sort_keys=True)
    fp = hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
    return root / "cross_counts" / f"{fp}-min{min_count}"


def pair_file(folder: Path, p: CrossPair) -> Path:
    return folder / f"{p.name}.{p.rows_a}x{p.rows_b}.s{p.buckets}.npy"


def _counter_dtype(min_count: int):
    return np.uint8 if min_count <= 255 else np.uint16 if min_count <= 65535 else np.uint32


def count_frequent(root: Path, md: Metadata, pairs: Sequence[CrossPair], min_count: int) -> Dict[str, np.ndarray]:
    """The counting pass itself: {cross name: sorted int64 buckets seen >= min_count times in train}."""
    dtype = _counter_dtype(min_count)
    counts = {p.name: np.zeros(p.buckets, dtype) for p in pairs}
    rows_of = {}
    for p in pairs:
        rows_of[p.a], rows_of[p.b] = p.rows_a, p.rows_b
    columns = sorted(rows_of)
    multi = {f.name for f in md.sparse_features if f.multi_valued} & set(columns)
    if multi:
        raise ValueError(f"cannot count crosses of multi-valued feature(s) {sorted(multi)}")
    for rel in md.split("train").files:
        path = root / rel
        if not path.is_file():
            raise FileNotFoundError(f"{path}: listed in metadata.json but missing")
        f = pq.ParquetFile(path)
        for g in range(f.num_row_groups):
            t = f.read_row_group(g, columns=columns)
            ids = {c: t.column(c).to_numpy().astype(np.int64, copy=False) % rows_of[c] for c in columns}
            for p in pairs:
                bucket = p.bucket(ids[p.a], ids[p.b])
                rare_side = p.has_oov_side(ids[p.a], ids[p.b])
                u, c = np.unique(bucket if rare_side is None else bucket[~rare_side], return_counts=True)
                cnt = counts[p.name]
                cnt[u] = np.minimum(cnt[u].astype(np.int64) + c, min_count).astype(dtype)
    return {name: np.flatnonzero(cnt >= min_count).astype(np.int64) for name, cnt in counts.items()}


def frequent_buckets(root: Path, md: Metadata, pairs: Sequence[CrossPair], min_count: int) -> Dict[str, np.ndarray]:
    """Loads the frequent buckets of `pairs`, counting the missing ones first (rank 0, others wait)."""
    import torch.distributed as dist  # only for the barrier of a multi-rank job

    folder = counts_dir(root, md, min_count)
    missing = [p for p in pairs if not pair_file(folder, p).is_file()]
    multi_rank = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if missing and (not multi_rank or dist.get_rank() == 0):
        t0 = time.perf_counter()
        log.info("counting %d cross features over %s (min_count %d)", len(missing), root, min_count)
        found = count_frequent(root, md, missing, min_count)
        folder.mkdir(parents=True, exist_ok=True)
        for p in missing:
            tmp = folder / (pair_file(folder, p).name + ".tmp.npy")
            np.save(tmp, found[p.name])
            tmp.replace(pair_file(folder, p))
        _update_manifest(folder, missing, found, min_count, time.perf_counter() - t0)
    if multi_rank:  # every rank, whatever it saw missing: rank 0 may have written the files meanwhile
        dist.barrier()
    return {p.name: np.load(pair_file(folder, p)) for p in pairs}


def _update_manifest(folder: Path, pairs: List[CrossPair], found: Dict[str, np.ndarray], min_count: int,
                     seconds: float) -> None:
    path = folder / "manifest.json"
    m = json.loads(path.read_text()) if path.is_file() else {"min_count": min_count, "pairs": {}}
    for p in pairs:
        m["pairs"][p.name] = {"fields": [p.a, p.b], "rows": [p.rows_a, p.rows_b], "buckets": p.buckets,
                              "exact": p.exact, "frequent": int(len(found[p.name]))}
    m["last_pass_seconds"] = round(seconds, 3)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(m, indent=2))
    tmp.replace(path)
