"""Plan files: a ShardingPlan as JSON, with the context it was made for, so a job runs the plan that was reviewed.

    {
      "format": "recsys-dist-sharding-plan", "version": 1,
      "context": {"world_size": 2, "local_world_size": 2, "device": "cpu",
                  "tables": {"t_C1": {"rows": 1000, "dim": 16}, ...}, ...anything the caller adds},
      "modules": {"sparse_arch.ebc": {"t_C1": {"sharding_type": "row_wise", "compute_kernel": "fused",
                  "ranks": [0, 1], "shards": [{"rank": 0, "offsets": [0, 0], "sizes": [500, 16]}, ...]}, ...}}
    }

`load_plan` refuses, naming what differs, a plan made for another world size or other tables (names, rows, dims).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from torch import nn
from torch.distributed._shard.sharding_spec import EnumerableShardingSpec, ShardMetadata
from torchrec.distributed.planner.utils import placement
from torchrec.distributed.types import (
    CacheAlgorithm,
    CacheParams,
    DataType,
    EmbeddingModuleShardingPlan,
    ParameterSharding,
    ShardingPlan,
)

from embedding_sharding.planner import embedding_module_paths, embedding_tables
from recsys_dist.json_file import read_json

FORMAT = "recsys-dist-sharding-plan"
VERSION = 1


class PlanFileError(ValueError):
    """A plan file that cannot be used for this job; the message names the file and what differs."""


def _cache_to_json(c: Optional[CacheParams]) -> Optional[Dict[str, Any]]:
    if c is None:
        return None
    out = {"algorithm": c.algorithm.name if c.algorithm is not None else None, "load_factor": c.load_factor,
           "reserved_memory": c.reserved_memory, "precision": c.precision.name if c.precision is not None else None,
           "prefetch_pipeline": c.prefetch_pipeline}
    return {k: v for k, v in out.items() if v is not None}


def _cache_from_json(d: Optional[Dict[str, Any]]) -> Optional[CacheParams]:
    if not d:
        return None
    return CacheParams(algorithm=CacheAlgorithm[d["algorithm"]] if "algorithm" in d else None,
                       load_factor=d.get("load_factor"), reserved_memory=d.get("reserved_memory"),
                       precision=DataType[d["precision"]] if "precision" in d else None,
                       prefetch_pipeline=d.get("prefetch_pipeline"))


def sharding_to_json(ps: ParameterSharding) -> Dict[str, Any]:
    shards: List[Dict[str, Any]] = []
    if ps.sharding_spec is not None:
        for sm in ps.sharding_spec.shards:  # type: ignore[attr-defined]
            shards.append({"rank": sm.placement.rank(), "offsets": list(sm.shard_offsets),
                           "sizes": list(sm.shard_sizes)})
    out: Dict[str, Any] = {"sharding_type": ps.sharding_type, "compute_kernel": ps.compute_kernel,
                           "ranks": list(ps.ranks) if ps.ranks is not None else None, "shards": shards}
    cache = _cache_to_json(ps.cache_params)
    if cache:
        out["cache_params"] = cache
    for key in ("enforce_hbm", "stochastic_rounding"):
        if getattr(ps, key) is not None:
            out[key] = getattr(ps, key)
    if ps.output_dtype is not None:
        out["output_dtype"] = ps.output_dtype.name
    return out


def plan_to_json(plan: ShardingPlan) -> Dict[str, Dict[str, Any]]:
    return {path: {name: sharding_to_json(ps) for name, ps in mplan.items()}  # type: ignore[union-attr]
            for path, mplan in plan.plan.items()}


def table_context(module: nn.Module) -> Dict[str, Dict[str, int]]:
    return {name: {"rows": c.num_embeddings, "dim": c.embedding_dim} for name, c in embedding_tables(module).items()}


def _tables_from_plan(modules: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Optional[int]]]:
    """Rows / dims seen in the shards (data_parallel tables have no shards: None)."""
    out: Dict[str, Dict[str, Optional[int]]] = {}
    for mplan in modules.values():
        for name, p in mplan.items():
            if p["shards"]:
                out[name] = {"rows": max(s["offsets"][0] + s["sizes"][0] for s in p["shards"]),
                             "dim": max(s["offsets"][1] + s["sizes"][1] for s in p["shards"])}
            else:
                out[name] = {"rows": None, "dim": None}
    return out


def save_plan(plan: ShardingPlan, path: str | Path, context: Dict[str, Any],
              module: Optional[nn.Module] = None) -> Path:
    """Write `plan` as JSON. `context` must hold world_size (and should hold device, local_world_size); the
    tables' rows / dims come from `context["tables"]`, else from `module`, else from the shards."""
    if "world_size" not in context:
        raise ValueError("save_plan: context needs 'world_size'")
    modules = plan_to_json(plan)
    ctx = dict(context)
    if "tables" not in ctx:
        ctx["tables"] = table_context(module) if module is not None else _tables_from_plan(modules)
    doc = {"format": FORMAT, "version": VERSION, "context": ctx, "modules": modules}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(p)
    return p


