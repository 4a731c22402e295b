"""AUC / logloss of a trained checkpoint on a data split.

    recsys-dist evaluate --run-dir runs/demo/train        # the run's config.yaml and best (else final) checkpoint
    recsys-dist evaluate --run-dir runs/x --split val data.eval_batch_size=4096
    recsys-dist evaluate --run-dir runs/x --predictions runs/x/test_predictions.parquet   # + per-row predictions
    torchrun --standalone --nproc_per_node 2 -m recsys_dist.cli evaluate --run-dir runs/x

Runs on any number of ranks (one process, or under torchrun): the sharded checkpoint is loaded into whatever
sharding plan this job gets. The data, the model and the checkpoint are checked against each other before the
model is built. (`--run` is the old spelling of --run-dir: one process only, torchrun reads it as its --run-path.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recsys_dist.cli.common import is_rank0, print_json, world_size
from recsys_dist.config import ConfigError, load_config
from recsys_dist.preflight import check_job


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", dest="run", help="a train run folder (its config.yaml and checkpoints are used)")
    p.add_argument("--run", dest="run", help=argparse.SUPPRESS)  # old spelling; torchrun takes it for --run-path
    p.add_argument("--checkpoint", help="checkpoint folder (default: RUN/best_checkpoint, the best validation, "
                   "if the run kept one; else RUN/checkpoint, the last step)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--data", help="prepared dataset folder (data.dir), if not the run's")
    p.add_argument("--predictions", metavar="OUT.parquet",
                   help="also write each row's prediction (row, label, logit, prediction; the split's row order)")


def run(args: argparse.Namespace) -> int:
    config = args.config
    if config is None:
        if args.run is None:
            raise ConfigError("give --run-dir RUN_DIR (or --config and --checkpoint)")
        config = str(Path(args.run) / "config.yaml")
    overrides = list(args.overrides) + ([f"data.dir={args.data}"] if args.data else [])
    cfg = load_config(config, overrides)
    from recsys_dist.early_stopping import default_checkpoint

    checkpoint = args.checkpoint or str(default_checkpoint(args.run or cfg.train.out_dir))
    if not Path(checkpoint).is_dir():
        raise ConfigError(f"checkpoint {checkpoint}: not found (expected the checkpoint/ folder of a train run)")
    # plans afresh: no plan file
    check_job(cfg, world_size(), splits=[args.split], checkpoints=[Path(checkpoint)], here=True)
    from recsys_dist.evaluate import evaluate

    result = evaluate(cfg, checkpoint, args.split, predictions=args.predictions)
    if is_rank0():
        print_json(result)
    return 0

