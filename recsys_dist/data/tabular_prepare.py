"""`recsys-dist prepare --schema`: your own CSV / Parquet click log + a schema file -> Parquet shards + metadata.json.

    out_dir/metadata.json                           the same contract as for Criteo (recsys_dist.data.metadata)
    out_dir/{train,val,test}/part-NNNNN.parquet     label int8, dense float32, sparse int64, multi-valued
                                                    list<int64>, in schema order

Inputs: files or folders (a folder contributes its *.csv, *.tsv, *.txt, their .gz, and *.parquet / *.pq files,
by name). CSV is read in 8 MiB blocks of whole lines, each line judged from its own bytes and the good ones parsed by
pyarrow's CSV parser (raw_files.LineReader: no read-ahead; quoted fields allowed, newlines inside them too);
Parquet batch by batch. Rows are written in input
order as row groups of ROW_GROUP_ROWS, so memory is bounded by a block, a row group and the vocabularies, whatever
the input size; the same rows as CSV or as Parquet give the same files, whatever the block size.

Passes (only those needed): 1. timestamps (time split) -> split cutoffs; 2. vocabulary counts and the numeric
statistics over the train rows (min_count fields, standardize / minmax numerics); 3. encode + write. Ids: see
recsys_dist.data.schema_file and docs/own_data.md (vocab: 0 empty, 1 OOV, 2.. by train count; hash: key mod
hash_cap, empty 0; bucketize: the Criteo layout of criteo_encode). Numeric transforms
(recsys_dist.data.numeric_transforms): standardize (the default: train mean / std, clipped), log, minmax (train
min / max), none, bucketize; clipped values are counted per split in metadata.source.numeric_clipped; an empty
numeric field is 0 (bucket id 0).

Split (_decide_split): a given split is kept as is: per-split files (`--input train=... val=... test=...` or the
schema's split.train / val / test, recsys_dist.data.given_splits) or a split column. Otherwise, with `timestamp`,
train = rows before the (1 - val - test) quantile of the timestamps, val = up to the (1 - test) quantile, test =
the rest (quantiles exact up to SAMPLE_ROWS rows, else from a uniform sample of that many); without, each row goes
to val / test / train with probabilities val / test / rest from a generator seeded by (seed, file index), as for
Criteo. Pooling several input files so says on stderr and in metadata.source.split.warnings; a given split beside
a timestamp, ratios or another given split is an error. Vocabularies, min / max and dense_stats: train rows only.

Bad rows (the Criteo bad-row policy, recsys_dist.data.bad_rows): a CSV line with invalid UTF-8, a NUL byte, a CR
inside it, empty, longer than a block, with the wrong number of fields or a quoted field not ending on it; a
label that is empty / not 0 or 1 / not a number for the rule, a numeric field that is not a number, a timestamp
that does not parse. Each is counted, skipped and recorded (bad_rows.jsonl, metadata.bad_rows) as `file:line:
column='value': expected ...` (for Parquet input the number is the 1-based row); with `strict` the first raises
PrepareError. A truncated or corrupt .gz keeps the lines before the damage and is listed apart (damaged_files).
Schema errors
(SchemaError: a column missing from a file, a column of the wrong type, a label column that is not binary in
most rows of the first block, and whatever schema_file refuses) stop before any output is written.
"""

from __future__ import annotations

import csv
import math
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsys_dist.config import PrepareConfig
from recsys_dist.data import criteo_encode as enc
from recsys_dist.data import given_splits, timestamp_formats
from recsys_dist.data.bad_rows import BAD_ROWS_FILE, BadRows, PrepareConfigError, PrepareError
from recsys_dist.data.metadata import METADATA_FILE, SPLITS, Metadata, SparseFeature, SplitInfo
from recsys_dist.data import numeric_transforms
from recsys_dist.data.numeric_transforms import ClipCounter, NumericFit
from recsys_dist.data.oov_report import OOV_ID, OovCounter, TrainIds, unseen_hashed
from recsys_dist.data.parquet_parts import Part, PartWriter, remove_temp_files
from recsys_dist.data.raw_files import (BadLine, LineReader, Rows, empty_files, expand_globs, expand_inputs,
                                        gzip_problem, is_empty, open_raw)
from recsys_dist.data.schema_file import CategoricalSpec, Schema, SchemaError, load_schema, rule_holds
from recsys_dist.data.tabular_encode import as_strings, hash_strings, parse_numbers, parse_timestamps, split_lists

BLOCK_BYTES = 8 << 20  # raw CSV read block (raw_files.LineReader): the unit of parsing
PARQUET_BATCH_ROWS = 65536
ROW_GROUP_ROWS = 65536  # output row group (the input pipeline's unit of reading and shuffling)
SAMPLE_ROWS = 1 << 20  # timestamps kept to find the time-split cutoffs
_CSV_EXT = (".csv", ".tsv", ".txt")
_PARQUET_EXT = (".parquet", ".pq")


# -- inputs ---------------------------------------------------------------------------------------------------
def _kind(path: str) -> Optional[str]:
    path = path.lower()  # CLICKS.CSV too (Windows exports): a folder's data file must never be left out unseen
    name = path[:-3] if path.endswith(".gz") else path
    if name.endswith(_CSV_EXT):
        return "csv"
    if name.endswith(_PARQUET_EXT) and not path.endswith(".gz"):
        return "parquet"
    return None


