"""OptInter's cross-product features: one extra sparse feature (and table) per pair of categorical fields.

For a pair (i, j) with base tables of rows_i and rows_j rows, a row's cross value is the pair of its ids
(OptInter eq. 4, x^m_(i,j) = onehot(x_i x x_j)). It becomes a *bucket* in [0, S):

    S = rows_i * rows_j               if that is <= data.cross_table_rows: bucket = id_i * rows_j + id_j (exact)
    S = data.cross_table_rows         otherwise: bucket = mix64(seed(i, j), id_i, id_j) mod S (hashed)

mix64 is splitmix64's finalizer applied twice; seed(i, j) comes from the pair's names, so a pair hashes the same
whichever pairs are selected (search and retrain share counts). Computed where the batch is made, vectorized.

Without frequency filtering the table has S rows and id = bucket. With `data.cross_min_count = N > 1`, a counting
pass over the train split (recsys_dist.data.cross_counts) keeps the buckets seen >= N times; the table then has
1 + #frequent rows: id 0 is the pair's OOV id (rare crosses), frequent buckets get ids 1.. in bucket order.

Counting on raw values (OptInter Sec. III-B: crosses seen < 20 times are OOV): a base field prepared with a
vocabulary has already sent its rare values to its OOV id (1), so (OOV_i, v_j) would pool every rare value of i
with v_j and could pass the count. A cross with an OOV side is therefore OOV itself, and is not counted. This is
the raw-value count exactly when prepare.min_count <= data.cross_min_count (the paper: 20 and 20): a value seen
< min_count times cannot be in a cross seen more often.

Pairs (`data.cross_pairs`): "all" (every pair of single-valued sparse features: 325 for Criteo's 26), a list of
"Ci,Cj" strings, or the path of a searched-architecture JSON (recsys_dist.models.optinter): only its memorized
pairs get tables. Feature (and table) names are "CixCj" (table "t_CixCj").

    tables, transform = cross_features(cfg, md)
    transform({"C1": ids1, "C2": ids2, ...})  # -> {"C1xC2": cross ids [b], ...}
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from recsys_dist.config import ConfigError
from recsys_dist.data.metadata import Metadata
from recsys_dist.json_file import read_json

METHODS = ("memorize", "factorize", "naive")
_C1, _C2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def cross_name(a: str, b: str) -> str:
    return f"{a}x{b}"


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 (Steele et al.): a bijective 64-bit mix of uint64 values, vectorized."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64, copy=True) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _C1
        z = (z ^ (z >> np.uint64(27))) * _C2
        return z ^ (z >> np.uint64(31))


def pair_seed(a: str, b: str) -> np.uint64:
    """A stable 64-bit seed from the pair's names (not its position in a selection)."""
    return np.uint64(int.from_bytes(hashlib.blake2b(f"{a}|{b}".encode(), digest_size=8).digest(), "little"))


@dataclass(frozen=True)
class CrossPair:
    """One pair of base features and its bucket space; oov_a / oov_b: the base fields' OOV id (None: no OOV id,
    e.g. hashed fields)."""

    a: str
    b: str
    rows_a: int
    rows_b: int
    buckets: int  # S
    oov_a: Optional[int] = None
    oov_b: Optional[int] = None

    def has_oov_side(self, ids_a: np.ndarray, ids_b: np.ndarray) -> Optional[np.ndarray]:
        """bool [b]: the row's value of a or b is its field's OOV id (None if neither field has one)."""
        out = None
        for oov, ids in ((self.oov_a, ids_a), (self.oov_b, ids_b)):
            if oov is not None:
                hit = ids == oov
                out = hit if out is None else out | hit
        return out

    @property
    def name(self) -> str:
        return cross_name(self.a, self.b)

    @property
    def exact(self) -> bool:
        return self.rows_a * self.rows_b <= self.buckets

    def bucket(self, ids_a: np.ndarray, ids_b: np.ndarray) -> np.ndarray:
        """ids of the two base features [b] (in [0, rows)) -> bucket [b] in [0, S), int64."""
        ia, ib = ids_a.astype(np.int64, copy=False), ids_b.astype(np.int64, copy=False)
        if self.exact:
            return ia * self.rows_b + ib
        with np.errstate(over="ignore"):
            h = mix64(mix64(ia.astype(np.uint64) ^ pair_seed(self.a, self.b)) ^ ib.astype(np.uint64))
        return (h % np.uint64(self.buckets)).astype(np.int64)


