"""Evaluate a checkpoint: AUC / logloss on a split, on any world size (the checkpoint is resharded on load)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from recsys_dist.config import ConfigError, JobConfig
from recsys_dist.dist_env import setup_process
from recsys_dist.job import build_sharded_model, load_checkpoint


def evaluate(cfg: JobConfig, checkpoint: str | Path, split: str = "test",
             predictions: Optional[str | Path] = None) -> Dict[str, Any]:
    """Metrics of `checkpoint` on `split`; with `predictions`, also writes every row's prediction there (Parquet,
    in the split's row order, padding excluded: recsys_dist.predictions)."""
    ckpt = Path(checkpoint)
    if not ckpt.is_dir():
        raise ConfigError(f"checkpoint {ckpt}: not found (expected the checkpoint/ folder of a train run)")
    env, _ = setup_process(cfg.train)
    cfg.sharding.plan = None  # the plan of the training run may be for another world size: plan afresh
    built = build_sharded_model(cfg, env)
    info = load_checkpoint(built, ckpt, cfg=cfg, restore_rng=False)  # refuses another model's checkpoint
    from recsys_dist.train import evaluate_split

    if predictions is None:
        metrics = evaluate_split(built, cfg, env, split)
    else:
        from recsys_dist.metrics import binary_metrics
        from recsys_dist.predictions import predict_split, write_predictions

        scored = predict_split(built, cfg, env, split)
        metrics = binary_metrics(scored)
        if env.is_main:
            metrics["predictions"] = str(write_predictions(scored, predictions))
    return {"split": split, "checkpoint": str(ckpt), "step": info.get("step"), "world_size": env.world_size,
            **metrics}