def discover_inputs(inputs: List[str]) -> List[str]:
    """Files as given; a folder contributes its CSV / TSV / Parquet files (by name)."""
    def known(p: Path) -> None:
        if _kind(str(p)) is None:
            raise PrepareConfigError(f"{p}: unknown file type; expected .csv, .tsv, .txt (optionally .gz), .parquet "
                                     "or .pq")

    paths = expand_inputs(inputs, lambda k: _kind(str(k)) is not None,
                          "prepare.input is empty: give CSV / Parquet files or folders of them",
                          "no .csv, .tsv, .txt (or .gz of them), .parquet or .pq files inside", known)
    return [str(p) for p in paths]


def _delimiter(path: str, schema: Schema) -> str:
    """The schema's csv.delimiter; without one, a tab for a .tsv (.tsv.gz) file and a comma for the others."""
    name = path.lower().removesuffix(".gz")
    return "\t" if not schema.csv_delimiter_given and name.endswith(".tsv") else schema.csv_delimiter


def _csv_header(path: str, schema: Schema) -> List[str]:
    if not schema.csv_header:
        return list(schema.csv_columns or [])
    with open_raw(path) as f:
        first = f.readline().decode("utf-8", errors="replace").rstrip("\r\n")
        damage = gzip_problem(f)
    if damage is not None and not first:
        raise PrepareError(f"{path}: {damage} before the end of the header line; expected a gzip-compressed CSV")
    if not first:
        raise SchemaError(f"{path}:1: empty; expected a header line of column names (or csv: {{header: false}})")
    if "\r" in first:
        raise PrepareError(f"{path}:1: a carriage return (CR) at character {first.index(chr(13)) + 1} of the header "
                           "line: lines end at LF (or CRLF); convert a file with CR-only line ends (classic Mac OS) "
                           "to LF")
    try:
        return next(csv.reader([first], delimiter=_delimiter(path, schema), escapechar=schema.csv_escape))
    except csv.Error as e:  # e.g. a NUL byte
        raise PrepareError(f"{path}:1: the header line is not CSV ({e}); expected column names") from None


def _parquet(path: str, read: Callable[[str], Any], row: Optional[int] = None) -> Any:
    """read(path), with pyarrow's error on a damaged file turned into one naming it (and the rows read before)."""
    try:
        return read(path)
    except (pa.ArrowException, OSError) as e:
        after = f" after row {row}" if row else ""
        raise PrepareError(f"{path}: not a readable Parquet file{after} ({str(e)[:200]}); expected a complete "
                           f"Parquet file: damaged (truncated, corrupt), or not Parquet?") from None


def _no_header_hint(first_line: List[str]) -> str:
    """The hint when none of the schema's columns is in a CSV's first line: a file without a header line (click
    logs often are), whose first record was read as the column names."""
    def number(x: str) -> bool:
        try:
            float(x)
            return True
        except ValueError:
            return False

    numeric = sum(number(x) for x in first_line)
    numbers = f", {numeric} of its {len(first_line)} fields are numbers" if numeric else ""
    return (f"; none of the schema's columns is in the first line{numbers}: if the file has no header line, set "
            f"csv: {{header: false, columns: [...]}} in the schema ({len(first_line)} names, in the file's order)")


def _check_columns(schema: Schema, path: str, names: List[str], types: Optional[Dict[str, pa.DataType]]) -> None:
    """Every column the schema names exists in the file, once (and, for Parquet, has a usable type)."""
    for col, key in schema.columns().items():
        at = [i + 1 for i, n in enumerate(names) if n == col]
        if len(at) > 1:
            raise SchemaError(f"{schema.where(key)}: {key}={col!r}: {path} has {len(at)} columns of that name "
                              f"(columns {', '.join(map(str, at))}); expected one: rename the others")
        if col not in names:
            shown = ", ".join(names[:30]) + (", ..." if len(names) > 30 else "")
            case = [n for n in names if n.strip().lower() == col.strip().lower()]  # names match exactly
            hint = f"; {case[0]!r} differs only in case or spaces: write it as in the file" if case else ""
            other = [d for d in ",;\t|" if len(names) == 1 and d in names[0]]
            if other:
                hint += f"; the header line holds {other[0]!r}: set csv: {{delimiter: {other[0]!r}}} in the schema"
            hint += _no_header_hint(names) if types is None and not set(schema.columns()) & set(names) else ""
            raise SchemaError(f"{schema.where(key)}: {key}={col!r} is not a column of {path} (columns: {shown})"
                              f"{hint}")
    if types is None:
        return

    def want(col: str, key: str, ok: bool, expected: str) -> None:
        if not ok and not pa.types.is_null(types[col]):  # a column of nulls only (pandas' all-None column): empty
            raise SchemaError(f"{schema.where(key)}: {key}={col!r}: in {path} the column is {types[col]}; "
                              f"expected {expected}")

    def scalar(t: pa.DataType) -> bool:
        return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or \
            pa.types.is_decimal(t)

    def text(t: pa.DataType) -> bool:
        return pa.types.is_string(t) or pa.types.is_large_string(t) or (
            pa.types.is_dictionary(t) and text(t.value_type))

    want(schema.label.column, "label", scalar(types[schema.label.column]) or text(types[schema.label.column]),
         "numbers or text")
    for i, n in enumerate(schema.numeric):
        want(n.column, f"numeric[{i}].column", scalar(types[n.column]) or text(types[n.column]), "numbers or text")
    for i, c in enumerate(schema.single()):
        t = types[c.column]
        want(c.column, f"categorical[{i}].column", scalar(t) or text(t), "text or integers")
    for i, c in enumerate(schema.multi()):
        t = types[c.column]
        listy = (pa.types.is_list(t) or pa.types.is_large_list(t)) and (scalar(t.value_type) or text(t.value_type))
        want(c.column, f"multi_valued[{i}].column", listy or text(t), "a list column or separated text")
    if schema.timestamp is not None:
        t = types[schema.timestamp]
        if schema.timestamp_format or schema.timestamp_unit:
            key = "timestamp.format" if schema.timestamp_format else "timestamp.unit"
            want(schema.timestamp, key, scalar(t) or text(t), f"{'text' if schema.timestamp_format else 'numbers'} "
                 f"for {key} (a Parquet timestamp / date column needs no {key.split('.')[1]}: give the column alone)")
        want(schema.timestamp, "timestamp", scalar(t) or text(t) or pa.types.is_timestamp(t) or pa.types.is_date(t),
             "a timestamp, a date, epoch seconds or ISO-8601 text")
    if schema.split_column is not None:
        want(schema.split_column, "split.column", text(types[schema.split_column]),
             f"text: {given_splits.EXPECTED_VALUES}")


