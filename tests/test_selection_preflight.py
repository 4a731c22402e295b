"""Model selection asked of a dataset without val rows is refused before any process group (exit 2, one line)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from prepared_fixtures import write_dataset
from recsys_dist.cli import main
from recsys_dist.config import load_config
from recsys_dist.preflight import check_job

MODEL = ["model.embedding_dim=4", "model.arch_args={bottom_mlp: [8, 4], top_mlp: [8, 1]}"]


@pytest.fixture(scope="module")
def no_val(tmp_path_factory):
    root = tmp_path_factory.mktemp("no_val")
    write_dataset(root, {"train": 64, "test": 32})
    return root


def test_early_stopping_without_val_exits_2_before_work(no_val, tmp_path):
    """Defect caught: train.early_stopping.patience on data without val rows found only inside train(), after
    torch.distributed started on every rank (a traceback per rank), or a message not naming the field / folder."""
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "recsys_dist.cli", "train", "--data", str(no_val), "--out", str(run),
                        *MODEL, "train.early_stopping.patience=2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "override 'train.early_stopping.patience=2': train.early_stopping.patience=2 needs a val split" in lines[0]
    assert f"data.dir={str(no_val)!r} has no val rows (splits: train (64 rows), test (32 rows))" in lines[0]
    assert not run.exists()  # nothing started


def test_explicit_keep_best_without_val_is_refused_but_the_default_is_fine(no_val, tmp_path, capsys):
    """Defect caught: an explicit train.keep_best=true silently ignored on data without val rows, or the default
    keep_best (true) refusing every dataset without val rows."""
    assert main(["train", "--data", str(no_val), "--out", str(tmp_path / "run"), *MODEL,
                 "train.keep_best=true"]) == 2
    assert "train.keep_best=True needs a val split" in capsys.readouterr().err
    check_job(load_config(None, [f"data.dir={no_val}", *MODEL]), 1, ["train"], selection=True)  # no error
