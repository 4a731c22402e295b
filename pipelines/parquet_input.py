"""Parquet shards of a prepared dataset -> CTRBatch, per rank.

Rows are addressed in units of Parquet row groups. Per epoch the units are (optionally) permuted with a seed
shared by all ranks; the concatenated rows are then cut into W contiguous, equal blocks, one per rank, so each
rank reads only its own part of the data. Every rank yields exactly the same number of batches (TorchRec's
pipelines hang on uneven ranks):

- mode "train": steps = rows // (W * B); the < W * B leftover rows of the epoch are not used (counted in
  `rows_unused`; with shuffling they differ per epoch).
- mode "eval":  steps = ceil(rows / (W * B)); the last batches are padded with weight-0 rows, so every row is
  scored exactly once and nothing is counted twice.

A background thread builds up to `prefetch` batches ahead (pyarrow and numpy release the GIL).
"""

from __future__ import annotations

import math
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from pipelines.batch import CTRBatch
from recsys_dist.data.metadata import Metadata

# Extra sparse features computed where the batch is made (e.g. OptInter's cross ids):
# {feature: ids [b] or (lengths [b], values [n])} of the base features -> {new feature: ids [b]}.
FeatureTransform = Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]


@dataclass(frozen=True)
class _Unit:
    file: str
    row_group: int
    rows: int


def _units(root: Path, files: Sequence[str]) -> List[_Unit]:
    units = []
    for f in files:
        path = root / f
        if not path.is_file():
            raise FileNotFoundError(f"{path}: listed in metadata.json but missing")
        md = pq.ParquetFile(path).metadata
        units += [_Unit(str(path), i, md.row_group(i).num_rows) for i in range(md.num_row_groups)]
    return units


