"""benchmarks/planted_floor.py must not rot: its functions on small planted data (synth 3 days x 5000 rows, prepared
as the acceptance data is: day split, vocab min_count 2) run, and the ordering the docs rely on holds: the model of
the generator's own inputs is at least as close to the generator's AUC as plain one-hot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from recsys_dist.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_floor_runs_and_the_generator_form_model_is_closest(tmp_path):
    """Would catch: planted_floor broken by a change of synth_report.json / metadata.json keys or of the prepared
    layout, a gap against the wrong AUC, the oracle fitted on the wrong fields (seen failing with the signal-free
    fields as its main effects: gap 0.083 > one-hot's 0.042)."""
    import planted_floor

    assert main(["synth", "--out", str(tmp_path / "raw"), "--days", "3", "--rows-per-day", "5000"]) == 0
    assert main(["prepare", "--input", str(tmp_path / "raw"), "--out", str(tmp_path / "prepared"), "--workers",
                 "1", "prepare.categorical=vocab", "prepare.min_count=2"]) == 0
    rows = {r["model"]: r for r in planted_floor.floors(tmp_path, l2s=(1e-3,))}
    assert list(rows) == ["oracle", "one-hot + planted crosses", "one-hot"]
    report = json.loads((tmp_path / "raw" / "synth_report.json").read_text())
    bayes = report["files"]["day_2"]["bayes_auc_halves"][1]  # the generator's AUC on the test rows
    for r in rows.values():
        assert r["bayes_auc"] == bayes and r["gap"] == bayes - r["test_auc"]
        assert 0.6 < r["test_auc"] < bayes, r  # learns something, never above the generator
    assert rows["oracle"]["gap"] <= rows["one-hot"]["gap"], rows  # 0.030 vs 0.042 when written


def test_fit_logistic_uses_the_crosses():
    """A label that is a pure pair interaction (the parity of a + b: no main effect) is learned only through the
    cross: would catch fit_logistic dropping its `crosses`, or encoding a pair so that value pairs collide
    (seen failing: crosses dropped, AUC 0.48; a * sizes[a] + b, AUC 0.93). At the acceptance data's 5000 rows a
    day the planted crosses do not show in the floors (oracle with / without them 0.727 / 0.730), so this checks
    them where they must."""
    import numpy as np
    import planted_floor

    rng = np.random.default_rng(0)

    def rows(n):
        a, b = rng.integers(0, 4, n), rng.integers(0, 6, n)
        return {"a": a, "b": b, "label": ((a + b) % 2).astype(np.int64)}

    train, test, sizes = rows(2000), rows(500), {"a": 4, "b": 6}
    with_cross = planted_floor.fit_logistic(train, test, sizes, ["a", "b"], [("a", "b")], [], 1e-4)
    without = planted_floor.fit_logistic(train, test, sizes, ["a", "b"], [], [], 1e-4)
    assert with_cross > 0.99 and without < 0.6, (with_cross, without)
