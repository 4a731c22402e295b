"""`recsys-dist compare`: 2 arches x 2 seeds on a tiny planted dataset through the real CLI; the leaderboard's
numbers are the runs' own, the page is self-contained, each row's command is the one that ran, and a second
invocation resumes (skips finished runs, reruns an unfinished one, refuses a changed config)."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from recsys_dist.cli import main
from test_early_stopping import _write

ARCHES = ["dlrm:{bottom_mlp: [8, 4], top_mlp: [8, 1]}", "dcnv2:{num_cross_layers: 1, dnn: [8, 1], dense_mlp: [8, 4]}"]
SHARED = ["model.embedding_dim=4", "data.batch_size=256", "data.eval_batch_size=512", "train.epochs=2",
          "train.threads=1", "train.tensorboard=false", "train.log_every_steps=100", "optim.sparse_lr=0.3"]


def _compare(data: Path, out: Path, *extra: str) -> int:
    argv = ["compare", "--data", str(data), "--out", str(out), "--seeds", "2", "--jobs", "2"]
    for a in ARCHES:
        argv += ["--arch", a]
    return main(argv + SHARED + list(extra))


def test_compare_two_arches_two_seeds_leaderboard_and_resume(tmp_path, capsys):
    """Catches: a leaderboard whose numbers are not the runs' (mean / std over seeds), missing curves / sizes /
    commands, a page that fetches anything, finished runs retrained, unfinished runs not rerun, a changed config
    mixed into old results."""
    _write(tmp_path / "data")
    out = tmp_path / "cmp"
    assert _compare(tmp_path / "data", out) == 0
    first = capsys.readouterr().out
    assert first.count("  run   ") == 4 and "compare: 4 runs (2 entries x 2 seeds)" in first
    results = {(a, k): json.loads((out / a / f"seed_{k}" / "result.json").read_text())
               for a in ("dlrm", "dcnv2") for k in (0, 1)}
    assert {r["steps"] for r in results.values()} == {16}  # the same budget: 2 epochs of 8 steps
    md = (out / "leaderboard.md").read_text()
    for arch in ("dlrm", "dcnv2"):
        aucs = [results[arch, k]["test"]["auc"] for k in (0, 1)]
        row = next(line for line in md.splitlines() if line.startswith("| ") and f"| {arch} | {arch} |" in line)
        assert f"{statistics.fmean(aucs):.4f} ± {statistics.stdev(aucs):.4f}" in row
        assert f"{results[arch, 0]['model_size']['dense_parameters']:,}" in row and "2/2" in row
        command = (out / arch / "seed_0" / "command.txt").read_text().strip()
        assert f"`{command}`" in row
        assert command == (f"recsys-dist train --config {out / arch / 'config.yaml'} train.seed=0 data.seed=0 "
                           f"train.out_dir={out / arch / 'seed_0'}")
    assert results["dlrm", 0]["test"]["auc"] != results["dlrm", 1]["test"]["auc"]  # the seeds differ
    # ranked by validation, not test
    vals = [float(m.group(1)) for m in re.finditer(r"^\| \d+ \| \w+ \| \w+ \| ([0-9.]+) ±", md, re.M)]
    assert len(vals) == 2 and vals == sorted(vals, reverse=True)
    page = (out / "leaderboard.html").read_text()
    assert page.count('<polyline class="mean"') == 4  # val AUC and logloss, one mean curve per arch
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page and "<link" not in page

    # resume: nothing to do
    assert _compare(tmp_path / "data", out) == 0
    again = capsys.readouterr().out
    assert "  run   " not in again and again.count("  done  ") == 4
    # a damaged metrics.jsonl (a torn last line, a bad line in the middle) is named, the rest still drawn
    log = out / "dlrm" / "seed_0" / "metrics.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:2] + ["{\"event\": \"val\", \"st"] + lines[2:]) + "\n{\"event\": \"tra")
    assert _compare(tmp_path / "data", out) == 0
    capsys.readouterr()
    md = (out / "leaderboard.md").read_text()
    assert f"{log}:3: not a metrics record" in md and "(and 1 more line(s))" in md
    assert f"{log}:3: not a metrics record" in (out / "leaderboard.html").read_text()
    assert (out / "leaderboard.html").read_text().count('<polyline class="mean"') == 4
    # an unfinished run is rerun, alone
    (out / "dcnv2" / "seed_1" / "result.json").unlink()
    before = (out / "dlrm" / "seed_0" / "result.json").stat().st_mtime_ns
    assert _compare(tmp_path / "data", out) == 0
    third = capsys.readouterr().out
    assert third.count("  run   ") == 1 and "run   dcnv2 seed 1" in third
    assert (out / "dlrm" / "seed_0" / "result.json").stat().st_mtime_ns == before
    # another budget into the same folder is refused before anything trains
    assert _compare(tmp_path / "data", out, "train.epochs=3") == 2
    assert "made with another config (differs in train.epochs)" in capsys.readouterr().err


def test_multi_rank_runs_go_through_torchrun():
    """Catches: --ranks N ignored (each run would train on 1 process while the table says N), or a shown command
    that is not the one executed."""
    import sys

    from recsys_dist.cli.compare import _command

    r = _command(Path("/o/dlrm/config.yaml"), 3, Path("/o/dlrm/seed_3"), 2)
    tail = ["train", "--config", "/o/dlrm/config.yaml", "train.seed=3", "data.seed=3", "train.out_dir=/o/dlrm/seed_3"]
    assert r.argv == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                      "recsys_dist.cli", *tail]
    assert r.shown == "torchrun --standalone --nproc_per_node=2 -m recsys_dist.cli " + " ".join(tail)


def test_bad_key_refused_up_front_and_failed_run_reported(tmp_path, capsys):
    """Catches: a config error found only after runs started, a failed run reported as a result (exit 0), or
    one reported without its cause (the tail of its train.log)."""
    _write(tmp_path / "data")
    assert _compare(tmp_path / "data", tmp_path / "a", "train.no_such_key=1") == 2
    assert "no_such_key" in capsys.readouterr().err and not (tmp_path / "a" / "dlrm").exists()
    argv = ["compare", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "b"), "--seeds", "1",
            "--arch", "dlrm:{bottom_mlp: [8, 5], top_mlp: [8, 1]}", *SHARED]  # bottom MLP must end at the dim (4)
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "FAILED (exit" in out and "dlrm seed 0 (NOT FINISHED" in (tmp_path / "b" / "leaderboard.md").read_text()
    assert "    | recsys-dist train: config error:" in out and "bottom_mlp must end" in out  # the cause, shown


def test_compare_on_two_ranks_ranks_like_one_process(tmp_path, capsys):
    """Catches: `compare --ranks 2` runs that do not train on 2 ranks, that train another model than one process
    on the same global batches (e.g. each rank reading every row), a leaderboard whose numbers are not the 2-rank
    run's own result.json, and compare under torchrun (rank 0 orchestrates) starting runs that take the outer
    launch's rank and store (they hung waiting for its rank 1)."""
    from test_cli_launch import torchrun
    from test_own_data import _single_process_copy

    from prepared_fixtures import write_dataset

    write_dataset(tmp_path / "data", {"train": 512, "val": 128, "test": 256}, vocab=(7, 11, 13))
    _single_process_copy(tmp_path / "data", tmp_path / "data1", 2, 32)  # 1 process sees the 2 ranks' batches
    budget = ["--seeds", "1", "--arch", ARCHES[0], *SHARED[:1], "data.batch_size=64", "data.eval_batch_size=128",
              "data.shuffle=false", "train.epochs=1", "train.threads=1", "train.tensorboard=false",
              "sharding.sharding_types=[data_parallel]"]  # one plan (and optimizer) on 1 and 2 ranks
    torchrun("compare", "--data", tmp_path / "data", "--out", tmp_path / "cmp2", "--ranks", "2", *budget,
             timeout=240)  # the user's launch: torchrun --nproc-per-node 2 -m recsys_dist.cli compare --ranks 2
    assert main(["compare", "--data", str(tmp_path / "data1"), "--out", str(tmp_path / "cmp1"), *budget]) == 0
    boards = {}
    for ranks in (2, 1):
        out = tmp_path / f"cmp{ranks}"
        [row] = json.loads((out / "leaderboard.json").read_text())
        result = json.loads((out / "dlrm" / "seed_0" / "result.json").read_text())
        assert result["world_size"] == ranks and result["steps"] == 8
        assert row["test_auc"][0] == result["test"]["auc"] and row["val"][0] == result["val"]["auc"]
        boards[ranks] = row
    assert (tmp_path / "cmp2" / "dlrm" / "seed_0" / "command.txt").read_text().startswith(
        "torchrun --standalone --nproc_per_node=2 -m recsys_dist.cli train ")
    assert boards[2]["test_auc"][0] == pytest.approx(boards[1]["test_auc"][0], abs=1e-4)
    assert boards[2]["test_logloss"][0] == pytest.approx(boards[1]["test_logloss"][0], abs=1e-4)
    assert boards[2]["val"][0] == pytest.approx(boards[1]["val"][0], abs=1e-4)
    md = (tmp_path / "cmp1" / "leaderboard.md").read_text()  # one seed: its value, not "± 0.0000" (std unknown)
    assert f" {boards[1]['test_auc'][0]:.4f} |" in md and "±" not in md.split("| 1 |")[1].split("\n")[0], md
