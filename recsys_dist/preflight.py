"""A train / evaluate job checked against its files before any process group or model exists.

`load_config` checked the config alone. This checks what needs the files: the dataset (data.dir's metadata.json
and the splits the job reads), the batch sizes against the world size, the arch on the dataset's tables (built
on the meta device: no memory, no initialization), a plan file (made for these tables and this world size) and
the checkpoint to be loaded (complete, and written by this model) and, for training (`selection=True`), model
selection asked of a dataset without val rows (early stopping, a kept best checkpoint). Each problem is one ConfigError naming the
file or key and where its value was set, so every rank of a launch stops with exit 2 and the same message
before any rank waits for another.

    check_job(cfg, world_size=2, splits=["train"], plan=cfg.sharding.plan, checkpoints=[resume_folder],
              selection=True)
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from recsys_dist.config import ConfigError, JobConfig, source_of


def check_job(cfg: JobConfig, world_size: int, splits: Sequence[str], plan: Optional[str] = None,
              checkpoints: Sequence[Path] = (), checkpoint_note: str = "", selection: bool = False,
              here: bool = False) -> None:
    """`checkpoint_note` is added to a checkpoint's error (e.g. how to start over instead of resuming);
    `selection`: a train job, whose model selection settings need val rows; `here`: the job runs on this
    machine (train / evaluate, not a submit check for a cluster), so its tables must fit this machine's memory."""
    from recsys_dist.data.metadata import Metadata, MetadataError

    try:
        md = Metadata.load(cfg.data.dir)
    except MetadataError as e:
        raise ConfigError(f"{source_of(cfg, 'data.dir')}: data.dir={cfg.data.dir!r}: {e}") from None
    for split in splits:
        if md.splits.get(split) is None or md.splits[split].rows == 0:
            have = ", ".join(f"{k} ({v.rows} rows)" for k, v in md.splits.items())
            raise ConfigError(f"{source_of(cfg, 'data.dir')}: data.dir={cfg.data.dir!r} has no rows in split "
                              f"{split!r} (splits: {have or 'none'})")
    if selection:
        _check_selection(cfg, md)
    check_batches(cfg, world_size)
    tables, exact = _tables(cfg, md)
    if exact and here:
        check_host_memory(cfg, tables, world_size)
    model = _meta_model(cfg, md, tables)
    if plan and exact:
        _check_plan(cfg, plan, model, world_size)
    if checkpoints:
        from recsys_dist.checkpoint import CheckpointError, model_fingerprint, verify

        fingerprint = model_fingerprint(cfg, tables, md.num_dense) if exact else None
        for path in checkpoints:
            try:
                verify(Path(path), fingerprint)
            except CheckpointError as e:
                raise ConfigError(f"checkpoint {e}{checkpoint_note}") from None


def check_batches(cfg: JobConfig, world_size: int) -> None:
    """Each rank reads batch / world_size rows: the global batches must divide evenly."""
    for key in ("data.batch_size", "data.eval_batch_size"):
        value = getattr(cfg.data, key.split(".")[1])
        if value % world_size:
            raise ConfigError(f"{source_of(cfg, key)}: {key}={value} is not divisible by the world size "
                              f"{world_size}")


SELECTION_KEYS = ("train.early_stopping.patience", "train.keep_best", "train.early_stopping.metric",
                  "train.early_stopping.mode", "train.early_stopping.min_delta")


def _check_selection(cfg: JobConfig, md) -> None:
    """Early stopping (patience > 0), or a selection setting given explicitly (keep_best true, metric, mode,
    min_delta), on a dataset without val rows: nothing to select on. keep_best's default (true) alone is fine."""
    if md.splits.get("val") is not None and md.splits["val"].rows > 0:
        return
    for key in SELECTION_KEYS:
        value, where = functools.reduce(getattr, key.split("."), cfg), source_of(cfg, key)
        asked = value > 0 if key.endswith("patience") else (where != "the default" and value is not False)
        if asked:
            have = ", ".join(f"{k} ({v.rows} rows)" for k, v in md.splits.items())
            raise ConfigError(f"{where}: {key}={value} needs a val split to select on, and data.dir="
                              f"{cfg.data.dir!r} has no val rows (splits: {have}); prepare it with val rows "
                              f"(prepare.val_ratio, or --input train=... val=...) or drop {key}")


# bytes of table optimizer state per row: (per row, per row and dim)
TABLE_STATE_BYTES = {"sgd": (0, 0), "rowwise_adagrad": (4, 0), "adagrad": (0, 4), "adam": (0, 8)}


