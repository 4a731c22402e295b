"""Per-arch optimizer defaults: the dense optimizer an arch's paper trains with, used when a config sets none.

An arch class may declare `OPTIM_DEFAULTS = {"dense": "adam", "dense_lr": 1e-3, "embedding_l2": 0.1}`
(keys of `optim.*` in GROUPS: the dense optimizer's DENSE_KEYS, the table optimizer's SPARSE_KEYS, and the
embedding regularization). `load_config`
applies each group as a whole when neither the config file nor an override sets any key of that group; a config
that sets one (e.g. `optim.dense_lr=0.05`) keeps the global defaults for the rest of its group, so a learning rate
is never paired with an optimizer it was not chosen for (`optim.embedding_l2=0` turns the arch's L2 off). Where a
value came from is recorded (`source_of(cfg, "optim.dense")` -> "the dlrm default"), so error messages name it.
The values and why: docs/arches.md, "Defaults on data nobody tuned for".
"""

from __future__ import annotations

from typing import Any, Dict

DENSE_KEYS = ("dense", "dense_lr", "dense_eps")
SPARSE_KEYS = ("sparse", "sparse_lr", "sparse_eps")
GROUPS = (DENSE_KEYS, SPARSE_KEYS, ("embedding_l2",))


def arch_optim_defaults(arch: str) -> Dict[str, Any]:
    from recsys_dist.models.registry import ARCHES, arch_class  # late: models import torch

    if arch not in ARCHES:
        return {}  # validate() names the unknown arch
    defaults = dict(getattr(arch_class(arch), "OPTIM_DEFAULTS", {}))
    allowed = [k for group in GROUPS for k in group]
    bad = sorted(set(defaults) - set(allowed))
    if bad:
        raise TypeError(f"{arch}: OPTIM_DEFAULTS may set only {', '.join(allowed)}, not {', '.join(bad)}")
    return defaults


def apply_arch_defaults(cfg: Any) -> None:
    """Sets the arch's OPTIM_DEFAULTS on `cfg.optim`, each group unless the config set any key of it."""
    defaults = arch_optim_defaults(cfg.model.arch)
    sources = getattr(cfg, "_sources", {})  # dotted key -> where it was set (config.load_config)
    for group in GROUPS:
        if any(f"optim.{k}" in sources for k in group):
            continue
        for key in group:
            if key in defaults:
                setattr(cfg.optim, key, defaults[key])
                sources[f"optim.{key}"] = f"the {cfg.model.arch} default"
    cfg._sources = sources
