"""Sharded training checkpoints with torch.distributed.checkpoint (DCP): write atomically, find, verify, load.

A checkpoint is a folder holding DCP's files plus two of ours:
  - DCP: `model` (sharded embedding tables as ShardedTensors, dense params), `optim` (the fused table optimizer's
    sharded state, the dense optimizer's state and param groups), `scheduler` (the LR schedule);
  - `rng_rank{r}.pt`: each rank's RNG states (torch, CUDA, numpy, python);
  - `recsys_dist.json`, written last by rank 0: format, step, input position (epoch, step in epoch), the model's
    fingerprint (arch, tables), the world size, the config, and the size of every file (to catch truncation).
Ranks write into `.<name>.tmp`; rank 0 renames it once every rank has finished, so a crash while writing leaves
only a `.tmp` folder, which is never taken for a checkpoint. A checkpoint of W ranks loads into any world size and
any plan: DCP reshards by shard offsets, and recsys_dist.state_mapping plans the load from the checkpoint's
metadata (a table that moved between data-parallel and fused kernels gets its optimizer state mapped or
re-initialized, with one warning line); RNG states are restored only when the world size matches.

    save_checkpoint(built, run / "checkpoints" / "step_00000100", state, optimizer, scheduler)
    latest = find_latest(run)                  # newest complete checkpoint, or None
    info = load_checkpoint(built, latest, optimizer, scheduler, fingerprint=model_fingerprint(cfg, built))
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist

from recsys_dist.json_file import write_atomic

log = logging.getLogger("recsys_dist")

MARKER = "recsys_dist.json"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint that is incomplete, corrupt, or was written by a different model."""


# -- what identifies a model --------------------------------------------------------------------------------
def model_fingerprint(cfg: Any, tables: List[Any], num_dense: int) -> Dict[str, Any]:
    """The parts of the config that fix the model's parameters: a checkpoint only loads into the same."""
    return {
        "model.arch": cfg.model.arch,
        "model.arch_args": json.loads(json.dumps(cfg.model.arch_args, default=str)),
        "model.embedding_dim": cfg.model.embedding_dim,
        "tables": {t.table_name: [t.num_embeddings, t.embedding_dim] for t in tables},
        "num_dense": num_dense,
    }


def fingerprint_mismatch(saved: Dict[str, Any], ours: Dict[str, Any]) -> List[str]:
    out = []
    for key in sorted(set(saved) | set(ours)):
        a, b = saved.get(key), ours.get(key)
        if a == b:
            continue
        if key == "tables" and isinstance(a, dict) and isinstance(b, dict):
            for t in sorted(set(a) | set(b)):
                if a.get(t) != b.get(t):
                    out.append(f"table {t}: checkpoint [rows, dim] {a.get(t)}, this job {b.get(t)}")
        else:
            out.append(f"{key}: checkpoint {a!r}, this job {b!r}")
    return out


