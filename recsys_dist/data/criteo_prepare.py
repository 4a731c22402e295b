"""`recsys-dist prepare`: raw Criteo TSV (day_N / train.txt, optionally .gz) -> Parquet shards + metadata.json.

    out_dir/metadata.json
    out_dir/{train,val,test}/part-NNNNN.parquet   label int8, I1..I13 float32 (log, minmax) | int64 ids (bucketize),
                                                  C1..C26 int64 ids in [0, num_embeddings)

Streaming: each input file is read in blocks of whole lines (raw_files.LineReader: no read-ahead, memory is a
block's worth whatever the file size), each line judged from its own bytes (UTF-8, NUL, CR, empty, field count),
the good ones parsed by pyarrow's CSV parser and encoded with vectorized numpy (criteo_encode, which checks every
value on its own); each split is written in row groups of ROW_GROUP_ROWS rows. Files are processed by `workers`
processes in parallel. The id layouts are in recsys_dist.data.criteo_encode.

Splits: `day` (Terabyte): every day file but the last is train; the last day's first half of lines (by line
number, ceil(L / 2)) is val, the rest test. `ratio`: each row goes to val / test / train with probabilities
val_ratio / test_ratio / rest, from a generator seeded by (seed, file index): the same input and seed always give
the same split. `auto`: day when there are >= 2 day files, else ratio. The papers' protocols by name:
`criteo_kaggle` (as in DLRM's Kaggle runs): one train.txt cut into 7 consecutive days of equal line counts, days 1-6 train, day 7's
first half val, the rest test; `criteo_terabyte`: exactly day_0 .. day_23, days 0-22 train, day 23 halves into
val / test (the `day` split, with the files checked). Vocabularies and dense statistics come from train rows only.

Dense transforms: `log`, `bucketize`, `minmax` (OptInter's eq. 20: (x - min) / (max - min) with the min / max of
each field's non-empty train values, found in the counting pass; val / test values outside that range are clipped to
0 / 1 and counted per split in metadata.source.minmax_clipped; empty -> 0), `standardize` (the own-data transform of
numeric_transforms: (x - mean) / std of the train split's raw values, clipped to +-5; metadata.source.numeric and
numeric_clipped as for own data).

Bad rows (docs/data.md, "Bad rows": the exact grammar): invalid UTF-8, a NUL byte, a CR inside a line, an empty
line, a line longer than a block, a wrong column count, a label not 0/1, a dense field not `-?[0-9]+` within int64,
a categorical field not 8 hex digits. By default each is counted, skipped and recorded (every one in
bad_rows.jsonl: file, line, field, kind, reason, raw excerpt; the counts and first samples in metadata.bad_rows
and on stderr); with `strict` the first one raises PrepareError("file:line: reason"). Empty fields are legal. A
truncated or corrupt gzip stream (or a read error) is file damage, not a bad row: every line decoded before it is
kept, and it is listed in metadata.bad_rows.damaged_files with the last complete line.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recsys_dist.config import PrepareConfig
from recsys_dist.data import criteo_encode as enc
from recsys_dist.data.bad_rows import BAD_ROWS_FILE, BadRows, PrepareConfigError, PrepareError
from recsys_dist.data.criteo_schema import CATEGORICAL_NAMES, COLUMNS, DENSE_NAMES, NUM_COLUMNS
from recsys_dist.data.metadata import METADATA_FILE, SPLITS, Metadata, SparseFeature, SplitInfo
from recsys_dist.data import numeric_transforms
from recsys_dist.data.numeric_transforms import ClipCounter, NumericFit
from recsys_dist.data.oov_report import OovCounter, SeenIds, TrainIds, unseen_hashed
from recsys_dist.data.parquet_parts import PartWriter, remove_temp_files
from recsys_dist.data import raw_files
from recsys_dist.data.raw_files import count_lines, expand_inputs
from recsys_dist.data.raw_files import open_raw as _open

BLOCK_BYTES = 8 << 20  # raw read block (~32k Criteo rows): the unit of parsing and encoding
ROW_GROUP_ROWS = 32768  # output row group (~a block of rows), whatever a split's share of a block
PARALLEL_MIN_BYTES = 64 << 20  # one worker process per this much input (up to `workers`)
SPLIT_OPTIONS = ("auto", "day", "ratio", "criteo_kaggle", "criteo_terabyte")
DENSE_OPTIONS = ("log", "bucketize", "minmax", "standardize")
BITSET_MAX_IDS = 1 << 27  # train's hashed ids as a bitset up to this hash_cap (16 MB per field), else distinct ids
KAGGLE_DAYS = 7  # Criteo Kaggle's train.txt holds 7 days in time order (DLRM cuts it into 7 equal parts)
TERABYTE_DAYS = 24  # Criteo Terabyte: day_0 .. day_23
_DAY = re.compile(r"^day_(\d+)(\.gz)?$")
_KAGGLE = re.compile(r"^train\.txt(\.gz)?$")


# -- inputs ---------------------------------------------------------------------------------------------------
@dataclass
class InputFile:
    path: str
    day: Optional[int]  # N of day_N, else None

    @property
    def gz(self) -> bool:
        return self.path.endswith(".gz")


def discover_inputs(inputs: List[str]) -> List[InputFile]:
    """Files as given; a folder contributes its day_N[.gz] files (by N) or its train.txt[.gz]."""
    paths = expand_inputs(inputs, lambda k: bool(_DAY.match(k.name) or _KAGGLE.match(k.name)),
                          "prepare.input is empty: give raw Criteo files or folders (day_N, train.txt, .gz)",
                          "no day_N, day_N.gz, train.txt or train.txt.gz inside")
    found = [InputFile(str(p), _day(p.name)) for p in paths]
    days = [f.day for f in found if f.day is not None]
    if len(days) != len(set(days)):
        raise PrepareConfigError(f"day files given twice (e.g. day_N and day_N.gz): {sorted(f.path for f in found)}")
    kaggle = [f.path for f in found if f.day is None]
    if days and kaggle:
        raise PrepareConfigError(f"day files and {', '.join(kaggle)} given together: a folder holds day_N files "
                                 "(Terabyte's day split) or one train.txt (Kaggle's), not both; give one of them")
    if days:
        found.sort(key=lambda f: f.day)  # type: ignore[arg-type, return-value]
    return found


def _day(name: str) -> Optional[int]:
    m = _DAY.match(name)
    return int(m.group(1)) if m else None


# -- one file -------------------------------------------------------------------------------------------------
@dataclass
class _Task:
    index: int
    path: str
    mode: str  # "count" (vocab pass over train rows) | "write"
    split: Tuple[Any, ...]  # ("all", name) | ("halves", last_val_line) | ("lines", last_train_line, last_val_line)
    #                         | ("ratio", val, test, seed)
    categorical: str
    dense: str
    hash_cap: int
    strict: bool
    out_dir: str = ""
    rows_per_file: int = 1000000
    vocab: Optional[List[enc.Vocab]] = None  # write mode with categorical=vocab: one per field
    minmax: Optional[List[Tuple[float, float]]] = None  # write mode with dense=minmax: train (min, max) per field
    fits: Optional[List[NumericFit]] = None  # write mode with dense=standardize: train mean / std per field


@dataclass
class _DenseStats:
    n: int = 0
    s: List[float] = field(default_factory=lambda: [0.0] * len(DENSE_NAMES))
    ss: List[float] = field(default_factory=lambda: [0.0] * len(DENSE_NAMES))
    lo: List[float] = field(default_factory=lambda: [math.inf] * len(DENSE_NAMES))
    hi: List[float] = field(default_factory=lambda: [-math.inf] * len(DENSE_NAMES))
    empty: List[int] = field(default_factory=lambda: [0] * len(DENSE_NAMES))


def _reader(path: str, stream: Any, bad: BadRows) -> raw_files.LineReader:
    """Rows of one file, block by block (no read-ahead: memory does not grow with the file). Each line is judged
    from its own bytes (raw_files.LineReader: UTF-8, NUL, CR, empty, field count); those lines go to `bad`."""
    def on_bad(b: raw_files.BadLine) -> None:
        field = COLUMNS[b.field] if b.field is not None and b.field < NUM_COLUMNS else ""
        bad.add(path, b.line, b.kind, f"{field}: {b.reason}" if field else b.reason, field, b.raw, b.size)

    parse = pacsv.ParseOptions(delimiter="\t", quote_char=False, double_quote=False, escape_char=False)
    convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in COLUMNS}, strings_can_be_null=True,
                                   null_values=[""], quoted_strings_can_be_null=False)
    return raw_files.LineReader(stream, BLOCK_BYTES, list(COLUMNS), parse, convert, on_bad,
                                lambda actual, expected: f"{actual} tab-separated fields, expected {expected}")


def _first_bad(bad: List[Tuple[str, np.ndarray, str, Any]], n: int) -> Tuple[np.ndarray, List[Tuple[str, str, str]]]:
    """Rows with any bad field, and (kind, field, reason) of each such row's first bad field (checks in order)."""
    first = np.full(n, -1, dtype=np.int64)
    for k, (_, mask, _, _) in enumerate(bad):
        first[(first < 0) & mask] = k
    rows = np.flatnonzero(first >= 0)
    reasons = []
    for j in rows.tolist():
        kind, _, name, col = bad[int(first[j])]
        value = col[j].as_py()
        shown = repr(value if value is None or len(value) <= 40 else value[:40] + "...")
        reasons.append((kind, name, f"{name}={shown}: {_EXPECT[kind]}"))
    return rows, reasons


