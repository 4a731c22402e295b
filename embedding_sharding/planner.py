"""The planner: TorchRec's EmbeddingShardingPlanner over our topology, constraints and sharders.

Stages as in TorchRec (enumerate -> propose -> partition -> estimate -> stats); this file feeds them and keeps
what a report needs: the chosen sharding options (shards with their storage and estimated times), the topology
after the storage reservation, and TorchRec's own statistics table (it only goes to a logger; captured here).

    plan = plan_sharding(model, make_topology(2, device="cpu"), [CTREmbeddingBagCollectionSharder()])

With `pg` the plan is made on rank 0 and broadcast (every rank gets the same plan); without it the model may
live on the meta device and no process group or GPU is needed (a plan for a hypothetical cluster).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch.distributed as dist
from torch import nn
from torchrec.distributed.planner import EmbeddingShardingPlanner
from torchrec.distributed.planner.constants import BATCH_SIZE
from torchrec.distributed.planner.shard_estimators import EmbeddingStorageEstimator
from torchrec.distributed.planner.storage_reservations import HeuristicalStorageReservation
from torchrec.distributed.planner.types import ParameterConstraints, PlannerError, ShardingOption, Topology
from torchrec.distributed.types import ModuleSharder, ShardingPlan
from torchrec.modules.embedding_configs import BaseEmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection

from embedding_sharding.constraints import resolve
from embedding_sharding.enumerator import SearchSpaceEnumerator
from embedding_sharding.estimator import DedupPerfEstimator, SharedShapeEstimates
from embedding_sharding.search import DEFAULT_BUDGET_S, SearchLog

STATS_LOGGER = "torchrec.distributed.planner.stats"
DEFAULT_RESERVATION = 0.15  # TorchRec's default share of memory kept for dense params, activations, inputs


DENSE_MULTIPLIER = 6.0  # TorchRec's: dense params + grads + optimizer state + DDP buckets, per rank


def dense_tensor_bytes(module: nn.Module, multiplier: float = DENSE_MULTIPLIER) -> int:
    """Bytes the data-parallel (non-table) parameters take per rank, as TorchRec's heuristic counts them; works
    on meta tensors (a model not materialized)."""
    table_params = {id(p) for m in module.modules() if isinstance(m, (EmbeddingBagCollection, EmbeddingCollection))
                    for p in m.parameters()}
    size = sum(p.numel() * p.element_size() for p in module.parameters() if id(p) not in table_params)
    return max(1, int(size * multiplier))


class PlanDoesNotFit(RuntimeError):
    """The tables do not fit the topology; the message says by how much, where, and what would make it fit."""


def embedding_tables(module: nn.Module) -> Dict[str, BaseEmbeddingConfig]:
    """table name -> its config, for every (Bag)Collection in `module`."""
    out: Dict[str, BaseEmbeddingConfig] = {}
    for m in module.modules():
        if isinstance(m, EmbeddingBagCollection):
            out.update({c.name: c for c in m.embedding_bag_configs()})
        elif isinstance(m, EmbeddingCollection):
            out.update({c.name: c for c in m.embedding_configs()})
    return out


def embedding_module_paths(module: nn.Module) -> Dict[str, List[str]]:
    """module path (as in a ShardingPlan) -> its table names."""
    out: Dict[str, List[str]] = {}
    for path, m in module.named_modules():
        if isinstance(m, EmbeddingBagCollection):
            out[path] = [c.name for c in m.embedding_bag_configs()]
        elif isinstance(m, EmbeddingCollection):
            out[path] = [c.name for c in m.embedding_configs()]
    return out


def _pooling_factors(module: nn.Module) -> Dict[str, float]:
    """Average ids per sample of each table, where the model knows it (SparseArch's TableSpecs)."""
    out: Dict[str, float] = {}
    for m in module.modules():
        for spec in getattr(m, "tables", None) or []:
            if hasattr(spec, "table_name") and hasattr(spec, "avg_ids_per_sample"):
                out[spec.table_name] = float(spec.avg_ids_per_sample)
    return out


def table_constraints(module: nn.Module, constraints: Optional[Dict[str, ParameterConstraints]] = None,
                      sharding_types: Optional[Sequence[str]] = None,
                      compute_kernel: Optional[str] = None) -> Dict[str, ParameterConstraints]:
    """Per-table constraints: the file's (globs expanded), then the global sharding types / kernel where a table
    sets none, then the model's pooling factors where none is given."""
    names = list(embedding_tables(module))
    resolved = resolve(constraints, names)
    pooling = _pooling_factors(module)
    out: Dict[str, ParameterConstraints] = {}
    for name in names:
        pc = resolved.get(name)
        pc = dataclasses.replace(pc) if pc is not None else ParameterConstraints()
        if sharding_types is not None and pc.sharding_types is None:
            pc.sharding_types = list(sharding_types)
        if compute_kernel is not None and pc.compute_kernels is None:
            pc.compute_kernels = [compute_kernel]
        if name in pooling and (name not in resolved or resolved[name].pooling_factors == ParameterConstraints(
        ).pooling_factors):
            pc.pooling_factors = [pooling[name]]
        out[name] = pc
    return out


@contextlib.contextmanager
def capture_stats() -> Iterator[io.StringIO]:
    """Collect what TorchRec's planner writes to its stats logger (INFO) into a string buffer, not the console."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger(STATS_LOGGER)
    old_level, old_propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield buf
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        log.propagate = old_propagate


@dataclass
class PlanResult:
    """A plan and what the planner knew about it (for reports)."""

    plan: ShardingPlan
    topology: Topology
    reserved_topology: Topology  # capacities left for tables after the storage reservation
    options: List[ShardingOption]  # chosen sharding option per table, shards with storage / perf / rank
    constraints: Dict[str, ParameterConstraints]
    batch_size: int  # per rank
    storage_reservation: float
    stats_text: str = ""
    seconds: float = 0.0
    tables: Dict[str, BaseEmbeddingConfig] = field(default_factory=dict)
    search: Optional[SearchLog] = None  # what the proposal search did: budget, stopped early, proposals tried


def make_plan(
    module: nn.Module,
    topology: Topology,
    sharders: List[ModuleSharder[nn.Module]],
    constraints: Optional[Dict[str, ParameterConstraints]] = None,
    sharding_types: Optional[Sequence[str]] = None,
    compute_kernel: Optional[str] = None,
    pg: Optional[dist.ProcessGroup] = None,
    batch_size: Optional[int] = None,
    storage_reservation: Optional[float] = None,
    time_budget_s: Optional[float] = DEFAULT_BUDGET_S,
) -> PlanResult:
    """Plan `module`'s tables for `topology`: the plan and what it was made from (options, constraints, stats).
    Raises PlanDoesNotFit with a diagnosis.

    Args:
        module: the model (tables may be on the meta device).
        topology: from `embedding_sharding.topology.make_topology`.
        sharders: e.g. [CTREmbeddingBagCollectionSharder(fused_params=...)].
        constraints: table name or glob -> ParameterConstraints (`load_constraints`).
        sharding_types: allowed sharding types for tables whose constraints name none.
        compute_kernel: the one compute kernel for tables whose constraints name none (e.g. "fused").
        pg: a process group: plan on rank 0, broadcast to all (same plan everywhere). None: plan locally.
        batch_size: per-rank batch size for the cost estimates (None: TorchRec's 512).
        storage_reservation: share of memory kept for non-table use (None: the constraints file's, else 0.15).
        time_budget_s: seconds for the proposal search (`embedding_sharding.search`: each proposer gets a share,
            the best plan so far is kept; the result's `search` says whether it stopped early). None or 0: the
            full search, which grows with tables x ranks (minutes for hundreds of tables on 100+ GPUs).
    """
    from embedding_sharding.fit import explain_shortfall  # the diagnosis is only needed on failure

    tables = embedding_tables(module)
    if not tables:
        raise ValueError("the module has no EmbeddingBagCollection / EmbeddingCollection to shard")
    per_table = table_constraints(module, constraints, sharding_types, compute_kernel)
    if storage_reservation is None:
        storage_reservation = getattr(constraints, "storage_reservation", None)
    reservation_share = DEFAULT_RESERVATION if storage_reservation is None else storage_reservation
    bs = batch_size or BATCH_SIZE
    with warnings.catch_warnings():  # its FutureWarning asks for a dense_tensor_estimate: we pass one
        warnings.simplefilter("ignore", FutureWarning)
        reservation = HeuristicalStorageReservation(percentage=reservation_share,
                                                    parameter_multiplier=DENSE_MULTIPLIER,
                                                    dense_tensor_estimate=dense_tensor_bytes(module))
    estimates = SharedShapeEstimates([DedupPerfEstimator(topology, per_table),
                                      EmbeddingStorageEstimator(topology, per_table)], per_table)
    enumerator = SearchSpaceEnumerator(topology=topology, batch_size=bs, constraints=per_table,
                                       estimator=estimates)  # type: ignore[arg-type]
    search = SearchLog(budget_s=time_budget_s or None)
    planner = EmbeddingShardingPlanner(
        topology=topology,
        batch_size=bs,
        enumerator=enumerator,
        constraints=per_table,
        storage_reservation=reservation,
        proposer=search.proposers(),
    )
    start = time.perf_counter()
    try:
        with capture_stats() as buf:
            if pg is not None:
                plan = planner.collective_plan(module, sharders, pg)
            else:
                plan = planner.plan(module, sharders)
    except PlannerError as e:
        raise PlanDoesNotFit(explain_shortfall(planner, module, sharders, topology, str(e))) from None
    seconds = time.perf_counter() - start
    search.done()
    search.enumerate_s = enumerator.seconds
    reserved = planner._storage_reservation.reserve(  # same inputs as the planner's own call: same capacities
        topology=topology, batch_size=bs, module=module, sharders=sharders, constraints=per_table)
    return PlanResult(
        plan=plan, topology=topology, reserved_topology=reserved,
        options=list(getattr(planner, "_best_plan", None) or []), constraints=per_table, batch_size=bs,
        storage_reservation=reservation_share, stats_text=buf.getvalue(), seconds=seconds, tables=tables,
        search=search,
    )


def plan_sharding(module: nn.Module, topology: Topology, sharders: List[ModuleSharder[nn.Module]],
                  **options: Any) -> ShardingPlan:
    """A TorchRec ShardingPlan for every embedding table of `module`: `make_plan(...).plan`, same arguments."""
    return make_plan(module, topology, sharders, **options).plan
