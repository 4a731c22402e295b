"""Run a function on N ranks of this machine, each a fresh process with torchrun's environment variables.

For tests and benchmarks that need a real process group without a launcher:

    results = run_on_ranks(fn, world_size=2, args=(x,))   # fn(rank, world_size, *args) -> picklable

fn must be importable (module level). gloo on CPU, nccl (one GPU per rank) when CUDA is visible.
"""

from __future__ import annotations

import logging
import os
import traceback
import warnings
from typing import Any, Callable, Dict, List, Sequence

from recsys_dist.dist_env import free_port


def quiet() -> None:
    """Library warnings and TorchRec's planner / DDP chatter off: the caller's own output is what is read."""
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")


def _entry(rank: int, world: int, port: int, threads: int, silent: bool, fn: Callable, args: Sequence[Any],
           queue) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), OMP_NUM_THREADS=str(threads))
    torch.set_num_threads(threads)
    if silent:
        os.environ["TQDM_DISABLE"] = "1"
        quiet()
    try:
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(rank % torch.cuda.device_count())
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
        queue.put((rank, True, fn(rank, world, *args)))
    except BaseException:
        queue.put((rank, False, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


class _ListQueue(list):
    def put(self, item: Any) -> None:
        self.append(item)


def run_on_ranks(fn: Callable, world_size: int = 2, args: Sequence[Any] = (), threads: int = 1,
                 timeout: float = 600, silent: bool = False, inline_single: bool = False) -> List[Any]:
    """Each rank's return value, in rank order; raises with the failing rank's traceback.

    threads: intra-op threads per rank. silent: warnings, logging and tqdm off in the ranks.
    inline_single: a world of one runs in this process (no spawn, no second import of torch).
    """
    if world_size == 1 and inline_single:
        inline = _ListQueue()
        _entry(0, 1, free_port(), threads, silent, fn, args, inline)
        _, ok, value = inline[0]
        if not ok:
            raise RuntimeError(f"rank 0 failed:\n{value}")
        return [value]
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_entry, args=(r, world_size, port, threads, silent, fn, args, queue))
             for r in range(world_size)]
    for p in procs:
        p.start()
    results: Dict[int, Any] = {}
    errors = []
    try:
        for _ in range(world_size):
            rank, ok, value = queue.get(timeout=timeout)
            if ok:
                results[rank] = value
            else:
                errors.append(f"rank {rank} failed:\n{value}")
                break
    finally:
        for p in procs:
            p.join(timeout=5 if errors else 120)
            if p.is_alive():
                p.kill()
    if errors:
        raise RuntimeError("\n".join(errors))
    return [results[r] for r in range(world_size)]
