"""train.tune_malloc (recsys_dist/malloc.py): freed activation-sized blocks stay in the process, so a loop that
allocates and frees the same memory stops page-faulting; user choices (env vars) are left alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from recsys_dist.malloc import _glibc

LOOP = """
import resource, sys
import numpy as np
from recsys_dist.malloc import keep_freed_memory
print(keep_freed_memory() if sys.argv[1] == "tuned" else None)
def step():
    xs = [np.ones(1 << 20, dtype=np.float32) for _ in range(10)]   # 10 x 4 MiB activations, freed together
    del xs
step(); step()
f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f) / 10)
"""


def _faults(mode: str, env=None):
    out = subprocess.run([sys.executable, "-c", LOOP, mode], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **(env or {})}, check=True).stdout.split()
    return out[0], float(out[1])


@pytest.mark.skipif(_glibc() is None, reason="not glibc")
def test_keep_freed_memory_stops_the_per_step_page_faults():
    applied_default, default = _faults("default")
    applied, tuned = _faults("tuned")
    assert applied == "True"
    assert default > 2000, default          # glibc trims the freed 40 MiB each step and faults it back in
    assert tuned < default / 20, (tuned, default)


@pytest.mark.skipif(_glibc() is None, reason="not glibc")
def test_user_malloc_env_is_respected():
    applied, faults = _faults("tuned", {"MALLOC_TRIM_THRESHOLD_": "131072"})
    assert applied == "False"
