"""The train job: sharded model, TorchRec train pipeline, periodic validation and checkpoints, exact resume,
final test metrics.

Runs as one process or as each rank of a torchrun / torchx job; `train(cfg)` returns the final metrics on every
rank. Rank 0 writes the run folder (train.out_dir): config.yaml, plan.json, metrics.jsonl, result.json,
tensorboard/, checkpoints/step_N (every train.checkpoint_every_steps, the newest train.keep_checkpoints kept),
checkpoint/ (the final one), and architecture.json for arches with a search stage (from the best checkpoint's
weights when one is kept: recsys_dist/early_stopping.py).

With train.resume=auto (the default) a job started again on the same run folder, e.g. by torchrun --max-restarts
or a torchx retry after a rank died, continues from the newest complete checkpoint: model, optimizer and LR
schedule, RNG states and the input position (epoch, step within it) are restored, so the final weights equal
those of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import torch
from torchrec.distributed.train_pipeline import TrainPipelineBase, TrainPipelineSparseDist
from tqdm import tqdm

from recsys_dist.config import JobConfig, to_dict
from recsys_dist.dist_env import DistEnv, setup_process
from recsys_dist.early_stopping import ModelSelection
from recsys_dist.json_file import write_json
from recsys_dist.job import (BuiltModel, build_sharded_model, fingerprint, load_checkpoint, make_reader,
                             save_checkpoint, write_run_files)
from recsys_dist.lr_schedule import build_lr_schedule
from recsys_dist.metrics import PredictionBuffer
from recsys_dist.metrics_log import drop_records_after
from recsys_dist.model_size import model_size
from recsys_dist.optim import build_optimizer
from recsys_dist.table_precision import check_table_precision

log = logging.getLogger("recsys_dist")


class MetricsLog:
    """metrics.jsonl in the run folder (rank 0), one JSON object a line; appended to when a run resumes."""

    def __init__(self, path: Optional[Path], append: bool = False) -> None:
        self.path = path
        if path is not None and not append:
            path.write_text("")

    def write(self, **record: Any) -> None:
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


class Scalars:
    """TensorBoard scalars (rank 0, train.tensorboard); on resume, events after the resumed step are dropped."""

    def __init__(self, folder: Optional[Path], purge_step: Optional[int]) -> None:
        self.writer = None
        if folder is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder), purge_step=purge_step)

    def add(self, step: int, **values: float) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class _TimedIterator:
    """Wraps the reader's iterator and adds up the time spent waiting for batches (the input stage)."""

    def __init__(self, it: Iterator) -> None:
        self.it = it
        self.seconds = 0.0

    def __iter__(self) -> "_TimedIterator":
        return self

    def __next__(self):
        t = time.perf_counter()
        try:
            return next(self.it)
        finally:
            self.seconds += time.perf_counter() - t

    def close(self) -> None:
        """Stop the reader's prefetch thread now (an epoch cut short by max_steps or early stopping), not when
        the generator is collected: a thread still reading at interpreter exit aborted the process."""
        close = getattr(self.it, "close", None)
        if close is not None:
            close()


@torch.no_grad()
def score_split(built: BuiltModel, cfg: JobConfig, env: DistEnv, split: str) -> PredictionBuffer:
    """This rank's (logits, labels) of every row of its part of `split`, padding rows dropped (weight 0)."""
    reader = make_reader(cfg, built, env, split)
    built.dmp.eval()
    buf = PredictionBuffer()
    for batch in tqdm(reader, desc=f"eval {split}", disable=not env.is_main, leave=False, mininterval=2):
        batch = batch.to(env.device)
        _, (_, logits, labels) = built.dmp(batch)
        buf.add(logits, labels, batch.weights)
    built.dmp.train()
    return buf


def evaluate_split(built: BuiltModel, cfg: JobConfig, env: DistEnv, split: str) -> Dict[str, float]:
    """AUC / logloss on a split: every row scored exactly once (eval padding has weight 0), gathered on all ranks."""
    return score_split(built, cfg, env, split).compute()


