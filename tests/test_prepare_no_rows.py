"""A prepare that keeps no train row is an error, not a dataset (Criteo and own-data paths alike): every line bad,
no line at all, or a split that leaves train empty exit 1 naming the file, line and what was expected, and leave
no metadata.json (nor an older run's) that `train` would read. Some bad lines among good ones stay the house
policy: skipped, recorded, exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from recsys_dist.cli import main
from recsys_dist.data.metadata import Metadata
from test_prepare import row, write


def _no_dataset(out: Path) -> None:
    assert not (out / "metadata.json").exists()
    assert not list(out.rglob("*.parquet")) and not list(out.rglob(".tmp-*")), sorted(out.rglob("*"))


def test_cli_all_bad_criteo_file_exits_1_naming_line_and_no_dataset(tmp_path):
    """Would catch: an all-bad Criteo input finishing with exit 0 and an empty dataset (it did: 0 rows in every
    split, metadata.json written), or an older run's dataset left in the folder."""
    out = tmp_path / "out"
    good = write(tmp_path / "good" / "train.txt", [row(i % 2) for i in range(20)])
    cmd = [sys.executable, "-m", "recsys_dist.cli", "prepare", "--out", str(out), "--workers", "1",
           "prepare.split=ratio"]
    assert main(cmd[3:] + ["--input", str(good)]) == 0  # an older dataset in the folder
    bad = write(tmp_path / "bad" / "train.txt", ["1\t2\t3", row(2), row(1, dense=["x"] + ["1"] * 12),
                                                 row(0, cats=["zz"] + ["00000001"] * 25)])
    r = subprocess.run(cmd + ["--input", str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    assert (f"no valid rows in ['{bad}'] (4 bad: categorical_not_hex 1, column_count 1, dense_not_integer 1, "
            f"label 1); first: {bad}:1: 3 tab-separated fields, expected 40") in r.stderr, r.stderr
    _no_dataset(out)


def test_empty_criteo_input_and_no_train_rows_exit_1(tmp_path, capsys):
    """Would catch: an empty file (or an empty .gz) prepared into a 0-row dataset with exit 0; a day split whose
    train days are all bad written as a dataset of val / test rows only."""
    empty = tmp_path / "e" / "train.txt"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    assert main(["prepare", "--input", str(empty), "--out", str(tmp_path / "o1"), "--workers", "1"]) == 1
    assert f"no valid rows in ['{empty}'] (0 bad): the input holds no data lines (empty files, or a header line only)" in capsys.readouterr().err
    _no_dataset(tmp_path / "o1")

    raw = tmp_path / "raw"
    write(raw / "day_0", ["0\t1", "1\t2"])  # the train day: every line bad
    write(raw / "day_1", [row(i % 2) for i in range(4)])
    assert main(["prepare", "--input", str(raw), "--out", str(tmp_path / "o2"), "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "no train rows (2 val, 2 test rows written)" in err and "(2 bad: column_count 2)" in err
    assert f"{raw / 'day_0'}:1: 2 tab-separated fields, expected 40" in err
    _no_dataset(tmp_path / "o2")


def test_some_bad_lines_are_skipped_and_recorded_exit_0(tmp_path, capsys):
    """The policy for a partly bad file is unchanged (docs/data.md "Bad rows"): every good line is written, every
    bad one counted and recorded, exit 0. Would catch: the no-rows check firing on a partly bad input."""
    f = write(tmp_path / "train.txt", [row(1), "1\t2", row(0), row(5)])
    assert main(["prepare", "--input", str(f), "--out", str(tmp_path / "out"), "--workers", "1",
                 "prepare.split=ratio"]) == 0
    md = Metadata.load(tmp_path / "out")
    assert md.splits["train"].rows == 2 and md.bad_rows["count"] == 2 and md.source["lines"] == 4
    assert "skipped 2 bad row(s)" in capsys.readouterr().err


def test_own_data_no_rows_same_message(tmp_path, capsys):
    """The own-data path says the same: counts by kind and the first bad line; a split column with no train row
    is refused too. Would catch: the two paths drifting apart, or a val-only own dataset written."""
    (tmp_path / "s.yaml").write_text("label: clicked\ncategorical:\n  - {column: user}\n")
    (tmp_path / "c.csv").write_text("clicked,user\n1,a,b\n1\n")
    assert main(["prepare", "--schema", str(tmp_path / "s.yaml"), "--input", str(tmp_path / "c.csv"),
                 "--out", str(tmp_path / "o1")]) == 1
    err = capsys.readouterr().err
    assert f"no valid rows in ['{tmp_path / 'c.csv'}'] (2 bad: column_count 2); first: " in err
    assert f"{tmp_path / 'c.csv'}:2: 3 fields, expected 2" in err
    _no_dataset(tmp_path / "o1")

    (tmp_path / "s2.yaml").write_text("label: clicked\nsplit: {column: fold}\ncategorical:\n  - {column: user}\n")
    (tmp_path / "d.csv").write_text("clicked,user,fold\n1,a,val\n0,b,test\n")
    assert main(["prepare", "--schema", str(tmp_path / "s2.yaml"), "--input", str(tmp_path / "d.csv"),
                 "--out", str(tmp_path / "o2")]) == 1
    assert "no train rows (1 val, 1 test rows written)" in capsys.readouterr().err
    _no_dataset(tmp_path / "o2")
