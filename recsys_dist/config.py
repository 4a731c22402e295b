"""The job configuration: typed sections, YAML presets, `key=value` overrides, validation before any work.

A config is `JobConfig` (data / model / sharding / optim / train). Files and overrides are merged onto the
typed schema with OmegaConf, so an unknown key or a value of the wrong type fails at load time with the full
key path; `validate()` then checks the meaning of values (choices, ranges, arch arguments).

    cfg = load_config("configs/dlrm_synthetic.yaml", ["train.max_steps=10", "model.embedding_dim=16"])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A configuration problem, named by file and key, found before a job starts."""


@dataclass
class DataConfig:
    dir: str = "data/prepared"  # a prepared dataset: metadata.json + Parquet shards (`recsys-dist prepare`)
    batch_size: int = 2048  # global batch: each of W ranks reads batch_size / W rows per step
    eval_batch_size: int = 8192  # global batch for validation / test
    shuffle: bool = True
    shuffle_buffer_rows: int = 262144  # rows kept in the shuffle buffer per rank
    seed: int = 0
    prefetch_batches: int = 4  # batches built ahead by the background reader thread
    cross_pairs: Optional[Any] = None  # OptInter: "all", a list of "Ci,Cj" pairs, or a searched-architecture JSON
    cross_table_rows: int = 1000000  # per-pair cap: rows_i * rows_j ids exactly if it fits, else hashed into this
    cross_min_count: int = 0  # > 1: crosses seen fewer times in train -> one OOV id per pair (OptInter: 20)


@dataclass
class ModelConfig:
    arch: str = "dlrm"  # a name in recsys_dist.models.registry
    embedding_dim: int = 64
    arch_args: Dict[str, Any] = field(default_factory=dict)  # keyword arguments of the arch's constructor
    max_rows_per_table: Optional[int] = None  # cap table rows (ids are taken modulo the cap at batch time)
    embedding_dtype: str = "fp32"  # fp32 | fp16: table weights in FBGEMM's TBE (pooled outputs stay fp32)


@dataclass
class ShardingConfig:
    plan: Optional[str] = None  # a plan file from `recsys-dist plan`: train on exactly that sharding
    sharding_types: Optional[List[str]] = None  # allowed types for every table (None: all the planner may use)
    compute_kernel: Optional[str] = None  # force one kernel, e.g. fused, fused_uvm_caching, dense
    constraints: Optional[str] = None  # YAML file of per-table constraints (embedding_sharding.constraints)
    hbm_gib: Optional[float] = None  # per-device memory the planner may use (None: the device's default)
    ddr_gib: Optional[float] = None


@dataclass
class OptimConfig:
    sparse: str = "rowwise_adagrad"  # fused FBGEMM optimizer: rowwise_adagrad | adagrad | sgd | adam (cuda only)
    sparse_lr: float = 0.01
    sparse_eps: float = 1e-8
    dense: str = "adagrad"  # torch optimizer for dense params and data-parallel tables: adagrad | adam | sgd
    dense_lr: float = 0.01
    dense_eps: float = 1e-8
    weight_decay: float = 0.0
    arch_lr: float = 3e-4  # optimizer of architecture parameters (search stages of OptInter / OptFusion)
    warmup_steps: int = 0  # linear warm-up of both learning rates


@dataclass
class TrainConfig:
    out_dir: str = "runs/default"
    epochs: int = 1
    max_steps: Optional[int] = None  # stop after this many steps (None: the epochs)
    val_every_steps: int = 0  # 0: validate once per epoch
    log_every_steps: int = 50
    pipeline: str = "sparse_dist"  # sparse_dist (TrainPipelineSparseDist) | base (TrainPipelineBase)
    seed: int = 0
    threads: Optional[int] = None  # torch intra-op threads per rank (None: cores / local ranks)
    device: str = "auto"  # auto | cpu | cuda
    checkpoint: bool = True  # write a checkpoint at the end
    checkpoint_every_steps: int = 0  # also every N steps to <out_dir>/checkpoints/step_N (0: only at the end)
    keep_checkpoints: int = 2  # periodic checkpoints kept (the newest K; the final one is kept apart)
    resume: str = "auto"  # auto: from the newest complete checkpoint in out_dir, if any | never | a folder
    tensorboard: bool = True  # TensorBoard scalars in <out_dir>/tensorboard (rank 0)
    mixed_precision: str = "fp32"  # fp32 | bf16 (dense arch under autocast)
    tune_malloc: bool = True  # glibc keeps freed activation memory: no per-step page faults (recsys_dist/malloc.py)


