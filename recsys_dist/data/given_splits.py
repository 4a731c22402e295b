"""Splits the user already made: per-split input files and a split column, for `prepare --schema`.

Per-split files come from `prepare.input` items named by their split,
    recsys-dist prepare --schema s.yaml --input train=data/train.csv val=data/valid.csv "test=data/test_*.csv"
or from the schema file (`split: {train: train.csv, val: valid.csv, test: test.csv}`, paths relative to the schema
file). A path may be a file, a folder or a glob (expanded here, sorted; a glob that matches nothing is an error).
A split column holds `train`, `val` (or `valid`, `validation`, `dev`) or `test` per row (case and surrounding
spaces ignored); any other value is a bad row.

`pooled_warning` is what prepare says when several plain input files are pooled and re-split by time or at
random: their boundaries are not kept, and if they look like a train / val / test split the user is told how to
give them as one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_dist.data.bad_rows import PrepareConfigError
from recsys_dist.data.metadata import SPLITS

COLUMN_VALUES = {"train": 0, "val": 1, "valid": 1, "validation": 1, "dev": 1, "test": 2}
EXPECTED_VALUES = "train, val (or valid, validation, dev) or test"
_NAMED = re.compile(r"^(train|val|test)=(.+)$")
_LOOKS_LIKE_SPLIT = re.compile(r"(^|[^a-z])(train|training|val|valid|validation|dev|test|testing)([^a-z]|$)")


def parse_inputs(items: List[str]) -> Tuple[List[str], Dict[str, List[str]]]:
    """`prepare.input` -> (plain items, {split: items}) for `train=PATH` / `val=PATH` / `test=PATH` items.
    Mixing both kinds is an error (plain files would be pooled into a split the user did not name)."""
    plain: List[str] = []
    named: Dict[str, List[str]] = {}
    for item in items:
        m = _NAMED.match(item)
        if m:
            named.setdefault(m.group(1), []).append(m.group(2))
        else:
            plain.append(item)
    if plain and named:
        raise PrepareConfigError(f"prepare.input mixes split files ({', '.join(f'{k}=...' for k in named)}) with "
                                 f"plain inputs {plain}: name the split of every input (train=PATH, val=PATH, "
                                 "test=PATH)")
    if named and "train" not in named:
        raise PrepareConfigError(f"prepare.input names {', '.join(sorted(named))} files but no train=PATH")
    return plain, named


def codes(arr: pa.Array) -> Tuple[np.ndarray, np.ndarray]:
    """Split-column values -> (split index int8 [n] in SPLITS order, bad bool [n]); null / unknown are bad."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.string())
    text = pc.utf8_lower(pc.utf8_trim_whitespace(arr))
    out = np.full(len(arr), -1, dtype=np.int8)
    for value, k in COLUMN_VALUES.items():
        out[pc.fill_null(pc.equal(text, value), False).to_numpy(zero_copy_only=False)] = k
    bad = out < 0
    out[bad] = 0
    return out, bad


def pooled_warning(files: List[str], how: str) -> Optional[str]:
    """The loud word when several input files are pooled and re-split (`how`: "by time (timestamp: ts)", ...)."""
    if len(files) < 2:
        return None
    names = [Path(f).name for f in files]
    msg = (f"{len(files)} input files ({', '.join(names[:6])}{', ...' if len(names) > 6 else ''}) are pooled and "
           f"re-split {how}: their file boundaries are NOT kept")
    splitty = [n for n in names if _LOOKS_LIKE_SPLIT.search(n.lower())]
    if splitty:
        msg += (f"; {', '.join(splitty[:6])} look like a given train / val / test split: to keep it, give them as "
                f"--input train=PATH val=PATH test=PATH (or `split: {{train: ..., val: ..., test: ...}}` in the "
                f"schema)")
    return msg
