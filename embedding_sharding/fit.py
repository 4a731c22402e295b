"""Why a plan does not fit, and what would make it fit: memory missing, on which tables, and the fixes.

Called when TorchRec's planner gives up. The footprint of a table is the smallest one the planner's own enumerator
found for it over the allowed sharding types and kernels (weights + optimizer state, in the tier that limits: HBM on
cuda, DDR on cpu), so the numbers are TorchRec's, not a second estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List

from torch import nn
from torchrec.distributed.planner import EmbeddingShardingPlanner
from torchrec.distributed.planner.types import Topology
from torchrec.distributed.types import ModuleSharder

GIB = 1024**3


@dataclass
class TableNeed:
    name: str
    rows: int
    dim: int
    bytes: int  # smallest total footprint in the limiting tier
    largest_shard: int  # smallest possible largest shard (what one device must hold)
    how: str  # sharding type / kernel of that footprint


def _gib(n: float) -> str:
    return f"{n / GIB:,.2f} GiB"


def table_needs(planner: EmbeddingShardingPlanner, module: nn.Module, sharders: List[ModuleSharder[nn.Module]],
                tier: str) -> Dict[str, TableNeed]:
    """Smallest footprint per table over the options TorchRec enumerates (empty if none are allowed)."""
    needs: Dict[str, TableNeed] = {}
    for so in planner._enumerator.enumerate(module=module, sharders=sharders):
        total = sum(getattr(s.storage, tier) for s in so.shards if s.storage is not None)
        largest = max((getattr(s.storage, tier) for s in so.shards if s.storage is not None), default=0)
        cur = needs.get(so.name)
        if cur is None or total < cur.bytes:
            needs[so.name] = TableNeed(so.name, so.tensor.shape[0], so.tensor.shape[1], total,
                                       min(largest, cur.largest_shard) if cur else largest,
                                       f"{so.sharding_type}/{so.compute_kernel}")
        elif largest < cur.largest_shard:
            cur.largest_shard = largest
    return needs


def _cap_rows(needs: List[TableNeed], capacity: float) -> int:
    """Largest per-table row cap C with sum(min(rows, C) * bytes_per_row) <= capacity (0 if none)."""
    def used(cap: int) -> float:
        return sum(min(t.rows, cap) * t.bytes / t.rows for t in needs)
    lo, hi = 0, max(t.rows for t in needs)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if used(mid) <= capacity else (lo, mid - 1)
    return lo


def explain_shortfall(planner: EmbeddingShardingPlanner, module: nn.Module,
                      sharders: List[ModuleSharder[nn.Module]], topology: Topology, planner_message: str) -> str:
    tier = "hbm" if topology.compute_device in ("cuda", "mtia") else "ddr"
    tier_name = tier.upper()
    first_line = planner_message.strip().splitlines()[0] if planner_message.strip() else ""
    from embedding_sharding.planner import embedding_tables  # noqa: avoid a cycle at import time

    all_tables = embedding_tables(module)
    needs = table_needs(planner, module, sharders, tier)
    no_option = [n for n in all_tables if n not in needs]
    if no_option:
        return (f"No allowed sharding type / compute kernel for table(s) {no_option} on device "
                f"{topology.compute_device!r}: check the constraints' sharding_types / compute_kernels and the "
                f"sharder's allowed types.\nTorchRec's planner said: {first_line}")
    reserved = planner._storage_reservation.reserve(
        topology=topology, batch_size=planner._batch_size, module=module, sharders=sharders,
        constraints=planner._constraints)
    per_dev = [getattr(d.storage, tier) for d in reserved.devices]
    raw_per_dev = getattr(topology.devices[0].storage, tier)
    capacity = float(sum(per_dev))
    needed = float(sum(t.bytes for t in needs.values()))
    ws, lws = topology.world_size, topology.local_world_size
    ordered = sorted(needs.values(), key=lambda t: -t.bytes)
    lines = []
    if needed > capacity:
        lines.append(f"The embedding tables do not fit: they need at least {_gib(needed)} of {tier_name}, the {ws} "
                     f"rank(s) offer {_gib(capacity)} after the storage reservation ({ws} x {_gib(per_dev[0])} of "
                     f"{_gib(raw_per_dev)}): {_gib(needed - capacity)} missing.")
    else:
        lines.append(f"The embedding tables need {_gib(needed)} of {tier_name} in total and the {ws} rank(s) offer "
                     f"{_gib(capacity)}, but no placement fits every shard onto a device (shards cannot be split "
                     f"finer under the allowed sharding types).")
    too_big = [t for t in ordered if t.largest_shard > max(per_dev)]
    if too_big:
        lines.append("Tables whose smallest shard is larger than one device's " + tier_name + ": " + ", ".join(
            f"{t.name} ({_gib(t.largest_shard)} per shard)" for t in too_big[:8]))
    lines.append("Largest tables (smallest footprint the planner found, weights + optimizer state):")
    width = max(len(t.name) for t in ordered[:8])
    for t in ordered[:8]:
        lines.append(f"  {t.name:<{width}}  {t.rows:>13,} x {t.dim:<4}  {_gib(t.bytes):>12}  ({t.how})")
    if len(ordered) > 8:
        lines.append(f"  ... and {len(ordered) - 8} more tables, {_gib(sum(t.bytes for t in ordered[8:]))}")
    lines.append("What would make it fit (any one of):")
    share = per_dev[0] / raw_per_dev if raw_per_dev else 1.0
    if per_dev[0] > 0:
        want = math.ceil(needed * 1.05 / per_dev[0])
        want = max(want, ws + 1)
        want = math.ceil(want / lws) * lws
        lines.append(f"  - more devices: --world-size {want} ({want // lws} node(s) of {lws}), as packing is not "
                     f"perfect plan for ~5% headroom")
        more = needed * 1.05 / ws / max(share, 1e-9)
        flag = "--hbm-gib" if tier == "hbm" else "--ddr-gib"
        lines.append(f"  - more memory per device: {flag} {math.ceil(more / GIB)}")
    dims = sorted({t.dim for t in ordered})
    if len(dims) == 1 and dims[0] > 4:
        new_dim = int(dims[0] * capacity / needed / 1.05) // 4 * 4
        if new_dim >= 4:
            lines.append(f"  - a smaller embedding dim: model.embedding_dim={new_dim} (now {dims[0]})")
    cap = _cap_rows(ordered, capacity / 1.05)
    if cap >= 1:
        hit = [t.name for t in ordered if t.rows > cap]
        lines.append(f"  - a hashing cap of {cap:,} rows per table (model.max_rows_per_table={cap}; "
                     f"caps {len(hit)} table(s): {', '.join(hit[:5])}{' ...' if len(hit) > 5 else ''})")
    if tier == "hbm":
        lines.append("  - UVM caching: allow compute_kernels [fused_uvm_caching] with caching_ratio 0.2 for the "
                     "largest tables in the constraints file (rows live in host DDR, a cache in HBM)")
    lines.append(f"TorchRec's planner said: {first_line}")
    return "\n".join(lines)
