"""recsys-dist: distributed CTR training on TorchRec."""

import os as _os
import sys as _sys

# OpenMP threads waiting at a barrier sleep instead of spinning (libgomp reads this once, when torch loads):
# spinning threads beside a busy process made 2-thread training 19x slower (recsys_dist/threads.py). Set only if
# the user has not chosen and torch is not loaded yet; OMP_PASSIVE_WAIT records whether the policy is in effect.
if "OMP_WAIT_POLICY" not in _os.environ and "torch" not in _sys.modules:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
OMP_PASSIVE_WAIT = _os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
