"""AUC / logloss of a trained checkpoint on a data split.

    recsys-dist evaluate --run runs/demo/train            # the run's own config.yaml and checkpoint/
    recsys-dist evaluate --run runs/x --split val data.eval_batch_size=4096
    recsys-dist evaluate --run runs/x --predictions runs/x/test_predictions.parquet   # + per-row predictions

Runs on any number of ranks (one process, or under torchrun): the sharded checkpoint is loaded into whatever
sharding plan this job gets.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recsys_dist.cli.common import is_rank0, print_json
from recsys_dist.config import ConfigError, load_config


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", help="a train run folder (its config.yaml and checkpoint/ are used)")
    p.add_argument("--checkpoint", help="checkpoint folder (default: RUN/checkpoint)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--data", help="prepared dataset folder (data.dir), if not the run's")
    p.add_argument("--predictions", metavar="OUT.parquet",
                   help="also write each row's prediction (row, label, logit, prediction; the split's row order)")


def run(args: argparse.Namespace) -> int:
    config = args.config
    if config is None:
        if args.run is None:
            raise ConfigError("give --run RUN_DIR (or --config and --checkpoint)")
        config = str(Path(args.run) / "config.yaml")
    overrides = list(args.overrides) + ([f"data.dir={args.data}"] if args.data else [])
    cfg = load_config(config, overrides)
    checkpoint = args.checkpoint or str(Path(args.run or cfg.train.out_dir) / "checkpoint")
    from recsys_dist.evaluate import evaluate

    result = evaluate(cfg, checkpoint, args.split, predictions=args.predictions)
    if is_rank0():
        print_json(result)
    return 0
