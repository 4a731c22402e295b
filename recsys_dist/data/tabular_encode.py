"""Vectorized column parsers for the schema-driven ingest: string keys, numbers, lists, timestamps.

A categorical value is any string (an integer Parquet column is read as its decimal text, so a CSV and a Parquet
file of the same data give the same ids). It becomes a 64-bit key, FNV-1a over its UTF-8 bytes finished with
MurmurHash3's fmix64; the key is what vocabularies count and hashing reduces (`key mod hash_cap`). Numbers are
parsed by Arrow; what is not a number is reported, never guessed. No per-row Python.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_dist.data.criteo_encode import string_buffers

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
TICKS_PER_SECOND = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
MAX_EPOCH_SECONDS = 1e11  # the year 5138: a larger epoch number is in ms / us / ns (1.7e12 ms is 2024)
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB93FE1A85EC3)
    return h ^ (h >> np.uint64(33))


LONG_VALUE_BYTES = 4096  # longer values are hashed one by one (the vectorized loop is one pass per byte position)


def _fnv1a(value: bytes) -> int:
    """FNV-1a of one value in Python ints (the vectorized loop's result for it)."""
    h, mask = int(_FNV_OFFSET), (1 << 64) - 1
    for byte in value:
        h = ((h ^ byte) * int(_FNV_PRIME)) & mask
    return h


def _hash_unique(arr: pa.Array) -> np.ndarray:
    """uint64 keys of a string array (no nulls expected: they hash like "")."""
    off, data = string_buffers(arr)
    lengths = np.diff(off)
    h = np.full(len(arr), _FNV_OFFSET, dtype=np.uint64)
    start = off[:-1]
    long = np.flatnonzero(lengths > LONG_VALUE_BYTES)  # one free-text cell must not cost a pass per byte
    short = lengths.copy()
    short[long] = 0
    with np.errstate(over="ignore"):
        for pos in range(int(short.max()) if short.size else 0):  # one pass per byte position
            live = np.flatnonzero(short > pos)
            h[live] = (h[live] ^ data[start[live] + pos].astype(np.uint64)) * _FNV_PRIME
        for i in long.tolist():
            h[i] = _fnv1a(data[start[i]: start[i] + lengths[i]].tobytes())
        return _fmix64(h)


def as_strings(arr: pa.Array) -> pa.Array:
    """Any scalar column -> string (integers as decimal text, floats as float_text); a chunked column is combined
    first."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_large_string(arr.type):
        return arr.cast(pa.string())
    if pa.types.is_floating(arr.type):
        return float_text(arr)
    return arr if pa.types.is_string(arr.type) else pc.cast(arr, pa.string())


def float_text(arr: pa.Array) -> pa.Array:
    """A float column as the text a CSV of it holds: an integral value as its integer (3.0 -> "3", 123456789012.0
    -> "123456789012", -0.0 -> "0": pandas writes an int id column with nulls as float64), any other as Python's
    shortest repr (3.5 -> "3.5", 1e-07 -> "1e-07"; numpy's Dragon4, as pandas' to_csv writes it); NaN and nulls
    are null (empty). Arrow's own cast writes 1.23456789012e+11 and -0, which would be other ids."""
    v = arr.to_numpy(zero_copy_only=False)  # nulls -> NaN
    valid = ~np.isnan(v)
    integral = valid & np.isfinite(v) & (np.abs(v) < 2.0**63)
    integral[integral] = v[integral] == np.floor(v[integral])
    out = pc.cast(pa.array(np.where(integral, v, 0).astype(np.int64), mask=~valid), pa.string())
    other = valid & ~integral  # 3.5, inf: few in an id column (numpy's repr runs at ~1M values/s)
    if other.any():
        out = pc.replace_with_mask(out, pa.array(other), pa.array(v[other].astype(str), pa.string()))
    return out


def hash_strings(arr: pa.Array) -> Tuple[np.ndarray, np.ndarray]:
    """String column -> (keys int64 [n], empty bool [n]); null and "" are empty (key 0).

    Each distinct value of the column is hashed once (dictionary encoding), then looked up per row.
    """
    arr = as_strings(arr)
    n = len(arr)
    empty = pc.fill_null(pc.equal(pc.utf8_length(arr), 0), True).to_numpy(zero_copy_only=False)
    if n == 0 or empty.all():
        return np.zeros(n, np.int64), empty
    enc = pc.dictionary_encode(arr)
    keys = _hash_unique(enc.dictionary).view(np.int64)
    idx = enc.indices.fill_null(0).to_numpy(zero_copy_only=False)
    return np.where(empty, 0, keys[idx]), empty


def parse_numbers(arr: pa.Array) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Number column (strings from CSV, or numeric / bool Parquet) -> (values float64, empty bool, bad bool).

    Empty = null or ""; bad = text that is not a decimal number, or a value that is not finite (nan, inf).
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        text = pc.utf8_trim_whitespace(arr)
        empty = pc.fill_null(pc.equal(pc.utf8_length(text), 0), True).to_numpy(zero_copy_only=False)
        ok = pc.fill_null(pc.match_substring_regex(text, _NUMBER), False).to_numpy(zero_copy_only=False)
        bad = ~ok & ~empty
        nums = pc.cast(pc.if_else(pa.array(ok), text, pa.scalar(None, pa.string())), pa.float64())
    elif pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type) \
            or pa.types.is_decimal(arr.type):
        empty = arr.is_null().to_numpy(zero_copy_only=False)
        bad = np.zeros(n, dtype=bool)
        nums = pc.cast(arr, pa.float64())
    else:
        raise TypeError(f"column of type {arr.type} is not numeric")
    values = nums.fill_null(0.0).to_numpy(zero_copy_only=False).astype(np.float64, copy=True)
    nonfinite = ~np.isfinite(values)
    bad |= nonfinite & ~empty
    values[nonfinite | empty] = 0.0
    return values, empty, bad


