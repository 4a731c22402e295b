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
from typing import Any, Dict, List, Mapping, Optional, Sequence

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
    fp16_tables_on_cpu: bool = False  # fp16 tables on a CPU run are refused without it (recsys_dist/table_precision.py)


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
    sparse: str = "rowwise_adagrad"  # fused table optimizer: rowwise_adagrad | adagrad | sgd | adam (docs/arches.md)
    sparse_lr: float = 0.01
    sparse_eps: float = 1e-8
    dense: str = "adagrad"  # torch optimizer for dense params and data-parallel tables: adagrad | adam | sgd
    dense_lr: float = 0.01
    dense_eps: float = 1e-8
    embedding_l2: float = 0.0  # L2 of the embeddings a batch looks up, added to the loss (recsys_dist/embedding_l2.py)
    weight_decay: float = 0.0  # tables: adam (decoupled; rowwise_adagrad L2 on CUDA only); dense: torch's L2
    beta1: float = 0.9  # Adam's betas, of the tables and the dense params (the arch optimizer keeps torch's)
    beta2: float = 0.999
    arch_lr: float = 3e-4  # optimizer of architecture parameters (search stages of OptInter / OptFusion)
    warmup_steps: int = 0  # linear warm-up of every learning rate (recsys_dist/lr_schedule.py)
    lr_decay: str = "none"  # none | linear | cosine: every learning rate decays over the run's steps
    decay_start: float = 0.0  # the decay starts after this fraction of the run's steps
    decay_end_factor: float = 0.0  # the learning rates end at this fraction of their base value


@dataclass
class EarlyStoppingConfig:
    """Model selection on the val split (recsys_dist/early_stopping.py)."""

    metric: str = "auc"  # val metric: auc | logloss
    mode: str = "auto"  # max | min | auto (max for auc, min for logloss)
    patience: int = 0  # stop after this many validations in a row without improvement (0: never stop early)
    min_delta: float = 0.0  # an improvement beats the best by more than this


@dataclass
class TrainConfig:
    out_dir: str = "runs/default"
    epochs: int = 1
    max_steps: Optional[int] = None  # stop after this many steps (None: the epochs)
    val_every_steps: int = 0  # 0: validate once per epoch
    log_every_steps: int = 50
    pipeline: str = "sparse_dist"  # sparse_dist (TrainPipelineSparseDist) | base (TrainPipelineBase)
    seed: int = 0
    threads: Optional[int] = None  # torch intra-op threads per rank (None: cores / local ranks, <= idle cores)
    device: str = "auto"  # auto | cpu | cuda
    checkpoint: bool = True  # write a checkpoint at the end
    checkpoint_every_steps: int = 0  # also every N steps to <out_dir>/checkpoints/step_N (0: only at the end)
    keep_checkpoints: int = 2  # periodic checkpoints kept (the newest K; the final one is kept apart)
    resume: str = "auto"  # auto: from the newest complete checkpoint in out_dir, if any | never | a folder
    tensorboard: bool = True  # TensorBoard scalars in <out_dir>/tensorboard (rank 0)
    mixed_precision: str = "fp32"  # fp32 | bf16 (dense arch under autocast)
    tune_malloc: bool = True  # glibc keeps freed activation memory: no per-step page faults (recsys_dist/malloc.py)
    test: bool = True  # score the test split at the end (false: only `recsys-dist evaluate` does, when asked)
    keep_best: bool = True  # with a val split: keep best_checkpoint (the best validation) and test on it
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    compile: bool = False  # torch.compile (Inductor) of the dense arch; tables stay eager (recsys_dist/compile.py)
    compile_cache: Optional[str] = None  # Inductor's cache across runs (None: $TORCHINDUCTOR_CACHE_DIR or ~/.cache/...)


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
    #                    | minmax ((x - min) / (max - min) over the train split, clipped to [0, 1]: OptInter eq. 20)
    #                    | standardize ((x - mean) / std over the train split, clipped to +-5: as own data)
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
LR_DECAYS = ("none", "linear", "cosine")  # optim.lr_decay (recsys_dist/lr_schedule.py)
PIPELINES = ("sparse_dist", "base")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
EMBEDDING_DTYPES = ("fp32", "fp16")