@dataclass
class SynthConfig:
    """`recsys-dist synth`: Criteo-format TSV with a planted, learnable signal (recsys_dist.data.synth)."""

    out_dir: str = "data/raw"
    layout: str = "terabyte"  # terabyte (day_0 .. day_{days-1}) | kaggle (one train.txt)
    days: int = 3
    rows_per_day: int = 100000
    gzip: bool = False
    seed: int = 0
    vocab_sizes: Optional[List[int]] = None  # per categorical field (26); None: a built-in mix of sizes
    zipf_exponent: float = 1.1
    missing_rate: float = 0.02  # probability that a field is empty
    base_ctr: float = 0.25  # mean click probability (the bias is calibrated to it)
    num_main_fields: int = 8  # categorical fields with a main effect w_f[v]
    num_pairs: int = 6  # planted pairs (f, g) with a logit term <u_f[v_f], u_g[v_g]>
    latent_dim: int = 4  # k of the planted pair factors
    signal_scale: float = 1.0  # multiplies every planted effect (0: labels are pure noise)


@dataclass
class PrepareConfig:
    """`recsys-dist prepare`: raw Criteo TSV (or .gz) -> Parquet shards + metadata.json (recsys_dist.data)."""

    input: List[str] = field(default_factory=list)  # files or folders of raw day files / train.txt
    out_dir: str = "data/prepared"
    categorical: str = "hash"  # hash (id = value mod hash_cap) | vocab (min_count threshold, OOV id)
    hash_cap: int = 40000000
    min_count: int = 2
    dense: str = "log"  # log (log(x+1), negatives clamped) | bucketize (floor(log(x)^2) for x > 2: categorical)
    split: str = "auto"  # day (last day halves into val / test) | ratio | auto (day if several days) | criteo_kaggle
    #                      (train.txt as 7 days: 1-6 train, 7 halves val / test) | criteo_terabyte (day 23 val / test)
    val_ratio: float = 0.05
    test_ratio: float = 0.05
    seed: int = 0
    rows_per_file: int = 1000000
    strict: bool = False  # fail at the first bad row with file:line, instead of count + skip + report
    workers: int = 0  # 0: one per core
    schema: Optional[str] = None  # own CSV / Parquet data: a schema YAML (docs/own_data.md); None: Criteo


@dataclass
class PlanConfig:
    """`recsys-dist plan`: the topology to plan for (this machine or a hypothetical cluster)."""

    world_size: Optional[int] = None  # None: the running job's world size (1 outside torchrun)
    local_world_size: Optional[int] = None  # devices per node
    device: str = "auto"  # auto | cpu | cuda
    hbm_gib: Optional[float] = None  # per device; None: a default for the device
    ddr_gib: Optional[float] = None  # per rank (TorchRec convention)
    intra_node_bw_gbps: Optional[float] = None
    inter_node_bw_gbps: Optional[float] = None
    preset: Optional[str] = None  # a named model/dataset preset that needs no data on disk
    out: Optional[str] = None  # plan file to write (JSON); reports beside it
    formats: List[str] = field(default_factory=lambda: ["text"])  # text | markdown | json | html


