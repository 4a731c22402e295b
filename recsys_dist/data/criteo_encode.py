"""Vectorized column encoders for Criteo ingest: hex parsing, hashing, vocabularies, dense transforms.

Id layouts (what `prepare` writes into the int64 sparse columns):

* hash (MLPerf DLRM):   id = int(hex, 16) mod hash_cap; empty -> 0.            num_embeddings = hash_cap
* vocab (min_count m):  0 = empty, 1 = OOV (seen < m times in the train split, or never), 2.. = the kept values
                        ordered by descending train count (ties: ascending value).    num_embeddings = 2 + kept
* bucketize (I1..I13):  v = floor(ln(x)^2) if x > 2 else x (Criteo winners); v is clamped to >= BUCKET_LOW;
                        id = v - BUCKET_LOW + 1; empty -> 0.                   num_embeddings = BUCKET_ROWS
* log (dense I1..I13):  ln(1 + max(x, 0)) as float32; empty -> 0.
* minmax (dense I1..I13): (x - lo) / (hi - lo) clipped to [0, 1] as float32, lo / hi = min / max of the field's
                        non-empty train values (OptInter's eq. 20); empty -> 0; hi <= lo (one value or none) -> 0.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BUCKET_LOW = -16  # values below this (never seen in Criteo, whose minimum is -3) share the first id
BUCKET_HIGH = int(math.floor(math.log(2**63 - 1) ** 2))  # 1906: the bucket of the largest int64
BUCKET_ROWS = BUCKET_HIGH - BUCKET_LOW + 2  # ids 0 (empty) .. BUCKET_HIGH - BUCKET_LOW + 1

_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _NIBBLE[_c] = 10 + _i
_HIGH_NIBBLES = np.uint64(0xF0F0F0F0F0F0F0F0)  # any of them set in a row's 8 nibble bytes: a non-hex digit


def string_buffers(arr: pa.Array) -> Tuple[np.ndarray, np.ndarray]:
    """(offsets [n+1] int64 relative to data, data uint8) of a pyarrow string array, zero-copy where possible."""
    if arr.type == pa.large_string():
        off = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset: arr.offset + len(arr) + 1]
    else:
        off = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset: arr.offset + len(arr) + 1]
    data_buf = arr.buffers()[2]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return off.astype(np.int64), data


def parse_hex8(arr: pa.Array) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Criteo categorical column -> (values int64 [n], empty bool [n], bad bool [n]).

    A value is 8 hex digits; an empty field (null or "") is legal; anything else is bad. No per-row Python.
    """
    n = len(arr)
    off, data = string_buffers(arr)
    lengths = np.diff(off)
    empty = lengths == 0
    if arr.null_count:
        empty |= arr.is_null().to_numpy(zero_copy_only=False)
        lengths = np.where(empty, 0, lengths)
    values = np.zeros(n, dtype=np.int64)
    is8 = lengths == 8
    bad = ~(is8 | empty)
    if not is8.any():
        return values, empty, bad
    if not bad.any() and not arr.null_count:  # fast path: the value bytes are contiguous
        digits = data[off[0]: off[-1]].reshape(-1, 8)
    else:  # Arrow's filter packs the 8-character values contiguously (faster than a numpy gather)
        off8, data8 = string_buffers(pc.filter(arr, pa.array(is8)))
        digits = data8[off8[0]: off8[-1]].reshape(-1, 8)
    nib = _NIBBLE[digits]  # [m, 8] uint8, 0..15 or 255; packed below into 4 big-endian bytes = the 32-bit value
    nonhex = (nib.view(np.uint64).ravel() & _HIGH_NIBBLES) != 0
    values[is8] = ((nib[:, 0::2] << 4) | nib[:, 1::2]).view(">u4").ravel()
    if nonhex.any():
        where = np.flatnonzero(is8)[nonhex]
        bad[where] = True
        values[where] = 0
    return values, empty, bad


_INT64_MAX = "9223372036854775807"


