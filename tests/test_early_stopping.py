"""Model selection: the best checkpoint, early stopping, the test scored on the best, train.test=false; on 2 gloo
ranks like 1 process, and across a resume.

The data make validation peak and then fall: a strong 2-valued field s0 means the same in every split and is
learned within the first epoch; a weak 64-valued field s1 is learned slowly (each id is updated 1/64 as often)
and its meaning is flipped in val / test, so once it is learned val AUC goes down (the issue's curves).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dist_harness import run_on_ranks
from recsys_dist.config import EarlyStoppingConfig, TrainConfig, load_config
from recsys_dist.data.metadata import Metadata, SparseFeature, SplitInfo
from recsys_dist.early_stopping import ModelSelection
from test_own_data import _single_process_copy

ROWS = {"train": 2048, "val": 512, "test": 512}
PATIENCE = 2


def _write(root: Path) -> None:
    rng = np.random.default_rng(0)
    weak = rng.normal(0, 1.5, 64)
    splits = {}
    for split, n in ROWS.items():
        s0, s1 = rng.integers(0, 2, n), rng.integers(0, 64, n)
        sign = 1.0 if split == "train" else -1.0
        logit = 1.2 * (2 * s0 - 1) + sign * weak[s1]
        label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
        (root / split).mkdir(parents=True)
        pq.write_table(pa.table({"label": label, "d0": rng.random(n).astype(np.float32), "s0": s0, "s1": s1}),
                       root / split / "part-00000.parquet")
        splits[split] = SplitInfo([f"{split}/part-00000.parquet"], n, [n], int(label.sum()))
    Metadata(["d0"], [SparseFeature("s0", 2), SparseFeature("s1", 64)], splits, dense_transform="none").save(root)


def _cfg(root, out, *extra):
    return load_config(None, [
        f"data.dir={root}", "data.batch_size=128", "data.eval_batch_size=256", "data.shuffle=false",
        "model.embedding_dim=4", "model.arch_args={bottom_mlp: [8, 4], top_mlp: [8, 1]}", f"train.out_dir={out}",
        "train.epochs=12", "train.log_every_steps=100", "train.threads=1", "train.tensorboard=false",
        "optim.sparse_lr=0.3", "optim.dense_lr=0.01", "sharding.sharding_types=[data_parallel]",
        f"train.early_stopping.patience={PATIENCE}", *extra])


def _train(rank, world, root, out, extra=()):
    from recsys_dist.train import train

    return train(_cfg(root, out, *extra))


def _evaluate(rank, world, root, out, checkpoint):
    from recsys_dist.evaluate import evaluate

    return evaluate(_cfg(root, out), checkpoint, "test")


def _vals(out: Path):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"event": "val"' in x]


def _best(result):
    return {k: result["best"][k] for k in ("step", "value", "epochs")}


def test_selection_rules():
    """Catches: a wrong comparison (mode / min_delta), patience off by one, NaN taken as best, state not restored."""
    def sel(**es):
        cfg = TrainConfig(early_stopping=EarlyStoppingConfig(**es))
        return ModelSelection(cfg, Path("/nonexistent"), False, True, state={})

    s = sel(patience=2, min_delta=0.01)
    for step, auc in enumerate([0.70, 0.75, 0.755, 0.74], start=1):
        s.observe({"auc": auc, "logloss": 0.5}, step * 10, float(step))
    assert (s.best, s.best_step, s.bad, s.stopped) == (0.75, 20, 2, True)  # 0.755 is not > 0.75 + 0.01
    s = sel(metric="logloss", patience=0)
    for step, ll in enumerate([0.6, 0.5, 0.55, 0.56, 0.57], start=1):
        s.observe({"auc": 0.5, "logloss": ll}, step, float(step))
    assert (s.best, s.best_step, s.stopped) == (0.5, 2, False)  # min for logloss; patience 0 never stops
    s = sel(patience=1)
    s.observe({"auc": math.nan, "logloss": 1.0}, 1, 1.0)
    assert s.best is None and s.stopped
    resumed = ModelSelection(TrainConfig(), Path("/nonexistent"), False, True,
                             state={"best": 0.8, "best_step": 7, "bad": 1, "stopped": False})
    assert (resumed.best, resumed.best_step, resumed.bad) == (0.8, 7, 1)


def test_best_checkpoint_and_early_stop_on_two_ranks_like_one_process(tmp_path):
    """Catches: testing the last instead of the best model, no early stop, ranks disagreeing (deadlock / different
    best), result.json not saying which step was tested, `evaluate --run` not scoring the best."""
    _write(tmp_path / "data")
    _single_process_copy(tmp_path / "data", tmp_path / "data1", 2, 64)
    r2, _ = run_on_ranks(_train, 2, (tmp_path / "data", tmp_path / "run2"))
    [r1] = run_on_ranks(_train, 1, (tmp_path / "data1", tmp_path / "run1"))
    vals = _vals(tmp_path / "run2")
    aucs = [v["auc"] for v in vals]
    best = int(np.argmax(aucs))
    assert 0 < best < len(aucs) - 1, aucs  # the data peak then fall
    assert r2["stopped_early"] and len(aucs) == best + 1 + PATIENCE < 12  # stopped PATIENCE epochs after the peak
    assert r2["best"]["step"] == vals[best]["step"] == r2["test_step"] < r2["steps"]
    assert r2["best"]["value"] == pytest.approx(aucs[best]) and r2["best"]["epochs"] == best + 1
    assert r2["test_checkpoint"] == str(tmp_path / "run2" / "best_checkpoint")
    assert [v["best"] for v in vals] == [a == max(aucs[:i + 1]) and aucs.index(a) == i for i, a in enumerate(aucs)]
    # 1 process on the same global batches: the same curve, the same choice, the same test metrics
    assert [v["auc"] for v in _vals(tmp_path / "run1")] == pytest.approx(aucs, abs=1e-4)
    assert r1["best"]["step"] == r2["best"]["step"] and r1["steps"] == r2["steps"]
    assert r1["test"]["auc"] == pytest.approx(r2["test"]["auc"], abs=1e-4)
    # the test was scored on the best checkpoint, not the final one (which is worse: s1 is flipped in test)
    from recsys_dist.early_stopping import default_checkpoint

    assert default_checkpoint(tmp_path / "run2") == tmp_path / "run2" / "best_checkpoint"
    [on_best] = run_on_ranks(_evaluate, 1, (tmp_path / "data", tmp_path / "run2", tmp_path / "run2" /
                                            "best_checkpoint"))
    [on_last] = run_on_ranks(_evaluate, 1, (tmp_path / "data", tmp_path / "run2", tmp_path / "run2" / "checkpoint"))
    assert on_best["auc"] == pytest.approx(r2["test"]["auc"], abs=1e-6) and on_best["step"] == r2["best"]["step"]
    assert on_last["step"] == r2["steps"] and on_last["auc"] < on_best["auc"] - 0.005


def test_resume_keeps_choosing_like_an_uninterrupted_run_and_test_false(tmp_path):
    """Catches: selection state lost on resume (the resumed run would take its first validation as the best, or
    forget the validations without improvement), a stale best of an earlier run tested, train.test=false ignored,
    a run resumed into another folder looking for the best checkpoint in its own folder ('... is missing')."""
    _write(tmp_path / "data")
    [full] = run_on_ranks(_train, 1, (tmp_path / "data", tmp_path / "full", ("train.test=false",)))
    assert "test" not in full and "test" not in json.loads((tmp_path / "full" / "result.json").read_text())
    stop = full["best"]["step"] + 16  # one epoch after the best: one validation without improvement so far
    [part] = run_on_ranks(_train, 1, (tmp_path / "data", tmp_path / "cut", ("train.test=false",
                                                                           f"train.max_steps={stop}")))
    assert _best(part) == _best(full) and not part["stopped_early"]
    # Resumed into another run folder: the best is still the first folder's, and the test is scored on it.
    resume = f"train.resume={tmp_path / 'cut' / 'checkpoint'}"
    [moved] = run_on_ranks(_train, 1, (tmp_path / "data", tmp_path / "moved", (resume,)))
    assert (moved["steps"], _best(moved), moved["stopped_early"]) == (full["steps"], _best(full), True)
    assert moved["test_checkpoint"] == str(tmp_path / "cut" / "best_checkpoint")
    assert moved["test_step"] == full["best"]["step"]
    [rest] = run_on_ranks(_train, 1, (tmp_path / "data", tmp_path / "cut", ("train.test=false",)))
    assert rest["resumed_from_step"] == stop
    assert (rest["steps"], _best(rest), rest["stopped_early"]) == (full["steps"], _best(full), True)
    assert [v["auc"] for v in _vals(tmp_path / "cut")] == pytest.approx([v["auc"] for v in _vals(tmp_path / "full")])
    [again] = run_on_ranks(_train, 1, (tmp_path / "data", tmp_path / "cut", ("train.test=false",)))
    assert again["steps"] == full["steps"] and again["resumed_from_step"] == full["steps"]  # a stopped run stays so


def test_patience_without_val_is_a_config_error_and_evaluate_falls_back_to_the_final(tmp_path):
    """Catches: early stopping silently off on a dataset without val rows; `evaluate --run-dir` of a run without a
    (complete) best checkpoint scoring nothing or a partial folder instead of the final checkpoint."""
    from recsys_dist.checkpoint import MARKER
    from recsys_dist.config import ConfigError
    from recsys_dist.early_stopping import default_checkpoint

    with pytest.raises(ConfigError, match=r"train.early_stopping.patience=2 needs a val split"):
        ModelSelection(TrainConfig(early_stopping=EarlyStoppingConfig(patience=2)), tmp_path, True, False)
    (tmp_path / "best_checkpoint").mkdir()  # incomplete: no marker
    assert default_checkpoint(tmp_path) == tmp_path / "checkpoint"
    (tmp_path / "best_checkpoint" / MARKER).write_text("{}")
    assert default_checkpoint(tmp_path) == tmp_path / "best_checkpoint"


def test_validation_every_n_steps_also_validates_the_last_step(tmp_path):
    """Catches: with train.val_every_steps the final weights never validated, so they could never be chosen."""
    _write(tmp_path / "data")
    [r] = run_on_ranks(_train, 1, (tmp_path / "data", tmp_path / "run", ("train.epochs=1", "train.val_every_steps=5",
                                                                        "train.early_stopping.patience=0")))
    assert [v["step"] for v in _vals(tmp_path / "run")] == [5, 10, 15, 16] and r["steps"] == 16
    assert r["best"]["step"] in (5, 10, 15, 16) and not r["stopped_early"]
