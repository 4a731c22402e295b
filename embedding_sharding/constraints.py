"""Per-table planner constraints from a YAML file -> TorchRec `ParameterConstraints`.

    # constraints.yaml
    storage_reservation: 0.15          # optional: share of each device's memory kept free for dense params,
                                       # activations and inputs (TorchRec's heuristic reservation)
    tables:
      t_C1:                            # a table name ...
        sharding_types: [row_wise, table_row_wise]
        compute_kernels: [fused]
        pooling_factors: [1.0]
      "t_*x*":                         # ... or a glob over table names (explicit names win)
        sharding_types: [table_wise]
        caching_ratio: 0.2             # fused_uvm_caching: share of rows cached in HBM
      t_C2:
        sharding_types: [column_wise]
        min_partition: 32              # smallest column-wise shard width

Keys of a table entry: sharding_types, compute_kernels, min_partition, pooling_factors, num_poolings,
batch_sizes, caching_ratio, enforce_hbm, stochastic_rounding. Unknown keys or values fail with the file and key.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

import yaml
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.planner.types import ParameterConstraints
from torchrec.distributed.types import CacheParams

from embedding_sharding.sharders import SHARDING_TYPES

COMPUTE_KERNELS = tuple(k.value for k in EmbeddingComputeKernel)
TABLE_KEYS = ("sharding_types", "compute_kernels", "min_partition", "pooling_factors", "num_poolings",
              "batch_sizes", "caching_ratio", "enforce_hbm", "stochastic_rounding")
GLOB_CHARS = "*?["


class ConstraintsError(ValueError):
    """A constraints file or entry that cannot be used, named by file and key."""


class TableConstraints(Dict[str, ParameterConstraints]):
    """table name (or glob) -> ParameterConstraints, plus the file's storage reservation (None: TorchRec's)."""

    def __init__(self, items: Optional[Mapping[str, ParameterConstraints]] = None,
                 storage_reservation: Optional[float] = None, source: str = "constraints") -> None:
        super().__init__(items or {})
        self.storage_reservation = storage_reservation
        self.source = source


def _list(value: Any, key: str, where: str, kind: type, choices: Optional[Iterable[str]] = None) -> List[Any]:
    if not isinstance(value, list) or not value:
        raise ConstraintsError(f"{where}: {key} must be a non-empty list, got {value!r}")
    out = []
    for v in value:
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, kind) or isinstance(v, bool):
            raise ConstraintsError(f"{where}: {key}: {v!r} is not a {kind.__name__}")
        if choices is not None and v not in choices:
            raise ConstraintsError(f"{where}: {key}: {v!r} is not one of {', '.join(choices)}")
        out.append(v)
    return out


def parse_table(entry: Any, where: str) -> ParameterConstraints:
    """One table's mapping -> ParameterConstraints; `where` names the file and table for errors."""
    if not isinstance(entry, dict):
        raise ConstraintsError(f"{where}: expected a mapping of constraint keys, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(TABLE_KEYS))
    if unknown:
        raise ConstraintsError(f"{where}: unknown key(s) {unknown}; known: {', '.join(TABLE_KEYS)}")
    kw: Dict[str, Any] = {}
    if "sharding_types" in entry:
        kw["sharding_types"] = _list(entry["sharding_types"], "sharding_types", where, str, SHARDING_TYPES)
    if "compute_kernels" in entry:
        kw["compute_kernels"] = _list(entry["compute_kernels"], "compute_kernels", where, str, COMPUTE_KERNELS)
    for key in ("pooling_factors", "num_poolings"):
        if key in entry:
            kw[key] = _list(entry[key], key, where, float)
    if "batch_sizes" in entry:
        kw["batch_sizes"] = _list(entry["batch_sizes"], "batch_sizes", where, int)
    if "min_partition" in entry:
        v = entry["min_partition"]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConstraintsError(f"{where}: min_partition must be a positive integer, got {v!r}")
        kw["min_partition"] = v
    if "caching_ratio" in entry:
        v = entry["caching_ratio"]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v <= 1:
            raise ConstraintsError(f"{where}: caching_ratio must be in (0, 1], got {v!r}")
        kw["cache_params"] = CacheParams(load_factor=float(v))
    for key in ("enforce_hbm", "stochastic_rounding"):
        if key in entry:
            if not isinstance(entry[key], bool):
                raise ConstraintsError(f"{where}: {key} must be true or false, got {entry[key]!r}")
            kw[key] = entry[key]
    return ParameterConstraints(**kw)


def parse_constraints(raw: Any, source: str = "constraints") -> TableConstraints:
    """The YAML document (already parsed) -> TableConstraints."""
    if raw is None:
        return TableConstraints(source=source)
    if not isinstance(raw, dict):
        raise ConstraintsError(f"{source}: expected a mapping with 'tables' (and 'storage_reservation')")
    unknown = sorted(set(raw) - {"tables", "storage_reservation"})
    if unknown:
        raise ConstraintsError(f"{source}: unknown top-level key(s) {unknown}; known: tables, storage_reservation")
    reservation = raw.get("storage_reservation")
    if reservation is not None and (not isinstance(reservation, (int, float)) or isinstance(reservation, bool)
                                    or not 0 <= reservation < 1):
        raise ConstraintsError(f"{source}: storage_reservation must be a fraction in [0, 1), got {reservation!r}")
    tables = raw.get("tables") or {}
    if not isinstance(tables, dict):
        raise ConstraintsError(f"{source}: tables must map table names to constraints")
    parsed = {str(name): parse_table(entry, f"{source}: tables.{name}") for name, entry in tables.items()}
    return TableConstraints(parsed, None if reservation is None else float(reservation), source)


def load_constraints(path: str | Path) -> TableConstraints:
    """A YAML constraints file -> {table name or glob: ParameterConstraints} (a dict, see TableConstraints)."""
    p = Path(path)
    if not p.is_file():
        raise ConstraintsError(f"constraints file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConstraintsError(f"{p}: not valid YAML: {e}") from None
    return parse_constraints(raw, str(p))


def resolve(constraints: Optional[Mapping[str, ParameterConstraints]], table_names: List[str],
            source: Optional[str] = None) -> Dict[str, ParameterConstraints]:
    """Expand globs against the model's tables (an explicit name wins over a glob; the first matching glob wins
    among globs) and refuse names that match no table."""
    if not constraints:
        return {}
    source = source or getattr(constraints, "source", "constraints")
    known = set(table_names)
    out: Dict[str, ParameterConstraints] = {}
    unmatched = []
    for key, pc in constraints.items():
        if any(c in key for c in GLOB_CHARS):
            continue
        if key not in known:
            unmatched.append(key)
        out[key] = pc
    for key, pc in constraints.items():
        if not any(c in key for c in GLOB_CHARS):
            continue
        hits = fnmatch.filter(table_names, key)
        if not hits:
            unmatched.append(key)
        for name in hits:
            out.setdefault(name, pc)
    if unmatched:
        shown = ", ".join(table_names[:8]) + (" ..." if len(table_names) > 8 else "")
        raise ConstraintsError(f"{source}: table(s) {unmatched} match no table of the model (tables: {shown})")
    return out
