"""`recsys-dist plan`: the plan file it writes is what DMP runs; shortfall message; JSON totals; HTML in Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dist_harness import run_on_ranks
from prepared_fixtures import write_dataset
from recsys_dist.cli import main

MODEL = ["model.embedding_dim=8", "model.arch_args.bottom_mlp=[8,8]", "model.arch_args.top_mlp=[4,1]"]


def plan_cli(*argv: str) -> int:
    return main(["plan", *map(str, argv)])


def _rank_shards(rank: int, world_size: int, data_dir: str, plan_path: str):
    import torch
    import torch.distributed as dist
    from torch.distributed._shard.sharded_tensor import ShardedTensor
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.types import ShardingEnv

    from embedding_sharding.plan_file import load_plan
    from embedding_sharding.sharders import CTREmbeddingBagCollectionSharder
    from recsys_dist.config import load_config
    from recsys_dist.data.metadata import Metadata
    from recsys_dist.job import features_for
    from recsys_dist.models.model import CTRTrainModel, build_model

    cfg = load_config(None, [f"data.dir={data_dir}", *MODEL])
    md = Metadata.load(data_dir)
    module = CTRTrainModel(build_model(features_for(cfg, md).tables, md.num_dense, "dlrm",
                                       cfg.model.arch_args, sparse_device="meta"))
    plan = load_plan(plan_path, module, world_size, device="cpu")
    sharder = CTREmbeddingBagCollectionSharder()
    dmp = DistributedModelParallel(module, env=ShardingEnv.from_process_group(dist.group.WORLD),
                                   device=torch.device("cpu"), plan=plan, sharders=[sharder])
    got = {}
    for key, value in dmp.state_dict().items():
        if "embedding_bags." in key and isinstance(value, ShardedTensor):
            name = key.split("embedding_bags.")[1].removesuffix(".weight")
            got[name] = sorted((list(s.metadata.shard_offsets), list(s.metadata.shard_sizes))
                               for s in value.local_shards())
    applied = {name: p.sharding_type for name, p in dmp.plan.plan["model.sparse_arch.ebc"].items()}
    return got, applied


def test_plan_file_is_what_dmp_uses(tmp_path):
    data = tmp_path / "data"
    write_dataset(data, {"train": 64}, vocab=(40, 24, 56))
    cons = tmp_path / "c.yaml"
    cons.write_text("tables:\n  t_s0: {sharding_types: [row_wise]}\n"
                    "  t_s1: {sharding_types: [column_wise], min_partition: 4}\n"
                    "  t_s2: {sharding_types: [table_wise]}\n")
    out = tmp_path / "plan.json"
    assert plan_cli("--device", "cpu", "--world-size", "2", "--constraints", cons, "--out", out,
                    f"data.dir={data}", *MODEL) == 0
    doc = json.loads(out.read_text())
    tables = doc["modules"]["model.sparse_arch.ebc"]
    assert {n: t["sharding_type"] for n, t in tables.items()} == {
        "t_s0": "row_wise", "t_s1": "column_wise", "t_s2": "table_wise"}
    results = run_on_ranks(_rank_shards, world_size=2, args=(str(data), str(out)), timeout=300)
    for rank, (got, applied) in enumerate(results):
        assert applied == {n: t["sharding_type"] for n, t in tables.items()}
        for name, t in tables.items():
            want = sorted((s["offsets"], s["sizes"]) for s in t["shards"] if s["rank"] == rank)
            assert got.get(name, []) == want, f"rank {rank} {name}: DMP shards {got.get(name)} != plan {want}"


def test_too_small_topology_gives_the_shortfall(capsys):
    code = plan_cli("--preset", "criteo-kaggle", "--device", "cpu", "--world-size", "2", "--ddr-gib", "2")
    err = capsys.readouterr().err
    assert code == 3
    assert "do not fit" in err and "missing" in err
    assert "t_C3" in err and "10,131,227" in err  # the largest Kaggle table is named with its size
    assert "--world-size" in err and "max_rows_per_table" in err and "embedding_dim" in err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def kaggle_json(tmp_path_factory):
    d = tmp_path_factory.mktemp("plan")
    cons = d / "mixed.yaml"
    cons.write_text("tables:\n  t_C3: {sharding_types: [row_wise]}\n"
                    "  t_C4: {sharding_types: [column_wise], min_partition: 32}\n"
                    "  t_C12: {sharding_types: [table_row_wise]}\n  t_C21: {sharding_types: [table_column_wise],"
                    " min_partition: 32}\n  t_C9: {sharding_types: [data_parallel]}\n")
    out = d / "k.json"
    code = plan_cli("--preset", "criteo-kaggle", "--device", "cuda", "--gpu", "A100-40", "--world-size", "4",
                    "--local-world-size", "2", "--constraints", cons, "--format", "json", "--format", "html",
                    "--compare", "world_size=8,hbm_gib=16", "--out", out, "model.max_rows_per_table=200000")
    assert code == 0
    return out


def test_json_totals_add_up(kaggle_json):
    doc = json.loads(kaggle_json.with_name("k.report.json").read_text())
    for rep, ws in ((doc["a"], 4), (doc["b"], 8)):
        assert rep["topology"]["world_size"] == ws
        kinds = {t["name"]: t["sharding_type"] for t in rep["tables"]}
        assert kinds["t_C3"] == "row_wise" and kinds["t_C9"] == "data_parallel"
        assert kinds["t_C12"] == "table_row_wise" and kinds["t_C21"] == "table_column_wise"
        per_rank = np.zeros(ws)
        for t in rep["tables"]:
            cover = np.zeros((t["rows"], t["dim"]), dtype=np.int32)
            for s in t["shards"]:
                (r0, c0), (nr, nc) = s["offsets"], s["sizes"]
                cover[r0:r0 + nr, c0:c0 + nc] += 1
                per_rank[s["rank"]] += s["hbm_bytes"]
            expect = ws if t["sharding_type"] == "data_parallel" else 1  # replicas vs an exact tiling
            assert (cover == expect).all(), f"{t['name']}: shards do not tile the table"
            assert t["hbm_bytes"] == sum(s["hbm_bytes"] for s in t["shards"])
        assert [r["hbm_used"] for r in rep["ranks"]] == per_rank.astype(int).tolist()
        assert rep["totals"]["hbm_used"] == sum(r["hbm_used"] for r in rep["ranks"])
        assert rep["totals"]["tables"] == len(rep["tables"]) == 26
        assert sum(rep["totals"]["tables_by_sharding_type"].values()) == 26
        for r in rep["ranks"]:
            assert r["hbm_free"] == r["hbm_capacity"] - r["hbm_reserved"] - r["hbm_used"] > 0
            assert r["total_ms"] == pytest.approx(r["fwd_compute_ms"] + r["fwd_comms_ms"] + r["bwd_compute_ms"]
                                                  + r["bwd_comms_ms"])
        assert "Planner Statistics" in rep["torchrec_stats"]  # TorchRec's own table, captured from its logger
    plan = json.loads(kaggle_json.read_text())["modules"]["model.sparse_arch.ebc"]
    assert {n: p["sharding_type"] for n, p in plan.items()} == {t["name"]: t["sharding_type"]
                                                                for t in doc["a"]["tables"]}


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_html_renders_in_headless_chromium(kaggle_json, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    page = kaggle_json.with_name("k.html")
    html = page.read_text()
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    shot = tmp_path / "plan.png"
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
             "--window-size=1400,1800", "--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "CONSOLE" not in dom.stderr and "Uncaught" not in dom.stderr, dom.stderr[-2000:]
    assert dom.stdout.count("<svg") == 6 and dom.stdout.count("<rect") > 50  # 3 charts x 2 plans, drawn
    sub = subprocess.run(flags + [f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert sub.returncode == 0 and shot.stat().st_size > 10_000, sub.stderr[-2000:]
    keep = Path(__file__).parent.parent / "plans" / "screenshot.png"  # for a person to look at (untracked)
    if keep.parent.is_dir():
        shutil.copy(shot, keep)