class ParquetBatchReader:
    """Iterable of CTRBatch for one rank.

    Args:
        dataset_dir: folder with metadata.json (recsys_dist.data.metadata).
        split: train | val | test.
        batch_size: rows per batch on this rank (the global batch is batch_size * world_size).
        rank, world_size: this rank's share of the rows.
        mode: "train" (equal full batches, leftover unused) or "eval" (every row once, weight-0 padding).
        shuffle: permute row groups per epoch and rows within a buffer of `shuffle_buffer_rows`.
        table_rows: per sparse feature, the table size: ids are taken modulo it (a cap smaller than the data's).
        feature_transform: computes extra sparse features from the base ids (see FeatureTransform).
        extra_features: names of the features feature_transform adds, in embedding order.
    """

    def __init__(
        self,
        dataset_dir: str | Path,
        split: str,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        mode: str = "train",
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer_rows: int = 262144,
        prefetch: int = 4,
        metadata: Optional[Metadata] = None,
        table_rows: Optional[Dict[str, int]] = None,
        feature_transform: Optional[FeatureTransform] = None,
        extra_features: Sequence[str] = (),
    ) -> None:
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be train or eval, got {mode!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.root = Path(dataset_dir)
        self.metadata = metadata or Metadata.load(self.root)
        self.split = split
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.mode = mode
        self.shuffle, self.seed = shuffle, seed
        self.shuffle_buffer_rows = max(shuffle_buffer_rows, batch_size)
        self.prefetch = prefetch
        self.epoch = 0
        self.start_step = 0
        info = self.metadata.split(split)
        self.units = _units(self.root, info.files)
        self.rows = sum(u.rows for u in self.units)
        if self.rows != info.rows:
            raise ValueError(f"{self.root}: split {split}: metadata says {info.rows} rows, files hold {self.rows}")
        md = self.metadata
        self.dense_names = list(md.dense_features)
        self.sparse_names = md.sparse_names
        self.multi_valued = {f.name for f in md.sparse_features if f.multi_valued}
        self.table_rows = {f.name: f.num_embeddings for f in md.sparse_features}
        if table_rows:
            self.table_rows.update(table_rows)
        self.feature_transform = feature_transform
        self.extra_features = list(extra_features)
        self.columns = [md.label] + self.dense_names + self.sparse_names
        global_batch = batch_size * world_size
        if mode == "train":
            self.steps = self.rows // global_batch
            if self.steps == 0:
                raise ValueError(
                    f"{self.root}: split {split} has {self.rows} rows, fewer than one global batch "
                    f"({batch_size} x {world_size} ranks = {global_batch}); lower data.batch_size"
                )
            self.rows_per_rank = self.steps * batch_size
            self.rows_unused = self.rows - self.rows_per_rank * world_size
        else:
            self.steps = math.ceil(self.rows / global_batch)
            self.rows_per_rank = math.ceil(self.rows / world_size)
            self.rows_unused = 0

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """The next pass yields epoch `epoch` from batch `start_step` on: exactly the batches a full pass yields
        after its first `start_step` (for resuming mid-epoch). Shuffle buffers wholly before that position are
        not read; the shuffle RNG advances as if they were."""
        if not 0 <= start_step <= self.steps:
            raise ValueError(f"start_step {start_step} not in [0, {self.steps}] (batches per epoch)")
        self.epoch = epoch
        self.start_step = start_step

    # -- reading -------------------------------------------------------------------------------------------
    def _rank_slices(self) -> Iterator[Tuple[_Unit, int, int]]:
        """(unit, start, stop) row ranges of this rank's contiguous block, in (permuted) unit order."""
        order = np.arange(len(self.units))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.units))
        begin = self.rank * self.rows_per_rank
        end = min(begin + self.rows_per_rank, self.rows)
        pos = 0
        for i in order:
            u = self.units[i]
            lo, hi = max(begin, pos), min(end, pos + u.rows)
            if lo < hi:
                yield u, lo - pos, hi - pos
            pos += u.rows
            if pos >= end:
                break

    def _chunk_slices(self) -> Iterator[Tuple[List[Tuple[_Unit, int, int]], int]]:
        """This rank's slices grouped into chunks (a shuffle buffer, or >= one batch), with their row counts."""
        group: List[Tuple[_Unit, int, int]] = []
        rows = 0
        limit = self.shuffle_buffer_rows if self.shuffle else self.batch_size
        for s in self._rank_slices():
            group.append(s)
            rows += s[2] - s[1]
            if rows >= limit:
                yield group, rows
                group, rows = [], 0
        if rows:
            yield group, rows

    def _chunks(self) -> Iterator[Dict[str, np.ndarray]]:
        """Column arrays of this rank's rows from row start_step * batch_size on, shuffled within buffers."""
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, 1])
        files: Dict[str, pq.ParquetFile] = {}
        skip = self.start_step * self.batch_size
        for group, rows in self._chunk_slices():
            if rows <= skip:  # wholly before the start position: not read, the RNG advanced as if it were
                if self.shuffle:
                    rng.permutation(rows)
                skip -= rows
                continue
            parts = []
            for u, lo, hi in group:
                f = files.get(u.file) or files.setdefault(u.file, pq.ParquetFile(u.file))
                parts.append(f.read_row_group(u.row_group, columns=self.columns).slice(lo, hi - lo))
            cols = self._to_numpy(pa.concat_tables(parts), rng)
            if skip:
                cols = _slice_rows(cols, skip, rows, _offsets(cols, self.multi_valued))
                skip = 0
            yield cols

    def _to_numpy(self, table: pa.Table, rng: np.random.Generator) -> Dict[str, np.ndarray]:
        perm = rng.permutation(table.num_rows) if self.shuffle else None
        if perm is not None:
            table = table.take(pa.array(perm))
        out: Dict[str, np.ndarray] = {}
        for name in self.columns:
            col = table.column(name)
            if name in self.multi_valued:
                col = col.combine_chunks()
                out[name + ".lengths"] = np.diff(col.offsets.to_numpy()).astype(np.int32)
                out[name] = col.flatten().to_numpy().astype(np.int64)
            else:
                out[name] = col.to_numpy()
        return out

    def _batches_numpy(self) -> Iterator[Dict[str, np.ndarray]]:
        """Fixed-size row batches; in eval mode the last ones padded (weights 0)."""
        carry: Optional[Dict[str, np.ndarray]] = None
        emitted = self.start_step
        B = self.batch_size
        for chunk in self._chunks():
            chunk = _concat_rows(carry, chunk) if carry is not None else chunk
            offsets = _offsets(chunk, self.multi_valued)
            n = len(chunk[self.metadata.label])
            start = 0
            while n - start >= B and emitted < self.steps:
                yield _slice_rows(chunk, start, start + B, offsets)
                emitted += 1
                start += B
            carry = _slice_rows(chunk, start, n, offsets) if start < n else None
        if self.mode == "eval":
            while emitted < self.steps:
                part = carry if carry is not None else self._empty()
                yield _pad_rows(part, B, self.multi_valued, self.metadata.label)
                emitted += 1
                carry = None

    def _empty(self) -> Dict[str, np.ndarray]:
        out: Dict[str, np.ndarray] = {self.metadata.label: np.zeros(0, np.int8)}
        out.update({n: np.zeros(0, np.float32) for n in self.dense_names})
        for n in self.sparse_names:
            out[n] = np.zeros(0, np.int64)
            if n in self.multi_valued:
                out[n + ".lengths"] = np.zeros(0, np.int32)
        return out

    def to_batch(self, cols: Dict[str, np.ndarray]) -> CTRBatch:
        label = cols[self.metadata.label]
        b = len(label)
        weights = cols.get("__weight__", np.ones(b, np.float32))
        if self.dense_names:
            dense = np.stack([cols[n] for n in self.dense_names], axis=1).astype(np.float32, copy=False)
        else:
            dense = np.zeros((b, 0), np.float32)
        ids: Dict[str, np.ndarray] = {}
        for n in self.sparse_names:
            v = cols[n].astype(np.int64, copy=False)
            cap = self.table_rows[n]
            ids[n] = v % cap if (v.size and (v.max() >= cap or v.min() < 0)) else v
        keys = list(self.sparse_names)
        lengths = [cols[n + ".lengths"] if n in self.multi_valued else np.ones(b, np.int32) for n in keys]
        values = [ids[n] for n in keys]
        if self.feature_transform is not None:
            base = {n: ((cols[n + ".lengths"], ids[n]) if n in self.multi_valued else ids[n]) for n in keys}
            extra = self.feature_transform(base)
            for n in self.extra_features:
                keys.append(n)
                lengths.append(np.ones(b, np.int32))
                values.append(extra[n].astype(np.int64, copy=False))
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=keys,
            values=torch.from_numpy(np.concatenate(values)),
            lengths=torch.from_numpy(np.concatenate(lengths)),
        )
        return CTRBatch(
            dense_features=torch.from_numpy(dense),
            sparse_features=kjt,
            labels=torch.from_numpy(label.astype(np.float32)),
            weights=torch.from_numpy(np.asarray(weights, np.float32)),
        )

    def _produce(self) -> Iterator[CTRBatch]:
        for cols in self._batches_numpy():
            yield self.to_batch(cols)

    def __iter__(self) -> Iterator[CTRBatch]:
        if self.prefetch <= 0:
            yield from self._produce()
            return
        yield from _prefetched(self._produce(), self.prefetch)


