"""Raw input files of `prepare`: gzip-tolerant byte streams, blocks of whole lines parsed as CSV without read-ahead,
line counting, physical line numbers of parsed rows, the input list expanded to files.

Shared by the Criteo ingest (criteo_prepare) and the schema-driven one (tabular_prepare).
"""

from __future__ import annotations

import io
import re
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from recsys_dist.data.bad_rows import PrepareError


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


def expand_inputs(inputs: List[str], in_folder: Callable[[Path], bool], empty: str, none_inside: str,
                  check_file: Optional[Callable[[Path], None]] = None) -> List[Path]:
    """`prepare.input` -> files: each file as given (`check_file` may refuse it), each folder's files that
    `in_folder` accepts, by name. Errors: `empty` when nothing is given, "<folder>: <none_inside>" for a folder
    without such files, "<path>: no such file or folder"."""
    if not inputs:
        raise PrepareError(empty)
    found: List[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            kids = sorted(k for k in p.iterdir() if k.is_file() and in_folder(k))
            if not kids:
                raise PrepareError(f"{p}: {none_inside}")
            found += kids
        elif p.is_file():
            if check_file is not None:
                check_file(p)
            found.append(p)
        else:
            raise PrepareError(f"{p}: no such file or folder")
    return found


def open_raw(path: str) -> Any:
    """A binary stream of the file's bytes, decompressed for `.gz` (see GzipReader for a cut stream)."""
    return io.BufferedReader(GzipReader(path), 1 << 20) if path.endswith(".gz") else open(path, "rb")


def line_blocks(stream: Any, block_bytes: int) -> Iterator[memoryview]:
    """The stream's bytes as pieces of whole lines: each is one `block_bytes` read plus the partial line carried
    over from the previous read, cut after its last "\n"; the last (short) read is not cut, so the final piece may
    lack one (the same pieces as pyarrow's CSV reader's blocks). Reads only when the next piece is asked for, so
    memory is one piece whatever the file size; pyarrow's streaming CSV reader instead reads up to 32 blocks ahead
    on a background thread (ARROW-12090: 256 MiB of 8 MiB blocks).

    A line longer than `block_bytes` raises LineTooLong after the last full piece.
    """
    tail = b""
    while chunk := stream.read(block_bytes):
        data = tail + chunk if tail else chunk
        if len(chunk) < block_bytes:  # a short read is the end of the stream: the rest is one piece
            tail = b""
            yield memoryview(data)
            continue
        cut = data.rfind(b"\n", len(tail)) + 1
        if cut == 0:  # no line end in this read: the tail line goes on (an error once it outgrows a block)
            if len(data) > block_bytes:
                raise LineTooLong(f"a line longer than {block_bytes} bytes (no line break in {len(data)} bytes)")
            tail = data
            continue
        tail = data[cut:]
        yield memoryview(data)[:cut]
    if tail:
        yield memoryview(tail)


class LineTooLong(ValueError):
    """A raw line longer than the read block: not line-oriented text (or a block size far too small)."""


def csv_batches(stream: Any, block_bytes: int, column_names: List[str], parse: pacsv.ParseOptions,
                convert: pacsv.ConvertOptions, on_invalid: Callable[[int, Any], None],
                skip_first_line: bool = False) -> Iterator[pa.RecordBatch]:
    """The stream's CSV rows, one RecordBatch per line_blocks piece, each piece parsed on its own (memory: one
    piece, whatever the file size). A row is one line (newlines_in_values=False) and an empty line is a row of
    nulls (ignore_empty_lines=False), whatever `parse` says; `parse`'s delimiter and quoting are kept, its
    invalid_row_handler is replaced: a row with the wrong number of fields is skipped and `on_invalid(line, row)`
    gets its physical line, 1-based over the whole stream (Arrow numbers each piece's lines from 1). With
    `skip_first_line` the first line (a header) is skipped but counted. Arrow's conversion errors (ArrowInvalid)
    are re-raised with their "Row #N" counted over the whole stream too. A line longer than `block_bytes` raises
    LineTooLong (the rows before it have been yielded).
    """
    lines_before = 0  # physical lines in the pieces before the current one
    invalid = 0  # invalid rows in the current piece

    def handler(row: Any) -> str:
        nonlocal invalid
        invalid += 1
        on_invalid(lines_before + row.number, row)
        return "skip"

    parse = pacsv.ParseOptions(delimiter=parse.delimiter, quote_char=parse.quote_char, double_quote=parse.double_quote,
                               escape_char=parse.escape_char, newlines_in_values=False, ignore_empty_lines=False,
                               invalid_row_handler=handler)
    for piece in line_blocks(stream, block_bytes):
        if skip_first_line and lines_before == 0:  # the first piece holds the whole first line: cut it off
            lines_before = 1
            end = piece.tobytes().find(b"\n")
            piece = piece[end + 1:] if end >= 0 else piece[len(piece):]
            if not len(piece):
                continue
        read = pacsv.ReadOptions(column_names=column_names, use_threads=False, block_size=len(piece) + 1)
        rows, invalid = 0, 0
        try:
            for batch in pacsv.open_csv(pa.py_buffer(piece), read_options=read, parse_options=parse,
                                        convert_options=convert):
                rows += batch.num_rows
                yield batch
        except pa.ArrowInvalid as e:
            raise pa.ArrowInvalid(re.sub(r"Row #(\d+)", lambda m: f"Row #{lines_before + int(m.group(1))}",
                                         str(e))) from None
        lines_before += rows + invalid
        del piece  # before the next read: one piece in memory at a time


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
