"""One split's rows -> Parquet files of at most `rows_per_file` rows, written in row groups of `row_group_rows`.

Both prepares (Criteo and own data) write through it. Memory is one pending row group. The footer metadata a
ParquetWriter keeps until it closes is at most rows_per_file / row_group_rows row groups; a row group per input
block instead grows it by ~20 kB a block until the file is full (a val / test file of 5% of the rows stays open
for ~600 blocks: docs/benchmarks.md, "Ingest"). A file's last row group may be shorter.

Example:
    >>> w = PartWriter(table.schema, 1_000_000, 32768, lambda k: folder / f"part-{k:05d}.parquet")
    >>> w.add(table)
    >>> w.close()          # [Part(path, rows, positives), ...] in row order
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys_dist.data.metadata import SPLITS


@dataclass
class Part:
    path: Path
    rows: int = 0
    positives: int = 0  # rows with label 1


class PartWriter:
    def __init__(self, schema: pa.Schema, rows_per_file: int, row_group_rows: int,
                 path_for: Callable[[int], Path]) -> None:
        self.schema, self.rows_per_file, self.row_group_rows = schema, rows_per_file, row_group_rows
        self.path_for = path_for  # k -> the k-th file's path
        self.pending: List[pa.Table] = []
        self.pending_rows = 0
        self.writer: Optional[pq.ParquetWriter] = None
        self.parts: List[Part] = []

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        while self.pending_rows >= self._next_group():
            self._flush(self._next_group())

    def close(self) -> List[Part]:
        if self.pending_rows:
            self._flush(self.pending_rows)
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        return self.parts

    def _next_group(self) -> int:
        in_file = self.parts[-1].rows if self.writer is not None else 0
        return min(self.row_group_rows, self.rows_per_file - in_file)

    def _flush(self, rows: int) -> None:
        table = pa.concat_tables(self.pending)  # no copy: the group's columns may be several chunks
        group, rest = table.slice(0, rows), table.slice(rows)
        if self.writer is None:
            part = Part(self.path_for(len(self.parts)))
            self.writer = pq.ParquetWriter(str(part.path), self.schema)
            self.parts.append(part)
        self.writer.write_table(group, row_group_size=rows)
        part = self.parts[-1]
        part.rows += rows
        part.positives += int(pc.sum(group.column("label")).as_py() or 0)
        if part.rows >= self.rows_per_file:
            self.writer.close()
            self.writer = None
        self.pending, self.pending_rows = ([rest] if rest.num_rows else []), rest.num_rows


def remove_temp_files(out: Path) -> None:
    """A failed prepare's leftovers: the .tmp-* files of the dataset folder and of its split folders."""
    for tmp in list(out.glob(".tmp-*")) + [f for s in SPLITS for f in (out / s).glob(".tmp-*")]:
        tmp.unlink(missing_ok=True)
