"""How OpenMP threads wait at a barrier, chosen per box when recsys_dist is imported (libgomp reads it once, when
torch loads). No torch import here.

Measured on 2 cores, DLRM, 1 process x 2 threads (docs/benchmarks.md section 8, benchmarks/bench_omp_wait.py):
- quiet box: spinning waiters (libgomp's spin-then-sleep with GOMP_SPINCOUNT=100000, about 1 ms, or ACTIVE) run
  about 2x the samples/s of PASSIVE (a futex wake per parallel region);
- beside busy processes: spin-then-sleep collapses (a waiter spins on the core its still-working partner needs),
  PASSIVE does not.
So: no other runnable task for the threads we will use -> bounded spin; otherwise PASSIVE. The user's own
OMP_WAIT_POLICY / GOMP_SPINCOUNT always win. What we chose is marked in RECSYS_DIST_OMP_WAIT so a child process
(a torchrun rank, a test's subprocess) chooses again for the box as it is then, instead of inheriting it.
"""

from __future__ import annotations

import time
from typing import Dict, MutableMapping, Optional, Tuple

MARK = "RECSYS_DIST_OMP_WAIT"
QUIET_SPINCOUNT = "100000"
_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def other_runnable(samples: int = 5, interval_s: float = 0.004) -> Optional[int]:
    """Tasks runnable now besides this one (the fewest over a few snapshots of /proc/loadavg), or None."""
    seen = []
    try:
        for i in range(samples):
            if i:
                time.sleep(interval_s)
            with open("/proc/loadavg") as f:
                seen.append(int(f.read().split()[3].split("/")[0]))
    except (OSError, ValueError, IndexError):
        return None
    return max(0, min(seen) - 1)


def choose(cores: int, local_ranks: int, others: Optional[int]) -> Tuple[Dict[str, str], str]:
    """(environment, why): bounded spin when our threads (cores / local ranks) fit beside the runnable tasks."""
    threads = max(1, cores // max(1, local_ranks))
    if others is None:
        return {"OMP_WAIT_POLICY": "PASSIVE"}, "OpenMP waiters sleep (no /proc/loadavg to see the load)"
    if others + threads <= cores:
        return ({"GOMP_SPINCOUNT": QUIET_SPINCOUNT},
                f"OpenMP waiters spin {QUIET_SPINCOUNT} then sleep ({others} other runnable task(s) at start)")
    return ({"OMP_WAIT_POLICY": "PASSIVE"},
            f"OpenMP waiters sleep ({others} other runnable task(s) at start on {cores} cores)")


def _ours(environ: MutableMapping[str, str]) -> bool:
    """Are the wait variables absent, or exactly what a recsys_dist parent set (and so ours to choose again)?"""
    mark = environ.get(MARK)
    current = "|".join(environ.get(v, "") for v in _VARS)
    return (mark is not None and mark == current) or all(v not in environ for v in _VARS)


def apply(environ: MutableMapping[str, str], cores: int) -> str:
    """Set the wait variables in `environ` unless the user chose them; returns why (for the start-up log)."""
    if not _ours(environ):
        return "OpenMP wait: " + ", ".join(f"{v}={environ[v]!r}" for v in _VARS if v in environ) + " (yours)"
    for v in _VARS:
        environ.pop(v, None)
    local_ranks = int(environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    chosen, why = choose(cores, local_ranks, other_runnable())
    environ.update(chosen)
    environ[MARK] = "|".join(environ.get(v, "") for v in _VARS)
    return why

