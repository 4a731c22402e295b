"""Topology: the cluster a plan is made for (devices, memory per device, bandwidths), as a TorchRec `Topology`.

Units on this side are the ones people quote: GiB of memory per device, GB/s of bandwidth. TorchRec wants bytes
and bytes/ms (with 1 GB = 1024**3 bytes, as in `torchrec.distributed.planner.constants`); `make_topology`
converts. `GPU_PRESETS` holds the published numbers of common GPUs, so `gpu="H100"` is enough for a
hypothetical cluster:

    >>> topo = make_topology(16, 8, "cuda", gpu="A100-80")
    >>> topo.world_size, topo.local_world_size, topo.devices[0].storage.hbm // 1024**3
    (16, 8, 80)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from torchrec.distributed.planner.constants import (
    CROSS_NODE_BANDWIDTH,
    DDR_CAP,
    DDR_MEM_BW,
    HBM_CAP,
    HBM_MEM_BW,
    INTRA_NODE_BANDWIDTH,
)
from torchrec.distributed.planner.types import (
    HardwareConfig,
    KernelConfig,
    Topology,
    TopologyFactory,
    TrainerConfig,
)

GIB = 1024**3
DEVICES = ("cpu", "cuda")


def gbps_to_bytes_per_ms(gbps: float) -> float:
    """GB/s (1 GB = 1024**3 bytes, TorchRec's convention) -> bytes per millisecond."""
    return gbps * GIB / 1000


@dataclass(frozen=True)
class GPUPreset:
    """Published numbers of one GPU model in a typical node (NVLink / PCIe inside, NIC per GPU between nodes)."""

    hbm_gib: float  # device memory
    hbm_bw_gbps: float  # device memory bandwidth
    intra_bw_gbps: float  # GPU-GPU inside a node (NVLink, or PCIe)
    inter_bw_gbps: float  # per GPU between nodes (its NIC share)
    ddr_gib: float = 128.0  # host memory per GPU usable for UVM


GPU_PRESETS: Dict[str, GPUPreset] = {
    "V100-32": GPUPreset(32, 900, 300, 12.5),
    "A100-40": GPUPreset(40, 1555, 600, 25),
    "A100-80": GPUPreset(80, 2039, 600, 25),
    "H100": GPUPreset(80, 3350, 900, 50),
    "H200": GPUPreset(141, 4800, 900, 50),
    "L4": GPUPreset(24, 300, 32, 12.5, ddr_gib=64),
}


def make_topology(
    world_size: int,
    local_world_size: Optional[int] = None,
    device: str = "cpu",
    hbm_gib: Optional[float] = None,
    ddr_gib: Optional[float] = None,
    intra_bw: Optional[float] = None,
    inter_bw: Optional[float] = None,
    gpu: Optional[str] = None,
) -> Topology:
    """A TorchRec Topology of `world_size` devices, `local_world_size` per node.

    Args:
        world_size: number of ranks (devices).
        local_world_size: ranks per node (None: all ranks on one node). Row-wise parts of table_row_wise stay
            inside a node, so it must divide world_size.
        device: "cpu" or "cuda".
        hbm_gib: device memory per rank (cuda only; None: the gpu preset, else TorchRec's 32 GiB).
        ddr_gib: host memory per rank (None: the gpu preset, else TorchRec's 128 GiB).
        intra_bw / inter_bw: GB/s between ranks of one node / of different nodes (None: preset or TorchRec's).
        gpu: a name in GPU_PRESETS giving the defaults above (cuda only).
    """
    if device not in DEVICES:
        raise ValueError(f"device {device!r}: expected one of {', '.join(DEVICES)}")
    if world_size < 1:
        raise ValueError(f"world_size={world_size}: must be >= 1")
    lws = local_world_size or world_size
    if lws < 1 or world_size % lws:
        raise ValueError(f"local_world_size={lws} must divide world_size={world_size} (ranks per node)")
    preset = None
    if gpu is not None:
        if gpu not in GPU_PRESETS:
            raise ValueError(f"unknown gpu {gpu!r}; presets: {', '.join(GPU_PRESETS)}")
        if device != "cuda":
            raise ValueError(f"gpu={gpu!r} describes a GPU: use device='cuda'")
        preset = GPU_PRESETS[gpu]
    if hbm_gib is not None and device == "cpu":
        raise ValueError("hbm_gib is device (GPU) memory; a cpu topology has only ddr_gib")
    for name, v in (("hbm_gib", hbm_gib), ("ddr_gib", ddr_gib), ("intra_bw", intra_bw), ("inter_bw", inter_bw)):
        if v is not None and v <= 0:
            raise ValueError(f"{name}={v}: must be > 0")

    def pick(value: Optional[float], attr: str) -> Optional[float]:
        if value is not None:
            return value
        return getattr(preset, attr) if preset is not None else None

    hbm = pick(hbm_gib, "hbm_gib")
    ddr = pick(ddr_gib, "ddr_gib")
    intra = pick(intra_bw, "intra_bw_gbps")
    inter = pick(inter_bw, "inter_bw_gbps")
    hbm_bw = preset.hbm_bw_gbps if preset is not None else None
    # The factory is TorchRec's supported way to build a Topology; with use_hardware_based_bandwidth the
    # hardware numbers below (ours, or TorchRec's defaults) are the ones its estimators use.
    hardware = HardwareConfig(
        hbm_cap_bytes=int(hbm * GIB) if hbm is not None else (HBM_CAP if device == "cuda" else None),
        ddr_cap_bytes=int(ddr * GIB) if ddr is not None else DDR_CAP,
        intra_host_bw=gbps_to_bytes_per_ms(intra) if intra is not None else INTRA_NODE_BANDWIDTH,
        inter_host_bw=gbps_to_bytes_per_ms(inter) if inter is not None else CROSS_NODE_BANDWIDTH,
        hbm_mem_bw=gbps_to_bytes_per_ms(hbm_bw) if hbm_bw is not None else HBM_MEM_BW,
        ddr_mem_bw=DDR_MEM_BW,
    )
    return TopologyFactory.create_topology(
        trainer_config=TrainerConfig(world_size=world_size, local_world_size=lws),
        hardware_config=hardware,
        kernel_config=KernelConfig(compute_device=device, use_hardware_based_bandwidth=True),
    )

def describe(topology: Topology) -> Dict[str, object]:
    """The topology in people's units (for reports and plan files)."""
    bw = topology.comms_bandwidths
    d0 = topology.devices[0].storage
    return {
        "world_size": topology.world_size,
        "local_world_size": topology.local_world_size,
        "nodes": topology.world_size // topology.local_world_size,
        "device": topology.compute_device,
        "hbm_gib_per_rank": d0.hbm / GIB,
        "ddr_gib_per_rank": d0.ddr / GIB,
        "intra_bw_gbps": getattr(bw, "intra_host_bw", INTRA_NODE_BANDWIDTH) * 1000 / GIB,
        "inter_bw_gbps": getattr(bw, "inter_host_bw", CROSS_NODE_BANDWIDTH) * 1000 / GIB,
    }