_EXPECT = {"label": "label must be 0 or 1", "dense_not_integer": "expected an integer (-?[0-9]+, int64) or empty",
           "categorical_not_hex": "expected 8 hex digits or empty"}


def _part_writer(task: _Task, split: str) -> PartWriter:
    """One split's rows of one input file -> temporary part files (renamed in order at the end of the job)."""
    folder = Path(task.out_dir) / split
    return PartWriter(_schema(task.dense), task.rows_per_file, ROW_GROUP_ROWS,
                      lambda k: folder / f".tmp-{task.index:05d}-{k:05d}.parquet")


def _table(schema: pa.Schema, cols: Dict[str, np.ndarray]) -> pa.Table:
    return pa.Table.from_arrays([pa.array(cols[n], type=schema.field(n).type) for n in schema.names], schema=schema)


def _process(task: _Task) -> Dict[str, Any]:
    """Reads one raw file; in write mode writes its Parquet parts and bad-row records (temporary names), in count
    mode counts values."""
    log = Path(task.out_dir) / _bad_log_name(task.index) if task.mode == "write" else None
    bad = BadRows(task.strict, log)
    counting = task.mode == "count"
    counters = [enc.VocabCounter() for _ in CATEGORICAL_NAMES] if counting and task.categorical == "vocab" else None
    stats = _DenseStats()  # write mode: transformed train values; count mode with minmax: raw train lo / hi
    clipped = {s: [0] * len(DENSE_NAMES) for s in SPLITS}
    oov = OovCounter()
    fits = [NumericFit() for _ in DENSE_NAMES]  # count mode with standardize: raw train values
    clip_counter = ClipCounter()  # write mode with standardize
    hashed = _hashed_ids(task.hash_cap) if task.mode == "write" and task.categorical == "hash" else None
    writers: Dict[str, PartWriter] = {}
    rng = np.random.default_rng([task.split[3], task.index]) if task.split[0] == "ratio" else None
    stream = _open(task.path)
    reader = _reader(task.path, stream, bad)
    read_error = ""
    try:
        try:
            for rows in reader:
                batch, lines = rows.batch, rows.lines
                n = batch.num_rows
                split = _assign(task, rng, n, lines)
                keep, cols = _encode_batch(task, rows, bad)
                bad.flush()
                bad.raise_strict(int(lines[-1]))
                for name in SPLITS:
                    sel = keep & (split == SPLITS.index(name))
                    if not sel.any():
                        continue
                    sub = {k: v[sel] for k, v in cols.items()}
                    if counting:
                        if name == "train":
                            for f, c in enumerate(counters or []):
                                c.add(sub["_raw"][f][~sub["_empty"][f]])
                            if task.dense == "minmax":
                                _update_range(stats, sub)
                            if task.dense == "standardize":
                                for i, fit in enumerate(fits):
                                    fit.add(sub["_draw"][i][~sub["_dempty"][i]])
                        continue
                    if name == "train":
                        _update_stats(stats, task, sub)
                    if hashed is not None:  # the values' ids (empty cells are not values)
                        for f, field_name in enumerate(CATEGORICAL_NAMES):
                            hashed[name][field_name].add(sub[field_name][~sub["_cempty"][f]])
                    if task.vocab is not None:
                        for field_name in CATEGORICAL_NAMES:
                            ids = sub[field_name]
                            oov.add(name, field_name, int((ids == enc.Vocab.OOV).sum()), ids.size)
                    if "_dbelow" in sub:
                        for i, field_name in enumerate(DENSE_NAMES):
                            clip_counter.add(name, field_name, sub["_dbelow"][i], sub["_dabove"][i],
                                             sub["_dempty_" + field_name])
                    if "_dclip" in sub:
                        for i, n_out in enumerate(sub["_dclip"].a.sum(axis=1).tolist()):
                            clipped[name][i] += int(n_out)
                    if name not in writers:
                        writers[name] = _part_writer(task, name)
                    writers[name].add(_table(writers[name].schema, sub))
        except OSError as e:  # an I/O error while reading: the file is damaged from here on; never crash mid-way
            read_error = f"read error ({e})"
        finally:
            stream.close()
            for w in writers.values():
                w.close()
        bad.close()
        bad.raise_strict()
        if read_error:
            bad.damaged(task.path, "read_error", reader.lines, read_error)
        elif reader.damage is not None:
            kind, detail, dropped = reader.damage
            bad.damaged(task.path, kind, reader.lines, detail, dropped)
    except BaseException:
        bad.close()
        raise
    parts = [{"split": name, "path": str(p.path), "rows": p.rows, "positives": p.positives}
             for name, w in writers.items() for p in w.parts]
    out: Dict[str, Any] = {"index": task.index, "parts": parts, "bad": bad.as_dict(), "lines": reader.lines,
                           "stats": asdict(stats), "log": str(log) if log else None, "clipped": clipped,
                           "oov": oov.counts, "hashed": hashed, "numeric_clipped": clip_counter.counts,
                           "fits": [f.finish() for f in fits] if counting and task.dense == "standardize" else None}
    if counters is not None:
        out["counts"] = [c.result() for c in counters]
    return out


