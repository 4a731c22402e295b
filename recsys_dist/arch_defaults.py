"""Per-arch optimizer defaults: the dense optimizer an arch's paper trains with, used when a config sets none.

An arch class may declare `OPTIM_DEFAULTS = {"dense": "adam", "dense_lr": 1e-3}` (keys of `optim.*`, only the
dense optimizer's: DENSE_KEYS). `load_config` applies them, as one group, when neither the config file nor an
override sets any of DENSE_KEYS; a config that sets one (e.g. `optim.dense_lr=0.05`) keeps the global defaults
for the rest, so a learning rate is never paired with an optimizer it was not chosen for. Where a value came
from is recorded (`source_of(cfg, "optim.dense")` -> "the dlrm default"), so error messages name it.
The values and why: docs/arches.md, "Defaults on data nobody tuned for".
"""

from __future__ import annotations

from typing import Any, Dict

DENSE_KEYS = ("dense", "dense_lr", "dense_eps")


def arch_optim_defaults(arch: str) -> Dict[str, Any]:
    from recsys_dist.models.registry import ARCHES, arch_class  # late: models import torch

    if arch not in ARCHES:
        return {}  # validate() names the unknown arch
    defaults = dict(getattr(arch_class(arch), "OPTIM_DEFAULTS", {}))
    bad = sorted(set(defaults) - set(DENSE_KEYS))
    if bad:
        raise TypeError(f"{arch}: OPTIM_DEFAULTS may set only {', '.join(DENSE_KEYS)}, not {', '.join(bad)}")
    return defaults


def apply_arch_defaults(cfg: Any) -> None:
    """Sets the arch's OPTIM_DEFAULTS on `cfg.optim` unless the config set any of DENSE_KEYS."""
    defaults = arch_optim_defaults(cfg.model.arch)
    sources = getattr(cfg, "_sources", {})  # dotted key -> where it was set (config.load_config)
    if not defaults or any(f"optim.{k}" in sources for k in DENSE_KEYS):
        return
    for key, value in defaults.items():
        setattr(cfg.optim, key, value)
        sources[f"optim.{key}"] = f"the {cfg.model.arch} default"
    cfg._sources = sources
