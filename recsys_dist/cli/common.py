"""Helpers shared by the subcommands: config from --config + flags + overrides, printing results."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Dict, List, Sequence, Tuple

from recsys_dist.config import RANGES, JobConfig, in_range, load_config


def bounded(kind: type, spec: str):
    """An argparse `type` for a numeric option: `kind` (int / float) within `spec` (config.RANGES notation, or a
    config key whose range applies), so a bad value is refused naming the option (exit 2)."""
    spec = RANGES.get(spec, spec)

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        if not in_range(value, spec):
            raise argparse.ArgumentTypeError(f"{text} must be {spec if spec[0] == '>' else 'in ' + spec}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    parse.spec = spec  # type: ignore[attr-defined]
    return parse


def config_from_args(args: argparse.Namespace, flag_keys: Sequence[Tuple[str, str]] = ()) -> JobConfig:
    """--config FILE, then shortcut flags (attr -> config key) when given, then explicit overrides (last wins)."""
    overrides: List[str] = []
    for attr, key in flag_keys:
        value = getattr(args, attr, None)
        if value is not None:
            overrides.append(f"{key}={_literal(value)}")
    return load_config(args.config, overrides + list(args.overrides))


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    return str(value)


LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                    "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT")


def leave_launch() -> None:
    """A one-process command that starts its own jobs (demo, compare), started by torchrun / torchx: run as one
    process, so that the jobs it starts do not take the launch's rank, world size and store (they would wait for
    ranks of the outer launch that have already left)."""
    for key in list(os.environ):
        if key in LAUNCH_VARIABLES or key.startswith("TORCHELASTIC_"):
            del os.environ[key]


def world_size() -> int:
    """Ranks of this launch (torchrun / torchx set WORLD_SIZE; 1 for one process)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def print_json(d: Dict[str, Any]) -> None:
    print(json.dumps(d, indent=2, default=str))