def _hashed_ids(hash_cap: int) -> Dict[str, Dict[str, Any]]:
    """Per split and field, the hashed ids of the values: train's as a bitset (its ids are < hash_cap) up to
    BITSET_MAX_IDS, else as distinct ids; val / test's with counts (oov_report: both prepares' unseen-value report)."""
    bitset = hash_cap <= BITSET_MAX_IDS
    return {s: {f: SeenIds(hash_cap) if s == "train" and bitset else TrainIds() for f in CATEGORICAL_NAMES}
            for s in SPLITS}


def _bad_log_name(index: int) -> str:
    return f".tmp-bad-rows-{index:05d}.jsonl"


def _assign(task: _Task, rng: Optional[np.random.Generator], n: int, lines: np.ndarray) -> np.ndarray:
    kind = task.split[0]
    if kind == "all":
        return np.full(n, SPLITS.index(task.split[1]), dtype=np.int8)
    if kind == "halves":
        return np.where(lines <= task.split[1], SPLITS.index("val"), SPLITS.index("test")).astype(np.int8)
    if kind == "lines":
        return np.where(lines <= task.split[1], 0, np.where(lines <= task.split[2], 1, 2)).astype(np.int8)
    u = rng.random(n)  # type: ignore[union-attr]
    val, test = task.split[1], task.split[2]
    return np.where(u < val, 1, np.where(u < val + test, 2, 0)).astype(np.int8)


