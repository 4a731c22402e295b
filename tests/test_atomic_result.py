"""Final JSON files are written atomically (temp file + os.replace), and `compare`'s resume takes only a valid
result.json for a finished run: a cut one (a kill mid-write) is trained again, with a line saying why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys_dist.cli import main
from recsys_dist.json_file import write_json
from test_early_stopping import _write

SHARED = ["model.embedding_dim=4", "data.batch_size=256", "data.eval_batch_size=512", "train.epochs=1",
          "train.threads=1", "train.tensorboard=false", "train.log_every_steps=100", "optim.sparse_lr=0.3"]


def test_a_kill_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    """Would catch: writing the file in place (a kill after part of the text leaves a cut file under the final
    name, which a resume then reads)."""
    import os

    path = tmp_path / "result.json"
    write_json(path, {"steps": 1})

    def killed(fd):  # the process dies after the text is written, before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        write_json(path, {"steps": 2, "test": {"auc": 0.7}})
    assert json.loads(path.read_text()) == {"steps": 1}
    monkeypatch.undo()
    write_json(path, {"steps": 2})  # the next write replaces the leftover part file too
    assert json.loads(path.read_text()) == {"steps": 2} and [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_compare_resume_reruns_a_run_whose_result_json_is_cut(tmp_path, capsys):
    """Would catch: compare's resume skipping a run whose result.json is truncated (it took any result.json as
    finished), or the leaderboard crashing on it."""
    _write(tmp_path / "data")
    out = tmp_path / "cmp"
    argv = ["compare", "--data", str(tmp_path / "data"), "--out", str(out), "--seeds", "1",
            "--arch", "dlrm:{bottom_mlp: [8, 4], top_mlp: [8, 1]}", *SHARED]
    assert main(argv) == 0
    result = out / "dlrm" / "seed_0" / "result.json"
    whole = result.read_text()
    result.write_text(whole[: len(whole) // 2])  # what a kill mid-write left before the write was atomic
    capsys.readouterr()
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert f"  redo  dlrm seed 0: {result}:" in again and "not valid JSON" in again and "running it again" in again
    assert "  run   dlrm seed 0" in again and "  done  " not in again
    rerun = json.loads(result.read_text())
    assert rerun["steps"] == json.loads(whole)["steps"] and "auc" in rerun["test"]
    assert "| 1/1 |" in (out / "leaderboard.md").read_text()
