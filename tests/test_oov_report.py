"""After prepare: the per-field share of val / test rows out of the train vocabulary, in metadata and printed."""

from __future__ import annotations

from recsys_dist.cli import main
from recsys_dist.data.metadata import Metadata
from test_given_splits import _files, _schema
from test_prepare import row, write


def test_own_data_given_split_reports_unseen_users(tmp_path, capsys):
    """Defects caught: val / test values absent from train not counted (or counted against the wrong split), the
    share not in metadata.source.oov, no printed line per split, no warning naming the field above 20%."""
    raw = _files(tmp_path)  # train users a, b; val c, a (1 of 2 unseen); test d, b, d (2 of 3 unseen)
    assert main(["prepare", "--schema", str(_schema(tmp_path)), "--out", str(tmp_path / "out"), "--input",
                 f"train={raw}/train.csv", f"val={raw}/valid.csv", f"test={raw}/test_part*.csv"]) == 0
    oov = Metadata.load(tmp_path / "out").source["oov"]
    assert oov["train"]["user"] == {"oov": 0, "of": 6, "share": 0.0}
    assert oov["val"]["user"] == {"oov": 1, "of": 2, "share": 0.5}
    assert oov["test"]["user"] == {"oov": 2, "of": 3, "share": 0.666667}
    out, err = capsys.readouterr()
    assert "  val    out of the train vocabulary (OOV): mean 50.0% of rows over 1 vocab field(s), worst user 50.0%" \
        in out
    assert "prepare: warning: test: user 66.7% (2 of 3; train 0.0%) out of the train vocabulary (> 20%)" in err
    assert "prepare: warning: val: user 50.0% (1 of 2; train 0.0%)" in err


def test_criteo_vocab_reports_unseen_values_per_field_and_split(tmp_path, capsys):
    """Defects caught: the Criteo prepare not counting OOV ids per field and split (values of the last day that
    days 0-1 never had), counting train's own rows as unseen, or no warning naming the field and split."""
    raw = tmp_path / "raw"
    base = [f"{i:08x}" for i in range(1, 27)]

    def cats(c1, c2):
        return [c1, c2] + base[2:]

    write(raw / "day_0", [row(1, cats=cats("0000000a", "000000b1")), row(0, cats=cats("0000000b", "000000b1"))])
    write(raw / "day_1", [row(1, cats=cats("0000000a", "000000b1")), row(0, cats=cats("0000000b", "000000b2"))])
    # last day: first half (3 lines) val, the rest (3) test. C1: val 2 of 3 unseen, test 0 of 3; C2: 0 / 1 of 3
    write(raw / "day_2", [row(1, cats=cats("0000000c", "000000b1")), row(0, cats=cats("0000000d", "000000b2")),
                          row(1, cats=cats("0000000a", "000000b1")), row(0, cats=cats("0000000a", "000000b9")),
                          row(1, cats=cats("0000000b", "000000b1")), row(0, cats=cats("0000000b", "000000b2"))])
    assert main(["prepare", "--input", str(raw), "--out", str(tmp_path / "out"), "--categorical", "vocab",
                 "--workers", "1", "prepare.min_count=1"]) == 0
    oov = Metadata.load(tmp_path / "out").source["oov"]
    assert oov["val"]["C1"] == {"oov": 2, "of": 3, "share": 0.666667} and oov["test"]["C1"]["oov"] == 0
    assert oov["val"]["C2"]["oov"] == 0 and oov["test"]["C2"] == {"oov": 1, "of": 3, "share": 0.333333}
    assert all(v["oov"] == 0 for v in oov["train"].values()) and oov["val"]["C3"]["share"] == 0.0
    out, err = capsys.readouterr()
    assert "worst C1 66.7%" in out and "worst C2 33.3%" in out
    assert "prepare: warning: val: C1 66.7% (2 of 3; train 0.0%)" in err
    assert "prepare: warning: test: C2 33.3% (1 of 3; train 0.0%)" in err
