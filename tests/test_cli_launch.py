"""Every command under torchrun from outside, the way docs/launch.md tells a user, and evaluate under torchx
local_cwd: each does what it does in one process (same files, same metrics), or stops before work with exit 2.

One module-scoped chain of small steps (synth -> prepare -> plan -> train -> evaluate) on 2 gloo ranks; each
launch costs a few seconds of imports, so the data is tiny.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_dist.cli import main

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "recsys_dist.cli"]
MODEL = ["model.embedding_dim=8", "model.arch_args={bottom_mlp: [16, 8], top_mlp: [16, 1]}"]


def _env():  # torchx runs `torchrun` from PATH: the one beside this Python
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PATH=path)


def torchrun(*argv, cwd=None, check=True, timeout=300) -> subprocess.CompletedProcess:
    """Runs torchrun in its own process group, all of which is killed if it overruns (no orphaned ranks)."""
    cmd = [*TORCHRUN, *map(str, argv)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=cwd,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    r = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check:
        assert r.returncode == 0, f"torchrun {' '.join(map(str, argv))}: exit {r.returncode}\n{failure_text(r)}"
    return r


def failure_text(r: subprocess.CompletedProcess) -> str:
    """The ranks' own output, without torchrun's agent report (its traceback and ChildFailedError box, which
    filled the whole message before and hid the rank's error)."""
    err = r.stderr or ""
    agent = err.rfind("Traceback (most recent call last):\n  File \"<frozen runpy>\"")
    if agent >= 0 and "torch/distributed/run.py" in err[agent:]:
        err = err[:agent]
    return f"--- stdout (tail) ---\n{(r.stdout or '')[-2500:]}\n--- stderr (ranks, tail) ---\n{err[-3500:]}"


def _last_json(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{\n"):])


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("launch")


def test_synth_and_prepare_under_torchrun_write_what_one_process_writes(w):
    """Defect caught: a one-process command run by every rank of a launch (two ranks writing the same files), or
    its options refused by torchrun's parser."""
    synth = ["--days", "2", "--rows-per-day", "3000", "--seed", "5"]
    torchrun("synth", "--out", w / "raw", *synth)
    assert main(["synth", "--out", str(w / "raw_1"), *synth]) == 0
    for name in ("day_0", "day_1"):
        assert (w / "raw" / name).read_bytes() == (w / "raw_1" / name).read_bytes(), name
    torchrun("prepare", "--input", w / "raw", "--out", w / "data", "prepare.categorical=vocab")
    assert main(["prepare", "--input", str(w / "raw"), "--out", str(w / "data_1"), "prepare.categorical=vocab"]) == 0
    a, b = (json.loads((w / d / "metadata.json").read_text()) for d in ("data", "data_1"))
    assert a["splits"] == b["splits"] and a["sparse_features"] == b["sparse_features"]
    for part in sorted((w / "data_1").rglob("*.parquet")):
        assert (w / "data" / part.relative_to(w / "data_1")).read_bytes() == part.read_bytes(), part


def test_plan_under_torchrun_plans_for_the_launch(w):
    """Defect caught: plan under torchrun refused, written twice, or not for the launch's world size."""
    torchrun("plan", "--device", "cpu", "--out", w / "plan.json", f"data.dir={w / 'data'}", *MODEL)
    assert main(["plan", "--device", "cpu", "--world-size", "2", "--out", str(w / "plan_1.json"),
                 f"data.dir={w / 'data'}", *MODEL]) == 0
    a, b = (json.loads((w / p).read_text()) for p in ("plan.json", "plan_1.json"))
    assert a["context"]["world_size"] == 2 and a["modules"] == b["modules"]


def test_train_and_evaluate_under_torchrun_and_torchx(w):
    """Defect caught: `torchrun ... evaluate --run X` stopped by torchrun ("ambiguous option: --run could match
    --run-path"); an evaluation under a launch that differs from one process's."""
    r = torchrun("train", "--data", w / "data", "--out", w / "run", "--plan", w / "plan.json", *MODEL,
                 "data.batch_size=256", "train.tensorboard=false", "train.log_every_steps=0")
    trained = _last_json(r.stdout)
    assert r.stdout.count('"test"') == 1  # rank 0 prints the result
    two = _last_json(torchrun("evaluate", "--run-dir", w / "run", "--split", "test").stdout)
    assert two["world_size"] == 2
    assert two["auc"] == pytest.approx(trained["test"]["auc"], abs=1e-6)
    assert two["logloss"] == pytest.approx(trained["test"]["logloss"], abs=1e-6)

    torchx = Path(sys.executable).with_name("torchx")
    if not torchx.is_file():
        pytest.skip("torchx is not installed beside this Python")
    r = subprocess.run([str(torchx), "run", "-s", "local_cwd", "dist.ddp", "-j", "1x2", "-m", "recsys_dist.cli", "--",
                        "evaluate", "--run-dir", str(w / "run"), "--split", "test"],
                       capture_output=True, text=True, env=_env(), cwd=w, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rank0 = "\n".join(x.split("cli/0 [0]:", 1)[1] for x in r.stderr.splitlines() if x.startswith("cli/0 [0]:"))
    ev = json.loads(rank0[rank0.index("{"):rank0.rindex("}") + 1])
    assert ev["world_size"] == 2 and ev["auc"] == pytest.approx(trained["test"]["auc"], abs=1e-6)


def test_errors_under_torchrun_stop_every_rank_before_work(w):
    """Defect caught: a data- or model-dependent error found after the ranks built their model (a traceback on
    every rank), e.g. dlrm's bottom_mlp not ending in the embedding dim, or a checkpoint of another model."""
    r = torchrun("train", "--data", w / "data", "--out", w / "run_bad", "model.embedding_dim=16",
                 "model.arch_args={bottom_mlp: [32, 8]}", check=False)
    assert r.returncode != 0
    msg = "bottom_mlp must end with the embedding dim 16, got [32, 8]"
    # Every rank finds it; torchrun SIGTERMs the others as soon as the first exits, so one or both lines show.
    assert r.stderr.count(msg) in (1, 2), r.stderr[-3000:]
    assert "exitcode  : 2" in r.stderr and "recsys_dist/" not in r.stderr  # no traceback through our code
    assert not (w / "run_bad").exists()


def test_checkpoint_of_another_model_is_refused_before_work(w, capsys):
    """Defect caught: evaluate, or a train run resuming in the same folder, with a checkpoint of another model
    found only after the model was built and sharded (a CheckpointError traceback on every rank)."""
    import torch.distributed as dist

    from recsys_dist.early_stopping import default_checkpoint

    other = ["model.embedding_dim=4", "model.arch_args.bottom_mlp=[4]"]
    assert main(["evaluate", "--run-dir", str(w / "run"), *other]) == 2
    err = capsys.readouterr().err
    scored = default_checkpoint(w / "run")  # the run's best checkpoint (it has a val split)
    assert scored.name == "best_checkpoint"
    assert f"checkpoint {scored}: written by a different model; model.arch_args" in err, err
    assert "model.embedding_dim: checkpoint 8, this job 4" in err
    assert main(["train", "--data", str(w / "data"), "--out", str(w / "run"), *MODEL[1:], *other]) == 2
    err = capsys.readouterr().err
    assert "written by a different model" in err and "train.resume=never or another train.out_dir starts over" in err
    assert not dist.is_initialized() and "Traceback" not in err


def test_demo_under_torchrun(w):
    """Defect caught: the demo under a launch run by both ranks, or its own torchrun / evaluate step joining the
    outer launch's process group (a hang once rank 1 has left); output lines naming 2 ranks after `--ranks 1`."""
    small = ["synth.days=2", "synth.rows_per_day=4000", "data.batch_size=256", "train.log_every_steps=0",
             "plan.formats=[json]"]
    cwd = w / "demo"
    cwd.mkdir()
    r = torchrun("demo", "--ranks", "1", *small, cwd=cwd, timeout=400)
    assert r.stdout.count("=== recsys-dist demo ===") == 1, r.stdout[-3000:]
    assert (cwd / "runs" / "demo" / "train" / "result.json").is_file()
    line = next(x for x in r.stdout.splitlines() if x.startswith("test AUC (evaluate, 1 process)"))
    assert 0.55 < float(line.split()[5]) <= 1.0, line
    # --ranks 1: every line says 1 rank (the labels once said "2-rank training" whatever --ranks was)
    result = json.loads((cwd / "runs" / "demo" / "train" / "result.json").read_text())
    assert result["world_size"] == 1
    trained = next(x for x in r.stdout.splitlines() if x.startswith("test AUC (1-rank training)"))
    assert float(trained.split()[4]) == pytest.approx(result["test"]["auc"], abs=1e-4), trained
    assert "[demo 4/5] train on 1 rank (torchrun)" in r.stdout and " on 1 rank; total " in r.stdout
    assert "2-rank" not in r.stdout and "ranks" not in r.stdout.split("[demo 3/5]", 1)[1], r.stdout[-3000:]