def _encode_batch(task: _Task, rows: raw_files.Rows, bad: BadRows) -> Tuple[np.ndarray, Dict[str, Any]]:
    batch, lines = rows.batch, rows.lines
    n = batch.num_rows
    checks: List[Tuple[str, np.ndarray, str, Any]] = []
    lab = batch.column(0)
    label = pc.fill_null(pc.equal(lab, "1"), False).to_numpy(zero_copy_only=False)
    label_ok = label | pc.fill_null(pc.equal(lab, "0"), False).to_numpy(zero_copy_only=False)
    checks.append(("label", ~label_ok, "label", lab))
    dense = []
    for i, name in enumerate(DENSE_NAMES):
        col = batch.column(1 + i)
        v, e, b = enc.parse_int(col)
        dense.append((v, e))
        checks.append(("dense_not_integer", b, name, col))
    raw, empty = [], []
    for i, name in enumerate(CATEGORICAL_NAMES):
        col = batch.column(14 + i)
        v, e, b = enc.parse_hex8(col)
        raw.append(v)
        empty.append(e)
        checks.append(("categorical_not_hex", b, name, col))
    bad_rows, reasons = _first_bad(checks, n)
    for j, (kind, name, why) in zip(bad_rows.tolist(), reasons):
        bad.add(task.path, int(lines[j]), kind, why, name, *rows.raw(j))
    keep = np.ones(n, dtype=bool)
    keep[bad_rows] = False
    cols: Dict[str, Any] = {"label": label.astype(np.int8)}
    if task.dense == "log":
        for name, (v, e) in zip(DENSE_NAMES, dense):
            cols[name] = enc.dense_log(v)
            cols["_dempty_" + name] = e
    elif task.dense in ("minmax", "standardize") and task.mode == "count":  # the train statistics this pass finds
        cols["_draw"] = _RowsView(np.stack([v for v, _ in dense]))
        cols["_dempty"] = _RowsView(np.stack([e for _, e in dense]))
    elif task.dense == "minmax":
        for name, (v, e), (lo, hi) in zip(DENSE_NAMES, dense, task.minmax):  # type: ignore[arg-type]
            cols[name] = enc.dense_minmax(v, e, lo, hi)
            cols["_dempty_" + name] = e
        cols["_dclip"] = _RowsView(np.stack([~e & ((v < lo) | (v > hi))
                                             for (v, e), (lo, hi) in zip(dense, task.minmax)]))  # type: ignore
    elif task.dense == "standardize":  # the own-data transform, with the train split's fits
        below, above = [], []
        for name, (v, e), fit in zip(DENSE_NAMES, dense, task.fits):  # type: ignore[arg-type]
            cols[name], b, a = numeric_transforms.apply("standardize", v.astype(np.float64), e, fit)
            cols["_dempty_" + name] = e
            below.append(b)
            above.append(a)
        cols["_dbelow"], cols["_dabove"] = _RowsView(np.stack(below)), _RowsView(np.stack(above))
    else:
        for name, (v, e) in zip(DENSE_NAMES, dense):
            cols[name] = enc.bucketize(v, e)
    if task.mode == "count":
        cols["_raw"] = np.stack(raw)
        cols["_empty"] = np.stack(empty)
        return keep, {"_raw": _RowsView(cols["_raw"]), "_empty": _RowsView(cols["_empty"]),
                      **{k: v for k, v in cols.items() if k not in ("_raw", "_empty")}}
    if task.categorical == "hash":
        cols["_cempty"] = _RowsView(np.stack(empty))
    for f, name in enumerate(CATEGORICAL_NAMES):
        if task.categorical == "hash":
            cols[name] = np.where(empty[f], 0, raw[f] % task.hash_cap)
        else:
            cols[name] = task.vocab[f].encode(raw[f], empty[f])  # type: ignore[index]
    return keep, cols