def _blocks(path: str, schema: Schema, bad: BadRows) -> Iterator[Tuple[pa.Table, np.ndarray, Optional[Rows]]]:
    """(table of the schema's columns, physical line [CSV] or 1-based row [Parquet] of each row, the raw CSV rows
    [for bad-row excerpts; None for Parquet]) per block."""
    cols = list(schema.columns())
    if _kind(path) == "parquet":
        pf = _parquet(path, pq.ParquetFile)
        arrow = pf.schema_arrow
        _check_columns(schema, path, arrow.names, dict(zip(arrow.names, arrow.types)))
        row = 0
        batches = pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=cols)
        while (b := _parquet(path, lambda _: next(batches, None), row)) is not None:
            t = pa.Table.from_batches([b])
            for i, f in enumerate(t.schema):  # all-null (type null): empty cells, as a CSV column of empties
                if pa.types.is_null(f.type):
                    t = t.set_column(i, f.name, pa.nulls(t.num_rows, pa.string()))
            yield t, np.arange(row + 1, row + b.num_rows + 1), None
            row += b.num_rows
        return
    if is_empty(path):  # no header, no rows (warned about once by empty_files)
        return
    names = _csv_header(path, schema)
    _check_columns(schema, path, names, None)

    def on_bad(b: BadLine) -> None:
        field = names[b.field] if b.field is not None and b.field < len(names) else ""
        bad.add(path, b.line, b.kind, f"{field}: {b.reason}" if field else b.reason, field, b.raw, b.size)

    stream = open_raw(path)
    delimiter = _delimiter(path, schema)
    reader = LineReader(stream, BLOCK_BYTES, names,
                        pacsv.ParseOptions(delimiter=delimiter, escape_char=schema.csv_escape or False),
                        pacsv.ConvertOptions(column_types={c: pa.string() for c in cols}, include_columns=cols,
                                             strings_can_be_null=True, null_values=[""],
                                             quoted_strings_can_be_null=False), on_bad,
                        lambda actual, expected: f"{actual} fields, expected {expected} "
                                                 f"({delimiter!r}-separated)",
                        skip_first_line=schema.csv_header)
    try:  # block by block, no read-ahead (raw_files.LineReader): memory does not grow with the file
        for rows in reader:
            yield pa.Table.from_batches([rows.batch]), rows.lines, rows
    finally:
        stream.close()
    if reader.damage is not None:
        kind, detail, dropped = reader.damage
        bad.damaged(path, kind, reader.lines, detail, dropped)


# -- one block --------------------------------------------------------------------------------------------------
@dataclass
class _Block:
    keep: np.ndarray  # rows without a bad field
    label: np.ndarray  # int8
    numeric: Dict[str, Tuple[np.ndarray, np.ndarray]]  # name -> (values float64, empty)
    single: Dict[str, Tuple[np.ndarray, np.ndarray]]  # name -> (keys int64, empty)
    multi: Dict[str, Tuple[np.ndarray, np.ndarray]]  # name -> (lengths int32, keys int64 flat)
    time: Optional[np.ndarray] = None  # seconds
    split: Optional[np.ndarray] = None  # split column: index in SPLITS

    def select(self, mask: np.ndarray) -> "_Block":
        return _Block(
            mask[mask], self.label[mask], {k: (v[mask], e[mask]) for k, (v, e) in self.numeric.items()},
            {k: (v[mask], e[mask]) for k, (v, e) in self.single.items()},
            {k: (ln[mask], v[np.repeat(mask, ln)]) for k, (ln, v) in self.multi.items()},
            None if self.time is None else self.time[mask], None if self.split is None else self.split[mask])


