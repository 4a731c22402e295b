"""Raw input files of `prepare`: gzip-tolerant byte streams, blocks of whole lines read without read-ahead, each
line judged from its own bytes and the good ones parsed as CSV (LineReader), line counting, the input list expanded
to files.

Shared by the Criteo ingest (criteo_prepare) and the schema-driven one (tabular_prepare).
"""

from __future__ import annotations

import codecs
import csv
import glob
import io
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recsys_dist.data.bad_rows import PrepareConfigError
from recsys_dist.data.line_checks import (CR, DEFECT_KINDS, NUL, QUOTE, UTF8, LineIndex, has_odd_quote_line,
                                          line_defects, odd_quote_lines)


class GzipReader(io.RawIOBase):
    """A gzip stream (multi-member too) that stops cleanly at a truncated or corrupt spot and remembers why.

    Every byte that decodes before the damage is delivered: a compressed chunk that fails is decoded again in
    smaller steps, down to the failing byte."""

    def __init__(self, path: str) -> None:
        self._f = open(path, "rb")
        self._d = zlib.decompressobj(wbits=31)
        self._buf = b""
        self.problem: Optional[str] = None  # "truncated_gz" | "corrupt_gz"
        self.detail = ""

    def readable(self) -> bool:
        return True

    def _decode(self, chunk: bytes) -> bytes:
        out = self._d.decompress(chunk)
        while self._d.eof and self._d.unused_data:  # next gzip member
            rest = self._d.unused_data
            self._d = zlib.decompressobj(wbits=31)
            out += self._d.decompress(rest)
        return out

    def _decode_upto_damage(self, data: bytes, steps: List[int], out: List[bytes]) -> None:
        """Decode `data` in pieces of steps[0] bytes; a piece that fails is decoded again in pieces of steps[1],
        and so on down to single bytes, so every byte that decodes before the damage is kept (then zlib.error)."""
        for i in range(0, len(data), steps[0]):
            saved = self._d.copy()
            try:
                out.append(self._decode(data[i: i + steps[0]]))
            except zlib.error:
                if len(steps) == 1:
                    raise
                self._d = saved
                self._decode_upto_damage(data[i: i + steps[0]], steps[1:], out)
                raise  # (not reached: the finer pass fails at the same byte)

    def readinto(self, b: Any) -> int:
        while not self._buf:
            if self.problem is not None:
                return 0
            chunk = self._f.read(1 << 20)
            if not chunk:
                if not self._d.eof:
                    self.problem, self.detail = "truncated_gz", "truncated gzip stream (the file ends early)"
                return 0
            parts: List[bytes] = []
            try:
                self._decode_upto_damage(chunk, [len(chunk), 4096, 1], parts)
            except zlib.error as e:
                self.problem, self.detail = "corrupt_gz", f"corrupt gzip stream ({e})"
            self._buf = b"".join(parts)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def expand_globs(items: List[str], where: Optional[str] = None) -> List[str]:
    """A glob no shell expanded (quoted, or in a YAML config) becomes its matches, sorted; files, folders and
    existing names are kept as given. A pattern matching nothing is a PrepareConfigError ("<where>: '<p>'
    matches no file", or "<p>: the pattern matches no file" without `where`)."""
    out: List[str] = []
    for item in items:
        if not Path(item).exists() and any(c in item for c in "*?["):
            hits = sorted(glob.glob(item))
            if not hits:
                raise PrepareConfigError(f"{where}: {item!r} matches no file" if where
                                         else f"{item}: the pattern matches no file")
            out += hits
        else:
            out.append(item)
    return out


