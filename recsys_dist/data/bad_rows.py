"""The bad-row policy of `prepare`: count + skip + record, or strict (the first one raises).

Every bad line is recorded: one JSON object per line in the dataset folder's BAD_ROWS_FILE (file, line, field,
kind, reason, the line's length and an excerpt of its first raw bytes: bounded per line), in input order; the
counts by kind and the first MAX_SAMPLES lines go to metadata.json. Damage to a whole file (a truncated or corrupt
gzip stream, a read error) is not a bad line: it is listed apart (`damaged_files`: file, kind, the last complete
line before it, detail), counted in neither `count` nor `by_reason`.
"""

from __future__ import annotations

import bisect
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

MAX_SAMPLES = 20  # bad-row samples kept in metadata
BAD_ROWS_FILE = "bad_rows.jsonl"  # every bad line, in the dataset folder
MAX_REASON_CHARS = 300  # a reason is cut to this (a record's size is bounded whatever the input)


class PrepareError(ValueError):
    """Bad input for `prepare`: a missing file, bad options, or (strict mode) the first bad row, as file:line."""


class PrepareConfigError(PrepareError):
    """The command is wrong, not the data (an input path that does not exist, a schema that does not fit the
    files): found before any output; the CLI exits 2, as for any config error."""


def excerpt(raw: bytes) -> str:
    """Raw bytes as text: UTF-8, other bytes as \\xNN escapes."""
    return raw.decode("utf-8", errors="backslashreplace")