def _parse(schema: Schema, table: pa.Table, lines: np.ndarray, path: str, bad: BadRows,
           first_block: bool, raw_rows: Optional[Rows] = None) -> _Block:
    n = table.num_rows
    checks: List[Tuple[str, np.ndarray, str, Any, str]] = []  # kind, bad mask, column, raw column, expected
    lab = schema.label
    raw = table.column(lab.column)
    if lab.text is not None:
        cells = pc.utf8_trim_whitespace(as_strings(raw))
        ok = np.asarray(pc.fill_null(pc.not_equal(cells, ""), False), dtype=bool)
        label = np.asarray(pc.fill_null(pc.equal(cells, lab.text), False), dtype=bool)
        label = (label if lab.op == "==" else ~label) & ok
        checks.append(("label", ~ok, lab.column, raw, f"a value for the label rule {lab.describe()}"))
    elif lab.op is None:
        v, e, b = parse_numbers(raw)
        ok = ~e & ~b & ((v == 0) | (v == 1))
        label = (v == 1) & ok
        checks.append(("label", ~ok, lab.column, raw, "0 or 1"))
    else:
        v, e, b = parse_numbers(raw)
        ok = ~e & ~b
        label = rule_holds(v, lab.op, lab.threshold) & ok
        checks.append(("label", ~ok, lab.column, raw, f"a number for the label rule {lab.describe()}"))
    if first_block and n and (~ok).mean() > 0.5 and lab.op is None:
        shown = sorted({str(x) for x in raw.take(pa.array(np.flatnonzero(~ok)[:200])).to_pylist()})[:8]
        texts = [str(x).strip() for x in raw.to_pylist() if x is not None and str(x).strip()]
        rare = min(sorted(set(texts)), key=texts.count) if texts else "yes"  # often the positive class
        v, e, b = parse_numbers(raw)
        if (~e & ~b).any() and set(np.unique(v[~e & ~b]).tolist()) <= {-1.0, 1.0}:  # libsvm / VW's -1 / +1
            raise SchemaError(f"{schema.where('label')}: label={lab.column!r} is -1 / +1, not 0 / 1 (in {path}); "
                              f"write the rule label: \"{lab.column} > 0\"")
        raise SchemaError(f"{schema.where('label')}: label={lab.column!r} is not a binary column: "
                          f"{int((~ok).sum())} of the first {n} rows of {path} are not 0 / 1 (values {shown}); "
                          f"to binarize a numeric column write a rule, e.g. label: \"{lab.column} >= 4\", a text "
                          f"one e.g. label: \"{lab.column} == '{rare}'\"")
    numeric = {}
    for spec in schema.numeric:
        raw = table.column(spec.column)
        v, e, b = parse_numbers(raw)
        numeric[spec.name] = (v, e)
        checks.append(("numeric_not_number", b, spec.column, raw, "a number or empty"))
    single = {c.name: hash_strings(table.column(c.column)) for c in schema.single()}
    multi = {}
    for c in schema.multi():
        lengths, items = split_lists(table.column(c.column), c.separator, c.max_length)
        multi[c.name] = (lengths, hash_strings(items)[0])
    time = None
    if schema.timestamp is not None:
        raw = table.column(schema.timestamp)
        time, expected = _timestamps(schema, raw)
        checks += [("timestamp", mask, schema.timestamp, raw, why) for mask, why in expected]
    split = None
    if schema.split_column is not None:
        raw = table.column(schema.split_column)
        split, b = given_splits.codes(raw)
        checks.append(("split_value", b, schema.split_column, raw, given_splits.EXPECTED_VALUES))
    first = np.full(n, -1, dtype=np.int64)  # per row, the first check it fails (its kind)
    for k, (_, mask, _, _, _) in enumerate(checks):
        first[mask & (first < 0)] = k
    for j in np.flatnonzero(first >= 0).tolist():
        kind, _, col, raw, expected = checks[first[j]]
        value = raw[j].as_py()
        if isinstance(value, str) and len(value) > 40:
            value = value[:40] + "..."
        excerpt = raw_rows.raw(j) if raw_rows is not None else (b"", 0)
        what = f"{col} is empty" if value is None else f"{col}={value!r}"  # an empty CSV cell, a Parquet null
        bad.add(path, int(lines[j]), kind, f"{what}: expected {expected}", col, *excerpt)
    any_bad = first >= 0
    return _Block(~any_bad, label.astype(np.int8), numeric, single, multi, time, split)


def _timestamps(schema: Schema, raw: Any) -> Tuple[np.ndarray, List[Tuple[np.ndarray, str]]]:
    """The timestamp column's seconds since the epoch, and (bad mask, expected) per kind of bad cell."""
    if schema.timestamp_format is not None:
        time, b = timestamp_formats.parse_formatted(raw, schema.timestamp_format)
        return time, [(b, f'a time in the format "{schema.timestamp_format}" (timestamp.format)')]
    if schema.timestamp_unit is not None:
        unit = schema.timestamp_unit
        time, b, large = timestamp_formats.parse_epoch(raw, unit)
        name = timestamp_formats.UNIT_NAMES[unit]
        bound = timestamp_formats.MAX_EPOCH_SECONDS * timestamp_formats.TICKS_PER_SECOND[unit]
        return time, [(large, f"epoch {name} (timestamp.unit: {unit}) below {bound:.0e}: a value in a finer unit?"),
                      (b & ~large, f"epoch {name} (timestamp.unit: {unit}): a number")]
    time, b = parse_timestamps(raw)
    if not b.any() or pa.types.is_timestamp(raw.type) or pa.types.is_date(raw.type):
        return time, [(b, timestamp_formats.BARE_EXPECTED)]
    return time, timestamp_formats.bare_checks(raw, b, schema.timestamp)


