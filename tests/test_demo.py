"""`recsys-dist demo`, the README's first command, run as a user runs it (smaller data through its documented
overrides): synth -> prepare -> plan -> 2-rank torchrun training -> 1-process evaluate, everything in runs/demo/."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from test_cli_launch import _env, failure_text


def test_demo_prints_test_auc_beside_bayes_and_writes_runs_demo(tmp_path):
    """Catches a demo that fails, writes outside runs/demo/, prints a test AUC that is not its run's (training's
    result.json) or an evaluate that does not reproduce it in 1 process, or leaves out the generator's AUC."""
    cmd = [sys.executable, "-m", "recsys_dist.cli", "demo", "synth.rows_per_day=4000", "train.threads=1"]
    r = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"demo: exit {r.returncode}\n{failure_text(r)}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["demo"]
    demo = tmp_path / "runs" / "demo"
    for name in ("raw/day_2", "raw/synth_report.json", "prepared/metadata.json", "plan/plan.json",
                 "plan/plan.html", "train/result.json", "train/checkpoint"):
        assert (demo / name).exists(), name
    summary = r.stdout[r.stdout.index("=== recsys-dist demo ==="):]
    train_auc = float(re.search(r"test AUC \(2-rank training\)\s+([0-9.]+)", summary).group(1))
    eval_auc = float(re.search(r"test AUC \(evaluate, 1 process\)\s+([0-9.]+)", summary).group(1))
    bayes = float(re.search(r"generator \(Bayes\) AUC\s+([0-9.]+)\s+gap", summary).group(1))
    result = json.loads((demo / "train" / "result.json").read_text())
    assert result["world_size"] == 2 and train_auc == round(result["test"]["auc"], 4)
    assert abs(eval_auc - train_auc) <= 1e-4, summary
    report = json.loads((demo / "raw" / "synth_report.json").read_text())
    assert bayes == round(report["files"]["day_2"]["bayes_auc"], 4)
    assert "run folder runs/demo/train" in summary
