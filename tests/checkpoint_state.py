"""A run's final checkpoint as one host state dict, and the bitwise comparison the fault-tolerance tests make
(torchrun / torchx restarts in test_launch.py, container restarts and torchx local_docker in test_docker_run.py)."""

from pathlib import Path

import torch


def full_state(ckpt: Path, tmp: Path) -> dict:
    """Every weight and optimizer state tensor of a DCP checkpoint folder, gathered on the host."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    tmp.mkdir(parents=True, exist_ok=True)
    dest = tmp / f"{ckpt.parent.name}.pt"
    dcp_to_torch_save(str(ckpt), str(dest))
    return torch.load(dest, weights_only=False)


def assert_same_weights(a: dict, b: dict) -> None:
    """Model tensors and optimizer state tensors bitwise equal."""
    ma, mb = a["model"], b["model"]
    assert ma.keys() == mb.keys()
    for k in ma:
        assert torch.equal(ma[k], mb[k]), k
    for k, v in a["optim"]["state"].items():
        for name, t in v.items():
            if isinstance(t, torch.Tensor):
                assert torch.equal(t, b["optim"]["state"][k][name]), f"optimizer {k}.{name}"
