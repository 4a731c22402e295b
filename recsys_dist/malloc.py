"""glibc malloc settings for a training process: keep freed activation memory instead of handing it back.

A train step allocates and frees the same multi-MB activations every step. glibc serves blocks above its mmap
threshold with fresh mmap()s and trims the top of its heap back to the OS, so each step page-faults ~30 MB back
in and the kernel zeroes it again: ~8,000 minor faults per foundation-DLRM step at batch 2048 on CPU (~170 with
the settings below; `benchmarks/bench_malloc.py`). Pinning the mmap threshold at glibc's maximum (32 MiB on
64-bit) and raising the trim threshold keeps those pages in the process; the price is that the process's RSS
stays at its peak (steady for a training loop).

A no-op off glibc, and when the user chose already: MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ set, or another
allocator preloaded (jemalloc, tcmalloc, mimalloc via LD_PRELOAD). `train.tune_malloc=false` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger("recsys_dist")

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # glibc <malloc.h>
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024         # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_THRESHOLD = 1024 * 1024 * 1024


def _glibc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # only glibc has it (musl, macOS: no)
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Apply the settings above; True when they were applied, False when skipped (and why, logged at debug)."""
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        log.debug("malloc: MALLOC_*_THRESHOLD_ set by the user, left as is")
        return False
    if any(a in os.environ.get("LD_PRELOAD", "") for a in ("jemalloc", "tcmalloc", "mimalloc")):
        log.debug("malloc: another allocator is preloaded, left as is")
        return False
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        log.warning("malloc: glibc refused mallopt(M_MMAP_THRESHOLD / M_TRIM_THRESHOLD); default malloc kept")
    return ok
