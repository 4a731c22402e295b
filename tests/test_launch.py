"""Launching for real: torchrun, `torchx run -s local_cwd launch/components.py:train` as 1x2 and 2x1 (two
"nodes", real c10d rendezvous), and fault tolerance (torchrun --max-restarts and torchx --max_retries, one rank
SIGKILLed mid-run): every run ends with the same final weights, bitwise."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from checkpoint_state import assert_same_weights, full_state
from dist_harness import free_port
from prepared_fixtures import write_dataset

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STEPS = 96  # 3072 rows / global batch 32: enough steps that a rank can be killed between checkpoints


def _overrides(root, out, *extra):
    return [f"data.dir={root}", "data.batch_size=32", "data.eval_batch_size=200", "data.shuffle=true",
            "data.shuffle_buffer_rows=200", "model.embedding_dim=8",
            "model.arch_args={bottom_mlp: [16, 8], top_mlp: [16, 1]}", f"train.out_dir={out}", "train.epochs=1",
            "train.log_every_steps=16", "train.threads=1", "train.checkpoint_every_steps=16",
            "train.device=cpu", *extra]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(REPO))
    return env


def _torchrun(root, out, *extra, max_restarts=0):
    return [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", f"--max-restarts={max_restarts}",
            "-m", "recsys_dist.cli", "train", "--config", str(REPO / "configs/dlrm_synthetic.yaml"),
            *_overrides(root, out, *extra)]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """An uninterrupted 2-rank torchrun run; its plan is the plan of every other run here."""
    tmp = tmp_path_factory.mktemp("launch")
    root = tmp / "data"
    write_dataset(root, {"train": 3072, "val": 64, "test": 100}, vocab=(50, 60, 70))
    out = tmp / "torchrun"
    subprocess.run(_torchrun(root, out), cwd=REPO, env=_env(), check=True, capture_output=True, timeout=300)
    return tmp, root, out


def _torchx(j, root, out, plan, port, max_retries=0):
    cmd = [str(BIN / "torchx"), "run", "-s", "local_cwd", "launch/components.py:train", "-j", j,
           "--rdzv_port", str(port), "--max_retries", str(max_retries), "--config", str(REPO / "configs/dlrm_synthetic.yaml"),
           "--", *_overrides(root, out, f"sharding.plan={plan}")]
    return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_torchx_1x2_and_2x1_train_like_torchrun(baseline, tmp_path):
    tmp, root, ref = baseline
    plan = ref / "plan.json"
    want = full_state(ref / "checkpoint", tmp_path)
    for j in ("1x2", "2x1"):
        out = tmp / f"torchx_{j}"
        proc = _torchx(j, root, out, plan, free_port())
        log, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, log[-3000:]
        result = json.loads((out / "result.json").read_text())
        assert result["world_size"] == 2 and result["steps"] == STEPS
        assert_same_weights(want, full_state(out / "checkpoint", tmp_path / j))
    assert "--nnodes 2 --nproc_per_node 1" in _dryrun("2x1")


def _dryrun(j):
    cmd = [str(BIN / "torchx"), "run", "-s", "local_cwd", "--dryrun", "launch/components.py:train", "-j", j]
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, check=True).stdout


def _descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(c) for t in Path(f"/proc/{p}/task").iterdir() for c in (t / "children").read_text().split()]
        except OSError:
            continue
        out += kids
        todo += kids
    return out


def _worker_of_rank(root_pid, rank):
    """The pid of the trainer process of global rank `rank` among the descendants of root_pid (torchrun's or
    torchx's process), or None."""
    for pid in _descendants(root_pid):
        try:
            env = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and any(kv.startswith(b"TORCHELASTIC_RUN_ID=") for kv in env):
            return pid
    return None


def _kill_rank_1_after_first_checkpoint(proc, out):
    """SIGKILLs rank 1 once the first periodic checkpoint is complete (so the resume step is known to exist);
    returns the job's output and the killed pid (None if the run ended first)."""
    killed = None
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if list((out / "checkpoints").glob("step_*/recsys_dist.json")):
                pid = _worker_of_rank(proc.pid, 1)
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)  # rank 1 dies between checkpoints
                    killed = pid
                    break
            time.sleep(0.02)
        log, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return log, killed


