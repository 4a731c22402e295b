"""The bad-row policy of `prepare`: count + skip + report (file, line, reason), or strict (the first one raises)."""

from __future__ import annotations

import bisect
import math
import sys
from typing import Any, Dict, List, Optional, Tuple

MAX_SAMPLES = 20  # bad-row samples kept in metadata


class PrepareError(ValueError):
    """Bad input for `prepare`: a missing file, bad options, or (strict mode) the first bad row, as file:line."""


class BadRows:
    """Counts by reason and the first MAX_SAMPLES bad rows by (file, line), files in the order first seen, whatever
    order they are added in (a reader may report a block's column-count errors before its value errors); in
    strict mode, the first bad row (by line) becomes PrepareError."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.count = 0
        self.by_reason: Dict[str, int] = {}
        self.samples: List[Dict[str, Any]] = []
        self._keys: List[Tuple[int, int]] = []  # (file order, line) of each sample, ascending
        self._files: Dict[str, int] = {}
        self._first: Optional[Tuple[int, str]] = None  # strict: (line, "file:line: reason") of the earliest

    def add(self, file: str, line: int, kind: str, reason: str) -> None:
        self.count += 1
        self.by_reason[kind] = self.by_reason.get(kind, 0) + 1
        self._sample(file, int(line), reason)
        if self.strict and (self._first is None or line < self._first[0]):
            self._first = (int(line), f"{file}:{line}: {reason}")

    def raise_strict(self, upto_line: float = math.inf) -> None:
        """Strict mode: raise for the earliest bad row at or before `upto_line` (rows after it may come later)."""
        if self._first is not None and self._first[0] <= upto_line:
            raise PrepareError(self._first[1])

    def merge(self, other: Dict[str, Any]) -> None:
        self.count += other["count"]
        for k, v in other["by_reason"].items():
            self.by_reason[k] = self.by_reason.get(k, 0) + v
        for sample in other["samples"]:
            self._sample(sample["file"], sample["line"], sample["reason"])

    def _sample(self, file: str, line: int, reason: str) -> None:
        key = (self._files.setdefault(file, len(self._files)), line)
        if len(self.samples) < MAX_SAMPLES or key < self._keys[-1]:
            i = bisect.bisect(self._keys, key)
            self._keys.insert(i, key)
            self.samples.insert(i, {"file": file, "line": line, "reason": reason})
            del self._keys[MAX_SAMPLES:], self.samples[MAX_SAMPLES:]

    def as_dict(self) -> Dict[str, Any]:
        return {"count": self.count, "by_reason": dict(sorted(self.by_reason.items())), "samples": self.samples}

    def report(self, stream: Any = None, shown: int = 5) -> None:
        """The count by reason and the first `shown` samples (file:line: reason), on stderr by default."""
        if not self.count:
            return
        stream = stream or sys.stderr
        print(f"prepare: skipped {self.count} bad row(s) {self.by_reason}; first:", file=stream)
        for s in self.samples[:shown]:
            print(f"  {s['file']}:{s['line']}: {s['reason']}", file=stream)
