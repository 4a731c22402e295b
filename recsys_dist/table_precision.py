"""fp16 table weights are refused on a CPU training run unless asked for (`model.fp16_tables_on_cpu=true`).

FBGEMM's CPU TBE rounds every fp16 row update to nearest and ignores `stochastic_rounding` (CUDA's kernels round
stochastically), so updates below half an fp16 ulp are lost: tests/test_precision.py shows 1000 SGD steps of 2e-6
moving a weight of 0.05 by 1.2e-5 instead of 2e-3, and its planted run loses 0.023 test AUC (0.7212 vs 0.7440);
fp16 rows are also slower on CPU (0.59x, docs/benchmarks.md section 3). bf16 table weights have no CPU kernel.
Checked before any process group (`recsys-dist train`, the torchx component) and again by `train()`.
"""

from __future__ import annotations

from recsys_dist.config import ConfigError, JobConfig, source_of


def check_table_precision(cfg: JobConfig, device_type: str) -> None:
    """`device_type`: where the job trains ("cpu" | "cuda")."""
    if cfg.model.embedding_dtype != "fp16" or device_type != "cpu" or cfg.model.fp16_tables_on_cpu:
        return
    raise ConfigError(
        f"{source_of(cfg, 'model.embedding_dtype')}: model.embedding_dtype=fp16 on CPU: FBGEMM's CPU kernel rounds "
        f"each fp16 row update to nearest (stochastic rounding is CUDA-only), so small updates are lost (measured: "
        f"test AUC 0.721 vs fp32's 0.744) and fp16 rows are slower on CPU (0.59x); use model.embedding_dtype=fp32 "
        f"(train.mixed_precision=bf16 speeds up the dense arch at fp32's AUC; bf16 tables have no CPU kernel), or "
        f"model.fp16_tables_on_cpu=true to train with fp16 tables anyway (docs/benchmarks.md, Precision)")