# -- the passes ---------------------------------------------------------------------------------------------
@dataclass
class _Split:
    mode: str  # time | ratio | files (given per-split files) | column (a split column)
    val: float
    test: float
    seed: int
    cut_val: float = math.inf  # time: train < cut_val <= val < cut_test <= test
    cut_test: float = math.inf
    file_split: List[int] = field(default_factory=list)  # files: the split (index in SPLITS) of each input file

    def assign(self, block: _Block, rng: Optional[np.random.Generator], file_index: int) -> np.ndarray:
        if self.mode == "files":
            return np.full(block.keep.size, self.file_split[file_index], dtype=np.int8)
        if self.mode == "column":
            return block.split  # type: ignore[return-value]
        if self.mode == "time":
            t = block.time
            return np.where(t < self.cut_val, 0, np.where(t < self.cut_test, 1, 2)).astype(np.int8)
        u = rng.random(block.keep.size)  # type: ignore[union-attr]
        return np.where(u < self.val, 1, np.where(u < self.val + self.test, 2, 0)).astype(np.int8)


def _each_block(files: List[str], schema: Schema, split: _Split, bad: BadRows) -> Iterator[Tuple[_Block, np.ndarray]]:
    """(kept rows of a block, their split) over every input file, in order."""
    first = True
    for i, path in enumerate(files):
        rng = np.random.default_rng([split.seed, i]) if split.mode == "ratio" else None
        for table, lines, raw_rows in _blocks(path, schema, bad):
            block = _parse(schema, table, lines, path, bad, first, raw_rows)
            bad.flush()
            first = False
            which = split.assign(block, rng, i)
            bad.raise_strict(int(lines[-1]) if lines.size else 0)
            kept = block.select(block.keep)
            yield kept, which[block.keep]
        bad.raise_strict()


TIME_SPLIT_TOLERANCE = 0.05  # a split share this far from the asked one is warned about


def _time_split_warning(schema: Schema, split: _Split, rows: Dict[str, int]) -> str:
    """The time split's shares when one is more than TIME_SPLIT_TOLERANCE from what was asked (rows sharing the
    timestamp at a cutoff all go to the later split: dates without a time, a constant column), else ""."""
    total = sum(rows.values())
    asked = {"train": 1 - split.val - split.test, "val": split.val, "test": split.test}
    if not total or all(abs(rows[s] / total - asked[s]) <= TIME_SPLIT_TOLERANCE for s in SPLITS):
        return ""
    got = " / ".join(f"{s} {100 * rows[s] / total:.1f}%" for s in SPLITS)
    want = " / ".join(f"{100 * asked[s]:g}%" for s in SPLITS)
    return (f"the time split (timestamp: {schema.timestamp}) gave {got} of the rows, asked {want}: many rows share "
            "the timestamp at a cutoff (the rows at a cutoff all go to the later split); give finer timestamps, or "
            "remove `timestamp:` for a random split")


def _time_cutoffs(files: List[str], schema: Schema, split: _Split, strict: bool) -> str:
    """Set the split's cutoffs; a warning when a bare timestamp column of numbers looks like compact dates."""
    rng = np.random.default_rng([split.seed, 1 << 20])
    times, prio = np.zeros(0), np.zeros(0)
    probe = _Split("ratio", 0.0, 0.0, split.seed)  # any assignment: only the timestamps are used
    for block, _ in _each_block(files, schema, probe, BadRows(strict)):
        times = np.concatenate([times, block.time])
        prio = np.concatenate([prio, rng.random(block.time.size)])
        if times.size > SAMPLE_ROWS:  # a uniform sample: the SAMPLE_ROWS smallest random priorities
            top = np.argpartition(prio, SAMPLE_ROWS)[:SAMPLE_ROWS]
            times, prio = times[top], prio[top]
    s = np.sort(times)
    k_val, k_test = round(s.size * (1 - split.val - split.test)), round(s.size * (1 - split.test))
    split.cut_val = float(s[k_val]) if k_val < s.size else math.inf
    split.cut_test = float(s[k_test]) if k_test < s.size else math.inf
    bare = schema.timestamp_format is None and schema.timestamp_unit is None
    return timestamp_formats.compact_date_warning(times, schema.timestamp) if bare else ""


def _train_counts(files: List[str], schema: Schema, split: _Split,
                  strict: bool) -> Tuple[Dict[str, enc.Vocab], Dict[str, NumericFit]]:
    """One pass over the train rows: vocabulary counts and the numeric fields' statistics (train only)."""
    vocab_fields = [c for c in schema.categorical if c.encoding == "vocab"]
    counters = {c.name: enc.VocabCounter() for c in vocab_fields}
    fits = {n.name: NumericFit() for n in schema.dense()}
    for block, which in _each_block(files, schema, split, BadRows(strict)):
        train = block.select(which == 0)
        for c in vocab_fields:
            if c.multi_valued:
                counters[c.name].add(train.multi[c.name][1])
            else:
                keys, empty = train.single[c.name]
                counters[c.name].add(keys[~empty])
        for name, fit in fits.items():
            v, e = train.numeric[name]
            fit.add(v[~e])
    vocabs = {c.name: enc.Vocab(*counters[c.name].result(), min_count=c.min_count or 1) for c in vocab_fields}
    return vocabs, {k: f.finish() for k, f in fits.items()}