def parse_int(arr: pa.Array) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Criteo integer column (strings, empty fields read as null) -> (values int64 [n], empty bool [n], bad bool [n]).

    A value is ASCII `-?[0-9]+` within int64 (leading zeros and -0 allowed); anything else is bad ("0x10", "+5",
    " 7", "1e3", "1_000", full-width digits), decided for each value from its own bytes. No per-row Python.
    """
    off, data = string_buffers(arr)
    lengths = np.diff(off)
    empty = lengths == 0
    if arr.null_count:
        empty |= arr.is_null().to_numpy(zero_copy_only=False)
    body = data[off[0]: off[-1]]
    rel = off - off[0]
    ok = ~empty
    other = np.flatnonzero((body - 48) > 9)  # bytes outside '0'..'9' (few: the odd '-')
    if other.size:
        owner = np.searchsorted(rel, other, side="right") - 1  # the value holding each
        minus = (body[other] == 45) & (other == rel[owner]) & (lengths[owner] >= 2)  # a sign before digits
        ok[owner[~minus]] = False
    long = np.flatnonzero(ok & (lengths >= 19))  # may be out of int64: checked as text (rare)
    if long.size:
        text = arr.take(pa.array(long))
        neg = pc.starts_with(text, "-")
        mag = pc.utf8_ltrim(pc.if_else(neg, pc.utf8_slice_codeunits(text, 1), text), "0")
        size = pc.utf8_length(mag).to_numpy(zero_copy_only=False)
        limit = pc.if_else(neg, pa.scalar(_INT64_MAX[:-1] + "8"), pa.scalar(_INT64_MAX))
        over = pc.greater(mag, limit).to_numpy(zero_copy_only=False)
        ok[long[(size > 19) | ((size == 19) & over)]] = False
    bad = ~ok & ~empty
    if bad.any():
        arr = pc.if_else(pa.array(ok), arr, pa.scalar(None, pa.string()))
    ints = pc.cast(arr, pa.int64())
    values = ints.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return values, empty, bad


def dense_log(values: np.ndarray) -> np.ndarray:
    """ln(1 + max(x, 0)) as float32 (empty fields arrive here as 0)."""
    return np.log1p(np.maximum(values, 0).astype(np.float64)).astype(np.float32)


def dense_minmax(values: np.ndarray, empty: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(x - lo) / (hi - lo) clipped to [0, 1] as float32 (values outside the train range land on 0 or 1); empty -> 0."""
    if not hi > lo:
        return np.zeros(values.shape, dtype=np.float32)
    x = np.clip((values.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return np.where(empty, 0.0, x).astype(np.float32)


def bucketize(values: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """Criteo-winner bucket ids (see the module docstring for the layout)."""
    x = values.astype(np.float64)
    v = np.where(x > 2, np.floor(np.log(np.maximum(x, 1.0)) ** 2), x)
    ids = np.maximum(v, BUCKET_LOW).astype(np.int64) - BUCKET_LOW + 1
    return np.where(empty, 0, ids)


class VocabCounter:
    """Counts distinct values of one field with memory proportional to the number of distinct values.

    Batches are reduced with np.unique and merged into a sorted (keys, counts) table whenever the pending part
    outgrows the table (amortized O(N log N), no per-value Python).
    """

    def __init__(self) -> None:
        self.keys = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.int64)
        self._pending: list = []
        self._pending_size = 0

    def add(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        k, c = np.unique(values, return_counts=True)
        self.add_counts(k, c.astype(np.int64))

    def add_counts(self, keys: np.ndarray, counts: np.ndarray) -> None:
        self._pending.append((keys, counts))
        self._pending_size += keys.size
        if self._pending_size > max(self.keys.size, 1 << 16):
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self.keys] + [k for k, _ in self._pending])
        counts = np.concatenate([self.counts] + [c for _, c in self._pending])
        order = np.argsort(keys, kind="stable")
        keys, counts = keys[order], counts[order]
        start = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        self.keys, self.counts = keys[start], np.add.reduceat(counts, start)
        self._pending, self._pending_size = [], 0

    def result(self) -> Tuple[np.ndarray, np.ndarray]:
        self._merge()
        return self.keys, self.counts


class Vocab:
    """value -> id for one field (layout: 0 empty, 1 OOV, 2.. kept values by descending count)."""

    EMPTY = 0
    OOV = 1

    def __init__(self, keys: np.ndarray, counts: np.ndarray, min_count: int) -> None:
        keep = counts >= min_count
        k, c = keys[keep], counts[keep]
        rank = np.lexsort((k, -c))  # descending count, then ascending value
        self.sorted_keys = k  # ascending (keys came sorted)
        self.ids = np.empty(k.size, dtype=np.int64)
        self.ids[rank] = np.arange(2, 2 + k.size, dtype=np.int64)

    @property
    def num_embeddings(self) -> int:
        return 2 + self.sorted_keys.size

    def encode(self, values: np.ndarray, empty: np.ndarray) -> np.ndarray:
        if self.sorted_keys.size == 0:
            return np.where(empty, self.EMPTY, self.OOV)
        pos = np.minimum(np.searchsorted(self.sorted_keys, values), self.sorted_keys.size - 1)
        found = self.sorted_keys[pos] == values
        return np.where(empty, self.EMPTY, np.where(found, self.ids[pos], self.OOV))
