"""Raw input files of `prepare`: gzip-tolerant byte streams, line counting, physical line numbers of parsed rows.

Shared by the Criteo ingest (criteo_prepare) and the schema-driven one (tabular_prepare).
"""

from __future__ import annotations

import io
import zlib
from typing import Any, Optional

import numpy as np


class GzipReader(io.RawIOBase):
    """A gzip stream (multi-member too) that stops cleanly at a truncated end and remembers why."""

    def __init__(self, path: str) -> None:
        self._f = open(path, "rb")
        self._d = zlib.decompressobj(wbits=31)
        self._buf = b""
        self.problem: Optional[str] = None  # "truncated_gz" | "corrupt_gz"
        self.detail = ""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            chunk = self._f.read(1 << 20)
            if not chunk:
                if not self._d.eof and self.problem is None:
                    self.problem, self.detail = "truncated_gz", "gzip stream ends early (truncated file)"
                return 0
            try:
                self._buf = self._d.decompress(chunk)
                while self._d.eof and self._d.unused_data:  # next gzip member
                    rest = self._d.unused_data
                    self._d = zlib.decompressobj(wbits=31)
                    self._buf += self._d.decompress(rest)
            except zlib.error as e:
                self.problem, self.detail = "corrupt_gz", f"gzip stream is corrupt ({e})"
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def open_raw(path: str) -> Any:
    """A binary stream of the file's bytes, decompressed for `.gz` (see GzipReader for a cut stream)."""
    return io.BufferedReader(GzipReader(path), 1 << 20) if path.endswith(".gz") else open(path, "rb")


def count_lines(path: str) -> int:
    """Physical lines (a last line without newline counts), of the decompressed stream for .gz."""
    n, last = 0, b"\n"
    with open_raw(path) as f:
        while chunk := f.read(16 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def physical_lines(valid_index: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """Physical line (1-based) of the i-th parsed row, given the sorted line numbers of the skipped rows."""
    c = invalid - np.arange(invalid.size)
    return valid_index + 1 + np.searchsorted(c, valid_index + 1, side="right")
