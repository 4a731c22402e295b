"""Building blocks shared by train and evaluate: tables from metadata, the sharded model, readers, checkpoints.

    env = init_distributed(cfg.train.device)
    built = build_sharded_model(cfg, env)      # DMP over CTRTrainModel, with the plan it runs
    reader = make_reader(cfg, built, env, "train")
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.types import ShardingEnv, ShardingPlan

from embedding_sharding.sharders import CTREmbeddingBagCollectionSharder
from pipelines.parquet_input import ParquetBatchReader
from recsys_dist.config import ConfigError, JobConfig, to_yaml
from recsys_dist.data.metadata import Metadata
from recsys_dist.dist_env import DistEnv
from recsys_dist.models.model import CTRModel, CTRTrainModel, build_model
from recsys_dist.models.sparse import TableSpec
from recsys_dist.optim import fused_params

log = logging.getLogger("recsys_dist")


@dataclass
class Features:
    """The sparse features the model embeds: the dataset's, plus extras computed at batch time (crosses)."""

    tables: List[TableSpec]
    transform: Optional[Callable] = None
    extra_names: List[str] = field(default_factory=list)


def features_for(cfg: JobConfig, md: Metadata) -> Features:
    rows = md.table_rows(cfg.model.max_rows_per_table)
    tables = [TableSpec(f.name, rows[f.name], f.embedding_dim or cfg.model.embedding_dim, f.pooling,
                        f.avg_ids_per_sample) for f in md.sparse_features]
    feats = Features(tables)
    if cfg.data.cross_pairs is not None:
        from recsys_dist.data.cross_features import cross_features  # OptInter's cross-product tables

        extra_tables, transform = cross_features(cfg, md)
        feats.tables += extra_tables
        feats.transform = transform
        feats.extra_names = [t.feature for t in extra_tables]
    return feats


@dataclass
class BuiltModel:
    dmp: DistributedModelParallel
    model: CTRModel  # the unwrapped model (same parameters as inside dmp)
    plan: ShardingPlan
    metadata: Metadata
    features: Features
    sharder: CTREmbeddingBagCollectionSharder


def build_sharded_model(cfg: JobConfig, env: DistEnv, md: Optional[Metadata] = None) -> BuiltModel:
    from embedding_sharding.constraints import load_constraints
    from embedding_sharding.plan_file import load_plan
    from embedding_sharding.planner import plan_sharding
    from embedding_sharding.topology import make_topology

    md = md or Metadata.load(cfg.data.dir)
    feats = features_for(cfg, md)
    torch.manual_seed(cfg.train.seed)  # dense init; DDP then broadcasts rank 0's weights
    model = build_model(feats.tables, md.num_dense, cfg.model.arch, cfg.model.arch_args,
                        sparse_device="meta", dense_device=env.device, embedding_dtype=cfg.model.embedding_dtype)
    dtype = torch.bfloat16 if cfg.train.mixed_precision == "bf16" else None
    # scoring runs the dense arch over per-rank training batches of rows on CPU, or fewer if the arch asks
    # (DenseArch.score_chunk_rows; CTRTrainModel; CUDA unmeasured)
    chunk = model.dense_arch.score_chunk_rows(max(1, cfg.data.batch_size // env.world_size)) \
        if env.device.type == "cpu" else 0
    train_model = CTRTrainModel(model, autocast_dtype=dtype, embedding_l2=cfg.optim.embedding_l2,
                                score_chunk_rows=chunk)
    sharder = CTREmbeddingBagCollectionSharder(fused_params=fused_params(cfg.optim, env.device.type),
                                               allowed=cfg.sharding.sharding_types)
    if cfg.sharding.plan:
        plan = load_plan(cfg.sharding.plan, train_model, env.world_size)
    else:
        topology = make_topology(env.world_size, env.local_world_size, env.device.type,
                                 hbm_gib=cfg.sharding.hbm_gib, ddr_gib=cfg.sharding.ddr_gib)
        constraints = load_constraints(cfg.sharding.constraints) if cfg.sharding.constraints else None
        if env.is_main:
            from embedding_sharding.search import show_progress

            show_progress()  # rank 0 plans: its progress and whether the search stopped early, on stderr
        plan = plan_sharding(train_model, topology, [sharder], constraints=constraints,
                             sharding_types=cfg.sharding.sharding_types,
                             compute_kernel=cfg.sharding.compute_kernel, pg=env.pg)
    dmp = DistributedModelParallel(train_model, env=ShardingEnv.from_process_group(env.pg), device=env.device,
                                   plan=plan, sharders=[sharder])
    return BuiltModel(dmp, model, plan, md, feats, sharder)


def local_batch_size(global_batch: int, world_size: int, key: str) -> int:
    if global_batch % world_size:
        raise ConfigError(f"{key}={global_batch} is not divisible by the world size {world_size}")
    return global_batch // world_size


def make_reader(cfg: JobConfig, built: BuiltModel, env: DistEnv, split: str) -> ParquetBatchReader:
    train = split == "train"
    batch = cfg.data.batch_size if train else cfg.data.eval_batch_size
    key = "data.batch_size" if train else "data.eval_batch_size"
    return ParquetBatchReader(
        cfg.data.dir, split, local_batch_size(batch, env.world_size, key), rank=env.rank,
        world_size=env.world_size, mode="train" if train else "eval", shuffle=cfg.data.shuffle and train,
        seed=cfg.data.seed, shuffle_buffer_rows=cfg.data.shuffle_buffer_rows, prefetch=cfg.data.prefetch_batches,
        metadata=built.metadata, table_rows={t.feature: t.num_embeddings for t in built.features.tables},
        feature_transform=built.features.transform, extra_features=built.features.extra_names,
    )


# -- run directory and checkpoints ---------------------------------------------------------------------------
def write_run_files(cfg: JobConfig, built: BuiltModel, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(to_yaml(cfg))
    from embedding_sharding.plan_file import save_plan

    env = built.dmp._env
    tables = {t.table_name: {"rows": t.num_embeddings, "dim": t.embedding_dim} for t in built.features.tables}
    save_plan(built.plan, out / "plan.json",
              context={"source": "train", "world_size": env.world_size, "tables": tables})


def fingerprint(cfg: JobConfig, built: BuiltModel) -> Dict[str, Any]:
    """What fixes the model's parameters (arch, arch args, tables): a checkpoint loads only into the same."""
    from recsys_dist.checkpoint import model_fingerprint

    return model_fingerprint(cfg, built.features.tables, built.metadata.num_dense)


def save_checkpoint(built: BuiltModel, path: Path, info: Dict[str, Any], optimizer: Any = None,
                    scheduler: Any = None) -> Path:
    """Sharded DCP checkpoint of the model (and optimizer, LR schedule, RNG), written atomically
    (recsys_dist.checkpoint). Collective: every rank calls it."""
    from recsys_dist.checkpoint import save_checkpoint as save

    return save(built.dmp, path, info, optimizer, scheduler)


def load_checkpoint(built: BuiltModel, path: Path, optimizer: Any = None, scheduler: Any = None,
                    cfg: Optional[JobConfig] = None, restore_rng: bool = True) -> Dict[str, Any]:
    """Loads a checkpoint into whatever sharding this job has (DCP reshards by shard offsets). With `cfg`, first
    checks that the checkpoint was written by the same model (a CheckpointError names what differs)."""
    from recsys_dist.checkpoint import load_checkpoint as load

    fp = fingerprint(cfg, built) if cfg is not None else None
    return load(built.dmp, path, optimizer, scheduler, fingerprint=fp, restore_rng=restore_rng)