def _make_pipeline(cfg: JobConfig, built: BuiltModel, optimizer, env: DistEnv):
    if cfg.train.pipeline == "sparse_dist":
        return TrainPipelineSparseDist(built.dmp, optimizer, env.device, execute_all_batches=True)
    return TrainPipelineBase(built.dmp, optimizer, env.device)


def _resume_from(cfg: JobConfig, out: Path) -> Optional[Path]:
    from recsys_dist.checkpoint import find_latest

    if cfg.train.resume == "never":
        return None
    if cfg.train.resume == "auto":
        return find_latest(out)
    return Path(cfg.train.resume)


def _init_lazy_optimizer_state(optimizer) -> None:
    """Lazily-created state (e.g. Adam's) must exist before a checkpoint can be loaded into it in place."""
    for _, opt in getattr(optimizer, "_optims", []):
        if len(opt.state) < len(opt.params):
            opt.init_state()


def train(cfg: JobConfig) -> Dict[str, Any]:
    env, threads = setup_process(cfg.train)
    check_table_precision(cfg, env.device.type)
    logging.basicConfig(level=logging.INFO if env.is_main else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    built = build_sharded_model(cfg, env)
    if cfg.train.compile:
        from recsys_dist.compile import compile_dense_arch

        compile_dense_arch(built.model, cfg.train.compile_cache, env.device)
    optimizer = build_optimizer(built.dmp, built.model.dense_arch.architecture_parameters(), cfg.optim)
    reader = make_reader(cfg, built, env, "train")
    has_val = "val" in built.metadata.splits and built.metadata.splits["val"].rows > 0
    out = Path(cfg.train.out_dir)
    steps_per_epoch = len(reader)
    total = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps is not None:
        total = min(total, cfg.train.max_steps)
    scheduler = build_lr_schedule(optimizer, cfg.optim, total)

    step, epoch0, in_epoch0 = 0, 0, 0
    resume = _resume_from(cfg, out)
    if resume is None and env.is_main:
        from recsys_dist.checkpoint import clear_earlier_run

        clear_earlier_run(out)
    if resume is not None:
        _init_lazy_optimizer_state(optimizer)
        info = load_checkpoint(built, resume, optimizer, scheduler, cfg=cfg)
        step = int(info["step"])
        epoch0, in_epoch0 = int(info["epoch"]), int(info["step_in_epoch"])
        if info.get("steps_per_epoch") != steps_per_epoch:
            from recsys_dist.checkpoint import CheckpointError

            raise CheckpointError(f"{resume}: written with {info.get('steps_per_epoch')} steps per epoch, this job "
                                  f"has {steps_per_epoch} (data.dir, data.batch_size or the world size changed); "
                                  f"its input position cannot be resumed exactly (train.resume=never starts over)")
    sel = ModelSelection(cfg.train, out, env.is_main, has_val, info.get("selection") if resume is not None else None)
    if env.is_main:
        write_run_files(cfg, built, out)
    mlog = MetricsLog(out / "metrics.jsonl" if env.is_main else None, append=resume is not None)
    redone = drop_records_after(mlog.path, step) if resume is not None and mlog.path else 0  # a dead run's steps
    tb = Scalars(out / "tensorboard" if env.is_main and cfg.train.tensorboard else None,
                 purge_step=step if resume is not None else None)
    if env.is_main:
        log.info("world %d on %s, %d threads/rank, %d steps (%d/epoch, %d rows/epoch unused), global batch %d",
                 env.world_size, env.device, threads, total, steps_per_epoch, reader.rows_unused,
                 cfg.data.batch_size)
        if resume is not None:
            log.info("resuming from %s: step %d (epoch %d, step %d in it)", resume, step, epoch0, in_epoch0)
    if resume is not None:
        mlog.write(event="resume", step=step, epoch=epoch0, step_in_epoch=in_epoch0, checkpoint=str(resume),
                   world_size=env.world_size, optimizer_state=info["optimizer_state"], dropped_records=redone)
    else:
        mlog.write(event="start", world_size=env.world_size, device=str(env.device), steps=total, threads=threads,
                   config=to_dict(cfg))

    def position(epoch: int, in_epoch: int) -> Dict[str, Any]:
        if in_epoch >= steps_per_epoch:  # the epoch is done: the next one starts at its beginning
            epoch, in_epoch = epoch + 1, 0
        return {"step": step, "epoch": epoch, "step_in_epoch": in_epoch, "steps_per_epoch": steps_per_epoch,
                "fingerprint": fingerprint(cfg, built), "config": to_dict(cfg), "selection": sel.state()}

    def checkpoint(path: Path, epoch: int, in_epoch: int) -> float:
        t = time.perf_counter()
        save_checkpoint(built, path, position(epoch, in_epoch), optimizer, scheduler)
        return time.perf_counter() - t

    def validate(when: str, epoch: int, in_epoch: int) -> Dict[str, float]:
        """Validation metrics, written to metrics.jsonl, TensorBoard and the progress bar; then model selection
        (the best checkpoint, early stopping: recsys_dist/early_stopping.py)."""
        t = time.perf_counter()
        metrics = evaluate_split(built, cfg, env, "val")
        seconds = time.perf_counter() - t
        improved = sel.observe(metrics, step, step / steps_per_epoch, lambda p: checkpoint(p, epoch, in_epoch))
        mlog.write(event="val", step=step, epoch=epoch, epochs=step / steps_per_epoch, eval_s=seconds, best=improved,
                   **metrics)
        tb.add(step, **{"val/auc": metrics["auc"], "val/logloss": metrics["logloss"], "time/eval_s": seconds})
        if env.is_main:
            bar.write(f"{when}: val auc {metrics['auc']:.4f} logloss {metrics['logloss']:.4f}"
                      + (" (best)" if improved else ""))
        return metrics

    start_step, t_start = step, time.perf_counter()
    bar = tqdm(total=total, initial=step, desc="train", disable=not env.is_main, mininterval=2)
    val_metrics: Dict[str, float] = dict(sel.last_metrics or {})  # a resume with no validation left keeps the last
    window_loss, window_n, t_window, data_s_window = 0.0, 0, time.perf_counter(), 0.0
    if resume is not None and has_val and not cfg.train.val_every_steps and step and in_epoch0 == 0 \
            and sel.last_val_step != step and not sel.stopped:  # killed while validating the epoch it had finished
        val_metrics = validate(f"epoch {epoch0 - 1}", epoch0 - 1, steps_per_epoch)
    for epoch in range(epoch0, cfg.train.epochs):
        if step >= total or sel.stopped:
            break
        in_epoch = in_epoch0 if epoch == epoch0 else 0
        reader.set_epoch(epoch, in_epoch)
        pipeline = _make_pipeline(cfg, built, optimizer, env)
        it = _TimedIterator(iter(reader))
        while step < total:
            try:
                loss, _, _ = pipeline.progress(it)
            except StopIteration:
                break
            if scheduler is not None:
                scheduler.step()
            step += 1
            in_epoch += 1
            window_loss += float(loss)
            window_n += 1
            bar.update(1)
            if cfg.train.log_every_steps and step % cfg.train.log_every_steps == 0:
                dt = time.perf_counter() - t_window
                sps = window_n * cfg.data.batch_size / dt
                data_s = (it.seconds - data_s_window) / window_n
                stages = {"data_s_per_step": data_s, "compute_s_per_step": dt / window_n - data_s}
                bar.set_postfix(loss=f"{window_loss / window_n:.4f}", sps=f"{sps:,.0f}")
                mlog.write(event="train", step=step, epoch=epoch, loss=window_loss / window_n, samples_per_s=sps,
                           **stages)
                tb.add(step, **{"train/loss": window_loss / window_n, "train/samples_per_s": sps},
                       **{f"time/{k}": v for k, v in stages.items()})
                window_loss, window_n, t_window, data_s_window = 0.0, 0, time.perf_counter(), it.seconds
            if has_val and cfg.train.val_every_steps and step % cfg.train.val_every_steps == 0 and step < total:
                _detach(pipeline)
                val_metrics = validate(f"step {step}", epoch, in_epoch)
                _attach(pipeline, built)
                if sel.stopped:
                    break
            every = cfg.train.checkpoint_every_steps
            if every and step % every == 0 and step < total:
                path = out / "checkpoints" / f"step_{step:08d}"
                seconds = checkpoint(path, epoch, in_epoch)
                if env.is_main:
                    from recsys_dist.checkpoint import prune

                    prune(out / "checkpoints", cfg.train.keep_checkpoints)
                mlog.write(event="checkpoint", step=step, path=str(path), seconds=seconds)
                tb.add(step, **{"time/checkpoint_s": seconds})
                t_window += seconds  # keep checkpoint time out of samples/s
        it.close()
        _detach(pipeline)
        if has_val and not cfg.train.val_every_steps:
            val_metrics = validate(f"epoch {epoch}", epoch, in_epoch)
    if has_val and cfg.train.val_every_steps and sel.needs_final_validation(step):
        epoch_end, in_epoch_end = divmod(step, steps_per_epoch)
        val_metrics = validate(f"step {step}", epoch_end, in_epoch_end)
    bar.close()
    train_seconds = time.perf_counter() - t_start
    rows_done = (step - start_step) * cfg.data.batch_size
    result: Dict[str, Any] = {"steps": step, "resumed_from_step": start_step if resume is not None else None,
                              "train_seconds": train_seconds, "samples_per_s": rows_done / max(train_seconds, 1e-9),
                              "world_size": env.world_size}
    if cfg.train.compile:
        from recsys_dist.compile import compile_seconds

        result["compile_seconds"] = compile_seconds()  # within train_seconds (the first step compiles)
    if val_metrics:
        result["val"] = val_metrics
    result.update(sel.summary())
    result["model_size"] = model_size(built, cfg.model.embedding_dtype)
    if cfg.train.checkpoint:
        epoch_end, in_epoch_end = divmod(step, steps_per_epoch)
        checkpoint(out / "checkpoint", epoch_end, in_epoch_end)
        result["checkpoint"] = str(out / "checkpoint")
    arch = built.model.dense_arch
    exports = hasattr(arch, "export_architecture")
    testing = cfg.train.test and "test" in built.metadata.splits and built.metadata.splits["test"].rows > 0
    if exports or testing:  # from here on the best checkpoint's weights (after the final checkpoint is written)
        chosen = sel.prepare_test(step, lambda p: load_checkpoint(built, p, cfg=cfg, restore_rng=False))
    if exports and env.is_main:  # a search stage's choice: the best validation's alphas, not the last step's
        write_json(out / "architecture.json", arch.export_architecture())
        result.update(architecture=str(out / "architecture.json"), architecture_step=chosen["test_step"])
    if testing:
        result.update(chosen)
        result["test"] = evaluate_split(built, cfg, env, "test")
        tb.add(step, **{"test/auc": result["test"]["auc"], "test/logloss": result["test"]["logloss"]})
    mlog.write(event="end", **result)
    tb.close()
    if env.is_main:
        write_json(out / "result.json", result)  # atomic: compare's resume takes a result.json as a finished run
    return result


def _detach(pipeline) -> None:
    if hasattr(pipeline, "detach"):
        pipeline.detach()


def _attach(pipeline, built: BuiltModel) -> None:
    if hasattr(pipeline, "attach"):
        pipeline.attach(built.dmp)