# The allowed range of every numeric field ("> 0", ">= 0", "[0, 1)": interval notation). None (an unset Optional)
# is always allowed; a list is checked item by item. tests/test_cli.py fails for a numeric field missing here.
RANGES: Dict[str, str] = {
    "synth.days": "> 0", "synth.rows_per_day": "> 0", "synth.seed": ">= 0", "synth.vocab_sizes": "> 0",
    "synth.zipf_exponent": ">= 0", "synth.missing_rate": "[0, 1)", "synth.base_ctr": "(0, 1)",
    "synth.num_main_fields": ">= 0", "synth.num_pairs": ">= 0", "synth.latent_dim": "> 0",
    "synth.signal_scale": ">= 0",
    "prepare.hash_cap": "> 0", "prepare.min_count": "> 0", "prepare.val_ratio": "[0, 1)",
    "prepare.test_ratio": "[0, 1)", "prepare.seed": ">= 0", "prepare.rows_per_file": "> 0", "prepare.workers": ">= 0",
    "plan.world_size": "> 0", "plan.local_world_size": "> 0", "plan.hbm_gib": "> 0", "plan.ddr_gib": "> 0",
    "plan.intra_node_bw_gbps": "> 0", "plan.inter_node_bw_gbps": "> 0",
    "data.batch_size": "> 0", "data.eval_batch_size": "> 0", "data.shuffle_buffer_rows": "> 0", "data.seed": ">= 0",
    "data.prefetch_batches": ">= 0", "data.cross_table_rows": "> 0", "data.cross_min_count": ">= 0",
    "model.embedding_dim": "> 0", "model.max_rows_per_table": "> 0",
    "sharding.hbm_gib": "> 0", "sharding.ddr_gib": "> 0",
    "optim.sparse_lr": "> 0", "optim.sparse_eps": "> 0", "optim.dense_lr": "> 0", "optim.dense_eps": "> 0",
    "optim.weight_decay": ">= 0", "optim.beta1": "[0, 1)", "optim.beta2": "[0, 1)", "optim.arch_lr": "> 0",
    "optim.warmup_steps": ">= 0", "optim.embedding_l2": ">= 0",
    "optim.decay_start": "[0, 1)", "optim.decay_end_factor": "[0, 1]",
    "train.epochs": "> 0", "train.max_steps": "> 0", "train.val_every_steps": ">= 0", "train.log_every_steps": ">= 0",
    "train.seed": ">= 0", "train.threads": "> 0", "train.checkpoint_every_steps": ">= 0",
    "train.keep_checkpoints": "> 0", "train.early_stopping.patience": ">= 0", "train.early_stopping.min_delta": ">= 0",
}


def in_range(value: float, spec: str) -> bool:
    """`value` against a RANGES spec: "> a", ">= a", or an interval "[a, b)" / "(a, b]" / ..."""
    if spec.startswith(">="):
        return value >= float(spec[2:])
    if spec.startswith(">"):
        return value > float(spec[1:])
    lo, hi = (float(x) for x in spec[1:-1].split(","))
    return (lo <= value if spec[0] == "[" else lo < value) and (value <= hi if spec[-1] == "]" else value < hi)


def _merge(base: Any, layer: Any, source: str) -> Any:
    try:
        return OmegaConf.merge(base, layer)
    except OmegaConfBaseException as e:
        msg = str(e).split("\n")[0]
        key = getattr(e, "full_key", None)
        raise ConfigError(f"{source}: {msg}" + (f" (key: {key})" if key else "")) from None


def _dotted_keys(d: Mapping[str, Any], prefix: str = "") -> List[str]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.append(key)
        if isinstance(v, Mapping):
            out += _dotted_keys(v, key + ".")
    return out


def load_config(path: Optional[str | Path] = None, overrides: Sequence[str] = (),
                check_paths: bool = True) -> JobConfig:
    """Schema defaults <- YAML file <- `section.key=value` overrides, then `validate` (`check_paths=False`: the
    files the config names are not looked for, e.g. on a host that submits the job elsewhere)."""
    cfg = OmegaConf.structured(JobConfig)
    sources: Dict[str, str] = {}  # dotted key -> where its value was set (the last layer wins)
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
        sources.update(dict.fromkeys(_dotted_keys(raw), str(p)))
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r}: expected section.key=value, e.g. train.max_steps=100")
        try:
            layer = OmegaConf.from_dotlist([ov])
        except OmegaConfBaseException as e:
            raise ConfigError(f"override {ov!r}: {e}") from None
        cfg = _merge(cfg, layer, f"override {ov!r}")
        key = ov.split("=", 1)[0].strip()
        sources = {k: v for k, v in sources.items() if not k.startswith(key + ".")}
        sources[key] = f"override {ov!r}"
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{path or 'config'}: required key(s) not set: {', '.join(missing)}")
    job: JobConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    job._sources = sources  # type: ignore[attr-defined]
    from recsys_dist.arch_defaults import apply_arch_defaults

    apply_arch_defaults(job)  # the arch's paper optimizer when the config sets none (recsys_dist/arch_defaults.py)
    validate(job, check_paths=check_paths)
    return job


def source_of(cfg: JobConfig, key: str) -> str:
    """Where `key`'s value came from: "override 'k=v'", the YAML file's path, or "the default"."""
    sources: Dict[str, str] = getattr(cfg, "_sources", {})
    for k in sorted(sources, key=len, reverse=True):  # the most specific recorded key (or a parent of it)
        if key == k or key.startswith(k + ".") or k.startswith(key + "."):
            return sources[k]
    return sources.get("", "the default")