class _RowsView:
    """A [F, n] array that row-selects along its second axis (so count mode shares the split loop)."""

    def __init__(self, a: np.ndarray) -> None:
        self.a = a

    def __getitem__(self, sel: Any) -> Any:
        return _RowsView(self.a[:, sel]) if not isinstance(sel, int) else self.a[sel]


def _update_range(st: _DenseStats, sub: Dict[str, Any]) -> None:
    """Count mode, dense=minmax: min / max of each field's non-empty raw train values."""
    for i in range(len(DENSE_NAMES)):
        v = sub["_draw"][i][~sub["_dempty"][i]]
        if v.size:
            st.lo[i] = min(st.lo[i], float(v.min()))
            st.hi[i] = max(st.hi[i], float(v.max()))


def _update_stats(st: _DenseStats, task: _Task, sub: Dict[str, Any]) -> None:
    if task.dense == "bucketize":
        return
    st.n += int(sub["label"].size)
    for i, name in enumerate(DENSE_NAMES):
        x = sub[name].astype(np.float64)
        st.s[i] += float(x.sum())
        st.ss[i] += float((x * x).sum())
        st.lo[i] = min(st.lo[i], float(x.min()))
        st.hi[i] = max(st.hi[i], float(x.max()))
        st.empty[i] += int(sub["_dempty_" + name].sum())


def _schema(dense: str) -> pa.Schema:
    dense_type = pa.int64() if dense == "bucketize" else pa.float32()
    return pa.schema([("label", pa.int8())] + [(n, dense_type) for n in DENSE_NAMES]
                     + [(n, pa.int64()) for n in CATEGORICAL_NAMES])