# -- RNG -----------------------------------------------------------------------------------------------------
def rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- write ---------------------------------------------------------------------------------------------------
def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _state(model: torch.nn.Module, optimizer: Any = None, scheduler: Any = None) -> Dict[str, Any]:
    state: Dict[str, Any] = {"model": model.state_dict()}
    if optimizer is not None:
        if hasattr(optimizer, "save_param_groups"):  # torchrec's KeyedOptimizer leaves out lr etc. by default
            optimizer.save_param_groups(True)
        state["optim"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    return state


def save_checkpoint(model: torch.nn.Module, path: Path, info: Dict[str, Any], optimizer: Any = None,
                    scheduler: Any = None) -> Path:
    """Collective: every rank calls it. Writes `path` atomically (see the module doc) and returns it."""
    import torch.distributed.checkpoint as dcp

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    rank = _rank()
    if rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)  # left by a crash while writing
    _barrier()
    # One file per tensor: torch's writer keeps every tensor of a file alive until the file is closed
    # (pytorch/pytorch#195982) and writes a table that is a view of FBGEMM's fused buffer as a copy, so a
    # single file per rank held a copy of every table at once (a 10 GiB model was OOM-killed at its first
    # checkpoint on a 24 GiB machine). Per tensor, the save's extra memory is one table's copy.
    dcp.save(_state(model, optimizer, scheduler), checkpoint_id=str(tmp),
             storage_writer=dcp.FileSystemWriter(str(tmp), single_file_per_rank=False))
    torch.save(rng_state(), tmp / f"rng_rank{rank}.pt")
    _barrier()
    if rank == 0:
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        record = {"format": FORMAT_VERSION, **info,
                  "world_size": dist.get_world_size() if dist.is_initialized() else 1, "files": files}
        write_atomic(tmp / MARKER, json.dumps(record, indent=2, default=str))
        old = path.with_name(f".{path.name}.old")
        if path.exists():  # replacing a checkpoint of the same name (the final one of a re-run)
            if old.exists():
                shutil.rmtree(old)
            path.rename(old)
        tmp.rename(path)
        _fsync_dir(path.parent)
        if old.exists():
            shutil.rmtree(old)
    _barrier()
    return path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def clear_earlier_run(run_dir: Path) -> List[Path]:
    """Rank 0, a run that starts over in a used folder (train.resume=never): the earlier run's checkpoints/step_N
    and checkpoint/ are deleted, else pruning would keep its newer steps over this run's, and a later resume
    would continue from them. Returns the deleted folders."""
    run_dir = Path(run_dir)
    gone = [p for p in _step_dirs(run_dir / "checkpoints") + [run_dir / "checkpoint"] if p.is_dir()]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    if gone:
        log.warning("%s: starting over (train.resume=never): deleted the earlier run's %s", run_dir,
                    ", ".join(str(p.relative_to(run_dir)) for p in gone))
    return gone


def prune(folder: Path, keep: int) -> List[Path]:
    """Rank 0: delete all but the newest `keep` complete step_N checkpoints in folder; returns the deleted."""
    steps = sorted(_step_dirs(folder), key=lambda p: _step_of(p))
    gone = steps[:-keep] if keep > 0 else steps
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


# -- find and verify -----------------------------------------------------------------------------------------
def _step_of(p: Path) -> int:
    m = _STEP_DIR.match(p.name)
    return int(m.group(1)) if m else -1


def _step_dirs(folder: Path) -> List[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.is_dir() and _STEP_DIR.match(p.name) and (p / MARKER).is_file()]


def read_info(path: Path) -> Dict[str, Any]:
    """recsys_dist.json of a checkpoint folder; CheckpointError if the folder is not a complete checkpoint."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    marker = path / MARKER
    if not marker.is_file():
        raise CheckpointError(f"{path}: incomplete checkpoint (no {MARKER}; a crash while it was written?)")
    try:
        info = json.loads(marker.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{marker}: corrupt ({e})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{marker}: format {info.get('format') if isinstance(info, dict) else '?'}, "
                              f"this version reads format {FORMAT_VERSION}")
    return info


def find_latest(run_dir: Path) -> Optional[Path]:
    """The complete checkpoint with the highest step among <run>/checkpoints/step_N and <run>/checkpoint."""
    run_dir = Path(run_dir)
    candidates = []
    for p in _step_dirs(run_dir / "checkpoints") + [run_dir / "checkpoint"]:
        try:
            candidates.append((int(read_info(p).get("step", -1)), p))
        except CheckpointError:
            continue
    return max(candidates, key=lambda c: c[0])[1] if candidates else None


def verify(path: Path, fingerprint: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Checks completeness, every file's size, and (if given) that the model is the one that wrote it."""
    info = read_info(path)
    for name, size in info.get("files", {}).items():
        f = Path(path) / name
        if not f.is_file():
            raise CheckpointError(f"{f}: missing (the checkpoint lists it, {size} bytes)")
        actual = f.stat().st_size
        if actual != size:
            raise CheckpointError(f"{f}: truncated or altered: {actual} bytes, the checkpoint recorded {size}")
    if fingerprint is not None and "fingerprint" in info:
        diff = fingerprint_mismatch(info["fingerprint"], fingerprint)
        if diff:
            raise CheckpointError(f"{path}: written by a different model; " + "; ".join(diff))
    return info


