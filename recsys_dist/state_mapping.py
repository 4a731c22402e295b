"""Loading a checkpoint into another world size and plan: which of this job's state the checkpoint holds as is,
which is mapped from another optimizer layout of the same table, which is re-initialized. Decided from the
checkpoint's DCP metadata (keys, shapes, shard chunks) before anything is read, so DCP is only ever asked for
keys it has (used by recsys_dist.checkpoint.load_checkpoint).

Model weights map by key: a table's weight is `...embedding_bags.<table>.weight` whether the table is
data-parallel or sharded, and DCP places saved shards by their offsets.

Optimizer state of a table, by layout:
  element-wise  one Adagrad accumulator per element, [rows, dim]: torch Adagrad's `sum` (a data-parallel table's
                dense optimizer) or FBGEMM EXACT_ADAGRAD's `momentum1`;
  row-wise      one accumulator per row and column group: FBGEMM EXACT_ROWWISE_ADAGRAD's `momentum1`, [rows] when
                the table's shards hold whole rows, [rows * k] for k column-wise shards (ordered by column);
  adam          fused Adam with per-row bias correction (FBGEMM's names): `momentum1` (exp_avg) and `exp_avg_sq`
                [rows, dim], `row_counter` one count per row and column group, [rows * k] as row-wise state;
  none          no state (SGD);  other: anything else (a dense Adam's moments, grid-sharded row-wise state, ...).
Row-wise Adagrad adds the row mean of g^2 where element-wise Adagrad adds g^2 per element; both start at 0. So:
  exact (what the target optimizer would have accumulated from the same gradients): element-wise -> element-wise;
        element-wise -> row-wise (the mean over each column group); row-wise -> row-wise whose column groups are
        unions of the checkpoint's (the width-weighted mean);
  approximate (named in the warning): row-wise -> element-wise, or -> column groups that split the checkpoint's:
        each element takes its group's value (the row-wise optimizer's own assumption), a warm start that keeps
        step sizes at the trained scale instead of a fresh accumulator's lr-sized first steps;
  exact too: fused Adam -> fused Adam on other column groups: the moments have the same shape in every layout
        and load as saved; every column group of a row counts the same batches, so `row_counter` is the first
        group's counts, repeated for each target group;
  re-initialized (named in the warning): every other change of layout (e.g. dense Adam <-> fused row-wise
        Adagrad, SGD -> Adagrad); a state the checkpoint has with the same key and shape loads as is.
A dense Adagrad's `step` (only its lr_decay reads it) is the checkpoint's step when the table was fused there.
Param groups map by the parameters they hold; with an LR schedule every group's rate is the schedule's at the saved
step (its per-group lists are this job's: a checkpoint holds one rank's, and ranks' groups can differ).
A mapped accumulator is read whole on every rank: small where a table is or becomes data-parallel (then it is
whole on every rank anyway), rows x column shards for row-wise state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch.distributed._shard.sharded_tensor import ShardedTensor

Groups = Tuple[Tuple[int, int], ...]  # column groups of a table's shards: (column offset, width), by offset

_TABLE_STATE = re.compile(r"^optim\.state\.(?P<param>(?:.*\.)?embedding_bags\.(?P<table>[^.]+)\.weight)\.(?P<name>.+)$")
_TABLE_PARAM = re.compile(r"(?:^|\.)embedding_bags\.(?P<table>[^.]+)\.weight$")
_GROUP_FIELD = re.compile(r"^optim\.param_groups\.(\d+)\.(.+)$")


ADAM_STATES = ("momentum1", "exp_avg_sq", "row_counter")  # fused Adam (recsys_dist/lazy_adam.py, FBGEMM's ADAM)


class MappingError(RuntimeError):
    """This job's model state cannot be filled from the checkpoint (a key missing or of another shape)."""


def column_groups(chunks: Iterable[Tuple[Sequence[int], Sequence[int]]], rows: int, dim: int) -> Optional[Groups]:
    """The column groups of a table's shards given as (offsets, sizes); None for grid sharding (shards that split
    both rows and columns), whose row-wise state is laid out per node."""
    chunks = [(tuple(o), tuple(s)) for o, s in chunks]
    groups = tuple(sorted({(o[1], s[1]) for o, s in chunks})) or ((0, dim),)
    if len(groups) > 1 and any(s[0] != rows for _, s in chunks):
        return None
    return groups