def _hashed_ids(spec: CategoricalSpec, block: _Block) -> np.ndarray:
    """The hashed ids of a block's non-empty values (a multi-valued field: all its ids)."""
    if spec.multi_valued:
        keys = block.multi[spec.name][1]
        return _ids(spec, keys, np.zeros(keys.size, dtype=bool), {})
    keys, empty = block.single[spec.name]
    return _ids(spec, keys[~empty], empty[~empty], {})


def _split_writer(folder: Path, schema: pa.Schema, rows_per_file: int) -> PartWriter:
    """Rows of one split -> .tmp-part-NNNNN.parquet files of <= rows_per_file rows, in row groups of ROW_GROUP_ROWS
    (renamed part-NNNNN.parquet by _split_info once all are written)."""
    return PartWriter(schema, rows_per_file, ROW_GROUP_ROWS, lambda k: folder / f".tmp-part-{k:05d}.parquet")


def _split_info(parts: List[Part]) -> SplitInfo:
    for p in parts:
        p.path = p.path.replace(p.path.with_name(p.path.name[len(".tmp-"):]))
    return SplitInfo(files=[f"{p.path.parent.name}/{p.path.name}" for p in parts], rows=sum(p.rows for p in parts),
                     rows_per_file=[p.rows for p in parts], positives=sum(p.positives for p in parts))


@dataclass
class _Stats:
    """Per dense feature, over the train rows: mean / std / min / max of the written values, empties; ids per
    multi-valued row."""

    n: int = 0
    written: Dict[str, NumericFit] = field(default_factory=dict)
    empty: Dict[str, int] = field(default_factory=dict)
    ids: Dict[str, int] = field(default_factory=dict)


def _output_schema(schema: Schema) -> pa.Schema:
    return pa.schema([("label", pa.int8())] + [(n.name, pa.float32()) for n in schema.dense()]
                     + [(n.name, pa.int64()) for n in schema.bucketized()]
                     + [(c.name, pa.int64()) for c in schema.single()]
                     + [(c.name, pa.list_(pa.int64())) for c in schema.multi()])


def _ids(spec: CategoricalSpec, keys: np.ndarray, empty: np.ndarray, vocabs: Dict[str, enc.Vocab]) -> np.ndarray:
    if spec.encoding == "hash":
        return np.where(empty, 0, (keys.view(np.uint64) % np.uint64(spec.hash_cap)).astype(np.int64))
    return vocabs[spec.name].encode(keys, empty)


def _encode(schema: Schema, block: _Block, vocabs: Dict[str, enc.Vocab], fits: Dict[str, NumericFit],
            clipped: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> Dict[str, pa.Array]:
    """The output columns of a block; `clipped` gets each dense field's (below, above) masks."""
    out: Dict[str, pa.Array] = {"label": pa.array(block.label, pa.int8())}
    for spec in schema.dense():
        v, e = block.numeric[spec.name]
        x, below, above = numeric_transforms.apply(spec.transform, v, e, fits.get(spec.name), spec.clip)
        clipped[spec.name] = (below, above)
        out[spec.name] = pa.array(x, pa.float32())
    for spec in schema.bucketized():
        v, e = block.numeric[spec.name]
        out[spec.name] = pa.array(enc.bucketize(np.floor(np.clip(v, -2.0**62, 2.0**62)).astype(np.int64), e))
    for spec in schema.single():
        keys, empty = block.single[spec.name]
        out[spec.name] = pa.array(_ids(spec, keys, empty, vocabs), pa.int64())
    for spec in schema.multi():
        lengths, keys = block.multi[spec.name]
        ids = _ids(spec, keys, np.zeros(keys.size, dtype=bool), vocabs)
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
        out[spec.name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids, pa.int64()))
    return out


def _update_stats(st: _Stats, schema: Schema, cols: Dict[str, pa.Array], block: _Block) -> None:
    st.n += len(cols["label"])
    for spec in schema.dense():
        st.written.setdefault(spec.name, NumericFit()).add(cols[spec.name].to_numpy().astype(np.float64))
        st.empty[spec.name] = st.empty.get(spec.name, 0) + int(block.numeric[spec.name][1].sum())
    for spec in schema.multi():
        st.ids[spec.name] = st.ids.get(spec.name, 0) + int(block.multi[spec.name][0].sum())


# -- the whole job --------------------------------------------------------------------------------------------
def _check(cfg: PrepareConfig) -> None:
    if cfg.rows_per_file < 1:
        raise PrepareConfigError("prepare.rows_per_file must be >= 1")
    if not (0 <= cfg.val_ratio < 1 and 0 <= cfg.test_ratio < 1 and cfg.val_ratio + cfg.test_ratio < 1):
        raise PrepareConfigError(f"prepare: val_ratio={cfg.val_ratio} and test_ratio={cfg.test_ratio} must be in "
                                 "[0, 1) with a sum < 1")