# -- load ----------------------------------------------------------------------------------------------------
def _load_planner() -> Any:
    """DCP's DefaultLoadPlanner without its fallback for checkpoints of torch <= 2.3: when the checkpoint has keys
    this load leaves out (optimizer state that is mapped) and the job's state re-keyed the 2.3 way matches one of
    them (a ShardedTensor with no shard on this rank, which the current keying drops), it re-keys the whole state
    so, and asks for `optim.param_groups` as one key, which no checkpoint of ours has. Ours are all written by
    torch >= 2.4."""
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, create_default_local_load_plan

    class _CurrentKeysLoadPlanner(DefaultLoadPlanner):
        def create_local_plan(self):  # the base's, minus the 2.3 re-keying
            return create_default_local_load_plan(self.state_dict, self.metadata, not self.allow_partial_load)

    return _CurrentKeysLoadPlanner()


def load_checkpoint(model: torch.nn.Module, path: Path, optimizer: Any = None, scheduler: Any = None,
                    fingerprint: Optional[Dict[str, Any]] = None, restore_rng: bool = True) -> Dict[str, Any]:
    """Collective. Loads into this job's world size and plan, whatever the checkpoint's were (DCP reshards by shard
    offsets; optimizer state of tables that changed kernel is mapped or re-initialized: recsys_dist.state_mapping,
    one warning line). Returns recsys_dist.json, plus `optimizer_state`: which tables were mapped how."""
    import torch.distributed.checkpoint as dcp

    from recsys_dist.state_mapping import MappingError, plan_load

    path = Path(path)
    info = verify(path, fingerprint)
    state = _state(model, optimizer, scheduler)
    try:
        saved = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
        plan = plan_load(state, saved)
    except (MappingError, OSError, pickle.UnpicklingError, EOFError) as e:
        raise CheckpointError(f"{path}: cannot load into this job ({e})") from None

    def read(tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        dcp.load(tensors, checkpoint_id=str(path), planner=_load_planner())
        return tensors

    try:
        dcp.load(plan.direct, checkpoint_id=str(path), planner=_load_planner())
        plan.finish(read, int(info.get("step", 0)), scheduler)
    except (Exception, dcp.api.CheckpointException) as e:  # DCP's carries each rank's error (a BaseException)
        raise CheckpointError(f"{path}: cannot load into this job ({type(e).__name__}: {str(e)[:800]})") from None
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optim"])
    if scheduler is not None and plan.scheduler_saved:
        scheduler.load_state_dict(state["scheduler"])
    world = dist.get_world_size() if dist.is_initialized() else 1
    if optimizer is not None and world > 1:  # report every rank's tables (a table-wise one is on one rank)
        ranks: List[Any] = [None] * world
        dist.all_gather_object(ranks, (plan.mapped, plan.reinit_tables, plan.reinit_params))
        plan = plan.across_ranks(ranks)
    info["optimizer_state"] = plan.summary() if optimizer is not None else None
    warning = plan.warning() if optimizer is not None else None
    if warning and _rank() == 0:
        log.warning("%s (written by %s ranks, loaded on %d): %s", path, info.get("world_size"),
                    world, warning)
    if restore_rng and info.get("world_size") == world:
        rng_file = path / f"rng_rank{_rank()}.pt"
        try:
            set_rng_state(torch.load(rng_file, weights_only=False))
        except (OSError, pickle.UnpicklingError, RuntimeError, EOFError) as e:
            raise CheckpointError(f"{rng_file}: unreadable ({e})") from None
    elif restore_rng:
        log.warning("%s: written by %s ranks, loaded on %d: RNG states not restored", path,
                    info.get("world_size"), world)
    return info