@dataclass
class Layout:
    """One table's optimizer state, in the checkpoint or in this job."""

    kind: str  # elementwise | rowwise | none | other
    keys: Dict[str, str]  # state name -> flat key (optim.state.<param>.<name>)
    shapes: Dict[str, Tuple[int, ...]]
    accumulator: Optional[str] = None  # the state name of the Adagrad accumulator
    groups: Optional[Groups] = None  # row-wise: its column groups

    def describe(self) -> str:
        if self.kind == "elementwise":
            return "element-wise Adagrad"
        if self.kind == "rowwise":
            k = len(self.groups or ())
            return "row-wise Adagrad" + (f" over {k} column shards" if k > 1 else "")
        if self.kind == "adam":
            k = len(self.groups or ())
            return "fused Adam" + (f" over {k} column shards" if k > 1 else "")
        if self.kind == "none":
            return "no state"
        return "state " + ", ".join(sorted(n.split(".")[-1] for n in self.keys))


def classify(table: str, param: str, shapes: Dict[str, Tuple[int, ...]], rows: int, dim: int,
             groups: Optional[Groups]) -> Layout:
    keys = {name: f"optim.state.{param}.{name}" for name in shapes}
    layout = Layout("other", keys, dict(shapes))
    if not shapes:
        layout.kind = "none"
    elif "sum" in shapes and set(shapes) <= {"sum", "step"} and shapes["sum"] == (rows, dim):
        layout.kind, layout.accumulator = "elementwise", "sum"
    elif set(shapes) == {f"{table}.momentum1"}:
        shape = shapes[f"{table}.momentum1"]
        if shape == (rows, dim):
            layout.kind, layout.accumulator = "elementwise", f"{table}.momentum1"
        elif groups is not None and shape == (rows * len(groups),):
            layout.kind, layout.accumulator, layout.groups = "rowwise", f"{table}.momentum1", groups
    elif set(shapes) == {f"{table}.{n}" for n in ADAM_STATES} and groups is not None and \
            shapes[f"{table}.momentum1"] == shapes[f"{table}.exp_avg_sq"] == (rows, dim) and \
            shapes[f"{table}.row_counter"] == (rows * len(groups),):
        layout.kind, layout.accumulator, layout.groups = "adam", f"{table}.row_counter", groups
    return layout


def _size(t: Any) -> Tuple[int, ...]:
    return tuple(t.size()) if isinstance(t, ShardedTensor) else tuple(t.shape)


def _chunks(t: Any) -> List[Tuple[Sequence[int], Sequence[int]]]:
    if isinstance(t, ShardedTensor):
        return [(m.shard_offsets, m.shard_sizes) for m in t.metadata().shards_metadata]
    return [((0,) * t.dim(), tuple(t.shape))]


def rowwise_to_rowwise(src: torch.Tensor, src_groups: Groups, dst_groups: Groups,
                       rows: int) -> Tuple[torch.Tensor, bool]:
    """Row-wise accumulators [rows * k] from one column grouping to another: each target group takes the
    width-weighted mean of the source groups it overlaps. Exact when each overlapping source group lies inside."""
    out, exact = [], True
    for c0, w in dst_groups:
        acc = torch.zeros(rows, dtype=src.dtype)
        for g, (s0, sw) in enumerate(src_groups):
            overlap = min(c0 + w, s0 + sw) - max(c0, s0)
            if overlap > 0:
                acc += src[g * rows:(g + 1) * rows] * (overlap / w)
                exact &= c0 <= s0 and s0 + sw <= c0 + w
        out.append(acc)
    return torch.cat(out), exact


def elementwise_to_rowwise(src: torch.Tensor, dst_groups: Groups) -> torch.Tensor:
    return torch.cat([src[:, c0:c0 + w].mean(dim=1) for c0, w in dst_groups])


def rowwise_to_elementwise(src: torch.Tensor, src_groups: Groups, rows: int, dim: int) -> torch.Tensor:
    out = torch.empty(rows, dim, dtype=src.dtype)
    for g, (c0, w) in enumerate(src_groups):
        out[:, c0:c0 + w] = src[g * rows:(g + 1) * rows, None]
    return out