def expand_inputs(inputs: List[str], in_folder: Callable[[Path], bool], empty: str, none_inside: str,
                  check_file: Optional[Callable[[Path], None]] = None) -> List[Path]:
    """`prepare.input` -> files: each file as given (`check_file` may refuse it), each folder's files that
    `in_folder` accepts, by name; a glob pattern (`data/*.csv`) is its matches, sorted. Errors: `empty` when
    nothing is given, "<folder>: <none_inside>" for a folder without such files, "<path>: no such file or
    folder"."""
    if not inputs:
        raise PrepareConfigError(empty)
    found: List[Path] = []
    for item in expand_globs(inputs):
        p = Path(item)
        if p.is_dir():
            kids = sorted(k for k in p.iterdir() if k.is_file() and in_folder(k))
            if not kids:
                raise PrepareConfigError(f"{p}: {none_inside}")
            found += kids
        elif p.is_file():
            if check_file is not None:
                check_file(p)
            found.append(p)
        else:
            raise PrepareConfigError(f"{p}: no such file or folder")
    seen: dict = {}
    for p in found:  # a file named twice (directly and by its folder, overlapping globs) would be read twice
        key = p.resolve()
        if key in seen:
            raise PrepareConfigError(f"{p}: given twice (also as {seen[key]}): its rows would be read twice; "
                                     "name each input file once")
        seen[key] = p
    return found


def open_raw(path: str) -> Any:
    """A binary stream of the file's bytes, decompressed for `.gz` (see GzipReader for a cut stream), after a
    UTF-8 byte-order mark if the file starts with one (Excel's "CSV UTF-8"): it is no part of the first field."""
    stream = io.BufferedReader(GzipReader(path), 1 << 20) if path.lower().endswith(".gz") else open(path, "rb")
    if stream.peek(3)[:3] == codecs.BOM_UTF8:
        stream.read(3)
    return stream


@dataclass
class LongLine:
    """A line longer than the read block, skipped up to its LF: its first bytes and its length."""

    head: bytes
    size: int


def line_blocks(stream: Any, block_bytes: int) -> Iterator[Union[memoryview, LongLine]]:
    """The stream's bytes as pieces of whole lines: each is one `block_bytes` read plus the partial line carried
    over from the previous read, cut after its last LF; the last (short) read is not cut, so the final piece may
    lack one. Reads only when the next piece is asked for, so memory is one piece whatever the file size;
    pyarrow's streaming CSV reader instead reads up to 32 blocks ahead on a background thread (ARROW-12090: 256 MiB
    of 8 MiB blocks). Each piece is a memoryview starting at offset 0 of its `.obj` (bytes).

    A line longer than `block_bytes` (its LF counted) comes as one LongLine, in order, its bytes read and dropped
    up to its LF: whatever the read boundaries, so the verdict depends on the line's length only.
    """
    tail = b""
    long: Optional[LongLine] = None  # a line being skipped
    while chunk := stream.read(block_bytes):
        short = len(chunk) < block_bytes  # a short read is the end of the stream
        if long is not None:  # skipping the rest of a long line
            end = chunk.find(b"\n")
            if end < 0:
                long.size += len(chunk)
                continue
            long.size += end + 1
            yield long
            long, chunk = None, chunk[end + 1:]
        data = tail + chunk if tail else chunk
        first_end = data.find(b"\n") + 1  # only the first line can be longer than a read
        if not first_end and not short:  # no LF yet: the line goes on
            if len(data) > block_bytes:
                long, tail = LongLine(data[:EXCERPT_BYTES], len(data)), b""
            else:
                tail = data
            continue
        size = first_end or len(data)
        if size > block_bytes:
            yield LongLine(data[:min(size, EXCERPT_BYTES)], size)
            data = data[size:]
        if short:  # the rest is one piece
            tail = b""
            if data:
                yield memoryview(data)
            continue
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        if cut:
            yield memoryview(data)[:cut]
    if long is not None:
        yield long
    elif tail:
        yield memoryview(tail)


EXCERPT_BYTES = 160  # raw bytes of a bad line kept in the bad-rows file


@dataclass
class BadLine:
    """A line judged bad from its own bytes: `field` is a column index (None: the line as a whole)."""

    line: int
    kind: str
    field: Optional[int]
    reason: str
    raw: bytes  # the line's first EXCERPT_BYTES bytes
    size: int  # the line's length in bytes


class Rows:
    """One block's good-so-far rows: a RecordBatch of string columns, the physical line of each row, and the raw
    bytes of a row on demand (`raw(j)`, for bad-row excerpts)."""

    def __init__(self, batch: pa.RecordBatch, lines: np.ndarray, block: "_Block") -> None:
        self.batch, self.lines, self._block = batch, lines, block

    def raw(self, j: int) -> Tuple[bytes, int]:
        """(first EXCERPT_BYTES bytes, length) of row j's line."""
        return self._block.raw(int(self.lines[j]) - self._block.first)


