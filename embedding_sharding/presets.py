"""Named table sets that need no data on disk, for planning before any data is prepared.

    criteo-tb               Criteo Terabyte, MLPerf DLRM-DCNv2 sizes (26 tables, 40M hashing cap), dim 128
    criteo-kaggle           Criteo Kaggle display-advertising cardinalities (26 tables), dim 128
    criteo-tb+optinter      criteo-tb plus OptInter's 325 cross-product tables (one per pair of the 26 fields)
    criteo-kaggle+optinter  criteo-kaggle plus the same 325 cross tables

A cross table `CixCj` memorizes the pair (value_i, value_j); its rows are min(rows_i * rows_j, cross_cap): the
product of the two fields' sizes (every pair can occur) hashed into at most `cross_cap` rows (default 1M, about
what OptInter's min-count vocabulary keeps of the frequent Criteo pairs).

    >>> tables = preset_tables("criteo-tb+optinter")
    >>> len(tables), tables[26].feature, tables[26].num_embeddings
    (351, 'C1xC2', 1000000)
"""

from __future__ import annotations

from itertools import combinations
from typing import Dict, List, Optional, Sequence, Tuple

from recsys_dist.data.criteo_schema import CATEGORICAL_NAMES, KAGGLE_ROWS, TERABYTE_MLPERF_ROWS
from recsys_dist.models.sparse import TableSpec

DEFAULT_DIM = 128
DEFAULT_CROSS_CAP = 1_000_000
BASES: Dict[str, Tuple[int, ...]] = {"criteo-tb": TERABYTE_MLPERF_ROWS, "criteo-kaggle": KAGGLE_ROWS}
PRESETS = tuple(list(BASES) + [f"{b}+optinter" for b in BASES])


def cross_name(a: str, b: str) -> str:
    return f"{a}x{b}"


def cross_tables(fields: Sequence[str], rows: Sequence[int], dim: int, cap: int) -> List[TableSpec]:
    """One table per unordered pair of fields (325 for 26 fields), rows min(rows_i * rows_j, cap)."""
    return [TableSpec(cross_name(fields[i], fields[j]), min(rows[i] * rows[j], cap), dim)
            for i, j in combinations(range(len(fields)), 2)]


def preset_tables(name: str, dim: Optional[int] = None, cross_cap: Optional[int] = None,
                  max_rows: Optional[int] = None) -> List[TableSpec]:
    """The preset's tables (TableSpec, named t_<feature>), optionally with every table capped at max_rows."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    dim = dim or DEFAULT_DIM
    cap = cross_cap or DEFAULT_CROSS_CAP
    base = BASES[name.split("+")[0]]
    rows = [min(r, max_rows) if max_rows else r for r in base]
    tables = [TableSpec(f, r, dim) for f, r in zip(CATEGORICAL_NAMES, rows)]
    if name.endswith("+optinter"):
        crosses = cross_tables(CATEGORICAL_NAMES, rows, dim, cap)
        tables += [TableSpec(t.feature, min(t.num_embeddings, max_rows) if max_rows else t.num_embeddings, dim)
                   for t in crosses]
    return tables