VOCAB_OOV_ID = 1  # vocab-encoded fields (Criteo and own-data prepares): 0 empty, 1 OOV, 2.. kept values


def make_pairs(names: Sequence[Tuple[str, str]], rows: Dict[str, int], cap: int,
               oov: Optional[Dict[str, Optional[int]]] = None) -> List[CrossPair]:
    oov = oov or {}
    return [CrossPair(a, b, rows[a], rows[b], min(rows[a] * rows[b], cap), oov.get(a), oov.get(b))
            for a, b in names]


def oov_ids(md: Metadata) -> Dict[str, Optional[int]]:
    """The OOV id of each sparse feature (vocab encoding), else None."""
    return {f.name: VOCAB_OOV_ID if f.encoding == "vocab" else None for f in md.sparse_features}


class CrossTransform:
    """{base feature: ids [b]} -> {cross feature: ids [b]}: the FeatureTransform of pipelines.parquet_input.

    Args:
        pairs: the CrossPairs, in embedding order.
        frequent: per cross name, the sorted frequent buckets (int64); None: no filtering (id = bucket).

    Example:
        >>> t = CrossTransform([CrossPair("C1", "C2", 3, 4, 12)])
        >>> t({"C1": np.array([0, 2]), "C2": np.array([1, 3])})["C1xC2"]
        array([ 1, 11])
    """

    def __init__(self, pairs: Sequence[CrossPair], frequent: Optional[Dict[str, np.ndarray]] = None) -> None:
        self.pairs = list(pairs)
        self.frequent = frequent
        if frequent is not None:
            missing = [p.name for p in self.pairs if p.name not in frequent]
            if missing:
                raise ValueError(f"no frequent-bucket list for cross feature(s) {missing[:5]}")

    def table_rows(self, name: str) -> int:
        p = next(p for p in self.pairs if p.name == name)
        return p.buckets if self.frequent is None else 1 + len(self.frequent[name])

    def __call__(self, base: Dict[str, Any]) -> Dict[str, np.ndarray]:
        out = {}
        for p in self.pairs:
            ia, ib = base[p.a], base[p.b]
            if isinstance(ia, tuple) or isinstance(ib, tuple):
                raise ValueError(f"cross {p.name}: multi-valued features cannot be crossed")
            bucket = p.bucket(ia, ib)
            if self.frequent is None:
                out[p.name] = bucket
                continue
            ids = frequent_ids(bucket, self.frequent[p.name])
            rare_side = p.has_oov_side(np.asarray(ia), np.asarray(ib))
            out[p.name] = ids if rare_side is None else np.where(rare_side, 0, ids)
        return out


def frequent_ids(bucket: np.ndarray, frequent: np.ndarray) -> np.ndarray:
    """bucket [b] -> 1 + its position in the sorted `frequent`, or 0 (OOV) if it is not there."""
    if len(frequent) == 0:
        return np.zeros_like(bucket)
    pos = np.searchsorted(frequent, bucket)
    found = frequent[np.minimum(pos, len(frequent) - 1)] == bucket
    return np.where(found, pos + 1, 0).astype(np.int64)


# -- which pairs -----------------------------------------------------------------------------------------------
def crossable_fields(md: Metadata) -> List[str]:
    """The single-valued sparse features, in metadata order (a cross needs one id per side)."""
    return [f.name for f in md.sparse_features if not f.multi_valued]


