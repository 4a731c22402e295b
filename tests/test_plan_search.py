"""The planner's time-bounded search (embedding_sharding.search) and its fast enumeration (enumerator, estimator)."""

from __future__ import annotations

import json
import logging

import pytest
from torchrec.distributed.planner.enumerators import EmbeddingEnumerator
from torchrec.distributed.planner.shard_estimators import EmbeddingPerfEstimator, EmbeddingStorageEstimator
from torchrec.distributed.planner.types import ParameterConstraints

from embedding_sharding.enumerator import SearchSpaceEnumerator
from embedding_sharding.estimator import DedupPerfEstimator, SharedShapeEstimates
from embedding_sharding.planner import make_plan, table_constraints
from embedding_sharding.report import build_report, render_text
from embedding_sharding.sharders import CTREmbeddingBagCollectionSharder
from embedding_sharding.topology import make_topology
from recsys_dist.cli import main
from recsys_dist.models.model import CTRTrainModel, build_model
from recsys_dist.models.sparse import TableSpec

MLP = {"bottom_mlp": [8, 16], "top_mlp": [4, 1]}


def _model(tables):
    return CTRTrainModel(build_model(tables, 13, "dlrm", MLP, "meta", "meta"))


def _estimates(options):
    return sorted((o.name, o.sharding_type, o.compute_kernel, o.is_weighted,
                   tuple((s.perf.fwd_compute, s.perf.fwd_comms, s.perf.bwd_compute, s.perf.bwd_comms,
                          s.storage.hbm, s.storage.ddr) for s in o.shards)) for o in options)


def test_shared_estimates_equal_torchrecs_per_option_estimates():
    """Catches a shape class that merges options whose estimates differ (a key missing e.g. the pooling factor,
    the rows or the shard sizes): every option's per-shard perf and storage must equal TorchRec's own
    estimators run on every option."""
    tables = [TableSpec(f"f{i}", 5000, 16) for i in range(4)] + [TableSpec("g", 7000, 16), TableSpec("h", 5001, 16)]
    model = _model(tables)
    topo = make_topology(4, 2, "cuda", gpu="A100-80")
    pc = table_constraints(model, {"t_f1": ParameterConstraints(pooling_factors=[7.0])})
    sharders = [CTREmbeddingBagCollectionSharder()]
    ours = SearchSpaceEnumerator(topology=topo, batch_size=64, constraints=pc, estimator=SharedShapeEstimates(
        [DedupPerfEstimator(topo, pc), EmbeddingStorageEstimator(topo, pc)], pc)).enumerate(model, sharders)
    stock = EmbeddingEnumerator(topology=topo, batch_size=64, constraints=pc, estimator=[
        EmbeddingPerfEstimator(topo, pc), EmbeddingStorageEstimator(topo, pc)]).enumerate(model, sharders)
    assert len(ours) == len(stock) > 6
    assert _estimates(ours) == _estimates(stock)


def test_search_stops_at_its_budget_and_says_so():
    """Catches a search that ignores the budget (the 351-table case ran for minutes), a stop that is not reported,
    or a budget that leaves no plan: 60 tables on 16 ranks cannot be searched fully in 0.3 s."""
    model = _model([TableSpec(f"f{i}", 2000 + 100 * i, 16) for i in range(60)])
    topo = make_topology(16, 8, "cuda", gpu="A100-80")
    res = make_plan(model, topo, [CTREmbeddingBagCollectionSharder()], batch_size=64, time_budget_s=0.3)
    s = res.search
    assert s.stopped_early and s.seconds < 0.3 + 5  # the proposal running at the deadline finishes
    assert any(not r.finished for r in s.runs) and s.best_ms is not None
    assert len(res.options) == 60 and res.plan.plan
    report = build_report(res)
    assert report["search"]["stopped_early"] is True
    assert "stopped early at the 0.3 s budget" in render_text(report)
    assert report["totals"]["max_rank_total_ms"] == pytest.approx(s.best_ms)


def test_full_search_and_generous_budget_agree_on_a_small_model():
    """Catches a budgeted search that drops a proposer or keeps a worse plan than TorchRec's full search when the
    budget suffices: same slowest-rank estimate, every proposer finished, nothing reported as cut."""
    model = _model([TableSpec(f"f{i}", 3000 * (i + 1), 16) for i in range(4)])
    topo = make_topology(4, 4, "cuda", gpu="A100-80")
    sharders = [CTREmbeddingBagCollectionSharder()]
    full = make_plan(model, topo, sharders, batch_size=64, time_budget_s=None)
    budgeted = make_plan(model, topo, sharders, batch_size=64, time_budget_s=600)
    assert not budgeted.search.stopped_early and not full.search.stopped_early
    assert all(r.finished for r in budgeted.search.runs)
    assert budgeted.search.best_ms == pytest.approx(full.search.best_ms)
    assert build_report(budgeted)["totals"]["max_rank_total_ms"] == pytest.approx(
        build_report(full)["totals"]["max_rank_total_ms"])


def test_plan_cli_shows_progress_and_the_early_stop(tmp_path, capsys):
    """Catches a `plan` that searches silently or hides that it stopped early: the user's command (default
    flags but a tiny budget) prints progress on stderr and the JSON report records the stop."""
    out = tmp_path / "p.json"
    assert main(["plan", "--preset", "criteo-kaggle", "--world-size", "16", "--local-world-size", "8", "--gpu",
                 "H100", "--time-budget", "0.05", "--format", "json", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "sharding options enumerated" in err and "plan search:" in err
    assert "stopped early at the 0.05 s budget" in err
    report = json.loads((tmp_path / "p.report.json").read_text())
    assert report["search"]["stopped_early"] is True and report["search"]["budget_s"] == 0.05
    logging.getLogger("embedding_sharding.search").handlers.clear()


def test_plan_cli_refuses_a_negative_budget(capsys):
    """Catches a negative --time-budget taken as 'no budget' or crashing deep in the planner."""
    with pytest.raises(SystemExit) as e:  # argparse's range-checked type (config.RANGES) refuses it: exit 2
        main(["plan", "--preset", "criteo-kaggle", "--world-size", "8", "--time-budget", "-1"])
    assert e.value.code == 2
    assert "argument --time-budget: -1 must be >= 0" in capsys.readouterr().err


def test_train_shows_the_plan_search_when_it_plans_at_start_up(tmp_path):
    """Catches a train job that plans silently (the search's progress and its 'stopped early / searched every
    proposal' line only went to a logger nobody printed): `recsys-dist train` as a user runs it, world of one."""
    import subprocess
    import sys

    from prepared_fixtures import write_dataset

    write_dataset(tmp_path / "data", {"train": 64})
    proc = subprocess.run(
        [sys.executable, "-m", "recsys_dist.cli", "train", f"data.dir={tmp_path / 'data'}", "data.batch_size=32",
         f"train.out_dir={tmp_path / 'run'}", "train.max_steps=1", "train.checkpoint=false", "train.threads=1",
         "train.tensorboard=false", "model.embedding_dim=8", "model.arch_args.bottom_mlp=[8,8]",
         "model.arch_args.top_mlp=[4,1]"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sharding options enumerated" in proc.stderr and "plan search:" in proc.stderr
    assert "searched every proposal" in proc.stderr or "stopped early at the 10 s budget" in proc.stderr