def host_memory_bytes() -> Optional[int]:
    """This machine's physical memory (MemTotal), None where /proc/meminfo is not there."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_host_memory(cfg: JobConfig, tables, world_size: int) -> None:
    """A CPU job whose tables (weights + the table optimizer's state) cannot fit this machine's memory is refused
    before any rank allocates them (an allocation of tens of GB failed with a traceback minutes in). The ranks of
    one machine hold 1 / nodes of the tables (nodes = world size / LOCAL_WORLD_SIZE under torchrun). A CUDA job
    is left to the planner (device memory, UVM)."""
    import os

    import torch

    if cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available()):
        return
    total = host_memory_bytes()
    if total is None:
        return
    weight = 2 if cfg.model.embedding_dtype == "fp16" else 4
    per_row, per_elem = TABLE_STATE_BYTES.get(cfg.optim.sparse, (0, 0))
    rows = sum(t.num_embeddings for t in tables)
    elems = sum(t.num_embeddings * t.embedding_dim for t in tables)
    nodes = max(1, world_size // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world_size))))
    need = (elems * (weight + per_elem) + rows * per_row) / nodes
    if need <= total:
        return
    gib = 1024 ** 3
    big = max(tables, key=lambda t: t.num_embeddings)
    key = "data.cross_table_rows" if cfg.data.cross_pairs is not None else "model.max_rows_per_table"
    raise ConfigError(
        f"data.dir={cfg.data.dir!r}: the embedding tables need {need / gib:.1f} GiB on this machine "
        f"({len(tables)} tables, {rows:,} rows, {cfg.model.embedding_dtype} weights and {cfg.optim.sparse} state"
        f"{f', over {nodes} machines' if nodes > 1 else ''}; the largest {big.table_name}: {big.num_embeddings:,} "
        f"rows) but it has {total / gib:.1f} GiB: lower {key} ({source_of(cfg, key)}), prepare with a vocabulary "
        f"(a higher min_count), a smaller model.embedding_dim, or spread the job over more machines")


def _tables(cfg: JobConfig, md) -> Tuple[List, bool]:
    """(the job's tables, exact). With OptInter's frequency filter whose counts are not on disk yet (training
    counts them on first use), the tables without the filter: same names and number, other rows, so only the
    checks that do not depend on rows run."""
    from recsys_dist.job import features_for

    if cfg.data.cross_pairs is not None and cfg.data.cross_min_count > 1 and not _cross_counts_on_disk(cfg, md):
        unfiltered = copy.deepcopy(cfg)
        unfiltered.data.cross_min_count = 0
        return features_for(unfiltered, md).tables, False
    return features_for(cfg, md).tables, True


def _cross_counts_on_disk(cfg: JobConfig, md) -> bool:
    from recsys_dist.data.cross_counts import counts_dir, pair_file
    from recsys_dist.data.cross_features import make_pairs, select_pairs

    pairs = make_pairs(select_pairs(cfg.data.cross_pairs, md), md.table_rows(cfg.model.max_rows_per_table),
                       cfg.data.cross_table_rows)
    folder = counts_dir(Path(cfg.data.dir), md, cfg.data.cross_min_count)
    return all(pair_file(folder, p).is_file() for p in pairs)


def _meta_model(cfg: JobConfig, md, tables):
    """The CTRModel on the meta device; an arch that does not fit these tables is a ConfigError."""
    import torch

    from recsys_dist.models.model import build_model

    try:
        with torch.device("meta"):
            return build_model(tables, md.num_dense, cfg.model.arch, cfg.model.arch_args, sparse_device="meta",
                               dense_device="meta", embedding_dtype=cfg.model.embedding_dtype)
    except (ValueError, TypeError, KeyError) as e:
        key = "model.arch_args" if cfg.model.arch_args else "model.arch"
        dims = sorted({t.embedding_dim for t in tables})
        raise ConfigError(f"{source_of(cfg, key)}: model {cfg.model.arch!r} on data.dir={cfg.data.dir!r} "
                          f"({len(tables)} tables of dim {'/'.join(map(str, dims))}, {md.num_dense} dense "
                          f"features): {e.args[0] if e.args else e}") from None


def _check_plan(cfg: JobConfig, plan: str, model, world_size: int) -> None:
    from embedding_sharding.plan_file import PlanFileError, load_plan
    from recsys_dist.models.model import CTRTrainModel

    try:
        load_plan(plan, CTRTrainModel(model), world_size)
    except PlanFileError as e:
        raise ConfigError(f"{source_of(cfg, 'sharding.plan')}: sharding.plan: {e}") from None
