"""Malformed Criteo input for the ingest tests, and an independent oracle.

The generator writes good Criteo lines (legal edge values included) and one bad line per defect class; the oracle
judges a raw line with its own tiny strict parser, written from the grammar in docs/data.md with Python's str and
int only (no pyarrow, no numpy, nothing from recsys_dist):

    line    = bytes up to LF; a CR right before the LF is dropped; must be UTF-8 without NUL or CR
    fields  = 40, tab-separated
    label   = "0" | "1"
    I1..I13 = "" | ASCII -?[0-9]+ within int64
    C1..C26 = "" | 8 ASCII hex digits

and names the first failing check, in this order: invalid_utf8, nul_byte, carriage_return (with the field that
holds the first offending byte), empty_line, column_count, label, dense_not_integer (I1..I13),
categorical_not_hex (C1..C26).
"""

from __future__ import annotations

import gzip
import math
import random
import zlib
from typing import Callable, Dict, List, Optional, Tuple

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
HEX = "0123456789abcdefABCDEF"
DIGITS = "0123456789"


# -- the oracle -----------------------------------------------------------------------------------------------
def judge(raw: bytes, had_lf: bool = True) -> Tuple[Optional[str], Optional[str]]:
    """(kind, field) of a raw line (without its LF; `had_lf` False for a last line without one), (None, None) for a
    good one."""
    if raw.endswith(b"\r") and had_lf:
        raw = raw[:-1]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return "invalid_utf8", _field_at(raw, e.start)
    if "\0" in text:
        return "nul_byte", _field_at(raw, raw.index(b"\0"))
    if "\r" in text:
        return "carriage_return", _field_at(raw, raw.index(b"\r"))
    if text == "":
        return "empty_line", None
    fields = text.split("\t")
    if len(fields) != 40:
        return "column_count", None
    if fields[0] not in ("0", "1"):
        return "label", "label"
    for i, f in enumerate(fields[1:14]):
        if f and not _is_int64(f):
            return "dense_not_integer", f"I{i + 1}"
    for i, f in enumerate(fields[14:]):
        if f and not (len(f) == 8 and all(c in HEX for c in f)):
            return "categorical_not_hex", f"C{i + 1}"
    return None, None


def _field_at(raw: bytes, pos: int) -> Optional[str]:
    """The name of the field holding byte `pos` (None past the 40th)."""
    k = raw[:pos].count(b"\t")
    return None if k >= 40 else "label" if k == 0 else f"I{k}" if k <= 13 else f"C{k - 13}"


def _is_int64(f: str) -> bool:
    digits = f[1:] if f.startswith("-") else f
    if not digits or any(c not in DIGITS for c in digits):
        return False
    return INT64_MIN <= int(f) <= INT64_MAX


def values(raw: bytes) -> Tuple[int, List[Optional[int]], List[Optional[int]]]:
    """(label, I1..I13 ints or None for empty, C1..C26 ints or None) of a good line."""
    fields = raw.rstrip(b"\r").decode().split("\t")
    return (int(fields[0]), [int(f) if f else None for f in fields[1:14]],
            [int(f, 16) if f else None for f in fields[14:]])


def lines_of(data: bytes) -> List[bytes]:
    """The lines of a decoded stream: split on LF only; a last line without LF counts."""
    parts = data.split(b"\n")
    return parts[:-1] if parts[-1] == b"" else parts


def expected_log_dense(x: Optional[int]) -> float:
    return 0.0 if x is None else math.log1p(max(x, 0))


def decode_gzip_upto_damage(blob: bytes) -> Tuple[bytes, Optional[str]]:
    """Every byte that decodes before a damaged spot, fed one compressed byte at a time; and the damage kind."""
    d, out = zlib.decompressobj(wbits=31), []
    try:
        for i in range(len(blob)):
            out.append(d.decompress(blob[i: i + 1]))
            while d.eof and d.unused_data:
                rest = d.unused_data
                d = zlib.decompressobj(wbits=31)
                out.append(d.decompress(rest))
    except zlib.error:
        return b"".join(out), "corrupt_gz"
    return b"".join(out), (None if d.eof else "truncated_gz")


# -- the generator ----------------------------------------------------------------------------------------------
EDGE_INTS = ["0", "-0", "7", "-3", "007", "-0042", str(INT64_MAX), str(INT64_MIN), "0" * 30 + "5",
             "-" + "0" * 25 + str(-INT64_MIN), ""]