def read_plan_json(path: str | Path) -> Dict[str, Any]:
    p = Path(path)
    doc = read_json(p, PlanFileError, f"plan file not found: {p}; write one with `recsys-dist plan --out {p}`")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise PlanFileError(f"{p}: not a sharding plan file (expected \"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise PlanFileError(f"{p}: plan file version {doc.get('version')}, this code reads {VERSION}")
    for key in ("context", "modules"):
        if not isinstance(doc.get(key), dict):
            raise PlanFileError(f"{p}: missing or malformed {key!r}")
    return doc


def _check(doc: Dict[str, Any], module: nn.Module, world_size: int, src: str) -> None:
    ctx = doc["context"]
    if ctx.get("world_size") != world_size:
        raise PlanFileError(f"{src}: plan made for world size {ctx.get('world_size')}, this job has {world_size} "
                            f"ranks; re-plan with `recsys-dist plan --world-size {world_size}`")
    have = table_context(module)
    planned: Dict[str, Any] = dict(ctx.get("tables") or {})
    for mplan in doc["modules"].values():
        for name in mplan:
            planned.setdefault(name, {"rows": None, "dim": None})
    missing, extra = sorted(set(have) - set(planned)), sorted(set(planned) - set(have))
    diffs = []
    for name in sorted(set(have) & set(planned)):
        for key in ("rows", "dim"):
            want = planned[name].get(key)
            if want is not None and want != have[name][key]:
                diffs.append(f"{name}.{key}: plan {want}, model {have[name][key]}")
    if missing or extra or diffs:
        parts = []
        if missing:
            parts.append(f"tables not in the plan: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if extra:
            parts.append(f"plan tables not in the model: {extra[:10]}{' ...' if len(extra) > 10 else ''}")
        if diffs:
            parts.append("different sizes: " + "; ".join(diffs[:10]) + (" ..." if len(diffs) > 10 else ""))
        raise PlanFileError(f"{src}: plan made for other tables ({'; '.join(parts)}); re-plan for this model")
    paths = embedding_module_paths(module)
    for path, names in doc["modules"].items():
        if path not in paths:
            raise PlanFileError(f"{src}: plan module {path!r} is not in the model (modules: {sorted(paths)})")
        gap = sorted(set(paths[path]) - set(names))
        if gap:
            raise PlanFileError(f"{src}: module {path!r}: no sharding for table(s) {gap}")


def _sharding_from_json(d: Dict[str, Any], device: str, lws: int, where: str) -> ParameterSharding:
    try:
        spec = None
        if d["shards"]:
            spec = EnumerableShardingSpec([
                ShardMetadata(shard_offsets=list(s["offsets"]), shard_sizes=list(s["sizes"]),
                              placement=placement(device, int(s["rank"]), lws))
                for s in d["shards"]])
        return ParameterSharding(
            sharding_type=d["sharding_type"], compute_kernel=d["compute_kernel"], ranks=d.get("ranks"),
            sharding_spec=spec, cache_params=_cache_from_json(d.get("cache_params")),
            enforce_hbm=d.get("enforce_hbm"), stochastic_rounding=d.get("stochastic_rounding"),
            output_dtype=DataType[d["output_dtype"]] if d.get("output_dtype") else None)
    except (KeyError, TypeError, ValueError) as e:
        raise PlanFileError(f"{where}: malformed entry ({type(e).__name__}: {e})") from None


def load_plan(path: str | Path, module: nn.Module, world_size: int, device: Optional[str] = None) -> ShardingPlan:
    """The ShardingPlan in `path`, after checking it was made for `world_size` ranks and `module`'s tables.

    `device` (cpu | cuda), if given, must be the device the plan was made for."""
    doc = read_plan_json(path)
    src = str(path)
    _check(doc, module, world_size, src)
    ctx = doc["context"]
    plan_device = ctx.get("device", "cpu")
    if device is not None and device != plan_device:
        raise PlanFileError(f"{src}: plan made for device {plan_device!r}, this job runs on {device!r}; re-plan "
                            f"with `recsys-dist plan --device {device}`")
    lws = int(ctx.get("local_world_size") or world_size)
    out: Dict[str, EmbeddingModuleShardingPlan] = {}
    for mpath, tables in doc["modules"].items():
        mplan = EmbeddingModuleShardingPlan()
        for name, d in tables.items():
            mplan[name] = _sharding_from_json(d, plan_device, lws, f"{src}: modules.{mpath}.{name}")
        out[mpath] = mplan
    return ShardingPlan(out)  # type: ignore[arg-type]