def _decide_split(cfg: PrepareConfig, schema: Schema) -> Tuple[List[str], _Split, Dict[str, Any]]:
    """The input files in order, how their rows are split, and what metadata.source.split records.

    Given per-split files (`--input train=...` or the schema's split.train / val / test) and a split column are
    the user's split, kept as is; otherwise the rows of every input are pooled and split by time or at random,
    and pooling several files says so on stderr (given_splits.pooled_warning) and in the metadata."""
    plain, named = given_splits.parse_inputs(list(cfg.input))
    if schema.split_files:
        if plain or named:
            raise PrepareConfigError(f"{schema.where('split')}: the schema names the split files (split.train, ...) "
                                     f"and prepare.input gives {list(cfg.input)}: give the files in one place")
        named = {k: expand_globs(v, schema.where(f"split.{k}")) for k, v in schema.split_files.items()}
    else:
        named = {k: expand_globs(v, f"prepare.input {k}=") for k, v in named.items()}
    val = schema.val_ratio if schema.val_ratio is not None else cfg.val_ratio
    test = schema.test_ratio if schema.test_ratio is not None else cfg.test_ratio
    seed = schema.seed if schema.seed is not None else cfg.seed
    if named:
        if schema.split_column is not None or schema.timestamp is not None:
            what = "split.column" if schema.split_column is not None else "timestamp"
            raise PrepareConfigError(f"{schema.where(what)}: prepare.input names split files (train=...) and the "
                                     f"schema has {what}: the files are the split; remove {what} from the schema "
                                     "(or give plain inputs to split by it)")
        files: List[str] = []
        file_split: List[int] = []
        detail: Dict[str, Any] = {"mode": "files", "files": {}}
        for name in SPLITS:
            if name in named:
                found = discover_inputs(named[name])
                dup = sorted(set(found) & set(files))
                if dup:
                    raise PrepareConfigError(f"{dup[0]}: given for two splits ({name} and an earlier one)")
                files += found
                file_split += [SPLITS.index(name)] * len(found)
                detail["files"][name] = found
        return files, _Split("files", 0.0, 0.0, seed, file_split=file_split), detail
    files = discover_inputs(plain)
    if schema.split_column is not None:
        return files, _Split("column", 0.0, 0.0, seed), {"mode": "column", "column": schema.split_column}
    mode = "time" if schema.timestamp else "ratio"
    how = f"by time (timestamp: {schema.timestamp})" if mode == "time" else f"at random (seed {seed})"
    detail = {"mode": mode}
    warning = given_splits.pooled_warning(files, how)
    if warning:
        print(f"prepare: warning: {warning}", file=sys.stderr)
        detail["warnings"] = [warning]
    return files, _Split(mode, val, test, seed), detail


def prepare_tabular(cfg: PrepareConfig, schema: Optional[Schema] = None) -> Metadata:
    """CSV / Parquet files + `cfg.schema` (or `schema`) -> `cfg.out_dir` (Parquet shards + metadata.json +
    bad_rows.jsonl). A failed prepare leaves no temporary files in the output folder."""
    try:
        return _prepare_tabular(cfg, schema)
    except BaseException:
        remove_temp_files(Path(cfg.out_dir))
        raise


