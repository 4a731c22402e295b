"""Model selection on the validation split: the best checkpoint, early stopping, and the test on the best.

After every validation (each epoch, or every train.val_every_steps steps), `ModelSelection.observe` compares the
metric (train.early_stopping.metric: auc or logloss; mode max / min, auto = max for auc) with the best so far; a
value better by more than min_delta is an improvement, and with train.keep_best the model is saved to
<out_dir>/best_checkpoint (model weights only, sharded like any checkpoint). With patience P > 0, training stops
after P validations in a row without an improvement. The final test (train.test) then scores the best checkpoint
(or the live model when the best is the last step), and result.json says which step was tested; a search stage's
architecture.json is exported from the same weights (train.py).

Every rank takes rank 0's decision (broadcast), so ranks never disagree about stopping or saving. The state
(best value and step, validations without improvement, stopped) goes into every checkpoint's recsys_dist.json, so
a resumed run goes on choosing exactly as the uninterrupted one (and one that had stopped stays stopped).

    sel = ModelSelection(cfg.train, out, env.is_main, has_val, state=None)   # or the state of the resumed checkpoint
    sel.observe(metrics, step, epochs=step / steps_per_epoch, save=lambda path: ...)   # after each validation
    if sel.stopped: ...                                                                  # leave the loops
    result.update(sel.prepare_test(step, load=lambda path: ...))                         # before the test
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from recsys_dist.config import ConfigError, TrainConfig

log = logging.getLogger("recsys_dist")

BEST_DIR = ("best_checkpoint",)


def best_checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir).joinpath(*BEST_DIR)


def default_checkpoint(run_dir: str | Path) -> Path:
    """What `evaluate --run` scores: the run's best checkpoint (train.keep_best) if it kept one, else the final."""
    from recsys_dist.checkpoint import MARKER

    best = best_checkpoint(run_dir)
    return best if (best / MARKER).is_file() else Path(run_dir) / "checkpoint"


class ModelSelection:
    def __init__(self, train_cfg: TrainConfig, out: Path, is_main: bool, has_val: bool,
                 state: Optional[Dict[str, Any]] = None) -> None:
        es = train_cfg.early_stopping
        if es.patience and not has_val:
            raise ConfigError(f"train.early_stopping.patience={es.patience} needs a val split; the dataset has none "
                              "(prepare one with val rows, or set patience=0)")
        self.metric = es.metric
        self.maximize = es.mode == "max" or (es.mode == "auto" and es.metric == "auc")
        self.patience, self.min_delta = es.patience, es.min_delta
        self.keep_best = train_cfg.keep_best and has_val
        self.path = out.joinpath(*BEST_DIR)
        self.is_main = is_main
        self.best: Optional[float] = None
        self.best_step: Optional[int] = None
        self.best_epochs: Optional[float] = None
        self.bad = 0  # validations since the last improvement
        self.stopped = False
        self.last_val_step: Optional[int] = None
        self.best_path: Optional[str] = None  # where the best was saved: another run's folder after a resume from it
        self.last_metrics: Optional[Dict[str, float]] = None  # result.json's `val` when no validation follows a resume
        if state is not None:
            self.__dict__.update({k: state[k] for k in self.state() if k in state})
        elif is_main and self.path.exists():  # a fresh run must not test a stale best of an earlier one
            shutil.rmtree(self.path)

    def state(self) -> Dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "best_epochs": self.best_epochs, "bad": self.bad,
                "stopped": self.stopped, "last_val_step": self.last_val_step, "best_path": self.best_path,
                "last_metrics": self.last_metrics}

    def _better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        return value > self.best + self.min_delta if self.maximize else value < self.best - self.min_delta

    def observe(self, metrics: Dict[str, float], step: int, epochs: float,
                save: Optional[Callable[[Path], Any]] = None) -> bool:
        """After a validation: update the best / patience on rank 0, share the decision with every rank, save
        the best checkpoint if improved (collective). Returns whether this validation improved."""
        value = float(metrics[self.metric])
        improved = self._better(value)
        if improved:
            self.best, self.best_step, self.best_epochs, self.bad = value, step, epochs, 0
        else:
            self.bad += 1
        self.last_val_step = step
        self.last_metrics = dict(metrics)
        self.stopped = bool(self.patience) and self.bad >= self.patience
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            shared = [self.state(), improved]
            dist.broadcast_object_list(shared, src=0)
            self.__dict__.update(shared[0])
            improved = shared[1]
        if improved and self.keep_best and save is not None:
            save(self.path)
            self.best_path = str(self.path)
        if self.is_main and self.stopped:
            log.info("early stopping at step %d: val %s did not improve on %.5f (step %d) for %d validation(s)",
                     step, self.metric, self.best if self.best is not None else math.nan,
                     self.best_step if self.best_step is not None else -1, self.bad)
        return improved

    def needs_final_validation(self, step: int) -> bool:
        """Validation every N steps: the last step must be validated too, or it could never be chosen."""
        return not self.stopped and self.last_val_step != step

    def prepare_test(self, step: int, load: Callable[[Path], Any]) -> Dict[str, Any]:
        """Before the final test: load the best checkpoint unless the live model is it; what result.json records."""
        if self.keep_best and self.best_step is not None and self.best_step != step:
            path = Path(self.best_path) if self.best_path else self.path
            if not path.is_dir():
                raise RuntimeError(f"{path}: the best checkpoint (step {self.best_step}) is missing")
            load(path)
            return {"test_checkpoint": str(path), "test_step": self.best_step}
        return {"test_checkpoint": "live model (last step)", "test_step": step}

    def summary(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"stopped_early": self.stopped}
        if self.best_step is not None:
            out["best"] = {"metric": f"val/{self.metric}", "value": self.best, "step": self.best_step,
                           "epochs": self.best_epochs,
                           "checkpoint": (self.best_path or str(self.path)) if self.keep_best else None}
        return out

