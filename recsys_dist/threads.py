"""How many intra-op (OpenMP) threads a rank uses when train.threads is not set.

PyTorch's CPU kernels split work over OpenMP threads that meet at a barrier after every parallel region. libgomp's
default makes a thread that reaches the barrier first spin for a while. With more runnable threads than cores (2
threads beside another busy process on 2 cores) one thread is often descheduled while the other spins on the core
it needs: measured 19x slower than 1 thread (benchmarks/bench_threads_eval.py, docs/benchmarks.md section 8).
With OMP_WAIT_POLICY=PASSIVE the waiting thread sleeps instead and 2 threads did not collapse. So:

- `recsys_dist/__init__.py` picks the wait policy per box before torch loads (recsys_dist/omp_wait.py: a short
  spin on a quiet box, PASSIVE beside busy processes) unless the user chose one;
- with the passive policy in effect: the cores of this process's CPU set shared by this node's ranks;
- otherwise (spinning waiters): that share, but no more than the cores idle when the job started (/proc/stat).
"""

from __future__ import annotations

import os
import time
from typing import Optional, Tuple


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's CPU set)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times() -> Optional[Tuple[int, int]]:
    """(idle + iowait, total) jiffies of all CPUs, or None without /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + fields[4], sum(fields[:8])


def idle_cores(sample_s: float = 0.3) -> float:
    """Cores idle during the next `sample_s` seconds (this process sleeps meanwhile); from the load average
    where /proc/stat is missing."""
    a = _cpu_times()
    if a is None:
        return max(0.0, cpu_cores() - os.getloadavg()[0])
    time.sleep(sample_s)
    b = _cpu_times()
    total = b[1] - a[1]
    if total <= 0:
        return float(cpu_cores())
    return (b[0] - a[0]) / total * (os.cpu_count() or 1)


def default_threads(local_world_size: int, idle: Optional[float] = None,
                    passive_wait: Optional[bool] = None) -> Tuple[int, str]:
    """(threads per rank, why): the cores shared by this node's ranks; without OpenMP's passive wait policy at
    most the idle cores' share; >= 1."""
    import recsys_dist

    cores = cpu_cores()
    ranks = max(1, local_world_size)
    share = max(1, cores // ranks)
    passive = recsys_dist.OMP_PASSIVE_WAIT if passive_wait is None else passive_wait
    if passive:
        return share, f"{cores} cores for {ranks} rank(s); {recsys_dist.OMP_WAIT_WHY}"
    idle = idle_cores() if idle is None else idle
    free = max(1, int(idle + 0.25) // ranks)
    n = min(share, free)
    why = f"{cores} cores for {ranks} rank(s), {idle:.1f} idle at start; {recsys_dist.OMP_WAIT_WHY}"
    if n < share:
        why += f": the box is busy, {n} instead of {share} (train.threads=N overrides)"
    return n, why
