"""The train job end to end on 2 gloo ranks, and its checkpoint evaluated in 1 process (resharded)."""

import json

import pytest

from dist_harness import run_on_ranks
from prepared_fixtures import write_dataset
from recsys_dist.config import load_config


def _cfg(root, out, *extra):
    return load_config(None, [
        f"data.dir={root}", "data.batch_size=128", "data.eval_batch_size=200", "model.embedding_dim=8",
        "model.arch_args={bottom_mlp: [16, 8], top_mlp: [16, 1]}", f"train.out_dir={out}", "train.epochs=1",
        "train.log_every_steps=2", *extra])


def _train_rank(rank, world, root, out, extra):
    from recsys_dist.train import train

    return train(_cfg(root, out, *extra))


@pytest.mark.parametrize("sharding", ["row_wise", "column_wise"])
def test_two_rank_train_then_evaluate_in_one_process(tmp_path, sharding):
    root = tmp_path / "data"
    write_dataset(root, {"train": 1024, "val": 300, "test": 333}, vocab=(50, 60, 70))
    out = tmp_path / "run"
    extra = [f"sharding.sharding_types=[{sharding}]"]
    if sharding == "column_wise":
        extra.append("sharding.constraints=" + str(_min_partition(tmp_path)))
    r0, _ = run_on_ranks(_train_rank, 2, (root, out, extra))
    assert r0["test"]["rows"] == 333  # every test row scored once, padding excluded
    plan = json.loads((out / "plan.json").read_text())
    [tables] = plan["modules"].values()
    assert {t["sharding_type"] for t in tables.values()} == {sharding}
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["event"] == "start" and lines[-1]["event"] == "end"
    assert any(x["event"] == "val" for x in lines)

    [ev] = run_on_ranks(_evaluate_rank, 1, (out,))
    assert ev["world_size"] == 1
    assert ev["rows"] == 333
    assert ev["auc"] == pytest.approx(r0["test"]["auc"], abs=1e-6)
    assert ev["logloss"] == pytest.approx(r0["test"]["logloss"], abs=1e-5)


def _min_partition(tmp_path):
    p = tmp_path / "constraints.yaml"
    p.write_text("tables:\n  '*':\n    min_partition: 4\n")
    return p


def _evaluate_rank(rank, world, out):
    from recsys_dist.evaluate import evaluate

    cfg = load_config(str(out / "config.yaml"))
    cfg.sharding.sharding_types = None
    return evaluate(cfg, out / "checkpoint", "test")