# -- the whole job --------------------------------------------------------------------------------------------
def _check(cfg: PrepareConfig) -> None:
    for key, value, choices in (("categorical", cfg.categorical, ("hash", "vocab")),
                                ("dense", cfg.dense, DENSE_OPTIONS),
                                ("split", cfg.split, SPLIT_OPTIONS)):
        if value not in choices:
            raise PrepareConfigError(f"prepare.{key}={value!r} is not one of {', '.join(choices)}")
    if cfg.hash_cap < 1 or cfg.min_count < 1 or cfg.rows_per_file < 1 or cfg.workers < 0:
        raise PrepareConfigError("prepare: hash_cap, min_count and rows_per_file must be >= 1, workers >= 0")
    if not (0 <= cfg.val_ratio < 1 and 0 <= cfg.test_ratio < 1 and cfg.val_ratio + cfg.test_ratio < 1):
        raise PrepareConfigError(f"prepare: val_ratio={cfg.val_ratio} and test_ratio={cfg.test_ratio} must be in "
                                 "[0, 1) with a sum < 1")


def _minmax_source(minmax: List[Tuple[float, float]], results: List[Dict[str, Any]]) -> Dict[str, Any]:
    """metadata.source for dense=minmax: the train (min, max) per field (None: no train value) and, per val / test,
    the count of values outside it (clipped to 0 / 1) per field that has any."""
    ranges = {n: [lo, hi] if lo <= hi else None for n, (lo, hi) in zip(DENSE_NAMES, minmax)}
    clipped: Dict[str, Dict[str, int]] = {}
    for s in ("val", "test"):
        per = [sum(r["clipped"][s][i] for r in results) for i in range(len(DENSE_NAMES))]
        clipped[s] = {n: c for n, c in zip(DENSE_NAMES, per) if c}
    return {"minmax": ranges, "minmax_clipped": clipped}


def _check_named_split(split: str, files: List[InputFile]) -> None:
    """The papers' protocols need their files: criteo_kaggle one train.txt, criteo_terabyte day_0 .. day_23."""
    if split == "criteo_kaggle" and len(files) != 1:
        raise PrepareConfigError(f"prepare.split=criteo_kaggle cuts one file (Criteo Kaggle's train.txt) into "
                                 f"{KAGGLE_DAYS} days; got {len(files)}: {[f.path for f in files]}")
    if split == "criteo_terabyte":
        days = sorted(f.day for f in files if f.day is not None)
        missing = sorted(set(range(TERABYTE_DAYS)) - set(days))
        if len(days) != len(files) or days != list(range(TERABYTE_DAYS)):
            raise PrepareConfigError(f"prepare.split=criteo_terabyte needs exactly day_0 .. day_{TERABYTE_DAYS - 1} "
                                     f"(train on days 0-{TERABYTE_DAYS - 2}, day {TERABYTE_DAYS - 1} halves into "
                                     "val / test); "
                                     f"missing days {missing}, got {[f.path for f in files]}")


def _kaggle_days(path: str, detail: Dict[str, Any]) -> Tuple[Any, ...]:
    """The Criteo Kaggle day protocol (DLRM's runs): the file's L lines as 7 consecutive days of L // 7 lines (the first L % 7
    days one more); days 1-6 train, the 7th day's first half (ceil) val, the rest test."""
    lines = count_lines(path)
    per, extra = divmod(lines, KAGGLE_DAYS)
    sizes = [per + (d < extra) for d in range(KAGGLE_DAYS)]
    last_train = sum(sizes[:-1])
    last_val = last_train + (sizes[-1] + 1) // 2
    detail.update(days=KAGGLE_DAYS, train_lines=f"1-{last_train}", val_lines=f"{last_train + 1}-{last_val}",
                  test_lines=f"{last_val + 1}-{lines}")
    return ("lines", last_train, last_val)


