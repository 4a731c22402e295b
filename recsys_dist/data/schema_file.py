"""The schema file of `recsys-dist prepare --schema`: which columns of your own CSV / Parquet click log are what.

    label: "rating >= 4"          # a 0/1 column (label: clicked), or a rule `column OP number` binarizing one
                                  # (or `column == 'text'`: label: "income == '>50K'")
    timestamp: ts                 # optional: time-ordered split (oldest rows train); else a seeded random split
                                  # (or {column: hour, format: "%y%m%d%H"}, {column: ts, unit: ms})
    split: {val: 0.1, test: 0.1, seed: 0}   # optional; default prepare.val_ratio / test_ratio / seed
    # or a split you already have: files (paths / globs relative to this file) or a column of train / val / test
    #   split: {train: train.csv, val: valid.csv, test: "test_*.csv"}      split: {column: fold}
    csv: {delimiter: ",", header: true}     # optional; without a header give `columns: [...]`;
                                            # escape: "\\" for backslash-escaped quotes (\\")
    categorical:                  # one id per row
      - {column: user_id, min_count: 2, name: user}    # vocab: values seen >= min_count times in train
      - {column: item_id, hash_cap: 100000, embedding_dim: 16}
    multi_valued:                 # several ids per row, pooled by the EmbeddingBag
      - {column: genres, separator: "|", pooling: mean, max_length: 5}
    numeric:
      - {column: price, transform: log}          # standardize (default) | log | minmax | none | bucketize
      - {column: age, clip: 4}                   # standardize, clipped to +-4 train standard deviations
    cross_pairs: [[user, item_id]]               # OptInter's cross fields, by feature name

`load_schema(path)` parses and validates it (never evaluates anything: the label rule is a three-token
comparison); every error names the schema file, its line and the key, e.g.
`schema.yaml:9: numeric[0].transform='sqrt' is not one of none, log, minmax, standardize, bucketize`.
Whether the columns exist is checked against the input files by tabular_prepare.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from recsys_dist.data.bad_rows import PrepareConfigError
from recsys_dist.data import timestamp_formats
from recsys_dist.data.numeric_transforms import DEFAULT_CLIP, DEFAULT_TRANSFORM, TRANSFORMS

POOLINGS = ("sum", "mean")
OPS = (">=", "<=", "==", "!=", ">", "<")
TOP_KEYS = ("label", "timestamp", "split", "csv", "categorical", "multi_valued", "numeric", "cross_pairs")
_RULE = re.compile(r"^\s*(?P<col>[^<>=!]+?)\s*(?P<op>>=|<=|==|!=|>|<)\s*"
                   r"(?P<num>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_TEXT_RULE = re.compile(r"^\s*(?P<col>[^<>=!]+?)\s*(?P<op>==|!=)\s*(?P<q>['\"])(?P<text>.*)(?P=q)\s*$")


class SchemaError(PrepareConfigError):
    """The schema file is invalid, or does not fit the input files (a column that does not exist, ...)."""


@dataclass
class LabelSpec:
    """The label: column values 0 / 1, `column op threshold` (1 where true, e.g. rating >= 4), or
    `column == 'text'` / `!=` (1 where the cell, without surrounding spaces, is / is not that text)."""

    column: str
    op: Optional[str] = None
    threshold: Optional[float] = None
    text: Optional[str] = None  # a text rule's value

    def describe(self) -> str:
        if self.op is None:
            return self.column
        return f"{self.column} {self.op} " + (f"{self.threshold:g}" if self.text is None else repr(self.text))


@dataclass
class CategoricalSpec:
    """A categorical field: ids by vocabulary (min_count) or by hashing (hash_cap); one or several per row."""

    name: str  # feature name in the prepared dataset
    column: str
    min_count: Optional[int] = None  # vocab: 0 empty, 1 OOV, 2.. values seen >= min_count times in train
    hash_cap: Optional[int] = None  # hash: id = hash(value) mod hash_cap, empty -> 0
    embedding_dim: Optional[int] = None
    multi_valued: bool = False
    separator: str = "|"  # multi-valued, in a CSV (or Parquet string) column
    pooling: str = "sum"  # multi-valued: sum | mean
    max_length: Optional[int] = None  # multi-valued: keep the first max_length ids of a row

    @property
    def encoding(self) -> str:
        return "hash" if self.hash_cap is not None else "vocab"


@dataclass
class NumericSpec:
    name: str
    column: str
    transform: str = DEFAULT_TRANSFORM  # numeric_transforms.TRANSFORMS (bucketize -> a sparse feature)
    clip: float = DEFAULT_CLIP  # standardize: clip |z| at this many train standard deviations


@dataclass
class Schema:
    label: LabelSpec
    categorical: List[CategoricalSpec]  # single- and multi-valued, in file order (single first)
    numeric: List[NumericSpec]
    timestamp: Optional[str] = None  # the column
    timestamp_format: Optional[str] = None  # strptime format of text times (timestamp_formats)
    timestamp_unit: Optional[str] = None  # epoch numbers in s / ms / us / ns
    val_ratio: Optional[float] = None  # None: prepare.val_ratio
    test_ratio: Optional[float] = None
    seed: Optional[int] = None
    csv_delimiter: str = ","  # unless csv.delimiter is given, a .tsv file's is a tab
    csv_delimiter_given: bool = False
    csv_header: bool = True
    csv_columns: Optional[List[str]] = None  # column names when the CSV has no header
    csv_escape: Optional[str] = None  # the quotes' escape character (`\\"`); None: quotes are doubled only
    cross_pairs: List[Tuple[str, str]] = field(default_factory=list)
    split_files: Dict[str, List[str]] = field(default_factory=dict)  # split -> files / folders / globs
    split_column: Optional[str] = None  # a column of train / val / test per row
    path: str = "schema.yaml"
    lines: Dict[str, int] = field(default_factory=dict, repr=False)  # key path -> line in the file

    def where(self, key: str) -> str:
        """`file:line` of a key path such as `numeric[1].column` (the file alone if unknown)."""
        k = key
        while k and k not in self.lines:
            k = k.rsplit(".", 1)[0] if "." in k else (k.rsplit("[", 1)[0] if "[" in k else "")
        return f"{self.path}:{self.lines[k]}" if k else self.path

    def columns(self) -> Dict[str, str]:
        """Raw column -> the key path that first names it (for error messages)."""
        out: Dict[str, str] = {}
        out.setdefault(self.label.column, "label")
        if self.timestamp is not None:
            out.setdefault(self.timestamp, "timestamp")
        if self.split_column is not None:
            out.setdefault(self.split_column, "split.column")
        for i, c in enumerate(self.single()):
            out.setdefault(c.column, f"categorical[{i}].column")
        for i, c in enumerate(self.multi()):
            out.setdefault(c.column, f"multi_valued[{i}].column")
        for i, n in enumerate(self.numeric):
            out.setdefault(n.column, f"numeric[{i}].column")
        return out

    def single(self) -> List[CategoricalSpec]:
        return [c for c in self.categorical if not c.multi_valued]

    def multi(self) -> List[CategoricalSpec]:
        return [c for c in self.categorical if c.multi_valued]

    def dense(self) -> List[NumericSpec]:
        return [n for n in self.numeric if n.transform != "bucketize"]

    def bucketized(self) -> List[NumericSpec]:
        return [n for n in self.numeric if n.transform == "bucketize"]

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d.pop("lines")
        d["cross_pairs"] = [list(p) for p in self.cross_pairs]
        return d


# -- parsing ------------------------------------------------------------------------------------------------
def _key_lines(node: Any, prefix: str, out: Dict[str, int]) -> None:
    """Line (1-based) of every key path in a composed YAML node tree."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            path = f"{prefix}.{k.value}" if prefix else str(k.value)
            out[path] = k.start_mark.line + 1
            _key_lines(v, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out[f"{prefix}[{i}]"] = v.start_mark.line + 1
            _key_lines(v, f"{prefix}[{i}]", out)


class _Reader:
    def __init__(self, path: str, lines: Dict[str, int]) -> None:
        self.path, self.lines = path, lines

    def fail(self, key: str, msg: str) -> SchemaError:
        probe = Schema(LabelSpec(""), [], [], path=self.path, lines=self.lines)
        return SchemaError(f"{probe.where(key)}: {key}{msg}")

    def mapping(self, value: Any, key: str, allowed: Tuple[str, ...]) -> Dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"={value!r}: expected a mapping with keys {', '.join(allowed)}")
        for k in value:
            if k not in allowed:
                raise self.fail(f"{key}.{k}" if key else str(k), f": unknown key; expected one of {', '.join(allowed)}")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"={value!r}: expected a non-empty string")
        return value

    def integer(self, value: Any, key: str, low: int) -> Optional[int]:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.fail(key, f"={value!r}: expected an integer >= {low}")
        return value

    def ratio(self, value: Any, key: str) -> Optional[float]:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise self.fail(key, f"={value!r}: expected a number in [0, 1)")
        return float(value)

    def choice(self, value: Any, key: str, choices: Tuple[str, ...]) -> str:
        if value not in choices:
            raise self.fail(key, f"={value!r} is not one of {', '.join(choices)}")
        return value

    def items(self, value: Any, key: str) -> List[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(key, f": expected a list, got {type(value).__name__}")
        return value


def parse_label(text: Any, r: _Reader) -> LabelSpec:
    text = r.string(text, "label")
    m = _RULE.match(text)
    if m:
        return LabelSpec(m.group("col").strip().strip('"'), m.group("op"), float(m.group("num")))
    m = _TEXT_RULE.match(text)
    if m:
        return LabelSpec(m.group("col").strip().strip('"'), m.group("op"), text=m.group("text").strip())
    if any(c in text for c in "<>=!"):
        raise r.fail("label", f"={text!r}: a rule must be `column OP number` with OP one of {' '.join(OPS)}, "
                              "e.g. \"rating >= 4\", or `column == 'text'` (or !=), e.g. \"income == '>50K'\"")
    return LabelSpec(text)


def _categorical(item: Any, key: str, r: _Reader, multi: bool) -> CategoricalSpec:
    allowed = ("column", "name", "min_count", "hash_cap", "embedding_dim")
    if multi:
        allowed += ("separator", "pooling", "max_length")
    d = r.mapping(item, key, allowed)
    col = r.string(d.get("column"), f"{key}.column")
    spec = CategoricalSpec(
        name=r.string(d.get("name", col), f"{key}.name"), column=col,
        min_count=r.integer(d.get("min_count"), f"{key}.min_count", 1),
        hash_cap=r.integer(d.get("hash_cap"), f"{key}.hash_cap", 1),
        embedding_dim=r.integer(d.get("embedding_dim"), f"{key}.embedding_dim", 1), multi_valued=multi)
    if spec.min_count is not None and spec.hash_cap is not None:
        raise r.fail(key, ": give min_count (vocabulary) or hash_cap (hashing), not both")
    if spec.hash_cap is None and spec.min_count is None:
        spec.min_count = 1
    if multi:
        spec.separator = r.string(d.get("separator", "|"), f"{key}.separator")
        spec.pooling = r.choice(d.get("pooling", "sum"), f"{key}.pooling", POOLINGS)
        spec.max_length = r.integer(d.get("max_length"), f"{key}.max_length", 1)
    return spec


def _timestamp(s: Schema, value: Any, r: _Reader) -> None:
    """`timestamp: COLUMN`, `{column: COLUMN, format: STRFTIME}` or `{column: COLUMN, unit: s|ms|us|ns}`."""
    if not isinstance(value, dict):
        if not isinstance(value, str) or not value:
            raise r.fail("timestamp", f"={value!r}: expected a column name, {{column: NAME, format: \"%Y%m%d\"}} "
                                      "or {column: NAME, unit: ms}")
        s.timestamp = value
        return
    t = r.mapping(value, "timestamp", ("column", "format", "unit"))
    s.timestamp = r.string(t.get("column"), "timestamp.column")
    if "format" in t and "unit" in t:
        raise r.fail("timestamp", ": give format (text times) or unit (epoch numbers), not both")
    if "format" in t:
        fmt = r.string(t["format"], "timestamp.format")
        problem = timestamp_formats.format_problem(fmt)
        if problem:
            raise r.fail("timestamp.format", f"={fmt!r} {problem}")
        s.timestamp_format = fmt
    if "unit" in t:
        s.timestamp_unit = r.choice(t["unit"], "timestamp.unit", timestamp_formats.UNITS)


def _split(s: Schema, sp: Dict[str, Any], r: _Reader, path: str) -> None:
    """`split:` ratios {val, test, seed}, or given files {train, val, test}, or {column}; never two of them."""
    files = {k: v for k, v in sp.items() if k in ("train", "val", "test") and not isinstance(v, (int, float))}
    if files:
        base = Path(path).parent
        for k, v in files.items():
            items = v if isinstance(v, list) else [v]
            pats = [r.string(x, f"split.{k}") for x in items]
            if not pats:
                raise r.fail(f"split.{k}", ": expected a file, folder or glob (or a list of them)")
            s.split_files[k] = [p if Path(p).is_absolute() else str(base / p) for p in pats]
        if "train" not in files:
            raise r.fail("split", f": {', '.join(files)} file(s) given but no `train:` file")
        ratios = [k for k in ("val", "test", "seed") if k in sp and k not in files]
        if ratios:
            raise r.fail(f"split.{ratios[0]}", f"={sp[ratios[0]]!r}: a ratio / seed beside split files: the files "
                                               "are the split; give every split as files (train, val, test)")
    if "column" in sp:
        s.split_column = r.string(sp["column"], "split.column")
        other = [k for k in ("train", "val", "test", "seed") if k in sp]
        if other:
            raise r.fail(f"split.{other[0]}", ": beside split.column: the column is the split; remove one of them")
    if files or s.split_column is not None:
        if s.timestamp is not None:
            given = "split.column" if s.split_column is not None else "split files (split.train, ...)"
            raise r.fail("timestamp", f"={s.timestamp!r} and {given}: the split is given, a time split would "
                                      "ignore it; remove `timestamp:` (or the given split, to split by time)")
        return
    if "train" in sp:
        raise r.fail("split.train", f"={sp['train']!r}: train is the rest; give val / test ratios, or train / val / "
                                    "test files")
    s.val_ratio, s.test_ratio = r.ratio(sp.get("val"), "split.val"), r.ratio(sp.get("test"), "split.test")
    s.seed = r.integer(sp.get("seed"), "split.seed", 0)
    if (s.val_ratio or 0) + (s.test_ratio or 0) >= 1:
        raise r.fail("split", f": val + test = {(s.val_ratio or 0) + (s.test_ratio or 0)} must be < 1")


def parse_schema(raw: Any, path: str = "schema.yaml", lines: Optional[Dict[str, int]] = None) -> Schema:
    """A parsed YAML document -> Schema, validated (see the module docstring)."""
    r = _Reader(path, lines or {})
    d = r.mapping(raw, "", TOP_KEYS)
    if "label" not in d:
        raise SchemaError(f"{path}: no `label:` (a 0/1 column, or a rule such as \"rating >= 4\")")
    label = parse_label(d["label"], r)
    cats = [_categorical(x, f"categorical[{i}]", r, False) for i, x in enumerate(r.items(d.get("categorical"),
                                                                                          "categorical"))]
    cats += [_categorical(x, f"multi_valued[{i}]", r, True) for i, x in enumerate(r.items(d.get("multi_valued"),
                                                                                          "multi_valued"))]
    nums = []
    for i, x in enumerate(r.items(d.get("numeric"), "numeric")):
        key = f"numeric[{i}]"
        nd = r.mapping(x, key, ("column", "name", "transform", "clip"))
        col = r.string(nd.get("column"), f"{key}.column")
        spec = NumericSpec(r.string(nd.get("name", col), f"{key}.name"), col,
                           r.choice(nd.get("transform", DEFAULT_TRANSFORM), f"{key}.transform", TRANSFORMS))
        if "clip" in nd:
            c = nd["clip"]
            if spec.transform != "standardize":
                raise r.fail(f"{key}.clip", f"={c!r}: clip is for transform: standardize (this field is "
                                            f"{spec.transform}; minmax clips to [0, 1] by itself)")
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not c > 0 or not math.isfinite(c):
                raise r.fail(f"{key}.clip", f"={c!r}: expected a number > 0 (standard deviations)")
            spec.clip = float(c)
        nums.append(spec)
    if not cats and not nums:
        raise SchemaError(f"{path}: no features: give categorical, multi_valued and/or numeric fields")
    s = Schema(label, cats, nums, path=path, lines=lines or {})
    if "timestamp" in d:
        _timestamp(s, d["timestamp"], r)
    if "split" in d:
        _split(s, r.mapping(d["split"], "split", ("train", "val", "test", "seed", "column")), r, path)
    if "csv" in d:
        c = r.mapping(d["csv"], "csv", ("delimiter", "header", "columns", "escape"))
        s.csv_delimiter = r.string(c.get("delimiter", ","), "csv.delimiter")
        s.csv_delimiter_given = "delimiter" in c
        if len(s.csv_delimiter) != 1:
            raise r.fail("csv.delimiter", f"={s.csv_delimiter!r}: expected one character")
        header = c.get("header", True)
        if not isinstance(header, bool):
            raise r.fail("csv.header", f"={header!r}: expected true or false")
        s.csv_header = header
        if "columns" in c:
            s.csv_columns = [r.string(v, f"csv.columns[{i}]") for i, v in enumerate(r.items(c["columns"],
                                                                                            "csv.columns"))]
        if "escape" in c:
            s.csv_escape = r.string(c["escape"], "csv.escape")
            if len(s.csv_escape) != 1:
                raise r.fail("csv.escape", f"={s.csv_escape!r}: expected one character (e.g. \"\\\\\")")
            if s.csv_escape in ('"', s.csv_delimiter):
                what = "the quote character" if s.csv_escape == '"' else "the delimiter"
                raise r.fail("csv.escape", f"={s.csv_escape!r} is {what}")
        if not s.csv_header and not s.csv_columns:
            raise r.fail("csv", ": header: false needs `columns: [...]` (the names of the CSV columns)")
    for i, c in enumerate(s.multi()):
        if c.separator == s.csv_delimiter:
            raise r.fail(f"multi_valued[{i}].separator", f"={c.separator!r} is also the CSV delimiter")
    names = ["label"] + [c.name for c in s.categorical] + [n.name for n in s.numeric]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SchemaError(f"{path}: feature name(s) {dup} given twice ('label' is the label's); set `name:` apart")
    single = {c.name for c in s.single()} | {n.name for n in s.bucketized()}
    for i, p in enumerate(r.items(d.get("cross_pairs"), "cross_pairs")):
        key = f"cross_pairs[{i}]"
        if not (isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)):
            raise r.fail(key, f"={p!r}: expected a pair [field_a, field_b]")
        for x in p:
            if x not in single:
                raise r.fail(key, f": {x!r} is not a single-valued categorical (or bucketized) field; "
                                  f"crossable: {', '.join(sorted(single))}")
        if p[0] == p[1]:
            raise r.fail(key, f": {p[0]!r} crossed with itself")
        s.cross_pairs.append((p[0], p[1]))
    return s


def load_schema(path: str | Path) -> Schema:
    p = Path(path)
    if not p.is_file():
        raise SchemaError(f"{p}: schema file not found")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:  # UTF-16 of Windows Notepad's "Unicode", Latin-1, a binary file
        raise SchemaError(f"{p}: not UTF-8 text (byte {e.start + 1} is 0x{e.object[e.start]:02x}); save the schema "
                          "file as UTF-8") from None
    except OSError as e:
        raise SchemaError(f"{p}: cannot read the schema file ({e.strerror or e})") from None
    try:
        raw = yaml.safe_load(text)
        lines: Dict[str, int] = {}
        _key_lines(yaml.compose(text), "", lines)
    except yaml.YAMLError as e:
        raise SchemaError(f"{p}: not valid YAML: {e}") from None
    return parse_schema(raw, str(p), lines)


def rule_holds(values: Any, op: str, threshold: float) -> Any:
    """Elementwise `values op threshold` (numpy), the label rule's comparison."""
    import operator

    fn = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">": operator.gt,
          "<": operator.lt}[op]
    return fn(values, threshold)
