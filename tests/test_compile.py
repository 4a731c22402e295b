"""train.compile (recsys_dist/compile.py): torch.compile of the dense arch only. The compiled train step gives the
eager loss curve, TorchRec's pipeline still finds (and pipelines) the sharded tables around the compiled arch,
and a second run compiles from the cache. Inductor compiles C++ on CPU: these tests take minutes on a busy box."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prepared_fixtures import write_dataset

REPO = Path(__file__).resolve().parents[1]
ARCHES = {
    "dlrm": "model.arch_args={bottom_mlp: [8, 4], top_mlp: [8, 1]}",
    "xdeepfm": "model.arch_args={cin_layers: [4, 2], dnn: [8, 1], dense_mlp: [8]}",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("compile")
    write_dataset(root / "data", {"train": 256}, vocab=(50, 60, 70))
    return root


def _overrides(tiny: Path, arch: str, out: str) -> list:
    return [f"data.dir={tiny / 'data'}", "data.batch_size=32", "data.shuffle=false", "model.embedding_dim=4",
            f"model.arch={arch}", ARCHES[arch], "train.max_steps=6", "train.log_every_steps=1",
            "train.checkpoint=false", "train.tensorboard=false", f"train.out_dir={tiny / out}",
            f"train.compile_cache={tiny / 'inductor_cache'}", "train.threads=1"]


def _train(tiny: Path, arch: str, out: str, *extra: str) -> tuple:
    p = subprocess.run([sys.executable, "-m", "recsys_dist.cli", "train", *_overrides(tiny, arch, out), *extra],
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [json.loads(x) for x in (tiny / out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in lines if r.get("event") == "train"]
    return losses, json.loads((tiny / out / "result.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_compiled_loss_curve_equals_eager_and_second_run_hits_the_cache(tiny, arch):
    """Catches a compiled step that computes something else (a wrong graph, a dropped parameter update, the
    oneDNN path under Inductor), and a cache that is not reused (every run would pay the full compile)."""
    eager, eager_result = _train(tiny, arch, f"{arch}_eager")
    compiled, first = _train(tiny, arch, f"{arch}_compiled", "train.compile=true")
    assert len(eager) == len(compiled) == 6
    assert eager[-1] != eager[0]  # it trains
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(eager), rtol=1e-4, atol=1e-5)
    assert first["compile_seconds"] > 0 and "compile_seconds" not in eager_result
    _, second = _train(tiny, arch, f"{arch}_again", "train.compile=true")
    assert second["compile_seconds"] < 0.5 * first["compile_seconds"], (first, second)
    assert any((tiny / "inductor_cache").rglob("*")), "nothing was written to train.compile_cache"


@pytest.mark.slow
def test_pipeline_still_pipelines_the_sharded_tables_under_compile(tiny):
    """TrainPipelineSparseDist fx-traces the model to find the sharded EBC's inputs; catches a compiled arch that
    hides the sharded call from that trace (the pipeline would then silently run unpipelined) or breaks it."""
    from recsys_dist.compile import compile_dense_arch
    from recsys_dist.config import load_config
    from recsys_dist.dist_env import setup_process
    from recsys_dist.job import build_sharded_model, make_reader
    from recsys_dist.optim import build_optimizer
    from recsys_dist.train import _make_pipeline

    cfg = load_config(None, _overrides(tiny, "dlrm", "pipelined"))
    env, _ = setup_process(cfg.train)
    built = build_sharded_model(cfg, env)
    compile_dense_arch(built.model, cfg.train.compile_cache, env.device)
    optimizer = build_optimizer(built.dmp, [], cfg.optim)
    reader = make_reader(cfg, built, env, "train")
    reader.set_epoch(0)
    pipeline = _make_pipeline(cfg, built, optimizer, env)
    it = iter(reader)
    losses = [float(pipeline.progress(it)[0]) for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    pipelined = [type(m).__name__ for m in pipeline._pipelined_modules]
    assert pipelined == ["ShardedEmbeddingBagCollection"], pipelined
    from recsys_dist.compile import compile_seconds

    spent = compile_seconds()
    assert spent > 0  # the compiled forward ran
    with torch.no_grad():  # evaluation runs the arch eagerly: no second compile for no-grad graphs
        built.model.dense_arch(torch.rand(5, built.metadata.num_dense), torch.randn(5, 3, 4))
    assert compile_seconds() == spent
