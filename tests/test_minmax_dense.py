"""`prepare.dense=minmax` on Criteo (OptInter's eq. 20): hand-checked values, train-only min / max, clipping."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_dist.cli import main
from recsys_dist.data.criteo_schema import DENSE_NAMES
from recsys_dist.data.metadata import Metadata
from test_prepare import prep, read_split, row, write


def _days(raw, train_i1, last_i1):
    """day_0 / day_1 train (I1 values given, I2 = I1 - 5, I3 empty, the rest 7), day_2 the val / test halves."""
    def lines(values):
        return [row(1, dense=[v, str(int(v) - 5) if v else "", ""] + ["7"] * 10) for v in values]

    write(raw / "day_0", lines(train_i1[:2]))
    write(raw / "day_1", lines(train_i1[2:]))
    write(raw / "day_2", lines(last_i1))


def test_minmax_values_by_hand_train_range_only_and_clipped(tmp_path):
    """Defects caught: min / max taken over val / test rows (a leak: val's 12 and -1 would widen the range and move
    every value), the transform not applied (log or raw values), out-of-range values not clipped to [0, 1], an empty
    field not 0, and the range / clip counts missing from metadata."""
    raw = tmp_path / "raw"
    _days(raw, ["2", "4", "", "10"], ["6", "12", "-1", ""])  # day_2: val = 6, 12; test = -1, empty
    md = prep(tmp_path, [raw], split="day", dense="minmax")
    assert md.dense_transform == "minmax" and md.dense_features == list(DENSE_NAMES)
    train, val, test = (read_split(tmp_path / "out", s) for s in ("train", "val", "test"))
    # I1 train range [2, 10]: (x - 2) / 8; empty -> 0
    np.testing.assert_allclose(train["I1"], [0.0, 0.25, 0.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(val["I1"], [0.5, 1.0], rtol=1e-6)  # 12 > 10: clipped to 1
    np.testing.assert_allclose(test["I1"], [0.0, 0.0], rtol=1e-6)  # -1 < 2: clipped to 0; empty -> 0
    # I2 = I1 - 5: train range [-3, 5]
    np.testing.assert_allclose(val["I2"], [0.5, 1.0], rtol=1e-6)
    assert train["I1"].dtype == np.float32
    # I3 never has a value, I4.. one value (7): no range, 0 everywhere
    assert not train["I3"].any() and not train["I4"].any() and not val["I4"].any()
    assert md.source["minmax"]["I1"] == [2.0, 10.0] and md.source["minmax"]["I2"] == [-3.0, 5.0]
    assert md.source["minmax"]["I3"] is None and md.source["minmax"]["I4"] == [7.0, 7.0]
    assert md.source["minmax_clipped"] == {"val": {"I1": 1, "I2": 1}, "test": {"I1": 1, "I2": 1}}
    assert md.dense_stats["I1"]["max"] == pytest.approx(1.0) and md.dense_stats["I1"]["empty_rate"] == 0.25
    assert Metadata.load(tmp_path / "out") == md


def test_minmax_with_vocab_counts_in_one_pass_and_cli(tmp_path, capsys):
    """Defects caught: the counting pass dropping the vocabulary or the dense range when both are asked, and the CLI
    refusing `--dense minmax` or not saying which transform it wrote."""
    raw = tmp_path / "raw"
    _days(raw, ["0", "100", "50", "25"], ["75", "200", "", ""])
    assert main(["prepare", "--input", str(raw), "--out", str(tmp_path / "out"), "--dense", "minmax",
                 "--categorical", "vocab", "--workers", "1", "prepare.min_count=1"]) == 0
    assert "(minmax)" in capsys.readouterr().out
    md = Metadata.load(tmp_path / "out")
    assert md.source["minmax"]["I1"] == [0.0, 100.0] and md.feature("C1").encoding == "vocab"
    np.testing.assert_allclose(read_split(tmp_path / "out", "val")["I1"], [0.75, 1.0], rtol=1e-6)
