"""The process's place in a job: rank, world size, device and process group (torchrun / torchx env vars).

cuda + nccl when a GPU is there (or asked for), cpu + gloo otherwise; the same code path after this point.
A process started without torchrun becomes a world of one, so DMP and the planner run unchanged.

Restarts (torchrun --max-restarts): the elastic agent keeps ONE TCPStore for the whole job and hands it to every
restart round (TORCHELASTIC_USE_AGENT_STORE=True), while torch's env:// init adds no per-round key prefix
(pytorch/pytorch#135712). The restarted ranks then read keys the dead round left behind, e.g. gloo's listening
address of a killed rank, and fail (connection refused) or hang. So the process group's store is namespaced by
the restart round here (`round_store`).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from recsys_dist.config import ConfigError, TrainConfig
from recsys_dist.malloc import keep_freed_memory

log = logging.getLogger("recsys_dist")


@dataclass
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def pg(self) -> dist.ProcessGroup:
        return dist.GroupMember.WORLD  # type: ignore[return-value]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve_device(pref: str, local_rank: int = 0) -> torch.device:
    if pref == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    if pref in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def round_store(timeout: timedelta) -> dist.Store | None:
    """The torchelastic agent's shared store, under a prefix of its own for this restart round; None when the
    agent does not share its store (plain env:// init then makes a fresh store per round, nothing to isolate).

    TORCHELASTIC_RESTART_COUNT names the round only where one agent counts the restarts (GROUP_WORLD_SIZE 1:
    torchrun --standalone, torchx -j 1xN). With several agents each counts its own restarts and the counts can
    differ (pytorch/pytorch#135712), so a multi-node torchrun with --max-restarts needs its agents started with
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, which gives every round a new store (hosted by rank 0). The torchx
    component (launch/components.py) restarts whole jobs instead (--max_retries: new agents, new store).
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    if int(os.environ.get("GROUP_WORLD_SIZE", "1")) > 1:
        if int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0 and int(os.environ.get("RANK", "0")) == 0:
            log.warning("%d torchrun agents share one TCPStore across --max-restarts rounds: a restarted round can "
                        "read the dead round's keys and fail to connect; start torchrun with "
                        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (pytorch/pytorch#135712)",
                        int(os.environ["GROUP_WORLD_SIZE"]))
        return None
    client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                           int(os.environ["WORLD_SIZE"]), is_master=False, timeout=timeout)
    return dist.PrefixStore(f"recsys_dist/round_{int(os.environ.get('TORCHELASTIC_RESTART_COUNT', '0'))}", client)


def init_distributed(device_pref: str = "auto", timeout_s: int = 1800) -> DistEnv:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    device = resolve_device(device_pref, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if "MASTER_ADDR" in os.environ:
            store = round_store(timedelta(seconds=timeout_s))
            if store is not None:
                dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                                        timeout=timedelta(seconds=timeout_s))
            else:
                dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        else:  # a lone process: a world of one
            dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, local_world, device)


def set_threads(requested: int | None, local_world_size: int) -> int:
    """Intra-op threads per rank: requested, or the cores shared by this node's ranks but no more than were idle
    at start-up (recsys_dist.threads: OpenMP threads beside a busy process collapse)."""
    if requested:
        n = requested
    else:
        from recsys_dist.threads import default_threads

        n, why = default_threads(local_world_size)
        log.info("threads per rank: %d (%s)", n, why)
    torch.set_num_threads(n)
    return n


def setup_compute(train: TrainConfig, local_world_size: int) -> tuple[int, bool]:
    """The process's compute settings: the intra-op threads and (train.tune_malloc) freed memory kept in the
    process. Benchmarks that time a step call this too, so they measure what `train` runs. Returns the threads
    and whether the allocator was tuned."""
    threads = set_threads(train.threads, local_world_size)
    tuned = keep_freed_memory() if train.tune_malloc else False
    return threads, tuned


def setup_process(train: TrainConfig) -> tuple[DistEnv, int]:
    """What every job command does first: join the job, then `setup_compute`. Returns the env and the threads."""
    env = init_distributed(train.device)
    threads, _ = setup_compute(train, env.local_world_size)
    return env, threads
