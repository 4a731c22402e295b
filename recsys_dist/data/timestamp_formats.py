"""The schema's `timestamp:` forms beyond a bare column name, parsed per block by Arrow (no per-row Python):

    timestamp: ts                                 epoch seconds, ISO-8601 text, a Parquet timestamp / date
    timestamp: {column: hour, format: "%y%m%d%H"}  text (or integers) in a strptime format (Avazu's 14102100)
    timestamp: {column: ts, unit: ms}             epoch numbers in s / ms / us / ns

A format is read by pyarrow.compute.strptime, whose parser accepts more than the format says (an unpadded
'1410210' for %y%m%d%H, 2024-02-30 as March 1st): a cell counts only if formatting its time back gives the cell
again, up to case, spaces and leading zeros of a number ('7/1/2024 1:05' is '07/01/2024 01:05'). For a bare name,
a bad cell's message names the key that would read it, and a column of numbers that all look like compact dates
(20240107, read as epoch seconds: 1970-08-23) is warned about (compact_date_warning).
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_dist.data.tabular_encode import MAX_EPOCH_SECONDS, TICKS_PER_SECOND, as_strings, parse_numbers

UNITS = ("s", "ms", "us", "ns")
UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
# strptime directives Arrow both reads and writes back (%j, %U, %z ... are read but ignored or not written)
DIRECTIVES = "YymdeHIMSpbBhaAFTDR%"
_DATE_DIRECTIVES = "YyFD"
BARE_EXPECTED = "epoch seconds (below 1e11: not milliseconds) or ISO-8601 date / time"


def format_problem(fmt: str) -> Optional[str]:
    """Why `fmt` cannot be a timestamp format (None if it can)."""
    found = re.findall(r"%(.?)", fmt)
    if not found:
        return 'has no % directive: expected a strptime format such as "%Y%m%d" or "%d/%m/%Y %H:%M"'
    unknown = [d for d in found if d not in DIRECTIVES]
    if unknown:
        return (f"%{unknown[0]} is not a directive prepare reads (known: "
                f"{' '.join('%' + d for d in DIRECTIVES)}; zone offsets: ISO-8601 text with `timestamp: COLUMN`)")
    if not set(found) & set(_DATE_DIRECTIVES):
        return "has no year (%Y, %y, %F or %D): a time split needs dates"
    return None


def _normal(text: pa.Array) -> pa.Array:
    """Text compared up to case, runs of spaces and leading zeros of a number."""
    text = pc.utf8_lower(pc.utf8_trim_whitespace(text))
    text = pc.replace_substring_regex(text, r"\s+", " ")
    return pc.replace_substring_regex(text, r"(^|[^0-9])0+([0-9])", r"\1\2")


def parse_formatted(arr: pa.Array, fmt: str) -> Tuple[np.ndarray, np.ndarray]:
    """Cells in strptime format `fmt` -> (seconds since the epoch float64, bad bool); a time without a zone is
    UTC; an empty cell, one that does not parse or that does not format back to itself is bad."""
    cells = pc.dictionary_encode(pc.utf8_trim_whitespace(as_strings(arr)))  # logs repeat times: parse each once
    text = cells.dictionary
    ts = pc.strptime(text, format=fmt, unit="s", error_is_null=True)
    back = pc.strftime(ts, format=fmt)
    ok = pc.fill_null(pc.equal(back, text), False).to_numpy(zero_copy_only=False)
    differ = np.flatnonzero(~ok & pc.is_valid(ts).to_numpy(zero_copy_only=False))  # unpadded, other case
    if differ.size:
        at = pa.array(differ)
        ok[differ] = pc.equal(_normal(back.take(at)), _normal(text.take(at))).to_numpy(zero_copy_only=False)
    ok = np.append(ok, False)
    seconds = np.append(pc.cast(ts, pa.int64()).fill_null(0).to_numpy(zero_copy_only=False), 0)
    idx = cells.indices.fill_null(len(text)).to_numpy(zero_copy_only=False)  # a null cell: the appended "bad"
    return np.where(ok[idx], seconds[idx], 0).astype(np.float64), ~ok[idx]


def parse_epoch(arr: pa.Array, unit: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epoch numbers in `unit` (text or numeric) -> (seconds float64, bad bool, too_large bool): empty and
    non-numbers are bad; too_large: |seconds| >= MAX_EPOCH_SECONDS (a value in a finer unit than `unit`)."""
    values, empty, bad = parse_numbers(arr)
    seconds = values / TICKS_PER_SECOND[unit]
    too_large = ~empty & ~bad & (np.abs(seconds) >= MAX_EPOCH_SECONDS)
    return seconds, bad | empty | too_large, too_large