class BadRows:
    """Counts by kind and the first MAX_SAMPLES bad rows by (file, line), files in the order first seen, whatever
    order they are added in; every row is also written to `log` (JSON lines, sorted by line at each `flush`);
    in strict mode, the first bad row (by line) becomes PrepareError."""

    def __init__(self, strict: bool, log: Optional[Path] = None) -> None:
        self.strict = strict
        self.count = 0
        self.by_reason: Dict[str, int] = {}
        self.samples: List[Dict[str, Any]] = []
        self.damaged_files: List[Dict[str, Any]] = []
        self._keys: List[Tuple[int, int]] = []  # (file order, line) of each sample, ascending
        self._files: Dict[str, int] = {}
        self._first: Optional[Tuple[int, str]] = None  # strict: (line, "file:line: reason") of the earliest
        self._log_path = log
        self._log: Any = None
        self._pending: List[Tuple[int, str]] = []  # (line, JSON record) not yet written

    def add(self, file: str, line: int, kind: str, reason: str, field: str = "", raw: bytes = b"",
            size: Optional[int] = None) -> None:
        line = int(line)
        reason = reason if len(reason) <= MAX_REASON_CHARS else reason[:MAX_REASON_CHARS] + "..."
        self.count += 1
        self.by_reason[kind] = self.by_reason.get(kind, 0) + 1
        self._sample(file, line, field, reason)
        if self.strict and (self._first is None or line < self._first[0]):
            self._first = (line, f"{file}:{line}: {reason}")
        if self._log_path is not None:
            self._pending.append((line, json.dumps(
                {"file": file, "line": line, "field": field, "kind": kind, "reason": reason,
                 "bytes": len(raw) if size is None else int(size), "excerpt": excerpt(raw)})))

    def damaged(self, file: str, kind: str, last_line: int, detail: str, dropped_bytes: int = 0) -> None:
        """A damaged file: its lines up to `last_line` were read (and judged); nothing after the damage is, and
        `dropped_bytes` of an unfinished line before it are not a line."""
        self.damaged_files.append({"file": file, "kind": kind, "last_line": int(last_line),
                                   "dropped_bytes": int(dropped_bytes), "detail": detail})
        if self.strict:
            raise PrepareError(_damage_message(self.damaged_files[-1]))

    def raise_strict(self, upto_line: float = math.inf) -> None:
        """Strict mode: raise for the earliest bad row at or before `upto_line` (rows after it may come later)."""
        if self._first is not None and self._first[0] <= upto_line:
            raise PrepareError(self._first[1])

    def flush(self) -> None:
        """Write the pending records to the log, by line (call once a block's rows are all judged)."""
        if self._log_path is None:
            return
        if self._log is None:
            self._log = open(self._log_path, "w", encoding="utf-8")
        self._pending.sort(key=lambda p: p[0])
        self._log.writelines(rec + "\n" for _, rec in self._pending)
        self._pending = []

    def close(self) -> None:
        self.flush()
        if self._log is not None:
            self._log.close()
            self._log = None

    def merge(self, other: Dict[str, Any]) -> None:
        self.count += other["count"]
        for k, v in other["by_reason"].items():
            self.by_reason[k] = self.by_reason.get(k, 0) + v
        for sample in other["samples"]:
            self._sample(sample["file"], sample["line"], sample.get("field", ""), sample["reason"])
        self.damaged_files += other.get("damaged_files", [])

    def require_train_rows(self, files: List[str], rows: Dict[str, int]) -> None:
        """No dataset without train rows: inputs with every line bad, with no line at all, or whose split leaves
        train empty raise PrepareError (exit 1) naming the files, the bad lines by kind and the first one, so no
        folder is left that looks like a dataset (train would refuse it anyway, later and less clearly)."""
        if rows.get("train", 0):
            return
        written = sum(rows.values())
        what = "no valid rows" if not written else \
            "no train rows (" + ", ".join(f"{n} {s}" for s, n in rows.items() if n) + " rows written)"
        kinds = ": " + ", ".join(f"{k} {n}" for k, n in sorted(self.by_reason.items())) if self.count else ""
        detail = f" ({self.count} bad{kinds})"
        if self.samples:
            s = self.samples[0]
            detail += f"; first: {s['file']}:{s['line']}: {s['reason']}"
        elif not written and not self.damaged_files:
            detail += ": the input holds no data lines (empty files, or a header line only)"
        for d in self.damaged_files:
            detail += f"; {_damage_message(d)}"
        if self.by_reason.get("invalid_utf8"):
            detail += f"; {NOT_UTF8_HINT}"
        raise PrepareError(f"prepare: {what} in {files}{detail}")

    def _sample(self, file: str, line: int, field: str, reason: str) -> None:
        key = (self._files.setdefault(file, len(self._files)), line)
        if len(self.samples) < MAX_SAMPLES or key < self._keys[-1]:
            i = bisect.bisect(self._keys, key)
            self._keys.insert(i, key)
            self.samples.insert(i, {"file": file, "line": line, "field": field, "reason": reason})
            del self._keys[MAX_SAMPLES:], self.samples[MAX_SAMPLES:]

    def as_dict(self) -> Dict[str, Any]:
        return {"count": self.count, "by_reason": dict(sorted(self.by_reason.items())), "samples": self.samples,
                "damaged_files": self.damaged_files, "file": BAD_ROWS_FILE}

    def report(self, stream: Any = None, shown: int = 5) -> None:
        """The count by reason, the first `shown` samples (file:line: reason) and damaged files, on stderr."""
        stream = stream or sys.stderr
        for d in self.damaged_files:
            print(f"prepare: {_damage_message(d)}; the rows up to it are kept", file=stream)
        if not self.count:
            return
        print(f"prepare: skipped {self.count} bad row(s) {self.by_reason} (all in {BAD_ROWS_FILE}); first:",
              file=stream)
        for s in self.samples[:shown]:
            print(f"  {s['file']}:{s['line']}: {s['reason']}", file=stream)
        if self.by_reason.get("invalid_utf8"):
            print(f"prepare: {NOT_UTF8_HINT}", file=stream)


NOT_UTF8_HINT = ("lines that are not UTF-8 are bad rows: a file saved as Latin-1 / Windows-1252 (e.g. Excel's "
                 "plain 'CSV') must be re-encoded first, e.g. iconv -f cp1252 -t utf-8 in.csv > out.csv")


def _damage_message(d: Dict[str, Any]) -> str:
    dropped = f" ({d['dropped_bytes']} bytes of an unfinished line after it dropped)" if d["dropped_bytes"] else ""
    return f"{d['file']}: {d['detail']} after line {d['last_line']}{dropped}"
