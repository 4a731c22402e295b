"""Arch registry: a name -> "module:Class". A new arch is one file plus one line here."""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Dict, Mapping, Type

from recsys_dist.models.arch import ArchInputs, DenseArch

ARCHES: Dict[str, str] = {
    "dlrm": "recsys_dist.models.dlrm:DLRMArch",
    "dcn": "recsys_dist.models.dcn:DCNArch",
    "dcnv2": "recsys_dist.models.dcnv2:DCNv2Arch",
    "ipnn": "recsys_dist.models.ipnn:IPNNArch",
    "deepfm": "recsys_dist.models.deepfm:DeepFMArch",
    "xdeepfm": "recsys_dist.models.xdeepfm:XDeepFMArch",
    "autoint": "recsys_dist.models.autoint:AutoIntArch",
    "optfusion": "recsys_dist.models.optfusion:OptFusionArch",
    "xdeepint": "recsys_dist.models.pin:XDeepIntArch",
    "dynint": "recsys_dist.models.dynint:DynIntArch",
    "deepmr": "recsys_dist.models.deepmr:DeepMRArch",
    "optinter": "recsys_dist.models.optinter:OptInterArch",
}


def arch_class(name: str) -> Type[DenseArch]:
    if name not in ARCHES:
        raise KeyError(f"unknown arch {name!r}; registered: {', '.join(sorted(ARCHES))}")
    module, cls = ARCHES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def validate_arch_args(name: str, args: Mapping[str, Any]) -> None:
    """Unknown or missing constructor arguments fail here, before any data is read."""
    cls = arch_class(name)
    sig = inspect.signature(cls.__init__)
    params = {k: p for k, p in sig.parameters.items() if k not in ("self", "inputs")}
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(args) - set(params))
    if unknown:
        raise KeyError(
            f"arch {name!r} has no argument(s) {', '.join(unknown)} (arch_args); it takes: {', '.join(params)}"
        )
    missing = [k for k, p in params.items() if p.default is p.empty and p.kind != p.VAR_POSITIONAL and k not in args]
    if missing:
        raise KeyError(f"arch {name!r} needs arch_args: {', '.join(missing)}")


def build_arch(name: str, inputs: ArchInputs, args: Mapping[str, Any]) -> DenseArch:
    validate_arch_args(name, args)
    return arch_class(name)(inputs, **dict(args))