@dataclass
class JobConfig:
    synth: SynthConfig = field(default_factory=SynthConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SPARSE_OPTIMIZERS = ("rowwise_adagrad", "adagrad", "sgd", "adam")
DENSE_OPTIMIZERS = ("adagrad", "adam", "sgd")
PIPELINES = ("sparse_dist", "base")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
EMBEDDING_DTYPES = ("fp32", "fp16")


def _merge(base: Any, layer: Any, source: str) -> Any:
    try:
        return OmegaConf.merge(base, layer)
    except OmegaConfBaseException as e:
        msg = str(e).split("\n")[0]
        key = getattr(e, "full_key", None)
        raise ConfigError(f"{source}: {msg}" + (f" (key: {key})" if key else "")) from None


def load_config(path: Optional[str | Path] = None, overrides: Sequence[str] = ()) -> JobConfig:
    """Schema defaults <- YAML file <- `section.key=value` overrides, then `validate`."""
    cfg = OmegaConf.structured(JobConfig)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: expected a mapping of sections (data, model, ...), got {type(raw).__name__}")
        cfg = _merge(cfg, OmegaConf.create(raw), str(p))
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r}: expected section.key=value, e.g. train.max_steps=100")
        try:
            layer = OmegaConf.from_dotlist([ov])
        except OmegaConfBaseException as e:
            raise ConfigError(f"override {ov!r}: {e}") from None
        cfg = _merge(cfg, layer, f"override {ov!r}")
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{path or 'config'}: required key(s) not set: {', '.join(missing)}")
    job: JobConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    validate(job, source=str(path or "config"))
    return job


def _choice(value: str, choices: Sequence[str], key: str, source: str) -> None:
    if value not in choices:
        raise ConfigError(f"{source}: {key}={value!r} is not one of {', '.join(choices)}")


def _positive(value: Optional[float], key: str, source: str, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{source}: {key}={value} must be {'>= 0' if allow_zero else '> 0'}")


def validate(cfg: JobConfig, source: str = "config") -> None:
    """Checks the meaning of values; types and key names were already checked by the schema."""
    from recsys_dist.models.registry import validate_arch_args  # late: models import torch

    _choice(cfg.optim.sparse, SPARSE_OPTIMIZERS, "optim.sparse", source)
    _choice(cfg.optim.dense, DENSE_OPTIMIZERS, "optim.dense", source)
    _choice(cfg.train.pipeline, PIPELINES, "train.pipeline", source)
    _choice(cfg.train.device, DEVICES, "train.device", source)
    _choice(cfg.train.mixed_precision, PRECISIONS, "train.mixed_precision", source)
    _choice(cfg.model.embedding_dtype, EMBEDDING_DTYPES, "model.embedding_dtype", source)
    positive = ("data.batch_size", "data.eval_batch_size", "model.embedding_dim", "optim.sparse_lr", "optim.dense_lr",
                "optim.arch_lr", "train.epochs", "data.shuffle_buffer_rows", "train.max_steps",
                "model.max_rows_per_table", "train.threads", "train.keep_checkpoints")  # (None: unset, allowed)
    non_negative = ("train.val_every_steps", "train.log_every_steps", "optim.warmup_steps", "optim.weight_decay",
                    "data.prefetch_batches", "train.checkpoint_every_steps")
    for keys, allow_zero in ((positive, False), (non_negative, True)):
        for key in keys:
            sec, name = key.split(".")
            _positive(getattr(getattr(cfg, sec), name), key, source, allow_zero=allow_zero)
    if cfg.train.resume not in ("auto", "never") and not Path(cfg.train.resume).is_dir():
        raise ConfigError(f"{source}: train.resume={cfg.train.resume!r}: expected auto, never or a checkpoint folder")
    if cfg.sharding.sharding_types is not None:
        from embedding_sharding.sharders import SHARDING_TYPES

        for t in cfg.sharding.sharding_types:
            _choice(t, SHARDING_TYPES, "sharding.sharding_types[]", source)
    if cfg.sharding.plan is not None and not Path(cfg.sharding.plan).is_file():
        raise ConfigError(f"{source}: sharding.plan={cfg.sharding.plan!r}: file not found")
    if cfg.sharding.constraints is not None and not Path(cfg.sharding.constraints).is_file():
        raise ConfigError(f"{source}: sharding.constraints={cfg.sharding.constraints!r}: file not found")
    try:
        validate_arch_args(cfg.model.arch, cfg.model.arch_args)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{source}: model: {e.args[0] if e.args else e}") from None


def to_dict(cfg: JobConfig) -> Dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: JobConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