def convert(src: torch.Tensor, s: Layout, t: Layout, rows: int, dim: int) -> Tuple[torch.Tensor, bool]:
    """The target's whole accumulator from the source's, and whether the mapping is exact (see the module doc)."""
    if s.kind == "adam":  # row_counter: the column groups of a row count the same batches
        return src[:rows].repeat(len(t.groups or ((0, dim),))), True
    if s.kind == "elementwise" and t.kind == "elementwise":
        return src.reshape(rows, dim), True
    if s.kind == "elementwise":
        return elementwise_to_rowwise(src.reshape(rows, dim), t.groups), True
    if t.kind == "rowwise":
        return rowwise_to_rowwise(src, s.groups, t.groups, rows)
    return rowwise_to_elementwise(src, s.groups, rows, dim), False


def _copy_into(target: Any, full: torch.Tensor) -> None:
    """Copies this rank's part of `full` (the whole tensor) into target (a ShardedTensor or a plain tensor)."""
    if isinstance(target, ShardedTensor):
        for shard in target.local_shards():
            region = full
            for d, (o, n) in enumerate(zip(shard.metadata.shard_offsets, shard.metadata.shard_sizes)):
                region = region.narrow(d, o, n)
            shard.tensor.detach().copy_(region.reshape(shard.tensor.shape))
    else:
        target.detach().copy_(full.reshape(target.shape))


def _zero(t: Any) -> None:
    if isinstance(t, ShardedTensor):
        for shard in t.local_shards():
            shard.tensor.detach().zero_()
    elif isinstance(t, torch.Tensor):
        t.detach().zero_()


@dataclass
class TableMapping:
    table: str
    param: str  # this job's optimizer state key of the table
    source: Layout
    target: Layout
    exact: bool = True


