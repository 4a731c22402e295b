"""train.compile: torch.compile (Inductor) of the dense arch's training step, cached across runs.

Only the dense arch is compiled. The sharded EmbeddingBagCollection (FBGEMM's fused kernels and optimizer, the
all-to-alls) stays eager, as DistributedModelParallel built it. TorchRec's train pipelines fx-trace the model to
find the sharded modules' inputs; a module without sharded modules inside (the dense arch) is a leaf of that trace
(torchrec.distributed.train_pipeline.tracing._get_leaf_module_names), so the trace still sees the sharded calls and
calls the compiled arch as one node. Inside the arch, Dynamo traces what fx could not (our fx-wrapped leaves such
as the oneDNN linear and the CIN kernel are plain functions to it).

Training steps (grad mode on) run the compiled forward and backward; validation, test and `recsys-dist evaluate`
run the same arch eagerly (no second compile for no-grad graphs and eval batch sizes). Shapes are static: one
compile per run, at the first step; its seconds go to metrics.jsonl / result.json as `compile_seconds`.

Inductor keeps its compiled kernels and FX graphs in a cache (TORCHINDUCTOR_CACHE_DIR): train.compile_cache, else
that variable if set, else ~/.cache/recsys_dist/inductor, so a second run of the same model compiles from cache.
CPU needs a C++ compiler (Inductor writes C++); CUDA uses Triton (the same code path; unverified here: no GPU).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

import torch

from recsys_dist.config import ConfigError


def cache_dir(configured: Optional[str]) -> Path:
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "recsys_dist" / "inductor"


def check_compiler(device: torch.device) -> None:
    """Inductor on CPU compiles C++: fail before the job with what is missing, not at the first step."""
    if device.type != "cpu":
        return
    candidates = [os.environ.get("CXX"), "g++", "clang++", "c++"]
    if not any(c and shutil.which(c) for c in candidates):
        raise ConfigError("train.compile=true on CPU needs a C++ compiler for Inductor (g++ or clang++ on PATH, "
                          "or CXX); install one or set train.compile=false")


def compile_dense_arch(model: torch.nn.Module, cache: Optional[str], device: torch.device) -> Path:
    """Compiles `model.dense_arch`'s forward for grad-mode calls, in place (parameter names unchanged, so
    checkpoints and optimizers see the same model). Returns the cache folder."""
    check_compiler(device)
    folder = cache_dir(cache)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)  # Inductor reads it when it first needs the cache
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    arch = model.dense_arch
    eager = arch.forward
    compiled = torch.compile(eager, backend="inductor", dynamic=False)

    def forward(*args, **kwargs):
        return compiled(*args, **kwargs) if torch.is_grad_enabled() else eager(*args, **kwargs)

    arch.forward = forward
    return folder


def compile_seconds() -> float:
    """Seconds this process spent compiling so far (Dynamo frames, incl. Inductor's forward, and the backward)."""
    from torch._dynamo.utils import compilation_time_metrics

    keys = [k for k in compilation_time_metrics if k.endswith("compile_inner") or k.endswith("bw_compiler")]
    return float(sum(sum(compilation_time_metrics[k]) for k in keys))