class _Block:
    """A line_blocks piece; line i is physical line `first + i`. The line index is built only when needed."""

    def __init__(self, piece: memoryview, first: int, skip_first: bool) -> None:
        self.piece, self.first, self.skip_first = piece, first, skip_first
        self.d = np.frombuffer(piece, dtype=np.uint8)
        self._index: Optional[LineIndex] = None

    @property
    def index(self) -> LineIndex:
        if self._index is None:
            self._index = LineIndex(self.d)
        return self._index

    def find(self, sub: bytes, start: int = 0) -> int:
        return self.piece.obj.find(sub, start, len(self.piece))  # type: ignore[union-attr]

    def raw(self, i: int) -> Tuple[bytes, int]:
        s, e = int(self.index.start[i]), int(self.index.end[i])
        return bytes(self.piece[s: min(e, s + EXCERPT_BYTES)]), e - s

    def gather(self, idx: np.ndarray) -> memoryview:
        """The lines `idx` (ascending), each with its terminator, as one buffer (a view when they are contiguous)."""
        ix = self.index
        runs = np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1)
        spans = [(int(ix.start[r[0]]), int(min(ix.term[r[-1]] + 1, self.d.size))) for r in runs if r.size]
        if len(spans) == 1:
            return self.piece[spans[0][0]: spans[0][1]]
        parts = [self.piece[s:e] for s, e in spans]
        return memoryview(b"".join(p if p[-1:] == b"\n" else bytes(p) + b"\n" for p in parts))


RECORD_WINDOW = 64  # records over several lines parsed together (LineReader._records)


