"""Train a CTR model: sharded embedding tables (TorchRec planner + DMP, fused FBGEMM optimizer), data-parallel
dense arch, TorchRec's TrainPipelineSparseDist, periodic validation, final test AUC / logloss, a checkpoint.

One process:            recsys-dist train --config configs/dlrm_synthetic.yaml train.max_steps=100
Each rank of torchrun:  torchrun --standalone --nproc_per_node 2 -m recsys_dist.cli train --config ...
torchx:                 see launch/ and docs/launch.md
The data, the arch on its tables, a plan file and the checkpoint a resume would load are checked before any
process group or model exists (exit 2 and one message). The run folder (train.out_dir) receives config.yaml, plan.json, metrics.jsonl, result.json and checkpoint/.
"""

from __future__ import annotations

import argparse

from pathlib import Path
from typing import List

from recsys_dist.cli.common import bounded, config_from_args, is_rank0, print_json, world_size
from recsys_dist.dist_env import resolve_device
from recsys_dist.preflight import check_job
from recsys_dist.table_precision import check_table_precision


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="prepared dataset folder (data.dir)")
    p.add_argument("--out", help="run folder (train.out_dir)")
    p.add_argument("--plan", help="a plan file from `recsys-dist plan` (sharding.plan): train on exactly it")
    p.add_argument("--max-steps", type=bounded(int, "train.max_steps"), help="train.max_steps")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, [("data", "data.dir"), ("out", "train.out_dir"), ("plan", "sharding.plan"),
                                  ("max_steps", "train.max_steps")])
    check_table_precision(cfg, resolve_device(cfg.train.device).type)
    check_job(cfg, world_size(), splits=["train"], plan=cfg.sharding.plan, checkpoints=resume_checkpoint(cfg),
              checkpoint_note=resume_note(cfg), selection=True, here=True)
    from recsys_dist.train import train  # heavy imports after the job is known to be good

    result = train(cfg)
    if is_rank0():
        print_json(result)
    return 0


def resume_note(cfg) -> str:
    return (f" (train.resume={cfg.train.resume} would resume from it; train.resume=never or another "
            f"train.out_dir starts over)")


def resume_checkpoint(cfg) -> List[Path]:
    """The checkpoint train.resume would load (as recsys_dist.train does), to check it up front."""
    if cfg.train.resume == "never":
        return []
    if cfg.train.resume != "auto":
        return [Path(cfg.train.resume)]
    from recsys_dist.checkpoint import find_latest

    latest = find_latest(Path(cfg.train.out_dir))
    return [latest] if latest is not None else []