@dataclass
class LoadPlan:
    """What to read from a checkpoint into this job's state (`_state(model, optimizer, scheduler)`)."""

    state: Dict[str, Any]
    direct: Dict[str, Any]  # the part of `state` DCP loads as is (same keys), plus the saved param groups
    mapped: List[TableMapping] = field(default_factory=list)
    reinit_tables: List[TableMapping] = field(default_factory=list)
    reinit_params: List[str] = field(default_factory=list)  # non-table parameters whose state is re-initialized
    saved_groups: List[Dict[str, Any]] = field(default_factory=list)  # filled by DCP: the checkpoint's groups
    table_shapes: Dict[str, Tuple[int, int]] = field(default_factory=dict)
    dtypes: Dict[str, torch.dtype] = field(default_factory=dict)  # of the checkpoint's tensors
    optim_saved: bool = True
    scheduler_saved: bool = True

    # -- what happened, for the caller's log and tests --------------------------------------------------------
    def across_ranks(self, ranks: Sequence[Tuple[List[TableMapping], List[TableMapping], List[str]]]) -> "LoadPlan":
        """A copy for reporting whose mapped / re-initialized lists are every rank's (`ranks`: each rank's
        (mapped, reinit_tables, reinit_params)): a table-wise table's state is only on its rank."""
        import dataclasses

        mapped: Dict[str, TableMapping] = {}
        reinit: Dict[str, TableMapping] = {}
        params: List[str] = []
        for m, r, p in ranks:
            for x in m:
                mapped.setdefault(x.table, x)
            for x in r:
                reinit.setdefault(x.table, x)
            params += [x for x in p if x not in params]
        return dataclasses.replace(self, mapped=list(mapped.values()), reinit_tables=list(reinit.values()),
                                   reinit_params=params)

    def summary(self) -> Dict[str, List[str]]:
        return {"exact": sorted(m.table for m in self.mapped if m.exact),
                "approximate": sorted(m.table for m in self.mapped if not m.exact),
                "reinitialized": sorted(m.table for m in self.reinit_tables) + sorted(self.reinit_params)}

    def warning(self) -> Optional[str]:
        parts = []
        if self.reinit_tables:
            parts.append("re-initialized for " + ", ".join(
                f"{m.table} ({m.source.describe()} -> {m.target.describe()})" for m in self.reinit_tables))
        if self.reinit_params:
            parts.append(f"re-initialized for {len(self.reinit_params)} dense parameters (e.g. "
                         f"{self.reinit_params[0]}: another dense optimizer)")
        approx = [m for m in self.mapped if not m.exact]
        if approx:
            parts.append("approximated for " + ", ".join(
                f"{m.table} ({m.source.describe()} -> {m.target.describe()})" for m in approx))
        if self.state.get("optim") is not None and not self.optim_saved:
            parts = ["re-initialized: the checkpoint has none"]
        if self.state.get("scheduler") is not None and not self.scheduler_saved:
            parts.append("LR schedule restarted: the checkpoint has none")
        return "optimizer state " + "; ".join(parts) if parts else None

    # -- after DCP has loaded `direct` --------------------------------------------------------------------------
    def finish(self, read, step: int, scheduler: Any = None) -> None:
        """Fills the mapped and re-initialized state and this job's param groups / LR schedule.
        read(keys -> empty tensors) loads whole tensors from the checkpoint (collective: every rank calls it)."""
        opt_state = self.state.get("optim", {}).get("state", {})
        sources = {m.source.keys[m.source.accumulator]: m for m in self.mapped}
        wanted = {key: torch.empty(m.source.shapes[m.source.accumulator], dtype=self.dtypes[key])
                  for key, m in sources.items()}
        loaded = read(wanted) if wanted else {}
        for key, m in sources.items():
            rows, dim = self.table_shapes[m.table]
            full, m.exact = convert(loaded[key], m.source, m.target, rows, dim)
            target_state = opt_state[m.param]
            _copy_into(target_state[m.target.accumulator], full)
            if "step" in target_state and "step" not in m.source.shapes:
                target_state["step"].detach().fill_(float(step))
        for m in self.reinit_tables:
            for t in opt_state[m.param].values():
                _zero(t)
        for param in self.reinit_params:
            for t in opt_state[param].values():
                _zero(t)
        self._map_param_groups(scheduler)

    def _map_param_groups(self, scheduler: Any) -> None:
        optim = self.state.get("optim")
        if optim is None or "param_groups" not in optim:
            return
        ours = optim["param_groups"]
        chosen: List[Optional[int]] = []
        for group in ours:
            params = set(group["params"])
            overlap = [len(params & set(s.get("params") or ())) for s in self.saved_groups]
            best = max(range(len(overlap)), key=lambda i: overlap[i]) if overlap else None
            if best is None or overlap[best] == 0:  # e.g. a fused group of tables that were all data-parallel
                best = next((i for i, s in enumerate(self.saved_groups) if set(s) == set(group)), None)
            chosen.append(best)
            if best is not None:
                for k in group:
                    if k != "params" and k in self.saved_groups[best]:
                        group[k] = self.saved_groups[best][k]
        sched = self.state.get("scheduler")
        if sched is None or not self.scheduler_saved or scheduler is None:
            return
        # Per-group lists (base_lrs, _last_lr, ...) stay this job's: the checkpoint holds one rank's, and ranks can
        # have different groups (a table-wise table's fused group exists only on its rank). The learning rate of
        # every group is then the schedule's at the saved step, as an uninterrupted run computes it.
        fresh = scheduler.state_dict()
        for k, v in list(sched.items()):
            if isinstance(v, list) and isinstance(fresh.get(k), list) and len(fresh[k]) == len(ours):
                sched[k] = list(fresh[k])
        if hasattr(scheduler, "lr_lambdas"):
            lrs = [base * fn(sched["last_epoch"]) for base, fn in zip(sched["base_lrs"], scheduler.lr_lambdas)]
            for group, lr in zip(ours, lrs):
                group["lr"] = lr
            if "_last_lr" in sched:
                sched["_last_lr"] = lrs