def finer_unit(values: np.ndarray) -> np.ndarray:
    """The epoch unit an epoch-seconds value >= 1e11 most likely is in (ms up to 1e14, us up to 1e17, else ns)."""
    a = np.abs(values)
    return np.where(a < 1e14, "ms", np.where(a < 1e17, "us", "ns"))


def bare_checks(raw: pa.Array, bad: np.ndarray, column: str) -> List[Tuple[np.ndarray, str]]:
    """(mask, expected) per kind of bad cell of a bare `timestamp: column`, each naming the key that reads it:
    epoch numbers in a finer unit -> {column, unit}; other text -> {column, format}."""
    n = bad.size
    rows = np.flatnonzero(bad)
    values, empty, not_number = parse_numbers(raw.take(pa.array(rows))) if rows.size else (np.zeros(0),) * 3
    large = ~empty & ~not_number
    out: List[Tuple[np.ndarray, str]] = []
    units = finer_unit(values[large])
    for unit in UNITS[1:]:
        mask = np.zeros(n, dtype=bool)
        mask[rows[large][units == unit]] = True
        if mask.any():
            out.append((mask, f"{BARE_EXPECTED}; for epoch {UNIT_NAMES[unit]} write "
                              f"timestamp: {{column: {column}, unit: {unit}}}"))
    text, blank = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    text[rows[~large & ~empty]] = True
    blank[rows[empty]] = True
    out.append((text, f"{BARE_EXPECTED}; for another format write timestamp: {{column: {column}, format: "
                      '"%d/%m/%Y %H:%M"}} (strptime directives)'))
    out.append((blank, BARE_EXPECTED))
    return out


# compact dates that a bare name reads as epoch seconds: (format, digits' shape)
_COMPACT = (("%Y%m%d", 10**4, 10**2, 1, None), ("%y%m%d%H", 10**6, 10**4, 10**2, 1), ("%Y%m%d%H", 10**6, 10**4,
                                                                                          10**2, 1))


def compact_date_warning(seconds: np.ndarray, column: str, min_values: int = 10, share: float = 0.9) -> str:
    """A warning when most values (>= `share`) of a bare timestamp column, read as epoch seconds, look like
    compact dates: 20240107 (%Y%m%d), 14102100 (%y%m%d%H, Avazu's hour) or 2024010712 (%Y%m%d%H); else ""."""
    v = seconds[np.isfinite(seconds)]
    if v.size < min_values:
        return ""
    whole = (v == np.floor(v)) & (v > 0) & (v < 1e11)
    v = np.where(whole, v, 0).astype(np.int64)
    for fmt, y, m, d, h in _COMPACT:
        year, month, day = v // y, (v // m) % 100, (v // d) % 100
        ok = whole & (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)
        ok &= (year >= 1900) & (year <= 2100) if fmt.startswith("%Y") else year <= 99
        if h is not None:
            ok &= v % 100 <= 23
        if ok.mean() >= share:
            first = int(v[ok][0])
            return (f"timestamp: {column}: {100 * ok.mean():.0f}% of the values look like compact dates ({first}, "
                    f"as {fmt}) but a number is read as epoch seconds ({np.datetime64(first, 's')}); if they are "
                    f'dates write timestamp: {{column: {column}, format: "{fmt}"}}')
    return ""