class LineReader:
    """The rows of a delimited text stream, block by block (line_blocks: no read-ahead), each line judged from its
    own bytes (so the verdict never depends on its neighbours or the block size):

    1. the line (line_checks): invalid UTF-8, a NUL byte, a CR inside it, empty, longer than a block;
    2. the parse of the remaining lines (pyarrow's CSV parser, string columns): the field count, and a quoted
       field that does not end on its line (a block whose lines do not give one row each is parsed again in
       halves down to single lines, so one such line cannot take its neighbours with it);
    3. records over several lines (a newline inside a quoted field, RFC 4180): the lines from one with an odd
       number of quotes to the next are one record if the parser makes one valid row of them (_records), named
       by its first line; a quoted field open at the end of a block is read on with the next (up to a block).

    Lines failing 1 or 2 go to `on_bad(BadLine)` and are left out; iterating gives one Rows per block. A line
    is split on LF only; a CR right before LF is dropped. With `skip_first_line`, line 1 (a header) is skipped
    but counted. After the loop: `lines` = complete lines read; if the stream was damaged (a truncated or corrupt
    gzip: see GzipReader) `damage` = (kind, detail, dropped bytes of an unfinished last line), else None.

    `count_reason(actual, expected)` words a wrong field count.
    """

    def __init__(self, stream: Any, block_bytes: int, column_names: List[str], parse: pacsv.ParseOptions,
                 convert: pacsv.ConvertOptions, on_bad: Callable[[BadLine], None],
                 count_reason: Callable[[int, int], str], skip_first_line: bool = False) -> None:
        self.stream, self.block_bytes, self.names, self.on_bad = stream, block_bytes, column_names, on_bad
        self.convert, self.count_reason, self.skip_first_line = convert, count_reason, skip_first_line
        self.quote = parse.quote_char.encode() if parse.quote_char else None
        self.escape = parse.escape_char.encode()[0] if parse.escape_char else None
        self.delimiter = parse.delimiter
        self._invalid: List[Tuple[Optional[int], int, str]] = []
        self.parse = pacsv.ParseOptions(delimiter=parse.delimiter, quote_char=parse.quote_char,
                                        double_quote=parse.double_quote, escape_char=parse.escape_char,
                                        newlines_in_values=False, ignore_empty_lines=False,
                                        invalid_row_handler=self._on_invalid)
        self.lines = 0
        self.damage: Optional[Tuple[str, str, int]] = None
        self._carry = b""  # the lines of a quoted field open at the end of a block (_block)
        self._record_options: Optional[Tuple[pacsv.ParseOptions, pacsv.ConvertOptions]] = None

    def _on_invalid(self, row: Any) -> str:
        self._invalid.append((row.number, row.actual_columns, row.text))
        return "skip"

    def __iter__(self) -> Iterator[Rows]:
        carry = b""  # the lines of a record whose quoted field is still open at the end of the previous piece
        for piece in line_blocks(self.stream, self.block_bytes):
            if isinstance(piece, LongLine):
                if carry:  # the record cannot close within a block: its lines are judged alone
                    yield from self._pieces(memoryview(carry), True)
                    carry = b""
                self.lines += 1
                self.on_bad(BadLine(self.lines, "line_too_long", None,
                                    f"a line of {piece.size} bytes, longer than the {self.block_bytes}-byte read "
                                    "block: not a line of delimited text", piece.head, piece.size))
                continue
            if not len(piece):
                continue
            final = piece[-1] != 10  # only the stream's last piece can end without LF
            if final and self._damaged():  # the unfinished last line of a damaged stream is not a line
                cut = bytes(piece).rfind(b"\n") + 1
                self.damage = self.damage[:2] + (len(piece) - cut,)  # type: ignore[index]
                piece = piece[:cut]
                if not cut and not carry:
                    continue
            if carry:
                piece, carry = memoryview(carry + bytes(piece)), b""
            yield from self._pieces(piece, final)
            carry, self._carry = self._carry, b""
            del piece  # before the next read: one piece (and at most a block of an open record) in memory
        if carry:  # the end of the stream inside a quoted field: the opening line is a bad line
            yield from self._pieces(memoryview(carry), True)
        if self.damage is None:
            self._damaged()

    def _pieces(self, piece: memoryview, final: bool) -> Iterator[Rows]:
        if not len(piece):
            return
        block = _Block(piece, self.lines + 1, self.skip_first_line and self.lines == 0)
        rows = self._block(block, final)
        if rows is not None:
            yield rows

    def _damaged(self) -> bool:
        raw = getattr(self.stream, "raw", None)
        problem = getattr(raw, "problem", None)
        if problem is not None and self.damage is None:
            self.damage = (problem, raw.detail, 0)  # type: ignore[union-attr]
        return problem is not None

    # -- one block ------------------------------------------------------------------------------------------
    def _block(self, b: _Block, final: bool = True) -> Optional[Rows]:
        """The rows of block b; unless `final`, the lines from a quoted field still open at its end (up to a
        block of them) are left for the next block (self._carry)."""
        n_before = self.lines
        header_end = b.find(b"\n") + 1 if b.skip_first else 0
        if b.skip_first and header_end == 0:
            header_end = b.d.size
        clean = self._clean(b, header_end)
        if clean:
            body = b.piece[header_end:]
            got = self._parse(body, None) if len(body) else (None, [])
            if got is not None and got[0] is not None and _has_null_row(got[0]):
                got = None  # an empty line, or a line of empty fields: told apart line by line below
            if got is not None:
                batch, invalid = got
                n_lines = (batch.num_rows if batch is not None else 0) + len(invalid) + bool(header_end)
                self.lines += n_lines
                return self._rows(b, batch, invalid, np.arange(n_lines - bool(header_end)) + bool(header_end))
        # slow path: each line's defects from the index; the rest parsed (in halves where a parse fails)
        ix = b.index
        self.lines = n_before + len(ix)
        code, where = line_defects(b.d, ix, check_utf8=not clean and not self._valid_utf8(b),
                                   quote=self.quote[0] if self.quote else None, escape=self.escape)
        empty = (ix.end == ix.start) & (code == 0)
        good = (code == 0) & ~empty
        if b.skip_first:
            good[0], code[0], empty[0] = False, 0, False
        batches: List[pa.RecordBatch] = []
        lines: List[np.ndarray] = []
        if self.quote is not None:  # records whose quoted field holds a newline: their lines are no lines alone
            covered, still_open = self._records(b, code, batches, lines)
            if still_open is not None and not final and b.d.size - ix.start[still_open] <= self.block_bytes:
                self._carry = bytes(b.piece[int(ix.start[still_open]):])  # it may close in the next block
                self.lines = n_before + still_open
                covered[still_open:] = True
            good &= ~covered
            code[covered], empty[covered] = 0, False
        for i in np.flatnonzero((code != 0) | empty).tolist():
            self._line_bad(b, i, int(code[i]), int(where[i]))
        idx = np.flatnonzero(good)
        invalid_all: List[Tuple[int, int, int, str]] = []
        self._parse_lines(b, idx, batches, lines, invalid_all)
        for i, actual, expected, text in sorted(invalid_all):
            self._count_bad(b.first + i, actual, expected, text, b.raw(i))
        if not batches:
            return None
        batch = batches[0] if len(batches) == 1 else pa.concat_batches(batches)
        at = np.concatenate(lines)
        if len(batches) > 1 and (np.diff(at) < 0).any():  # records and single lines: in line order
            order = np.argsort(at, kind="stable")
            batch, at = batch.take(pa.array(order)), at[order]
        return Rows(batch, b.first + at, b)

    # -- records over several lines (a newline inside a quoted field) -------------------------------------------
    def _records(self, b: _Block, code: np.ndarray, batches: List[pa.RecordBatch],
                 lines: List[np.ndarray]) -> Tuple[np.ndarray, Optional[int]]:
        """The lines of block b that belong to records over several lines (bool [lines]; their rows go to
        batches / lines, at the record's first line), and the line whose quoted field is still open at the end
        of the block (or None).

        A line with an odd number of quotes opens a quoted field that the next such line closes; the lines from
        one to the other are one record when pyarrow's CSV parser (newlines_in_values) makes exactly one valid row
        of them, with a newline count that fits. Otherwise the opening line is a bad line (a stray quote, a
        record of the wrong field count) and the next odd line opens anew: a stray quote never takes the lines
        after it along, and an unclosed quote at the end of the file is a bad line naming its line. Spans are
        parsed in windows that double while they hold (up to RECORD_WINDOW) and restart at 1 after a failure;
        below full windows each span is first checked by _one_record, so a stray quote costs no parse."""
        ix = b.index
        covered = np.zeros(len(ix), dtype=bool)
        odd = odd_quote_lines(b.d, ix, self.quote[0], self.escape)  # type: ignore[index]
        if b.skip_first:
            odd[0] = False
        opens = np.flatnonzero(odd).tolist()
        other = np.r_[0, np.cumsum((code != 0) & (code != QUOTE))]  # NUL, CR, invalid UTF-8: never in a record
        k, window = 0, 1  # the window doubles while spans are records, and is 1 again after one is not
        while k < len(opens):
            if k + 1 == len(opens):  # still open at the end of the block
                return covered, opens[k]
            spans: List[Tuple[int, int]] = []
            j = k
            while j + 1 < len(opens) and len(spans) < window and (  # full windows: pyarrow alone checks
                    (window == RECORD_WINDOW and j > k) or self._one_record(b, opens[j], opens[j + 1])):
                spans.append((opens[j], opens[j + 1]))
                j += 2
            ok: List[bool] = []
            if spans:
                self._parse_spans(b, spans, other, ok, batches, lines)
            n_good = ok.index(False) if False in ok else len(ok)
            for first, last in spans[:n_good]:
                covered[first: last + 1] = True
            if spans and n_good == len(spans):
                k, window = j, min(2 * window, RECORD_WINDOW)
            else:
                k, window = k + 2 * n_good + 1, 1  # the failed span's first line is a bad line; its last opens anew
        return covered, None

    def _one_record(self, b: _Block, first: int, last: int) -> bool:
        """Lines first..last of block b are one record of the expected field count to Python's csv module
        (strict): a cheap check before pyarrow's parse, which confirms it. A stray quote (`5" screen`: literal to
        both parsers), a line that does not close the field, a record of the wrong field count cost no parse."""
        text = bytes(b.piece[int(b.index.start[first]): int(b.index.end[last])]).decode("utf-8", errors="replace")
        escape = chr(self.escape) if self.escape is not None else None
        try:
            rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter,
                                   quotechar=self.quote.decode(), escapechar=escape, strict=True))  # type: ignore
        except csv.Error:
            return False
        return len(rows) == 1 and len(rows[0]) == len(self.names)

    def _parse_spans(self, b: _Block, spans: List[Tuple[int, int]], other: np.ndarray, ok: List[bool],
                     batches: List[pa.RecordBatch], lines: List[np.ndarray]) -> None:
        """Parse the spans (first, last line) of block b as records; append True per span that is one, up to and
        including the first that is not (False): the spans after it are paired anew by the caller. `other`: the
        running count of lines with another defect (a span holding one is no record)."""
        f, l = np.array(spans).T
        got = None if (other[l + 1] - other[f]).any() else self._parse_records(b, spans)
        if got is not None:
            batches.append(got)
            lines.append(np.array([f for f, _ in spans], dtype=np.int64))
            ok += [True] * len(spans)
            return
        if len(spans) == 1:
            ok.append(False)
            return
        half = len(spans) // 2
        self._parse_spans(b, spans[:half], other, ok, batches, lines)
        if all(ok):
            self._parse_spans(b, spans[half:], other, ok, batches, lines)

    def _parse_records(self, b: _Block, spans: List[Tuple[int, int]]) -> Optional[pa.RecordBatch]:
        """The spans' lines parsed with newlines inside quoted values: one valid row per span, or None."""
        if self._record_options is None:
            c = self.convert
            self._record_options = (
                pacsv.ParseOptions(delimiter=self.parse.delimiter, quote_char=self.parse.quote_char,
                                   double_quote=self.parse.double_quote, escape_char=self.parse.escape_char,
                                   newlines_in_values=True, ignore_empty_lines=False,
                                   invalid_row_handler=self._on_invalid),
                pacsv.ConvertOptions(column_types={n: pa.string() for n in self.names},
                                     strings_can_be_null=c.strings_can_be_null, null_values=c.null_values,
                                     quoted_strings_can_be_null=c.quoted_strings_can_be_null))
        parse, convert = self._record_options
        ix = b.index
        parts = [b.piece[int(ix.start[f]): int(ix.term[l]) + 1] for f, l in spans]  # each with its LF
        if int(ix.term[spans[-1][1]]) == b.d.size:  # the block's last line, without LF
            parts[-1] = bytes(parts[-1]) + b"\n"
        buf = b"".join(parts)
        self._invalid = []
        try:  # open_csv: read_csv costs ~0.5 ms more per call (a thread pool) and a failure costs one call
            reader = pacsv.open_csv(pa.py_buffer(buf), read_options=pacsv.ReadOptions(
                column_names=self.names, use_threads=False, block_size=len(buf) + 1), parse_options=parse,
                convert_options=convert)
            table = pa.Table.from_batches(list(reader), schema=reader.schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        if self._invalid or table.num_rows != len(spans):
            return None
        newlines = np.zeros(table.num_rows, dtype=np.int64)
        for col in table.columns:  # every column: a newline of the record is in one of its values
            newlines += pc.fill_null(pc.count_substring(col, "\n"), 0).to_numpy(zero_copy_only=False)
        if (newlines != np.array([l - f for f, l in spans])).any():
            return None
        keep = list(self.convert.include_columns) or self.names
        batches = table.select(keep).combine_chunks().to_batches()
        return batches[0] if batches else None

    def _clean(self, b: _Block, start: int) -> bool:
        """No line of the block has a defect: it can be parsed as a whole (empty lines come out as rows of nulls,
        and such a block is looked at line by line)."""
        if b.find(b"\0", start) >= 0 or b.find(b"\r", start) >= 0 and not self._crlf_only(b):
            return False
        if self.quote is not None and b.find(self.quote, start) >= 0 and has_odd_quote_line(
                b.d[start:], self.quote[0], self.escape):
            return False  # a quoted field not ending on its line (e.g. a newline inside quotes)
        return self._valid_utf8(b)

    @staticmethod
    def _crlf_only(b: _Block) -> bool:
        cr = np.flatnonzero(b.d == 13)
        return bool((cr + 1 < b.d.size).all() and (b.d[np.minimum(cr + 1, b.d.size - 1)] == 10).all())

    @staticmethod
    def _valid_utf8(b: _Block) -> bool:
        if not b.d.size or int(b.d.max()) < 0x80:
            return True
        try:  # Arrow's (SIMD) UTF-8 validation of the block as one string
            pa.LargeStringArray.from_buffers(1, pa.py_buffer(np.array([0, b.d.size], dtype=np.int64)),
                                             pa.py_buffer(b.piece)).validate(full=True)
            return True
        except pa.ArrowInvalid:
            return False

    def _rows(self, b: _Block, batch: Optional[pa.RecordBatch], invalid: List[Tuple[Optional[int], int, str]],
              line_idx: np.ndarray) -> Optional[Rows]:
        """Rows of a parse of consecutive lines `line_idx` of block b (invalid numbers are 1-based in them)."""
        numbers = [int(num) for num, _, _ in invalid]  # type: ignore[arg-type]
        for num, actual, text in invalid:
            i = int(line_idx[int(num) - 1])  # type: ignore[arg-type]
            self._count_bad(b.first + i, actual, len(self.names), text, b.raw(i))
        if batch is None or not batch.num_rows:
            return None
        valid = physical_lines(np.arange(batch.num_rows), np.asarray(sorted(numbers), dtype=np.int64)) - 1
        return Rows(batch, b.first + line_idx[valid], b)

    def _parse(self, buf: memoryview, n_lines: Optional[int]) -> Optional[Tuple[Optional[pa.RecordBatch], list]]:
        """Parse a buffer of whole lines; None when its lines do not give one row (or one invalid row) each: a
        quoted field running past its line, or an error from Arrow. `n_lines` None: count them here if needed."""
        self._invalid = []
        read = pacsv.ReadOptions(column_names=self.names, use_threads=False, block_size=len(buf) + 1)
        try:  # one block: one batch (none for a buffer of invalid rows only)
            batches = list(pacsv.open_csv(pa.py_buffer(buf), read_options=read, parse_options=self.parse,
                                          convert_options=self.convert))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        invalid = self._invalid
        if any(num is None for num, _, _ in invalid):
            return None
        batch = (batches[0] if len(batches) == 1 else pa.concat_batches(batches)) if batches else None
        rows = batch.num_rows if batch is not None else 0
        d = np.frombuffer(buf, dtype=np.uint8)
        if self.quote is not None and (d == self.quote[0]).any():  # a quoted field may have run past its line
            if n_lines is None:
                n_lines = int(np.count_nonzero(d == 10)) + int(d[-1] != 10)
            if rows + len(invalid) != n_lines or batch is not None and any(
                    pc.any(pc.match_substring(c, "\n")).as_py() or pc.any(pc.match_substring(c, "\r")).as_py()
                    for c in batch.columns if pa.types.is_string(c.type)):
                return None
        elif n_lines is not None and rows + len(invalid) != n_lines:
            return None
        return batch, invalid

    def _parse_lines(self, b: _Block, idx: np.ndarray, batches: List[pa.RecordBatch], lines: List[np.ndarray],
                     invalid: List[Tuple[int, int, int, str]]) -> None:
        """Parse lines `idx` of block b; where the whole does not parse line by line, each half on its own."""
        if not idx.size:
            return
        got = self._parse(b.gather(idx), int(idx.size))
        if got is not None:
            batch, inv = got
            numbers = sorted(int(num) for num, _, _ in inv)
            invalid += [(int(idx[int(num) - 1]), actual, len(self.names), text) for num, actual, text in inv]
            if batch is not None and batch.num_rows:
                valid = physical_lines(np.arange(batch.num_rows), np.asarray(numbers, dtype=np.int64)) - 1
                batches.append(batch)
                lines.append(idx[valid])
            return
        if idx.size == 1:
            i = int(idx[0])
            raw, size = b.raw(i)
            self.on_bad(BadLine(b.first + i, "unparsable", None, "a quoted field does not end on this line (or the "
                                "line is not CSV)" + self._escape_hint(bytes(b.piece[int(b.index.start[i]):
                                                                                     int(b.index.end[i])])), raw, size))
            return
        half = idx.size // 2
        self._parse_lines(b, idx[:half], batches, lines, invalid)
        self._parse_lines(b, idx[half:], batches, lines, invalid)

    def _line_bad(self, b: _Block, i: int, code: int, where: int) -> None:
        raw, size = b.raw(i)
        line = b.first + i
        if code == 0:
            self.on_bad(BadLine(line, "empty_line", None, "empty line", raw, size))
            return
        start = int(b.index.start[i])
        at = where - start
        field = self._field_at(bytes(b.piece[start: min(where, int(b.index.term[i]))]))
        byte = int(b.d[where]) if where < b.d.size else None
        what = {UTF8: f"invalid UTF-8 at byte {at + 1} of the line" +
                (f" (0x{byte:02x})" if byte is not None else ""),
                NUL: f"a NUL byte at byte {at + 1} of the line",
                CR: f"a carriage return (CR) at byte {at + 1} of the line: lines end at LF only",
                QUOTE: f"an odd number of {chr(byte or 34)} on the line (the last at byte {at + 1}): a quoted field "
                       "that no later line closes into one valid record (before the end of the file, within a read "
                       "block), or a stray quote" +
                       self._escape_hint(bytes(b.piece[start: int(b.index.end[i])]))}[code]
        self.on_bad(BadLine(line, DEFECT_KINDS[code], field, what, raw, size))

    def _field_at(self, prefix: bytes) -> int:
        """The column index of the field that holds the byte after `prefix` (quotes respected)."""
        text = prefix.decode("utf-8", errors="replace")
        if self.quote is None:
            return text.count(self.delimiter)
        escape = chr(self.escape) if self.escape is not None else None
        return max(len(next(csv.reader([text], delimiter=self.delimiter, escapechar=escape))), 1) - 1 if text else 0

    def _count_bad(self, line: int, actual: int, expected: int, text: str, raw: Tuple[bytes, int]) -> None:
        shown = text if len(text) <= 120 else text[:120] + "..."
        self.on_bad(BadLine(line, "column_count", None, f"{self.count_reason(actual, expected)}: {shown!r}"
                            f"{self._escape_hint(text.encode())}", *raw))

    def _escape_hint(self, line: bytes) -> str:
        """A hint at csv.escape for a bad line holding a backslash before a quote, when no escape is set."""
        if self.escape is not None or self.quote is None or b"\\" + self.quote not in line:
            return ""
        q = self.quote.decode()
        return f'; a backslash before a quote (\\{q}): if that escapes it, set csv: {{escape: "\\\\"}} in the schema'



def _has_null_row(batch: pa.RecordBatch) -> bool:
    """Some row is null in every column (cheap when the first column has no nulls)."""
    if not batch.num_columns or not batch.column(0).null_count:
        return False
    return bool(np.logical_and.reduce([c.is_null().to_numpy(zero_copy_only=False) for c in batch.columns]).any())


def gzip_problem(stream: Any) -> Optional[str]:
    """The detail of a damaged .gz stream of open_raw (after a read), else None."""
    raw = getattr(stream, "raw", None)
    return raw.detail if getattr(raw, "problem", None) is not None else None


def empty_files(paths: List[str], what: str = "") -> List[str]:
    """The files whose (decompressed) content is empty, or a byte-order mark alone; each is warned about on
    stderr: it adds no row, which is no error, but seldom what was meant (a failed export or download). A .gz
    damaged before its first byte is not empty (the readers report the damage)."""
    empty = [p for p in paths if is_empty(p)]
    for p in empty:
        print(f"prepare: warning: {p}: empty file (no lines): it adds no rows{what}", file=sys.stderr)
    return empty


def is_empty(path: str) -> bool:
    """The file's (decompressed) content is empty or a byte-order mark alone; a .gz damaged before its first byte
    is not empty (the readers report the damage)."""
    with open_raw(path) as f:
        return not f.read(1) and gzip_problem(f) is None


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
