"""Planted-signal data for training tests: made once per test session, trained on 2 gloo ranks.

    def test_my_arch_learns(planted_data):
        result = train_planted(planted_data, "dcn", {"num_layers": 2, ...}, world_size=2)
        assert result["test"]["auc"] >= planted_data.bayes_auc - 0.02
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Sequence

from dist_harness import run_on_ranks

# 200k train rows (days 0-1), 50k val + 50k test (day 2); the generator's default seed.
# Small enough for 2 cores, big enough that the test AUC is measured to ~0.004.
DAYS, ROWS_PER_DAY, SEED = 3, 100000, 0


@dataclass
class PlantedData:
    dir: Path  # prepared dataset (dense: log)
    raw: Path
    bayes_auc: float
    report: Dict[str, Any]


def make_planted(root: Path) -> PlantedData:
    from recsys_dist.config import PrepareConfig, SynthConfig
    from recsys_dist.data.criteo_prepare import prepare_criteo
    from recsys_dist.data.synth import synthesize

    raw, prepared = root / "raw", root / "prepared"
    report = synthesize(SynthConfig(out_dir=str(raw), days=DAYS, rows_per_day=ROWS_PER_DAY, seed=SEED))
    prepare_criteo(PrepareConfig(input=[str(raw)], out_dir=str(prepared), split="day", categorical="vocab",
                                 min_count=2, workers=1))
    test_day = f"day_{DAYS - 1}"  # the day split makes the last day's halves val / test
    return PlantedData(prepared, raw, report["files"][test_day]["bayes_auc"], report)


def planted_config(data: PlantedData, out: Path, arch: str, arch_args: Dict[str, Any],
                   overrides: Sequence[str] = ()):
    """DLRM-demo-like settings on the planted data; `overrides` (section.key=value) win."""
    from recsys_dist.config import load_config, validate

    cfg = load_config(None, [
        f"data.dir={data.dir}", "data.batch_size=512", "data.eval_batch_size=8192", "model.embedding_dim=16",
        "optim.sparse_lr=0.05", "optim.dense=adam", "optim.dense_lr=0.003",
        f"train.out_dir={out}", "train.epochs=1", "train.log_every_steps=100", "train.checkpoint=false", *overrides])
    cfg.model.arch, cfg.model.arch_args = arch, dict(arch_args)
    validate(cfg)
    return cfg


def _train_rank(rank, world, data, out, arch, arch_args, overrides):
    from recsys_dist.train import train

    return train(planted_config(data, out, arch, arch_args, overrides))


def train_planted(data: PlantedData, out: Path, arch: str, arch_args: Dict[str, Any],
                  overrides: Sequence[str] = (), world_size: int = 2) -> Dict[str, Any]:
    """Trains on `world_size` gloo ranks; returns rank 0's result (test / val metrics, steps, ...)."""
    return run_on_ranks(_train_rank, world_size, (data, out, arch, arch_args, list(overrides)))[0]
