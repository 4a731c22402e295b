"""Default intra-op threads (recsys_dist.threads): the cores shared by the node's ranks, no more than were idle."""

from __future__ import annotations

import os
import time

import pytest
import torch

from recsys_dist import omp_wait, threads as thr
from recsys_dist.dist_env import set_threads


@pytest.fixture
def eight_cores(monkeypatch):
    monkeypatch.setattr(thr, "cpu_cores", lambda: 8)


@pytest.mark.parametrize("idle,ranks,expected", [(8.0, 1, 8), (7.9, 2, 4), (3.1, 1, 3), (0.9, 1, 1), (0.0, 1, 1),
                                                 (0.0, 4, 1), (5.0, 2, 2)])
def test_default_threads_never_exceed_the_idle_cores(eight_cores, idle, ranks, expected):
    """Catches the old default (cores / local ranks whatever the load): 2 OpenMP threads beside a busy process
    on 2 cores ran a DLRM job 4.6x slower than 1 thread (docs/benchmarks.md)."""
    n, why = thr.default_threads(ranks, idle=idle, passive_wait=False)
    assert n == expected
    assert ("busy" in why) == (expected < 8 // ranks)


def test_wait_policy_is_chosen_before_torch_loads_and_sleeps_beside_busy_processes(eight_cores):
    """Catches the wait policy set too late or not at all (libgomp reads it when torch loads: waiters that spin
    beside busy processes made 2 threads 19x slower), spinning chosen on a crowded box, and a user's own policy
    being overridden."""
    import subprocess
    import sys

    code = "import recsys_dist, os; print(os.environ.get('OMP_WAIT_POLICY'), recsys_dist.OMP_PASSIVE_WAIT)"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", omp_wait.MARK)}
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(thr.cpu_cores())]
    try:
        time.sleep(0.5)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.split()
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert out == ["PASSIVE", "True"]
    mine = subprocess.run([sys.executable, "-c", "import torch; " + code], env={**env, "OMP_WAIT_POLICY": "active"},
                          capture_output=True, text=True).stdout.split()
    assert mine == ["active", "False"]
    assert thr.default_threads(2, idle=0.0, passive_wait=True)[0] == 4


@pytest.mark.parametrize("cores,ranks,others,spin", [(2, 1, 0, True), (2, 1, 1, False), (2, 2, 1, True),
                                                     (2, 2, 2, False), (8, 1, 0, True), (8, 4, 6, True),
                                                     (8, 4, 7, False), (8, 1, None, False)])
def test_waiters_spin_only_when_our_threads_fit_beside_the_runnable_tasks(cores, ranks, others, spin):
    """Catches a policy that spins on a crowded box (collapse: docs/benchmarks.md section 8) or sleeps on a quiet
    one (about 2x fewer samples/s there), and local ranks not counted."""
    chosen, why = omp_wait.choose(cores, ranks, others)
    assert chosen == ({"GOMP_SPINCOUNT": omp_wait.QUIET_SPINCOUNT} if spin else {"OMP_WAIT_POLICY": "PASSIVE"})
    assert ("spin" in why) == spin


def test_a_child_chooses_again_for_the_box_as_it_is_unless_the_user_set_the_policy(monkeypatch):
    """Catches a parent's choice (made on a quiet box) inherited by its torchrun ranks or test subprocesses when
    the box has become busy, and a script's explicit OMP_WAIT_POLICY for a child being replaced."""
    parent: dict = {}
    monkeypatch.setattr(omp_wait, "other_runnable", lambda: 0)
    omp_wait.apply(parent, 2)
    assert parent.get("GOMP_SPINCOUNT") == omp_wait.QUIET_SPINCOUNT and "OMP_WAIT_POLICY" not in parent
    monkeypatch.setattr(omp_wait, "other_runnable", lambda: 3)
    child = dict(parent)
    omp_wait.apply(child, 2)
    assert child.get("OMP_WAIT_POLICY") == "PASSIVE" and "GOMP_SPINCOUNT" not in child
    scripted = {**parent, "OMP_WAIT_POLICY": "ACTIVE"}
    why = omp_wait.apply(scripted, 2)
    assert scripted["OMP_WAIT_POLICY"] == "ACTIVE" and scripted["GOMP_SPINCOUNT"] == omp_wait.QUIET_SPINCOUNT
    assert "yours" in why


def test_idle_cores_is_a_share_of_this_machine():
    """Catches a unit mistake in the /proc/stat sampling (a fraction, or jiffies instead of cores)."""
    idle = thr.idle_cores(0.1)
    assert 0.0 <= idle <= (os.cpu_count() or 1) + 1e-6


def test_set_threads_uses_the_default_when_unset(monkeypatch):
    """Catches set_threads ignoring the idle-core cap (the train / evaluate start-up path)."""
    before = torch.get_num_threads()
    monkeypatch.setattr(thr, "cpu_cores", lambda: 2)
    monkeypatch.setattr(thr, "idle_cores", lambda sample_s=0.3: 0.8)
    monkeypatch.setattr("recsys_dist.OMP_PASSIVE_WAIT", False)
    try:
        assert set_threads(None, 1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(thr, "idle_cores", lambda sample_s=0.3: 2.0)
        assert set_threads(None, 1) == 2 and torch.get_num_threads() == 2
        assert set_threads(3, 1) == 3  # train.threads wins
    finally:
        torch.set_num_threads(before)