def _run(tasks: List[_Task], workers: int, desc: str, progress: bool) -> List[Dict[str, Any]]:
    sizes = [os.path.getsize(t.path) for t in tasks]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(sizes), unit="B", unit_scale=True, desc=desc, file=sys.stderr,
                   disable=True if sum(sizes) < (32 << 20) else None)
    results = []
    n = min(workers, len(tasks), -(-sum(sizes) // PARALLEL_MIN_BYTES))  # spawning costs ~1 s: not for tiny inputs
    if n <= 1:
        it: Iterator[Dict[str, Any]] = map(_process, tasks)
        pool = None
    else:
        pool = ProcessPoolExecutor(n, mp_context=get_context("spawn"))
        it = pool.map(_process, tasks)
    try:
        for r, size in zip(it, sizes):
            results.append(r)
            if bar is not None:
                bar.update(size)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if bar is not None:
            bar.close()
    return results


def prepare_criteo(cfg: PrepareConfig, progress: bool = True) -> Metadata:
    """Raw Criteo files -> `cfg.out_dir` (Parquet shards + metadata.json + bad_rows.jsonl); returns the metadata.
    A failed prepare leaves no temporary files (and no metadata.json of an older run) in the output folder."""
    try:
        return _prepare_criteo(cfg, progress)
    except BaseException:
        remove_temp_files(Path(cfg.out_dir))
        raise


def _prepare_criteo(cfg: PrepareConfig, progress: bool) -> Metadata:
    _check(cfg)
    files = discover_inputs(list(cfg.input))
    n_days = sum(f.day is not None for f in files)
    split = cfg.split if cfg.split != "auto" else ("day" if n_days >= 2 and n_days == len(files) else "ratio")
    if split == "day" and (n_days < 2 or n_days != len(files)):
        raise PrepareConfigError(f"prepare.split=day needs >= 2 day_N files and nothing else; "
                                 f"got {[f.path for f in files]}")
    _check_named_split(split, files)
    empty = raw_files.empty_files([f.path for f in files])
    if split == "day" and files[-1].path in empty:
        print(f"prepare: warning: {files[-1].path} is the last day: the val and test splits are empty", file=sys.stderr)
    workers = cfg.workers or os.cpu_count() or 1
    out = Path(cfg.out_dir)
    for s in SPLITS:
        (out / s).mkdir(parents=True, exist_ok=True)
        for old in list((out / s).glob("part-*.parquet")) + list((out / s).glob(".tmp-*.parquet")):
            old.unlink()
    for old in [out / METADATA_FILE, out / BAD_ROWS_FILE] + list(out.glob(".tmp-*")):  # no stale dataset
        old.unlink(missing_ok=True)

    specs: List[Tuple[Any, ...]] = []
    split_detail: Dict[str, Any] = {"mode": split}
    for i, f in enumerate(files):
        if split == "ratio":
            specs.append(("ratio", cfg.val_ratio, cfg.test_ratio, cfg.seed))
        elif split == "criteo_kaggle":
            specs.append(_kaggle_days(f.path, split_detail))
        elif i < len(files) - 1:
            specs.append(("all", "train"))
        else:
            lines = count_lines(f.path)
            specs.append(("halves", (lines + 1) // 2))
            split_detail.update(val_test_file=f.path, val_lines=f"1-{(lines + 1) // 2}",
                                test_lines=f"{(lines + 1) // 2 + 1}-{lines}")

    def task(i: int, mode: str, vocab: Any = None, minmax: Any = None, fits: Any = None) -> _Task:
        return _Task(i, files[i].path, mode, specs[i], cfg.categorical, cfg.dense, cfg.hash_cap, cfg.strict,
                     str(out), cfg.rows_per_file, vocab, minmax, fits)

    vocabs: Optional[List[enc.Vocab]] = None
    minmax: Optional[List[Tuple[float, float]]] = None
    fits: Optional[List[NumericFit]] = None
    if cfg.categorical == "vocab" or cfg.dense in ("minmax", "standardize"):  # pass 1: counts / dense range over the train split
        count_files = [i for i in range(len(files)) if specs[i][0] != "halves"]
        counted = _run([task(i, "count") for i in count_files], workers, "prepare: train counts", progress)
        if cfg.categorical == "vocab":
            vocabs = []
            for f in range(len(CATEGORICAL_NAMES)):
                total = enc.VocabCounter()
                for r in counted:
                    total.add_counts(*r["counts"][f])
                vocabs.append(enc.Vocab(*total.result(), min_count=cfg.min_count))
        if cfg.dense == "minmax":
            minmax = [(min([r["stats"]["lo"][i] for r in counted], default=math.inf),
                       max([r["stats"]["hi"][i] for r in counted], default=-math.inf)) for i in range(len(DENSE_NAMES))]
        if cfg.dense == "standardize":  # the train split's mean / std per field, files combined in input order
            fits = [NumericFit() for _ in DENSE_NAMES]
            for r in counted:
                for fit, part in zip(fits, r["fits"]):
                    fit.merge(part)
    results = _run([task(i, "write", vocabs, minmax, fits) for i in range(len(files))], workers, "prepare", progress)

    bad = BadRows(strict=False)
    with open(out / f".tmp-{BAD_ROWS_FILE}", "wb") as log:  # every file's bad rows, in input order
        for r in results:
            if r["log"] and Path(r["log"]).exists():
                with open(r["log"], "rb") as part:
                    shutil.copyfileobj(part, log)
                Path(r["log"]).unlink()
    stats = _DenseStats()
    oov = OovCounter()
    splits: Dict[str, SplitInfo] = {s: SplitInfo(files=[], rows=0, rows_per_file=[]) for s in SPLITS}
    for r in results:
        bad.merge(r["bad"])
    bad.require_train_rows([f.path for f in files],
                           {s: sum(p["rows"] for r in results for p in r["parts"] if p["split"] == s) for s in SPLITS})
    hashed = _hashed_ids(cfg.hash_cap) if cfg.categorical == "hash" else None
    clip_counter = ClipCounter()
    for r in results:  # in input order: part numbers follow the input files
        oov.merge(r["oov"])
        clip_counter.merge(r["numeric_clipped"])
        for s, fields in (r["hashed"] or {}).items():
            for name, ids in fields.items():
                hashed[s][name].merge(ids)  # type: ignore[index]
        st = r["stats"]
        stats.n += st["n"]
        for i in range(len(DENSE_NAMES)):
            stats.s[i] += st["s"][i]
            stats.ss[i] += st["ss"][i]
            stats.lo[i] = min(stats.lo[i], st["lo"][i])
            stats.hi[i] = max(stats.hi[i], st["hi"][i])
            stats.empty[i] += st["empty"][i]
        for p in r["parts"]:
            info = splits[p["split"]]
            rel = f"{p['split']}/part-{len(info.files):05d}.parquet"
            shutil.move(p["path"], out / rel)
            info.files.append(rel)
            info.rows_per_file.append(p["rows"])
            info.rows += p["rows"]
            info.positives += p["positives"]

    sparse: List[SparseFeature] = []
    if cfg.dense == "bucketize":
        sparse += [SparseFeature(n, enc.BUCKET_ROWS, encoding="bucketize") for n in DENSE_NAMES]
    for f, name in enumerate(CATEGORICAL_NAMES):
        if vocabs is not None:
            sparse.append(SparseFeature(name, vocabs[f].num_embeddings, encoding="vocab"))
        else:
            sparse.append(SparseFeature(name, cfg.hash_cap, encoding="hash"))
    dense_stats: Dict[str, Dict[str, float]] = {}
    if cfg.dense != "bucketize" and stats.n:
        for i, name in enumerate(DENSE_NAMES):
            mean = stats.s[i] / stats.n
            dense_stats[name] = {"mean": mean, "std": math.sqrt(max(stats.ss[i] / stats.n - mean * mean, 0.0)),
                                 "min": stats.lo[i], "max": stats.hi[i], "empty_rate": stats.empty[i] / stats.n}
    md = Metadata(
        dense_features=[] if cfg.dense == "bucketize" else list(DENSE_NAMES),
        sparse_features=sparse,
        splits=splits,
        source={"format": "criteo_tsv", "inputs": [f.path for f in files], "categorical": cfg.categorical,
                "hash_cap": cfg.hash_cap if cfg.categorical == "hash" else None,
                "min_count": cfg.min_count if cfg.categorical == "vocab" else None,
                "split": split_detail, "val_ratio": cfg.val_ratio, "test_ratio": cfg.test_ratio, "seed": cfg.seed,
                "lines": sum(r["lines"] for r in results), "empty_files": empty,
                "bucket_low": enc.BUCKET_LOW if cfg.dense == "bucketize" else None,
                **(_minmax_source(minmax, results) if minmax is not None else {}),
                **({"numeric": {n: {"transform": "standardize", "clip": numeric_transforms.DEFAULT_CLIP,
                                    **fit.as_dict()} for n, fit in zip(DENSE_NAMES, fits)},
                    "numeric_clipped": clip_counter.as_dict(list(SPLITS), list(DENSE_NAMES))} if fits else {}),
                **({"oov": oov.as_dict(list(SPLITS), list(CATEGORICAL_NAMES))} if vocabs is not None else {}),
                **({"oov_hashed": unseen_hashed(hashed, list(CATEGORICAL_NAMES))} if hashed is not None else {})},
        dense_transform=cfg.dense,
        dense_stats=dense_stats,
        bad_rows=bad.as_dict(),
    )
    md.check(str(out / METADATA_FILE))
    (out / f".tmp-{BAD_ROWS_FILE}").replace(out / BAD_ROWS_FILE)
    md.save(out)
    bad.report()
    return md
