"""Per-line byte checks of raw text input, vectorized over a block of whole lines (numpy, no Python per line).

A line is the bytes between two LF (b"\\n"); a CR right before its LF is not part of it. Each check looks at a
line's own bytes only, so a line's verdict never depends on its neighbours or on where a block was cut:

* invalid UTF-8 (strict, as Python's decoder: no overlong forms, surrogates or code points above U+10FFFF),
* a NUL byte,
* a CR anywhere but right before the LF (CSV parsers take it as a line break, which would shift the line numbers),
* (CSV with quoting) an odd number of quote characters: a quoted field that does not end on its line. Such a
  line is either the first or last line of a record whose quoted field holds a newline (raw_files.LineReader reads
  the lines from one odd line to the next as one record when the CSV parser makes one valid row of them), or a
  stray quote (a bad line).

`LineIndex(block)` finds the lines of a block; `line_defects(block, index)` returns each line's first defect.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

UTF8, NUL, CR, QUOTE = 1, 2, 3, 4  # defect codes, in order of precedence (a line gets the first that applies)
DEFECT_KINDS = {UTF8: "invalid_utf8", NUL: "nul_byte", CR: "carriage_return", QUOTE: "unparsable"}

# UTF-8 lead bytes: how many continuation bytes follow (0 for ASCII and for continuation bytes themselves)
_FOLLOW = np.zeros(256, dtype=np.uint8)
_FOLLOW[0xC2:0xE0] = 1
_FOLLOW[0xE0:0xF0] = 2
_FOLLOW[0xF0:0xF5] = 3
_NEVER = np.zeros(256, dtype=bool)  # bytes that never occur in UTF-8
_NEVER[[0xC0, 0xC1]] = True
_NEVER[0xF5:] = True
# second-byte limits after E0 / ED / F0 / F4 (no overlong 3- / 4-byte forms, no surrogates, <= U+10FFFF)
_SECOND_LO = np.full(256, 0x80, dtype=np.uint8)
_SECOND_HI = np.full(256, 0xBF, dtype=np.uint8)
_SECOND_LO[0xE0], _SECOND_HI[0xED], _SECOND_LO[0xF0], _SECOND_HI[0xF4] = 0xA0, 0x9F, 0x90, 0x8F


class LineIndex:
    """Where the lines of a block are: `start[i]`, `end[i]` (content end: without the LF and a CR before it) and
    `term[i]` (the LF's offset, or len(block) for a last line without one)."""

    def __init__(self, d: np.ndarray) -> None:
        lf = np.flatnonzero(d == 10)
        start = np.concatenate([[0], lf + 1])
        term = np.concatenate([lf, [d.size]])
        if start[-1] == d.size:  # the block ends with LF: no line after it
            start, term = start[:-1], term[:-1]
        end = term.copy()
        has_lf = term < d.size
        cr = np.zeros(term.size, dtype=bool)
        cr[has_lf & (term > start)] = d[term[has_lf & (term > start)] - 1] == 13
        end[cr] -= 1
        self.start, self.end, self.term = start.astype(np.int64), end.astype(np.int64), term.astype(np.int64)

    def __len__(self) -> int:
        return int(self.start.size)

    def line_of(self, pos: np.ndarray) -> np.ndarray:
        """Line index of each byte offset (a terminator belongs to the line it ends)."""
        return np.searchsorted(self.start, pos, side="right") - 1


def utf8_error_offsets(d: np.ndarray) -> np.ndarray:
    """Offsets where strict UTF-8 decoding of `d` fails, each at the start of the bad sequence (as
    UnicodeDecodeError.start: a lead byte whose continuation bytes are missing or out of range, or a byte that
    cannot start a sequence). Sorted, vectorized."""
    n = d.size
    if not n:
        return np.zeros(0, dtype=np.int64)
    x = np.concatenate([d, np.zeros(3, dtype=np.uint8)])  # ASCII padding: a sequence cut by the end fails
    follow = _FOLLOW[x]
    cont = (x & 0xC0) == 0x80
    f = follow[:n]
    bad_lead = (f >= 1) & ~cont[1: n + 1] | (f >= 2) & ~cont[2: n + 2] | (f >= 3) & ~cont[3: n + 3]
    bad_lead |= cont[1: n + 1] & ((x[1: n + 1] < _SECOND_LO[x[:n]]) | (x[1: n + 1] > _SECOND_HI[x[:n]]))
    owned = np.zeros(n, dtype=bool)  # a continuation byte that a lead before it asks for
    owned[1:] |= follow[: n - 1] >= 1
    owned[2:] |= (follow[: max(n - 2, 0)] >= 2) & cont[1: max(n - 1, 1)]
    owned[3:] |= (follow[: max(n - 3, 0)] >= 3) & cont[1: max(n - 2, 1)] & cont[2: max(n - 1, 2)]
    stray = _NEVER[x[:n]] | (cont[:n] & ~owned)
    return np.flatnonzero(bad_lead | stray)


def quote_positions(d: np.ndarray, quote: int, escape: Optional[int] = None) -> np.ndarray:
    """Offsets of the `quote` bytes of `d`, without those escaped by `escape` (a quote after an odd run of escape
    bytes: `\\"` is escaped, `\\\\"` is not)."""
    q = np.flatnonzero(d == quote)
    if escape is None or not q.size:
        return q
    after = np.flatnonzero((q > 0) & (d[np.maximum(q - 1, 0)] == escape))  # quotes right after an escape byte
    if not after.size:
        return q
    e = np.flatnonzero(d == escape)
    run_start = np.maximum.accumulate(np.where(np.r_[True, np.diff(e) != 1], np.arange(e.size), 0))
    j = np.searchsorted(e, q[after] - 1)  # the escape byte right before each
    escaped = np.zeros(q.size, dtype=bool)
    escaped[after[(j - run_start[j] + 1) % 2 == 1]] = True
    return q[~escaped]


def odd_quote_lines(d: np.ndarray, index: LineIndex, quote: int, escape: Optional[int] = None) -> np.ndarray:
    """Lines with an odd number of (unescaped) `quote` bytes (bool [lines])."""
    q = quote_positions(d, quote, escape)
    return np.bincount(index.line_of(q), minlength=len(index)) % 2 == 1 if q.size else np.zeros(len(index), bool)


def has_odd_quote_line(d: np.ndarray, quote: int, escape: Optional[int] = None) -> bool:
    """Some line of `d` (starting at a line start) holds an odd number of (unescaped) `quote` bytes: the quotes
    counted up to each LF (and in all) are all even otherwise. No line index: the check of a clean block stays
    cheap."""
    q = quote_positions(d, quote, escape)
    return bool(q.size & 1 or (np.searchsorted(q, np.flatnonzero(d == 10)) & 1).any())


def line_defects(d: np.ndarray, index: LineIndex, check_utf8: bool,
                 quote: Optional[int] = None, escape: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(code [lines] int8: 0 or the first defect of UTF8 / NUL / CR / QUOTE in precedence order, offset [lines]
    of that defect's first byte in the block (QUOTE: the line's last quote), -1 where none). `check_utf8=False`
    when the block is known to be valid; `quote` None: no quoting (no QUOTE check); `escape`: the quotes' escape
    byte."""
    n = len(index)
    code = np.zeros(n, dtype=np.int8)
    where = np.full(n, -1, dtype=np.int64)

    def mark(kind: int, pos: np.ndarray) -> None:
        if not pos.size:
            return
        lines = index.line_of(pos)
        lines, first = np.unique(lines, return_index=True)  # pos sorted: the first offset in each line
        code[lines] = kind
        where[lines] = pos[first]

    if quote is not None:
        odd = np.flatnonzero(odd_quote_lines(d, index, quote, escape))
        if odd.size:
            q = quote_positions(d, quote, escape)
            last = np.searchsorted(q, index.term[odd], side="left") - 1  # the line's last quote
            code[odd], where[odd] = QUOTE, q[last]
    cr = np.flatnonzero(d == 13)  # marked in reverse precedence: a later mark overrides
    if cr.size:
        after = np.concatenate([d, [0]])[cr + 1]
        mark(CR, cr[after != 10])
    mark(NUL, np.flatnonzero(d == 0))
    if check_utf8:
        mark(UTF8, _utf8_errors_of_lines(d, index))
    return code, where


def _utf8_errors_of_lines(d: np.ndarray, index: LineIndex) -> np.ndarray:
    """utf8_error_offsets of the block, looking only at the lines that hold a non-ASCII byte (each with its LF,
    an ASCII byte, so no sequence runs into the next line)."""
    lines = np.unique(index.line_of(np.flatnonzero(d >= 0x80)))
    if not lines.size:
        return lines
    start = index.start[lines]
    size = np.minimum(index.term[lines] + 1, d.size) - start
    offs = np.repeat(start - np.concatenate([[0], np.cumsum(size)[:-1]]), size) + np.arange(int(size.sum()))
    return offs[utf8_error_offsets(d[offs])]