def read_architecture(path: str | Path) -> Dict[str, Any]:
    """A searched-architecture JSON (OptInterArch.export_architecture): {"methods": {name: method}, "pairs":
    {name: [a, b]}, ...}, checked."""
    p = Path(path)
    d = read_json(p, ConfigError, f"{p}: architecture file not found (written by an OptInter search run as "
                                  "<out_dir>/architecture.json)")
    if not isinstance(d, dict) or not isinstance(d.get("methods"), dict) or not isinstance(d.get("pairs"), dict):
        raise ConfigError(f"{p}: expected an OptInter architecture with 'methods' and 'pairs' mappings")
    for name, m in d["methods"].items():
        if m not in METHODS:
            raise ConfigError(f"{p}: methods.{name}={m!r} is not one of {', '.join(METHODS)}")
        pair = d["pairs"].get(name)
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise ConfigError(f"{p}: pairs.{name} must be [field_a, field_b], got {pair!r}")
    return d


def select_pairs(spec: Any, md: Metadata, source: str = "data.cross_pairs") -> List[Tuple[str, str]]:
    """`data.cross_pairs` -> ordered (a, b) names, a before b in metadata order."""
    fields = crossable_fields(md)
    order = {n: k for k, n in enumerate(fields)}
    if isinstance(spec, str) and spec == "all":
        return [(fields[i], fields[j]) for i in range(len(fields)) for j in range(i + 1, len(fields))]
    if isinstance(spec, str):
        arch = read_architecture(spec)
        raw = [tuple(arch["pairs"][n]) for n, m in arch["methods"].items() if m == "memorize"]
        source = f"{spec}"
    elif isinstance(spec, (list, tuple)):
        raw = []
        for k, item in enumerate(spec):
            parts = [x.strip() for x in item.split(",")] if isinstance(item, str) else None
            if not parts or len(parts) != 2:
                raise ConfigError(f"{source}[{k}]={item!r}: expected a pair 'Ci,Cj'")
            raw.append(tuple(parts))
    else:
        raise ConfigError(f"{source}={spec!r}: expected 'all', a list of 'Ci,Cj' pairs or an architecture JSON path")
    out, seen = [], set()
    for a, b in raw:
        for n in (a, b):
            if n not in order:
                why = "multi-valued" if n in md.sparse_names else "not a sparse feature of the dataset"
                raise ConfigError(f"{source}: pair ({a}, {b}): {n!r} is {why}; crossable: {', '.join(fields)}")
        if a == b:
            raise ConfigError(f"{source}: pair ({a}, {b}) crosses a field with itself")
        a, b = sorted((a, b), key=order.__getitem__)
        if (a, b) in seen:
            raise ConfigError(f"{source}: pair ({a}, {b}) is listed twice")
        seen.add((a, b))
        out.append((a, b))
    return out


def cross_features(cfg, md: Metadata):
    """(TableSpecs of the cross features, CrossTransform) for `data.cross_pairs`; called by job.features_for.

    With data.cross_min_count > 1 the frequent buckets are read from <data.dir>/cross_counts/ (made by a counting
    pass on first use: on rank 0 while the other ranks wait, see recsys_dist.data.cross_counts)."""
    from recsys_dist.models.sparse import TableSpec

    if cfg.data.cross_table_rows <= 0:
        raise ConfigError(f"data.cross_table_rows={cfg.data.cross_table_rows} must be > 0")
    if cfg.data.cross_min_count < 0:
        raise ConfigError(f"data.cross_min_count={cfg.data.cross_min_count} must be >= 0")
    names = select_pairs(cfg.data.cross_pairs, md)
    clash = sorted(set(md.sparse_names) & {cross_name(a, b) for a, b in names})
    if clash:
        raise ConfigError(f"data.cross_pairs: cross feature name(s) {clash} already name features of the dataset")
    pairs = make_pairs(names, md.table_rows(cfg.model.max_rows_per_table), cfg.data.cross_table_rows, oov_ids(md))
    frequent = None
    if cfg.data.cross_min_count > 1:
        from recsys_dist.data.cross_counts import frequent_buckets

        frequent = frequent_buckets(Path(cfg.data.dir), md, pairs, cfg.data.cross_min_count)
    transform = CrossTransform(pairs, frequent)
    tables = [TableSpec(p.name, transform.table_rows(p.name), cfg.model.embedding_dim) for p in pairs]
    return tables, transform