_DONE = object()


def _prefetched(it: Iterator[CTRBatch], depth: int) -> Iterator[CTRBatch]:
    """Runs `it` in a daemon thread, `depth` items ahead; re-raises its error in the consumer. Closing the
    consumer (or leaving it) stops and joins the thread."""
    q: "queue.Queue" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as e:  # surfaced in the consumer
            q.put(e)

    t = threading.Thread(target=work, name="parquet-prefetch", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:  # the consumer stopped (end, error, or closed early, e.g. at train.max_steps): let the worker finish
        stop.set()  # its item and end, so no thread is still inside pyarrow / torch when the interpreter exits
        t.join()


# -- row helpers over {column: array} with multi-valued columns as (name.lengths, name) -------------------------
def _offsets(cols: Dict[str, np.ndarray], multi: set) -> Dict[str, np.ndarray]:
    """Per multi-valued column, the value offset of each row (rows + 1 entries)."""
    return {k: np.concatenate([[0], np.cumsum(cols[k + ".lengths"])]) for k in multi if k in cols}


def _slice_rows(cols: Dict[str, np.ndarray], lo: int, hi: int, offsets: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Rows [lo, hi); `offsets` from _offsets(cols, ...) (computed once per chunk, not per slice)."""
    out = {}
    for k, v in cols.items():
        if k in offsets:
            out[k] = v[offsets[k][lo]: offsets[k][hi]]
        else:
            out[k] = v[lo:hi]
    return out


def _concat_rows(a: Dict[str, np.ndarray], b: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    return {k: np.concatenate([a[k], b[k]]) for k in b}


def _pad_rows(cols: Dict[str, np.ndarray], size: int, multi: set, label: str) -> Dict[str, np.ndarray]:
    n = len(cols[label])
    pad = size - n
    out = {}
    for k, v in cols.items():
        if k in multi:
            out[k] = v  # padded rows have length 0
        else:
            out[k] = np.concatenate([v, np.zeros(pad, v.dtype)])
    out["__weight__"] = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    return out