def _prepare_tabular(cfg: PrepareConfig, schema: Optional[Schema]) -> Metadata:
    _check(cfg)
    if schema is None:
        if not cfg.schema:
            raise PrepareConfigError("prepare.schema is not set: give --schema SCHEMA.yaml")
        schema = load_schema(cfg.schema)
    files, split, split_detail = _decide_split(cfg, schema)
    val, test = split.val, split.test
    empty = set(empty_files([p for p in files if _kind(p) == "csv"]))
    for path in files:  # schema errors before any pass: every file has the columns
        if path in empty:
            continue
        if _kind(path) == "parquet":
            arrow = _parquet(path, pq.read_schema)
            _check_columns(schema, path, arrow.names, dict(zip(arrow.names, arrow.types)))
        else:
            _check_columns(schema, path, _csv_header(path, schema), None)

    if split.mode == "time":
        warning = _time_cutoffs(files, schema, split, cfg.strict)
        if warning:
            print(f"prepare: warning: {warning}", file=sys.stderr)
            split_detail.setdefault("warnings", []).append(warning)
    vocabs: Dict[str, enc.Vocab] = {}
    fits: Dict[str, NumericFit] = {}
    if any(c.encoding == "vocab" for c in schema.categorical) or \
            any(n.transform in numeric_transforms.FITTED for n in schema.numeric):
        vocabs, fits = _train_counts(files, schema, split, cfg.strict)

    out = Path(cfg.out_dir)
    for s in SPLITS:
        if (out / s).is_dir():
            shutil.rmtree(out / s)
        (out / s).mkdir(parents=True)
    for old in [out / METADATA_FILE, out / BAD_ROWS_FILE] + list(out.glob(".tmp-*")):  # no stale dataset
        old.unlink(missing_ok=True)
    arrow_schema = _output_schema(schema)
    writers = {s: _split_writer(out / s, arrow_schema, cfg.rows_per_file) for s in SPLITS}
    bad = BadRows(cfg.strict, out / f".tmp-{BAD_ROWS_FILE}")
    stats = _Stats()
    oov = OovCounter()
    hashed_fields = [c for c in schema.categorical if c.encoding == "hash"]
    hashed_ids = {s: {c.name: TrainIds() for c in hashed_fields} for s in SPLITS}  # ids per split, with counts
    clip_counter = ClipCounter()
    vocab_fields = [c for c in schema.single() + schema.multi() if c.encoding == "vocab"]
    for block, which in _each_block(files, schema, split, bad):
        clipped: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        cols = _encode(schema, block, vocabs, fits, clipped)
        table = pa.Table.from_arrays([cols[n] for n in arrow_schema.names], schema=arrow_schema)
        for k, name in enumerate(SPLITS):
            sel = which == k
            if not sel.any():
                continue
            sub = table.filter(pa.array(sel))
            writers[name].add(sub)
            part = block.select(sel)
            for c in hashed_fields:
                hashed_ids[name][c.name].add(_hashed_ids(c, part))
            for n, (below, above) in clipped.items():
                clip_counter.add(name, n, below[sel], above[sel], block.numeric[n][1][sel])
            for c in vocab_fields:
                col = sub.column(c.name).combine_chunks()
                ids = (col.flatten() if c.multi_valued else col).to_numpy(zero_copy_only=False)
                oov.add(name, c.name, int((ids == OOV_ID).sum()), ids.size)
            if name == "train":
                _update_stats(stats, schema, {n: sub.column(n).combine_chunks() for n in sub.column_names}, part)
    bad.close()
    parts = {s: w.close() for s, w in writers.items()}
    rows = {s: sum(p.rows for p in ps) for s, ps in parts.items()}
    if split.mode == "time":
        warning = _time_split_warning(schema, split, rows)
        if warning:
            print(f"prepare: warning: {warning}", file=sys.stderr)
            split_detail.setdefault("warnings", []).append(warning)
    bad.require_train_rows(files, rows)
    splits = {s: _split_info(ps) for s, ps in parts.items()}
    written = sum(s.rows for s in splits.values())

    sparse: List[SparseFeature] = [SparseFeature(n.name, enc.BUCKET_ROWS, encoding="bucketize")
                                   for n in schema.bucketized()]
    for c in schema.single() + schema.multi():
        rows = c.hash_cap if c.encoding == "hash" else vocabs[c.name].num_embeddings
        f = SparseFeature(c.name, int(rows), encoding=c.encoding, embedding_dim=c.embedding_dim)
        if c.multi_valued:
            f.multi_valued, f.pooling = True, c.pooling
            f.avg_ids_per_sample = stats.ids.get(c.name, 0) / stats.n if stats.n else 0.0
        sparse.append(f)
    dense_stats: Dict[str, Dict[str, float]] = {}
    for spec in schema.dense():
        fit = stats.written.get(spec.name)
        if stats.n and fit is not None and fit.finish().count:
            dense_stats[spec.name] = {"mean": fit.mean, "std": fit.std, "min": fit.lo, "max": fit.hi,
                                      "empty_rate": stats.empty[spec.name] / stats.n}
    transforms = sorted({n.transform for n in schema.dense()})
    if split.mode == "time":
        split_detail.update(timestamp=schema.timestamp, train_before=split.cut_val, test_from=split.cut_test,
                            **({"timestamp_format": schema.timestamp_format} if schema.timestamp_format else {}),
                            **({"timestamp_unit": schema.timestamp_unit} if schema.timestamp_unit else {}))
    md = Metadata(
        dense_features=[n.name for n in schema.dense()],
        sparse_features=sparse,
        splits=splits,
        source={"format": "schema", "schema_file": schema.path, "schema": schema.as_dict(), "inputs": files,
                "label": schema.label.describe(), "split": split_detail,
                "val_ratio": val if split.mode in ("time", "ratio") else None,
                "test_ratio": test if split.mode in ("time", "ratio") else None,
                "seed": split.seed if split.mode == "ratio" else None, "lines": written + bad.count,
                "empty_files": sorted(empty),
                "minmax": {n.name: [fits[n.name].lo, fits[n.name].hi] for n in schema.dense()
                           if n.transform == "minmax"},
                "numeric": {n.name: {"transform": n.transform, **({"clip": n.clip} if n.transform == "standardize"
                                                                  else {}), **(fits[n.name].as_dict()
                                                                               if n.name in fits else {})}
                            for n in schema.dense()},
                "numeric_clipped": clip_counter.as_dict(list(SPLITS), [n.name for n in schema.dense()]),
                "oov": oov.as_dict(list(SPLITS), [c.name for c in vocab_fields]),
                "oov_hashed": unseen_hashed(hashed_ids, [c.name for c in hashed_fields]),
                "cross_pairs": [f"{a},{b}" for a, b in schema.cross_pairs]},
        dense_transform=transforms[0] if len(transforms) == 1 else ("mixed" if transforms else "none"),
        dense_stats=dense_stats,
        bad_rows=bad.as_dict(),
    )
    md.check(str(out / METADATA_FILE))
    (out / f".tmp-{BAD_ROWS_FILE}").replace(out / BAD_ROWS_FILE)
    md.save(out)
    bad.report()
    return md

