"""The train job: sharded model, TorchRec train pipeline, periodic validation, final test metrics, checkpoint.

Runs as one process or as each rank of a torchrun / torchx job; `train(cfg)` returns the final metrics on every
rank. Rank 0 writes the run folder (train.out_dir): config.yaml, plan.json, metrics.jsonl, checkpoint/, and
architecture.json for arches with a search stage.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import torch
from torchrec.distributed.train_pipeline import TrainPipelineBase, TrainPipelineSparseDist
from tqdm import tqdm

from recsys_dist.config import JobConfig, to_dict
from recsys_dist.dist_env import DistEnv, init_distributed, set_threads
from recsys_dist.job import BuiltModel, build_sharded_model, make_reader, save_checkpoint, write_run_files
from recsys_dist.metrics import PredictionBuffer
from recsys_dist.optim import build_optimizer

log = logging.getLogger("recsys_dist")


class MetricsLog:
    """metrics.jsonl in the run folder (rank 0), one JSON object a line."""

    def __init__(self, path: Optional[Path]) -> None:
        self.path = path
        if path is not None:
            path.write_text("")

    def write(self, **record: Any) -> None:
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


@torch.no_grad()
def evaluate_split(built: BuiltModel, cfg: JobConfig, env: DistEnv, split: str) -> Dict[str, float]:
    """AUC / logloss on a split: every row scored exactly once (eval padding has weight 0), gathered on all ranks."""
    reader = make_reader(cfg, built, env, split)
    built.dmp.eval()
    buf = PredictionBuffer()
    for batch in tqdm(reader, desc=f"eval {split}", disable=not env.is_main, leave=False, mininterval=2):
        batch = batch.to(env.device)
        _, (_, logits, labels) = built.dmp(batch)
        buf.add(logits, labels, batch.weights)
    built.dmp.train()
    return buf.compute()


def _make_pipeline(cfg: JobConfig, built: BuiltModel, optimizer, env: DistEnv):
    if cfg.train.pipeline == "sparse_dist":
        return TrainPipelineSparseDist(built.dmp, optimizer, env.device, execute_all_batches=True)
    return TrainPipelineBase(built.dmp, optimizer, env.device)


def train(cfg: JobConfig) -> Dict[str, Any]:
    env = init_distributed(cfg.train.device)
    threads = set_threads(cfg.train.threads, env.local_world_size)
    logging.basicConfig(level=logging.INFO if env.is_main else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    built = build_sharded_model(cfg, env)
    optimizer = build_optimizer(built.dmp, built.model.dense_arch.architecture_parameters(), cfg.optim)
    scheduler = _warmup(optimizer, cfg.optim.warmup_steps)
    reader = make_reader(cfg, built, env, "train")
    has_val = "val" in built.metadata.splits and built.metadata.splits["val"].rows > 0
    out = Path(cfg.train.out_dir)
    if env.is_main:
        write_run_files(cfg, built, out)
    mlog = MetricsLog(out / "metrics.jsonl" if env.is_main else None)
    steps_per_epoch = len(reader)
    total = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps is not None:
        total = min(total, cfg.train.max_steps)
    if env.is_main:
        log.info("world %d on %s, %d threads/rank, %d steps (%d/epoch, %d rows/epoch unused), global batch %d",
                 env.world_size, env.device, threads, total, steps_per_epoch, reader.rows_unused,
                 cfg.data.batch_size)
    mlog.write(event="start", world_size=env.world_size, device=str(env.device), steps=total,
               config=to_dict(cfg))

    step, t_start, rows_done = 0, time.perf_counter(), 0
    bar = tqdm(total=total, desc="train", disable=not env.is_main, mininterval=2)
    val_metrics: Dict[str, float] = {}
    window_loss, window_n, t_window = 0.0, 0, time.perf_counter()
    for epoch in range(cfg.train.epochs):
        if step >= total:
            break
        reader.set_epoch(epoch)
        pipeline = _make_pipeline(cfg, built, optimizer, env)
        it: Iterator = iter(reader)
        while step < total:
            try:
                loss, _, _ = pipeline.progress(it)
            except StopIteration:
                break
            if scheduler is not None:
                scheduler.step()
            step += 1
            rows_done += cfg.data.batch_size
            window_loss += float(loss)
            window_n += 1
            bar.update(1)
            if cfg.train.log_every_steps and step % cfg.train.log_every_steps == 0:
                dt = time.perf_counter() - t_window
                sps = window_n * cfg.data.batch_size / dt
                bar.set_postfix(loss=f"{window_loss / window_n:.4f}", sps=f"{sps:,.0f}")
                mlog.write(event="train", step=step, epoch=epoch, loss=window_loss / window_n, samples_per_s=sps)
                window_loss, window_n, t_window = 0.0, 0, time.perf_counter()
            if has_val and cfg.train.val_every_steps and step % cfg.train.val_every_steps == 0 and step < total:
                _detach(pipeline)
                val_metrics = evaluate_split(built, cfg, env, "val")
                _attach(pipeline, built)
                mlog.write(event="val", step=step, **val_metrics)
                if env.is_main:
                    bar.write(f"step {step}: val auc {val_metrics['auc']:.4f} logloss {val_metrics['logloss']:.4f}")
        _detach(pipeline)
        if has_val and not cfg.train.val_every_steps:
            val_metrics = evaluate_split(built, cfg, env, "val")
            mlog.write(event="val", step=step, epoch=epoch, **val_metrics)
            if env.is_main:
                bar.write(f"epoch {epoch}: val auc {val_metrics['auc']:.4f} logloss {val_metrics['logloss']:.4f}")
    bar.close()
    train_seconds = time.perf_counter() - t_start
    result: Dict[str, Any] = {"steps": step, "train_seconds": train_seconds,
                              "samples_per_s": rows_done / max(train_seconds, 1e-9), "world_size": env.world_size}
    if val_metrics:
        result["val"] = val_metrics
    if "test" in built.metadata.splits and built.metadata.splits["test"].rows > 0:
        result["test"] = evaluate_split(built, cfg, env, "test")
    arch = built.model.dense_arch
    if hasattr(arch, "export_architecture") and env.is_main:
        (out / "architecture.json").write_text(json.dumps(arch.export_architecture(), indent=2))
        result["architecture"] = str(out / "architecture.json")
    if cfg.train.checkpoint:
        save_checkpoint(built, out / "checkpoint", extra={"step": step, "config": to_dict(cfg)})
        result["checkpoint"] = str(out / "checkpoint")
    mlog.write(event="end", **result)
    if env.is_main:
        (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _detach(pipeline) -> None:
    if hasattr(pipeline, "detach"):
        pipeline.detach()


def _attach(pipeline, built: BuiltModel) -> None:
    if hasattr(pipeline, "attach"):
        pipeline.attach(built.dmp)


def _warmup(optimizer, warmup_steps: int):
    """Linear warm-up of every learning rate (the fused table optimizer's too: its lr is a param group)."""
    if warmup_steps <= 0:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup_steps))
