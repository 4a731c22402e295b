"""Optimizers: the fused FBGEMM optimizer of sharded tables, a torch optimizer for dense params (and for
data-parallel tables, which are never fused), and one for architecture parameters of search stages."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Tuple

import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from fbgemm_gpu.split_table_batched_embeddings_ops_training import WeightDecayMode
from torch import nn
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from recsys_dist.config import ConfigError, OptimConfig

FUSED = {
    "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
    "adagrad": EmbOptimType.EXACT_ADAGRAD,
    "sgd": EmbOptimType.EXACT_SGD,
    "adam": EmbOptimType.ADAM,
}


def fused_params(cfg: OptimConfig, device_type: str) -> Dict[str, Any]:
    """FBGEMM TBE parameters for the sharder: one spelling on every device. On CPU, FBGEMM's fused kernels do
    rowwise_adagrad / adagrad / sgd and recsys_dist.lazy_adam_kernel does adam (installed here); on CUDA FBGEMM does
    all four (unverified here: no GPU). config.validate has refused what no kernel applies."""
    params: Dict[str, Any] = {"optimizer": FUSED[cfg.sparse], "learning_rate": cfg.sparse_lr}
    if cfg.sparse in ("rowwise_adagrad", "adagrad", "adam"):
        params["eps"] = cfg.sparse_eps
    if cfg.sparse == "adam":
        # per-row bias correction, the same update as recsys_dist.lazy_adam on CPU
        params.update(beta1=cfg.beta1, beta2=cfg.beta2, use_rowwise_bias_correction=True)
        if device_type != "cuda":
            from recsys_dist.lazy_adam_kernel import install

            install()
    if cfg.weight_decay:
        params["weight_decay"] = cfg.weight_decay  # Adam: decoupled, w -= lr * wd * w (FBGEMM's and ours)
        if cfg.sparse == "rowwise_adagrad":  # L2 (added to the gradient), as torch's Adagrad weight_decay
            params["weight_decay_mode"] = WeightDecayMode.L2
    return params


def _torch_optimizer(name: str, params: List[nn.Parameter], lr: float, eps: float, wd: float,
                     betas: Tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    # On CPU torch's fused kernels do the whole update in one pass (Adagrad: ~3.5x faster than the default
    # for-loop over params, benchmarks/bench_pipeline_breakdown.py); on CUDA torch's default (foreach) is kept.
    fused = {"fused": True} if params and all(p.device.type == "cpu" for p in params) else {}
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, eps=eps, weight_decay=wd, **fused)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=wd, **fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, **fused)
    raise ConfigError(f"unknown dense optimizer {name!r}")


def build_optimizer(model: nn.Module, arch_params: Iterable[nn.Parameter], cfg: OptimConfig) -> CombinedOptimizer:
    """CombinedOptimizer of: the fused table optimizer (model.fused_optimizer), a dense one over every other
    parameter except architecture params, and (if any) an Adam over the architecture params with arch_lr."""
    arch_ids = {id(p) for p in arch_params}
    named = dict(in_backward_optimizer_filter(model.named_parameters()))
    dense = {n: p for n, p in named.items() if id(p) not in arch_ids}
    arch = {n: p for n, p in named.items() if id(p) in arch_ids}
    parts: List[Any] = [model.fused_optimizer]
    parts.append(("dense", KeyedOptimizerWrapper(
        dense, lambda ps: _torch_optimizer(cfg.dense, list(ps), cfg.dense_lr, cfg.dense_eps, cfg.weight_decay,
                                    (cfg.beta1, cfg.beta2)))))
    if arch:  # Adam's default betas, as both search codes (OptInter CriteoSearch.py, OptFusion train/search.py)
        parts.append(("arch", KeyedOptimizerWrapper(arch, lambda ps: torch.optim.Adam(list(ps), lr=cfg.arch_lr))))
    return CombinedOptimizer(parts)