def parse_timestamps(arr: pa.Array) -> Tuple[np.ndarray, np.ndarray]:
    """Timestamp column -> (seconds since the epoch float64, bad bool); null / empty / unparsable are bad.

    Accepted: numbers (epoch seconds, |x| < MAX_EPOCH_SECONDS: a larger one is in ms / us / ns, would sort after
    every date and is bad), ISO-8601 text (`2024-03-01T12:00:00`, `2024-03-01 12:00`, `2024-03-01`, fractions of a
    second up to nanoseconds), and Parquet timestamp / date columns (any unit).
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_date(arr.type):
        arr = pc.cast(arr, pa.timestamp("s"))
    if pa.types.is_timestamp(arr.type):  # in its own unit: a cast of ns to us refuses sub-microsecond values
        ticks = pc.cast(arr, pa.int64())
        bad = ticks.is_null().to_numpy(zero_copy_only=False)
        return ticks.fill_null(0).to_numpy(zero_copy_only=False) / TICKS_PER_SECOND[arr.type.unit], bad
    values, empty, bad = parse_numbers(arr)  # epoch seconds (as text in a CSV)
    too_large = ~empty & (np.abs(values) >= MAX_EPOCH_SECONDS)  # milli- / micro- / nanoseconds, not seconds
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return values, bad | empty | too_large
    text_rows = np.flatnonzero(bad)
    if text_rows.size:
        sub = pc.utf8_trim_whitespace(arr.take(pa.array(text_rows)))
        secs = _iso_seconds(sub)
        if secs is None:  # some are not ISO-8601 (or mix zone styles): value by value
            secs = np.array([_iso_seconds(pa.array([s], pa.string()), nan=True)[0] for s in sub.to_pylist()])
        ok = np.isfinite(secs)
        values[text_rows[ok]] = secs[ok]
        bad[text_rows[ok]] = False
    return values, bad | empty | too_large


def _iso_seconds(text: pa.Array, nan: bool = False):
    """ISO-8601 strings -> seconds since the epoch (naive times, or with a zone offset such as Z / +02:00);
    None if any does not parse (or [nan] for a single unparsable value with nan=True)."""
    for unit in (pa.timestamp("us"), pa.timestamp("us", tz="UTC"),
                 pa.timestamp("ns"), pa.timestamp("ns", tz="UTC")):  # ns: 7-9 digits
        try:
            ticks = pc.cast(pc.cast(text, unit), pa.int64()).to_numpy(zero_copy_only=False)
            return ticks / TICKS_PER_SECOND[unit.unit]
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return np.array([np.nan]) if nan else None


def split_lists(arr: pa.Array, separator: str, max_length: int | None) -> Tuple[np.ndarray, pa.Array]:
    """Multi-valued column -> (lengths int32 [n], flat string values).

    A string column is split at `separator`; a list column is taken as is (its items as strings). Empty items
    ("a||b") and empty / null rows contribute no value; a row keeps its first `max_length` items.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        lists = pc.split_pattern(arr, separator)
    elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        lists = arr
    else:
        raise TypeError(f"column of type {arr.type} is neither a string nor a list")
    items = as_strings(pc.list_flatten(lists))
    parent = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    keep = pc.fill_null(pc.greater(pc.utf8_length(items), 0), False).to_numpy(zero_copy_only=False)
    items, parent = items.filter(pa.array(keep)), parent[keep]
    if max_length is not None and parent.size:
        first = np.r_[0, np.flatnonzero(np.diff(parent)) + 1]  # start of each row's run (parents are sorted)
        pos = np.arange(parent.size) - np.repeat(first, np.diff(np.r_[first, parent.size]))
        short = pos < max_length
        items, parent = items.filter(pa.array(short)), parent[short]
    lengths = np.bincount(parent, minlength=n).astype(np.int32)
    return lengths, items