def good_fields(rng: random.Random) -> List[str]:
    label = rng.choice("01")
    dense = [rng.choice(EDGE_INTS) if rng.random() < 0.3 else str(rng.randint(-5, 10**6)) for _ in range(13)]
    cats = ["" if rng.random() < 0.1 else "".join(rng.choice(HEX) for _ in range(8)) for _ in range(26)]
    return [label] + dense + cats


def good_line(rng: random.Random) -> bytes:
    return "\t".join(good_fields(rng)).encode()


def _with(rng: random.Random, col: Callable[[random.Random], int], value: str) -> bytes:
    f = good_fields(rng)
    f[col(rng)] = value
    return "\t".join(f).encode()


def _dense(rng: random.Random) -> int:
    return rng.randint(1, 13)


def _cat(rng: random.Random) -> int:
    return rng.randint(14, 39)


def _insert(rng: random.Random, junk: bytes) -> bytes:
    line = good_line(rng)
    at = rng.randint(0, len(line))
    return line[:at] + junk + line[at:]


# each defect class: a function making one bad line (without its LF) and the kind the oracle gives it
DEFECTS: Dict[str, Callable[[random.Random], bytes]] = {
    "label_2": lambda r: _with(r, lambda _: 0, "2"),
    "label_empty": lambda r: _with(r, lambda _: 0, ""),
    "label_00": lambda r: _with(r, lambda _: 0, "00"),
    "int_hex_0x10": lambda r: _with(r, _dense, "0x10"),
    "int_plus": lambda r: _with(r, _dense, "+5"),
    "int_underscore": lambda r: _with(r, _dense, "1_000"),
    "int_exponent": lambda r: _with(r, _dense, "1e3"),
    "int_space": lambda r: _with(r, _dense, " 7"),
    "int_trailing_space": lambda r: _with(r, _dense, "7 "),
    "int_fullwidth": lambda r: _with(r, _dense, "\uff15"),
    "int_quoted": lambda r: _with(r, _dense, '"5"'),
    "int_float": lambda r: _with(r, _dense, "1.5"),
    "int_minus_only": lambda r: _with(r, _dense, "-"),
    "int_double_minus": lambda r: _with(r, _dense, "--5"),
    "int_over": lambda r: _with(r, _dense, str(INT64_MAX + 1)),
    "int_under": lambda r: _with(r, _dense, str(INT64_MIN - 1)),
    "int_huge": lambda r: _with(r, _dense, "9" * 40),
    "cat_short": lambda r: _with(r, _cat, "abc"),
    "cat_long": lambda r: _with(r, _cat, "0123456789"),
    "cat_nonhex": lambda r: _with(r, _cat, "zzzzzzzz"),
    "cat_0x": lambda r: _with(r, _cat, "0x123456"),
    "cat_fullwidth": lambda r: _with(r, _cat, "\uff10" * 8),
    "too_few_fields": lambda r: b"\t".join(good_line(r).split(b"\t")[: r.randint(1, 39)]),
    "too_many_fields": lambda r: good_line(r) + b"\t" + good_line(r),
    "empty_line": lambda r: b"",
    "crlf_empty_line": lambda r: b"\r",
    "invalid_utf8": lambda r: _insert(r, bytes([r.choice([0x80, 0xC3, 0xE2, 0xF0, 0xFF, 0xC0])])),
    "overlong_utf8": lambda r: _insert(r, b"\xc0\xaf"),
    "surrogate_utf8": lambda r: _insert(r, b"\xed\xa0\x80"),
    "nul_byte": lambda r: _insert(r, b"\0"),
    "lone_cr": lambda r: _insert(r, b"\r"),
    "random_binary": lambda r: bytes(r.choice([b for b in range(256) if b != 10]) for _ in range(r.randint(1, 300))),
}


def good_variants(rng: random.Random) -> List[bytes]:
    """Good lines that a careless parser gets wrong: CRLF, every dense empty, edges of int64, upper-case hex."""
    f = good_fields(rng)
    return [good_line(rng) + b"\r", "\t".join(f[:1] + [""] * 39).encode(),
            "\t".join(f[:1] + [str(INT64_MIN), str(INT64_MAX)] + f[3:]).encode(),
            "\t".join(f[:14] + ["DEADBEEF"] * 26).encode()]


def gzip_members(data: bytes, rng: random.Random, members: int) -> bytes:
    """`data` as a multi-member gzip stream, cut at random byte offsets (inside lines too)."""
    cuts = sorted(rng.sample(range(1, max(len(data), 2)), min(members - 1, max(len(data) - 1, 0))))
    bounds = [0] + cuts + [len(data)]
    return b"".join(gzip.compress(data[a:b]) for a, b in zip(bounds, bounds[1:]))