def _assert_resumed_once_to_the_same_weights(out, ref, tmp_path):
    events = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    resumes = [e for e in events if e["event"] == "resume"]
    assert len(resumes) == 1 and 0 < resumes[0]["step"] < STEPS  # restarted once, from a periodic checkpoint
    assert resumes[0]["step"] % 16 == 0
    # logged windows after the resume start past its step: nothing counted twice
    train_steps = [e["step"] for e in events if e["event"] == "train"]
    after = train_steps[train_steps.index(resumes[0]["step"]) + 1:] if resumes[0]["step"] in train_steps else []
    assert all(s > resumes[0]["step"] for s in after)
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == STEPS and result["resumed_from_step"] == resumes[0]["step"]
    assert_same_weights(full_state(ref / "checkpoint", tmp_path), full_state(out / "checkpoint", tmp_path / "k"))


def test_sigkill_of_one_rank_restarts_and_resumes_to_the_same_weights(baseline, tmp_path):
    tmp, root, ref = baseline
    out = tmp / "killed"
    proc = subprocess.Popen(_torchrun(root, out, f"sharding.plan={ref / 'plan.json'}", max_restarts=1),
                            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log, killed = _kill_rank_1_after_first_checkpoint(proc, out)
    assert killed is not None, "the run ended before a rank could be killed"
    assert proc.returncode == 0, log[-3000:]
    _assert_resumed_once_to_the_same_weights(out, ref, tmp_path)


@pytest.mark.parametrize("j", ["1x2", "2x1"])
def test_torchx_max_retries_restarts_a_killed_rank_and_resumes(baseline, tmp_path, j):
    """Catches `--max_retries` doing nothing on local_cwd (torchx's dist.ddp runs torchrun without
    --max-restarts, and local_cwd ignores the role's retries: the job ended FAILED); 2x1 restarts through two
    torchrun agents (the multi-node path)."""
    tmp, root, ref = baseline
    out = tmp / f"torchx_killed_{j}"
    proc = _torchx(j, root, out, ref / "plan.json", free_port(), max_retries=1)
    log, killed = _kill_rank_1_after_first_checkpoint(proc, out)
    assert killed is not None, "the run ended before a rank could be killed"
    assert proc.returncode == 0, log[-3000:]
    assert "SUCCEEDED" in log, log[-3000:]
    _assert_resumed_once_to_the_same_weights(out, ref, tmp_path)


def test_restart_rounds_use_their_own_store_keys(monkeypatch):
    """torchrun's agent keeps one TCPStore for every --max-restarts round: what a dead round wrote (gloo's
    listening address of a killed rank) must not be read by the next round; several agents are left to torch."""
    from datetime import timedelta

    import torch.distributed as dist

    from recsys_dist.dist_env import round_store

    agent = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    env = {"TORCHELASTIC_USE_AGENT_STORE": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(agent.port),
           "WORLD_SIZE": "2", "RANK": "1", "GROUP_WORLD_SIZE": "1", "TORCHELASTIC_MAX_RESTARTS": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    dead = round_store(timedelta(seconds=5))
    dead.set("default_pg/0//cpu/rank_1", "127.0.0.1:30090")
    assert dead.check(["default_pg/0//cpu/rank_1"])
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert not round_store(timedelta(seconds=5)).check(["default_pg/0//cpu/rank_1"])
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert round_store(timedelta(seconds=5)).get("default_pg/0//cpu/rank_1") == b"127.0.0.1:30090"
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")  # restart counts differ between agents: not a round id
    assert round_store(timedelta(seconds=5)) is None
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")  # a fresh store per round already
    monkeypatch.setenv("GROUP_WORLD_SIZE", "1")
    assert round_store(timedelta(seconds=5)) is None


def test_component_builds_the_appdef():
    sys.path.insert(0, str(REPO))
    from launch.components import train

    app = train("train.max_steps=5", config="configs/x.yaml", check="none", j="4x8", gpu=8, image="img:cuda", max_retries=2,
                mounts=["type=bind", "src=/data", "dst=/data"], env={"NCCL_DEBUG": "INFO"})
    [role] = app.roles
    assert (role.num_replicas, role.max_retries, role.image, role.resource.gpu) == (4, 2, "img:cuda", 8)
    cmd = role.args[-1]
    assert cmd.startswith("torchrun --max-restarts 2 ")  # restarts inside the job, on every scheduler
    assert role.env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"  # 4 agents: a fresh store per restart round
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE" not in train(j="1x2").roles[0].env
    assert "--nnodes 4 --nproc_per_node 8" in cmd and "--rdzv_backend c10d" in cmd
    assert cmd.endswith("-m recsys_dist.cli train --config configs/x.yaml train.max_steps=5")
    assert role.env["NCCL_DEBUG"] == "INFO" and role.mounts[0].dst_path == "/data"
    with pytest.raises(ValueError, match="one GPU per rank"):
        train(j="1x8", gpu=4)
    with pytest.raises(ValueError, match="section.key=value"):
        train("train.max_steps")
