"""docs/data.md's id layout of `prepare.dense=bucketize`, through the CLI: the table size it states and the ids of
the extreme values of an int64 field."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from recsys_dist.cli import main


def _line(label: int, i1: str) -> str:
    return "\t".join([str(label), i1] + [""] * 12 + ["0a1b2c3d"] * 26) + "\n"


def test_bucketize_table_has_the_documented_rows(tmp_path):
    """Catches a table size that is not docs/data.md's (the doc said 1927, the code wrote 1924), or an id of the
    largest / smallest int64 outside the table."""
    raw = tmp_path / "train.txt"
    values = ["9223372036854775807", "-9223372036854775808", "", "2", "3"]
    raw.write_text("".join(_line(k % 2, v) for k, v in enumerate(values)))
    assert main(["prepare", "--input", str(raw), "--out", str(tmp_path / "out"), "--dense", "bucketize",
                 "prepare.split=ratio", "prepare.val_ratio=0.01", "prepare.test_ratio=0.01", "--strict"]) == 0
    md = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert {f["num_embeddings"] for f in md["sparse_features"] if f["encoding"] == "bucketize"} == {1924}
    ids = [i for part in sorted((tmp_path / "out").glob("*/*.parquet"))
           for i in pq.read_table(part).column("I1").to_pylist()]
    assert sorted(ids) == [0, 1, 18, 19, 1923]  # empty, int64 min (clamped to -16), x = 3 (v 1), x = 2, int64 max
