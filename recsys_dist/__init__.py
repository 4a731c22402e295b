"""recsys-dist: distributed CTR training on TorchRec."""

import os as _os
import sys as _sys

# How OpenMP threads wait at a barrier (libgomp reads it once, when torch loads): spin briefly on a quiet box,
# sleep beside busy processes (recsys_dist/omp_wait.py). Chosen only if the user has not and torch is not loaded;
# OMP_PASSIVE_WAIT records whether waiters sleep, OMP_WAIT_WHY why (for the start-up log).
OMP_WAIT_WHY = "torch was loaded before recsys_dist: OpenMP's wait policy left as it was"
if "torch" not in _sys.modules:
    from recsys_dist.omp_wait import apply as _apply
    from recsys_dist.threads import cpu_cores as _cpu_cores

    OMP_WAIT_WHY = _apply(_os.environ, _cpu_cores())
OMP_PASSIVE_WAIT = _os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
