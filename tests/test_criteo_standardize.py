"""`prepare --dense standardize` on Criteo: the own-data transform ((x - mean) / std, clipped to +-5) with the mean /
std of the train split's raw values only, files combined; val / test values outside are clipped and counted."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from recsys_dist.cli import main
from recsys_dist.data.metadata import Metadata
from test_prepare import row, write


def test_criteo_standardize_uses_train_statistics_only(tmp_path, capsys):
    """Would catch: val / test values leaking into the mean / std (day_2 holds I1 = 10^6, which would move both),
    the two train files' fits not combined (each file alone has another mean), empties not 0, clipping not counted."""
    def rows(values):
        return [row(k % 2, dense=[v] + ["1"] * 12) for k, v in enumerate(values)]

    raw = tmp_path / "raw"
    write(raw / "day_0", rows(["0", "2", "4", ""]))
    write(raw / "day_1", rows(["10", "-3"]))
    write(raw / "day_2", rows(["1000000", "4", "", "-1000000"]))  # val: lines 1-2, test: lines 3-4
    assert main(["prepare", "--input", str(raw), "--out", str(tmp_path / "out"), "--workers", "1",
                 "--dense", "standardize", "prepare.hash_cap=100"]) == 0
    out, err = capsys.readouterr()
    md = Metadata.load(tmp_path / "out")
    train = np.array([0, 2, 4, 10, -3], dtype=np.float64)
    fit = md.source["numeric"]["I1"]
    assert fit["count"] == 5 and fit["transform"] == "standardize" and fit["clip"] == 5.0
    assert abs(fit["mean"] - train.mean()) < 1e-12 and abs(fit["std"] - train.std()) < 1e-12
    assert (fit["min"], fit["max"]) == (-3.0, 10.0)
    assert md.source["numeric"]["I2"]["std"] == 0.0 and md.dense_transform == "standardize"

    def column(split):
        return np.concatenate([pq.read_table(tmp_path / "out" / f).column("I1").to_numpy()
                               for f in md.split(split).files])

    z = (train - train.mean()) / train.std()
    np.testing.assert_allclose(column("train"), np.float32([z[0], z[1], z[2], 0.0, z[3], z[4]]), rtol=1e-6)
    np.testing.assert_allclose(column("val"), np.float32([5.0, (4 - train.mean()) / train.std()]), rtol=1e-6)
    np.testing.assert_allclose(column("test"), np.float32([0.0, -5.0]), rtol=1e-6)
    assert md.source["numeric_clipped"]["val"]["I1"] == {"below": 0, "above": 1, "of": 2, "share": 0.5}
    assert md.source["numeric_clipped"]["test"]["I1"] == {"below": 1, "above": 0, "of": 1, "share": 1.0}
    assert "  val    numeric values clipped to the train range: I1 1 (50.00%)" in out
    assert "prepare: warning: test: I1: 100.0% of values clipped by standardize (1 below, 0 above, of 1)" in err
