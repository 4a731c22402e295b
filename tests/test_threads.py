"""Default intra-op threads (recsys_dist.threads): the cores shared by the node's ranks, no more than were idle."""

from __future__ import annotations

import os

import pytest
import torch

from recsys_dist import threads as thr
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


def test_passive_wait_is_set_before_torch_loads_and_keeps_the_core_share(eight_cores):
    """Catches OMP_WAIT_POLICY set too late or not at all (libgomp reads it when torch loads: spinning waiters made
    2 threads 19x slower beside a busy process), and a user's own policy being overridden."""
    import subprocess
    import sys

    code = "import recsys_dist, torch, os; print(os.environ.get('OMP_WAIT_POLICY'), recsys_dist.OMP_PASSIVE_WAIT)"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.split()
    assert out == ["PASSIVE", "True"]
    mine = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "active"},
                          capture_output=True, text=True).stdout.split()
    assert mine == ["active", "False"]
    assert thr.default_threads(2, idle=0.0, passive_wait=True)[0] == 4


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