def _get(cfg: JobConfig, key: str) -> Any:
    value: Any = cfg
    for name in key.split("."):  # section.key, or section.sub.key (train.early_stopping.patience)
        value = getattr(value, name)
    return value


def _choice(cfg: JobConfig, key: str, choices: Sequence[str]) -> None:
    value = _get(cfg, key)
    if value not in choices:
        raise ConfigError(f"{source_of(cfg, key)}: {key}={value!r} is not one of {', '.join(choices)}")


def check_ranges(cfg: JobConfig) -> None:
    """Every numeric field against RANGES; the message names where the value was set."""
    for key, spec in RANGES.items():
        value = _get(cfg, key)
        items = [(f"{key}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, list) else [(key, value)]
        for name, v in items:
            if v is not None and not in_range(v, spec):
                must = "must be " + (spec if spec[0] == ">" else f"in {spec}")
                raise ConfigError(f"{source_of(cfg, key)}: {name}={v} {must}")


def _check_table_optimizer(cfg: JobConfig) -> None:
    """What the fused table optimizers cannot do (recsys_dist.optim.fused_params), refused before any work."""
    o = cfg.optim
    cuda = cfg.train.device == "cuda" or (cfg.train.device == "auto" and _cuda_available())
    if o.weight_decay and o.sparse != "adam" and not (o.sparse == "rowwise_adagrad" and cuda):
        why = ("FBGEMM's CPU kernel ignores it (tests/test_cli.py shows it)" if o.sparse == "rowwise_adagrad"
               else f"FBGEMM's fused {o.sparse} has no weight decay")
        raise ConfigError(f"{source_of(cfg, 'optim.weight_decay')}: optim.weight_decay={o.weight_decay:g} with "
                          f"optim.sparse={o.sparse}: {why}; use optim.sparse=adam or weight_decay=0")
    if o.sparse == "adam" and cfg.model.embedding_dtype != "fp32" and not cuda:
        raise ConfigError(f"{source_of(cfg, 'model.embedding_dtype')}: model.embedding_dtype="
                          f"{cfg.model.embedding_dtype} with optim.sparse=adam: Adam on CPU keeps fp32 tables "
                          f"(fp16 tables with Adam: train.device=cuda)")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def validate(cfg: JobConfig, source: Optional[str] = None, check_paths: bool = True) -> None:
    """Checks the meaning of values; types and key names were already checked by the schema. Messages name
    where each value was set (`source` overrides that, for a config not made by load_config)."""
    from recsys_dist.models.registry import validate_arch_args  # late: models import torch

    if source is not None:
        cfg._sources = {"": source}  # type: ignore[attr-defined]
    for key, choices in (("optim.sparse", SPARSE_OPTIMIZERS), ("optim.dense", DENSE_OPTIMIZERS),
                         ("optim.lr_decay", LR_DECAYS),
                         ("train.pipeline", PIPELINES), ("train.device", DEVICES),
                         ("train.mixed_precision", PRECISIONS), ("model.embedding_dtype", EMBEDDING_DTYPES),
                         ("train.early_stopping.metric", ("auc", "logloss")),
                         ("train.early_stopping.mode", ("auto", "max", "min"))):
        _choice(cfg, key, choices)
    check_ranges(cfg)
    _check_table_optimizer(cfg)
    if cfg.prepare.val_ratio + cfg.prepare.test_ratio >= 1:
        raise ConfigError(f"{source_of(cfg, 'prepare.val_ratio')}: prepare.val_ratio + prepare.test_ratio = "
                          f"{cfg.prepare.val_ratio + cfg.prepare.test_ratio:g} must be < 1")
    if check_paths and cfg.train.resume not in ("auto", "never") and not Path(cfg.train.resume).is_dir():
        raise ConfigError(f"{source_of(cfg, 'train.resume')}: train.resume={cfg.train.resume!r}: expected auto, "
                          f"never or a checkpoint folder")
    if cfg.sharding.sharding_types is not None:
        from embedding_sharding.sharders import SHARDING_TYPES

        for t in cfg.sharding.sharding_types:
            if t not in SHARDING_TYPES:
                raise ConfigError(f"{source_of(cfg, 'sharding.sharding_types')}: sharding.sharding_types[]={t!r} "
                                  f"is not one of {', '.join(SHARDING_TYPES)}")
    for key in ("sharding.plan", "sharding.constraints"):
        if check_paths and _get(cfg, key) is not None and not Path(_get(cfg, key)).is_file():
            raise ConfigError(f"{source_of(cfg, key)}: {key}={_get(cfg, key)!r}: file not found")
    try:
        validate_arch_args(cfg.model.arch, cfg.model.arch_args)
    except (KeyError, TypeError, ValueError) as e:
        key = "model.arch_args" if cfg.model.arch_args else "model.arch"
        raise ConfigError(f"{source_of(cfg, key)}: model: {e.args[0] if e.args else e}") from None


def to_dict(cfg: JobConfig) -> Dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: JobConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
