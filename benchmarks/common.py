"""Shared pieces of the benchmarks: the foundation DLRM's settings, Criteo-like Parquet data written on the spot,
multi-rank spawning (gloo on CPU, nccl on CUDA), alternating timing, and a machine line for the records.

Every benchmark compares against its reference inside one run, alternating (ours, reference, ours, ...), and
reports the median of the per-round ratios: the machine's load changes between runs, much less within a round.
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from launch.local_ranks import quiet, run_on_ranks  # noqa: E402,F401  (quiet: used by the benchmarks)

# The foundation DLRM (issue 9): Criteo-Kaggle cardinalities capped at 1M, dim 64, bottom 512-256-64,
# top 512-512-256-1, global batch 2048.
CAP = 1_000_000
DIM = 64
BOTTOM = (512, 256, 64)
TOP = (512, 512, 256, 1)
GLOBAL_BATCH = 2048
NUM_DENSE = 13


@contextlib.contextmanager
def one_process_job(data: str, overrides: Sequence[str]) -> Iterator[Tuple[Any, Any, int, Any]]:
    """(cfg, env, threads, built): `train`'s process setup and sharded model, 1 process, on the prepared `data`
    with `overrides`, its out_dir a temporary folder (removed after)."""
    from recsys_dist.config import load_config
    from recsys_dist.dist_env import setup_process
    from recsys_dist.job import build_sharded_model

    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(None, [f"data.dir={data}", f"train.out_dir={out}", *overrides])
        env, threads = setup_process(cfg.train)
        yield cfg, env, threads, build_sharded_model(cfg, env)


def kaggle_rows(cap: int = CAP) -> List[int]:
    from recsys_dist.data.criteo_schema import KAGGLE_ROWS

    return [min(r, cap) for r in KAGGLE_ROWS]


def machine() -> str:
    """One line describing where the numbers were taken (CPU model, cores, torch, load average)."""
    import torch

    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{model}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


# -- data ---------------------------------------------------------------------------------------------------
def torchrec_dlrm_dense(num_dense: int, num_sparse: int, bottom: Sequence[int], top: Sequence[int]):
    """The DLRM dense arch from TorchRec's own modules (`torchrec.models.dlrm` DenseArch, InteractionArch, OverArch):
    forward(dense [B, num_dense], emb [B, F, D]) -> logits [B]. The reference for our DLRMArch's speed and the
    canonical formulation whose FLOPs the roofline counts."""
    import torch
    from torchrec.models.dlrm import DenseArch, InteractionArch, OverArch

    class TorchRecDLRMDense(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bottom = DenseArch(num_dense, list(bottom))
            self.interaction = InteractionArch(num_sparse)
            self.top = OverArch(bottom[-1] + (num_sparse + 1) * num_sparse // 2, list(top))

        def forward(self, dense, emb):
            return self.top(self.interaction(self.bottom(dense), emb)).squeeze(-1)

    return TorchRecDLRMDense()


def write_criteo_like(root: Path, rows: int, cardinalities: Sequence[int], seed: int = 0,
                      rows_per_file: int = 131072, row_group: int = 16384, splits: Sequence[str] = ("train",),
                      bucketized: bool = False):
    """A prepared dataset (metadata.json + Parquet) with Criteo's columns: label, I1..I13 (uniform [0, 1), like
    RandomRecDataset's dense), C1..C26 with ids uniform in [0, cardinality) (RandomRecDataset's distribution).
    Every split gets `rows` rows. `bucketized`: I1..I13 are categorical bucket ids instead (`prepare.dense:
    bucketize`, 39 sparse fields and no dense ones, as OptFusion's presets)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recsys_dist.data.criteo_encode import BUCKET_ROWS
    from recsys_dist.data.criteo_schema import CATEGORICAL_NAMES, DENSE_NAMES
    from recsys_dist.data.metadata import Metadata, SparseFeature, SplitInfo

    rng = np.random.default_rng(seed)
    sparse = [SparseFeature(n, int(c)) for n, c in zip(CATEGORICAL_NAMES, cardinalities)]
    if bucketized:
        sparse = [SparseFeature(n, BUCKET_ROWS, encoding="bucketize") for n in DENSE_NAMES] + sparse
    info = {}
    for split in splits:
        (root / split).mkdir(parents=True, exist_ok=True)
        files, counts = [], []
        for k, start in enumerate(range(0, rows, rows_per_file)):
            m = min(rows_per_file, rows - start)
            cols = {"label": pa.array(rng.integers(0, 2, m, dtype=np.int8))}
            for n in () if bucketized else DENSE_NAMES:
                cols[n] = pa.array(rng.random(m, dtype=np.float32))
            for f in sparse:
                cols[f.name] = pa.array(rng.integers(0, f.num_embeddings, m, dtype=np.int64))
            name = f"{split}/part-{k:05d}.parquet"
            pq.write_table(pa.table(cols), root / name, row_group_size=row_group)
            files.append(name)
            counts.append(m)
        info[split] = SplitInfo(files=files, rows=rows, rows_per_file=counts)
    md = Metadata(dense_features=[] if bucketized else list(DENSE_NAMES), sparse_features=sparse, splits=info,
                  dense_transform="bucketize" if bucketized else "none")
    md.save(root)
    return md


# -- ranks --------------------------------------------------------------------------------------------------
def run_ranks(fn: Callable, world: int, args: Sequence[Any] = (), threads: int = 1,
              timeout: float = 3600) -> List[Any]:
    """fn(rank, world, *args) on `world` ranks (gloo on CPU, nccl on CUDA), warnings and tqdm off; a world of
    one runs in this process. fn must be importable."""
    return run_on_ranks(fn, world, args, threads=threads, timeout=timeout, silent=True, inline_single=True)


# -- timing -------------------------------------------------------------------------------------------------
def alternate(runs: Dict[str, Callable[[], float]], rounds: int) -> Dict[str, List[float]]:
    """Calls each run once per round, in the given order (ours, reference, ours, reference ...); each returns
    the seconds it measured. Returns the per-round times of each."""
    times: Dict[str, List[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            times[name].append(fn())
    return times


def alternate_cpu(sides: Dict[str, Callable[[], Any]], rounds: int,
                  note: Callable[[float], str] = lambda seconds: "") -> Dict[str, List[float]]:
    """Calls each side once per round, the order reversed every other round; returns the CPU seconds of this
    process per call, and prints a line per call with `note(seconds)`, its minor page faults and the load."""
    import resource

    times: Dict[str, List[float]] = {k: [] for k in sides}
    for r in range(rounds):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t = time.process_time()
            sides[name]()
            times[name].append(time.process_time() - t)
            print(f"round {r}: {name} {times[name][-1] * 1e3:,.0f} ms CPU{note(times[name][-1])}, "
                  f"{resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0:,} minor faults "
                  f"[load {os.getloadavg()[0]:.1f}]", flush=True)
    return times


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> Tuple[float, float, float]:
    """Median, min and max of num[i] / den[i] over rounds (each pair taken side by side)."""
    r = [a / b for a, b in zip(num, den)]
    return statistics.median(r), min(r), max(r)


def step_window(pipeline, it, steps: int, pg=None) -> float:
    """Seconds per step of `steps` train-pipeline steps between barriers (CUDA synchronized where present); the
    loss is read every step, as the train loop does when it logs it."""
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    dist.barrier(group=pg)
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        loss, _, _ = pipeline.progress(it)
        float(loss)
    if cuda:
        torch.cuda.synchronize()
    dist.barrier(group=pg)
    return (time.perf_counter() - t) / steps


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def ms(x: float) -> str:
    return f"{x * 1e3:.1f} ms"