def plan_load(state: Dict[str, Any], saved: Dict[str, Any]) -> LoadPlan:
    """Decides, from DCP's state_dict_metadata `saved`, how every entry of `state` is filled. Raises MappingError
    if a model weight is missing from the checkpoint or has another shape."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    def saved_shape(key: str) -> Optional[Tuple[int, ...]]:
        md = saved.get(key)
        return tuple(md.size) if isinstance(md, TensorStorageMetadata) else None

    direct: Dict[str, Any] = {}
    plan = LoadPlan(state, direct)

    model = state["model"]
    missing = [k for k in model if f"model.{k}" not in saved]
    if missing:
        raise MappingError(f"{len(missing)} model weights not in the checkpoint, e.g. {', '.join(missing[:3])}")
    wrong = [f"{k}: checkpoint {list(saved_shape('model.' + k) or [])}, this job {list(_size(v))}"
             for k, v in model.items() if isinstance(v, (torch.Tensor, ShardedTensor))
             and saved_shape(f"model.{k}") != _size(v)]
    if wrong:
        raise MappingError("model weights of another shape: " + "; ".join(wrong[:3]))
    direct["model"] = model

    tables: Dict[str, Tuple[int, int, Optional[Groups], Optional[Groups]]] = {}  # rows, dim, groups (saved, ours)
    for k, v in model.items():
        m = _TABLE_PARAM.search(k)
        if m and isinstance(v, (torch.Tensor, ShardedTensor)) and len(_size(v)) == 2:
            rows, dim = _size(v)
            md = saved[f"model.{k}"]
            saved_groups = column_groups([(c.offsets, c.sizes) for c in md.chunks], rows, dim)
            tables[m.group("table")] = (rows, dim, saved_groups, column_groups(_chunks(v), rows, dim))
    plan.table_shapes = {t: (r, d) for t, (r, d, _, _) in tables.items()}
    plan.dtypes = {k: md.properties.dtype for k, md in saved.items() if isinstance(md, TensorStorageMetadata)}

    optim = state.get("optim")
    plan.optim_saved = any(k.startswith("optim.") for k in saved)
    if optim is not None:
        saved_states: Dict[str, Tuple[str, Dict[str, Tuple[int, ...]]]] = {}
        for key in saved:
            m = _TABLE_STATE.match(key)
            if m and m.group("table") in tables and saved_shape(key) is not None:
                param, shapes = saved_states.setdefault(m.group("table"), (m.group("param"), {}))
                shapes[m.group("name")] = saved_shape(key)
        direct_state: Dict[str, Dict[str, Any]] = {}
        for param, entries in optim["state"].items():
            m = _TABLE_PARAM.search(param)
            table = m.group("table") if m else None
            if table in tables:
                rows, dim, s_groups, t_groups = tables[table]
                s_param, s_shapes = saved_states.get(table, ("", {}))
                source = classify(table, s_param, s_shapes, rows, dim, s_groups)
                target = classify(table, param, {n: _size(t) for n, t in entries.items()}, rows, dim, t_groups)
                same = all(saved_shape(target.keys[n]) == target.shapes[n] for n in entries)
                if same and (target.kind != "rowwise" or source.groups == target.groups):
                    direct_state[param] = entries
                elif target.kind == "none":
                    continue
                elif source.kind in ("elementwise", "rowwise") and target.kind in ("elementwise", "rowwise"):
                    plan.mapped.append(TableMapping(table, param, source, target))
                elif source.kind == target.kind == "adam":  # the moments load as saved, the counts are mapped
                    direct_state[param] = {n: t for n, t in entries.items() if n != target.accumulator}
                    plan.mapped.append(TableMapping(table, param, source, target))
                else:
                    plan.reinit_tables.append(TableMapping(table, param, source, target))
            else:
                ok = {n: t for n, t in entries.items() if saved_shape(f"optim.state.{param}.{n}") == _size(t)}
                if len(ok) == len(entries):
                    direct_state[param] = entries
                elif entries:
                    plan.reinit_params.append(param)
        direct["optim"] = {"state": direct_state}
        fields: Dict[int, List[str]] = {}
        for key in saved:
            g = _GROUP_FIELD.match(key)
            if g:
                fields.setdefault(int(g.group(1)), []).append(g.group(2))
        plan.saved_groups = [{f: None for f in fields[i]} for i in sorted(fields)]
        if plan.saved_groups:
            direct["optim"]["param_groups"] = plan.saved_groups
    sched = state.get("scheduler")
    if sched is not None:
        plan.scheduler_saved = all(f"scheduler.{k}" in saved for k in sched)
        if plan.scheduler_saved:
            direct["scheduler"] = sched
    return plan
