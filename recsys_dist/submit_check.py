"""A train job checked where its torchx AppDef is built, before anything is submitted or started.

The ranks check the same again (recsys_dist/preflight.py), but a bad value found there ends in torchrun's failure
summary, after a scheduler queue on a cluster. The host that builds the AppDef may not hold the job's files (a
submit host, a laptop sending to Kubernetes), so what is checked is chosen by `check`:

- "auto": the config (YAML file + overrides: keys, types, choices, ranges, arch arguments, fp16 tables on a CPU
  job: recsys_dist/table_precision.py) and the batch sizes against every world size of `-j`, always; the files
  the config names (data.dir: its splits and the arch on its tables; sharding.plan; sharding.constraints; the
  checkpoint train.resume would load) when they exist on this host, as they do under local_cwd;
- "all": as "auto", and a named file or folder missing on this host is an error;
- "config": the config and batch sizes only, no file looked for;
- "none": nothing (a config file that exists only in the image).

    check_train_job("configs/dlrm_synthetic.yaml", ["train.max_steps=100"], world_sizes=[2], check="auto")
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator, Sequence

from recsys_dist.config import ConfigError, load_config

CHECKS = ("auto", "all", "config", "none")


def check_train_job(config: str, overrides: Sequence[str], world_sizes: Sequence[int], check: str = "auto",
                    gpus: int = 0) -> None:
    """Raises ConfigError (one line naming the file or key) for a job that would fail its ranks' checks.
    `gpus`: GPUs per node (0: the ranks train on CPU unless train.device=cuda)."""
    if check not in CHECKS:
        raise ConfigError(f"--check {check!r} is not one of {', '.join(CHECKS)}")
    if check == "none":
        return
    with _no_info_logs():
        _check(config, overrides, world_sizes, check, gpus)


@contextlib.contextmanager
def _no_info_logs() -> Iterator[None]:
    """fbgemm_gpu logs a line per library it loads on the root logger, which torchx's CLI shows at INFO."""
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(previous)


def _check(config: str, overrides: Sequence[str], world_sizes: Sequence[int], check: str, gpus: int) -> None:
    if not Path(config).is_file():
        raise ConfigError(f"config file not found on this host: {config} (--check none if it exists only in "
                          f"the image)")
    cfg = load_config(config, overrides, check_paths=check == "all")
    from recsys_dist.preflight import check_batches, check_job
    from recsys_dist.table_precision import check_table_precision

    check_table_precision(cfg, cfg.train.device if cfg.train.device != "auto" else "cuda" if gpus else "cpu")
    for world_size in world_sizes:
        check_batches(cfg, world_size)
    if check == "config" or (check == "auto" and not Path(cfg.data.dir).exists()):
        return
    from recsys_dist.cli.train import resume_checkpoint, resume_note

    plan = cfg.sharding.plan if cfg.sharding.plan and Path(cfg.sharding.plan).is_file() else None
    checkpoints = [p for p in resume_checkpoint(cfg) if check == "all" or p.exists()]
    check_job(cfg, max(world_sizes), splits=["train"], plan=plan, checkpoints=checkpoints,
              checkpoint_note=resume_note(cfg), selection=True)
