"""Kill and resume the way a user meets it (docs/launch.md, Resume / Fault tolerance): the run folder a resumed run
leaves must read as if the run had never died: each step once in metrics.jsonl, and result.json whole."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from prepared_fixtures import write_dataset
from test_launch import _worker_of_rank

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STEPS = 48  # 1536 rows / global batch 32, one epoch


def _overrides(root, out):
    return [f"data.dir={root}", "data.batch_size=32", "data.eval_batch_size=200", "data.shuffle_buffer_rows=200",
            "model.embedding_dim=8", "model.arch_args={bottom_mlp: [16, 8], top_mlp: [16, 1]}",
            f"train.out_dir={out}", "train.epochs=1", "train.log_every_steps=2", "train.val_every_steps=8",
            "train.checkpoint_every_steps=16", "train.threads=1", "train.device=cpu", "train.tensorboard=false"]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO),
                PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def _records(out):
    path = out / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _steps(records, event):
    return [r["step"] for r in records if r["event"] == event]


def test_rank_killed_between_checkpoints_logs_each_step_once(tmp_path):
    """Catches metrics.jsonl holding the steps a dead run logged after its last checkpoint twice (the resumed run
    logs them again): a user summing or plotting it counted those train windows and validations twice."""
    root, out = tmp_path / "data", tmp_path / "run"
    write_dataset(root, {"train": 1536, "val": 64}, vocab=(50, 60, 70))
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--max-restarts=1", "-m", "recsys_dist.cli",
           "train", "--config", str(REPO / "configs/dlrm_synthetic.yaml"), *_overrides(root, out)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed_after = None
    try:
        deadline = time.time() + 240
        while killed_after is None and time.time() < deadline and proc.poll() is None:
            logged = [s for s in _steps(_records(out), "train") if s > 16]  # past the first checkpoint (step 16)
            pid = _worker_of_rank(proc.pid, 1) if logged else None
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed_after = max(logged)
            time.sleep(0.01)
        log, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed_after is not None, "the run ended before rank 1 could be killed:\n" + log[-3000:]
    assert proc.returncode == 0, log[-3000:]
    records = _records(out)
    resumes = [r for r in records if r["event"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["step"] in (16, 32), resumes
    for event, want in (("train", range(2, STEPS + 1, 2)), ("val", range(8, STEPS + 1, 8)),
                        ("checkpoint", (16, 32))):
        steps = _steps(records, event)
        twice = sorted(s for s, n in Counter(steps).items() if n > 1)
        assert not twice, f"{event} records of steps {twice} twice (killed after step {killed_after}): {steps}"
        assert sorted(steps) == list(want), (event, steps)
    assert resumes[0]["dropped_records"] > 0, resumes  # the dead round had logged past its checkpoint
    assert json.loads((out / "result.json").read_text())["steps"] == STEPS


def test_killed_during_the_final_test_resumes_to_the_same_result(tmp_path):
    """Catches result.json losing `val` when the run is resumed from its final checkpoint (a kill while the test
    split was scored, after `checkpoint/` was written): no validation is left to run, and the last one's metrics
    were not in the checkpoint."""
    root, out = tmp_path / "data", tmp_path / "run"
    write_dataset(root, {"train": 1536, "val": 64, "test": 100}, vocab=(50, 60, 70))
    cmd = [sys.executable, "-m", "recsys_dist.cli", "train", "--config", str(REPO / "configs/dlrm_synthetic.yaml"),
           *_overrides(root, out)]
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    want = json.loads((out / "result.json").read_text())
    killed = tmp_path / "killed"  # the folder as a kill during the test split's scoring leaves it
    shutil.copytree(out, killed)
    (killed / "result.json").unlink()
    again = subprocess.run(cmd[:-len(_overrides(root, out))] + _overrides(root, killed), cwd=REPO, env=_env(),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    got = json.loads((killed / "result.json").read_text())
    assert got["resumed_from_step"] == STEPS
    for key in ("steps", "val", "test", "test_step", "stopped_early"):
        assert got.get(key) == want.get(key), (key, got.get(key), want.get(key))
    assert {k: v for k, v in got["best"].items() if k != "checkpoint"} == \
        {k: v for k, v in want["best"].items() if k != "checkpoint"}


def test_killed_during_an_epoch_end_validation_validates_that_epoch_on_resume(tmp_path):
    """Catches the skipped validation: with per-epoch validation and a periodic checkpoint on the epoch's last step,
    a run killed while it validated that epoch resumed at the next epoch and never validated the one it had
    finished: one val record fewer, and the best checkpoint / early-stopping count could differ from an
    uninterrupted run's."""
    root, out = tmp_path / "data", tmp_path / "run"
    write_dataset(root, {"train": 512, "val": 64, "test": 100}, vocab=(50, 60, 70))
    overrides = [o for o in _overrides(root, out) if not o.startswith(("train.epochs=", "train.val_every_steps="))]
    overrides += ["train.epochs=3", "train.val_every_steps=0", "train.early_stopping.patience=2"]
    cmd = [sys.executable, "-m", "recsys_dist.cli", "train", "--config", str(REPO / "configs/dlrm_synthetic.yaml")]
    done = subprocess.run(cmd + overrides, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    want = json.loads((out / "result.json").read_text())
    assert _steps(_records(out), "val") == [16, 32, 48]
    # what a kill during epoch 0's validation leaves: checkpoints/step_16 (written just before it), nothing after
    killed = tmp_path / "killed"
    killed.mkdir()
    shutil.copytree(out / "checkpoints" / "step_00000016", killed / "checkpoints" / "step_00000016")
    shutil.copy(out / "plan.json", killed / "plan.json")
    kept = [json.dumps(r) for r in _records(out) if r["event"] == "start" or
            (r["event"] in ("train", "checkpoint") and r["step"] <= 16)]
    (killed / "metrics.jsonl").write_text("".join(x + "\n" for x in kept))
    again = subprocess.run(cmd + [o.replace(str(out), str(killed)) for o in overrides], cwd=REPO, env=_env(),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    vals = [(r["step"], r["auc"], r["best"]) for r in _records(killed) if r["event"] == "val"]
    assert vals == [(r["step"], r["auc"], r["best"]) for r in _records(out) if r["event"] == "val"]
    got = json.loads((killed / "result.json").read_text())
    for key in ("steps", "val", "test", "test_step", "stopped_early"):
        assert got.get(key) == want.get(key), (key, got.get(key), want.get(key))


def test_resume_never_in_a_used_folder_keeps_its_own_checkpoints_not_the_old_runs(tmp_path):
    """Catches train.resume=never in a run folder holding an earlier run's checkpoints: pruning kept the newest
    steps of both runs, so the new run's periodic checkpoints were deleted as soon as written (metrics.jsonl listed
    them) while the old run's stayed, and a later restart with resume=auto continued from the other run."""
    root, out = tmp_path / "data", tmp_path / "run"
    write_dataset(root, {"train": 512, "val": 64}, vocab=(50, 60, 70))
    cmd = [sys.executable, "-m", "recsys_dist.cli", "train", "--config", str(REPO / "configs/dlrm_synthetic.yaml"),
           *[o for o in _overrides(root, out) if not o.startswith("train.checkpoint_every_steps=")]]
    first = subprocess.run(cmd + ["train.checkpoint_every_steps=5"], cwd=REPO, env=_env(), capture_output=True,
                           text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000010", "step_00000015"]
    again = subprocess.run(cmd + ["train.checkpoint_every_steps=3", "train.max_steps=7", "train.resume=never"],
                           cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000003", "step_00000006"]
    from recsys_dist.checkpoint import find_latest, read_info

    assert read_info(find_latest(out))["step"] == 7  # this run's final checkpoint, nothing of the first run
