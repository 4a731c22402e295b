"""Given splits: per-split files (`--input train=... val=... test=...`, or the schema's split.train / val / test with
globs), a split column, the Criteo papers' named day splits; vocabularies and statistics from train rows only; a
loud word (error or warning) whenever given files and another split rule meet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys_dist.cli import main
from recsys_dist.config import PrepareConfig
from recsys_dist.data.bad_rows import PrepareError
from recsys_dist.data.criteo_prepare import prepare_criteo
from recsys_dist.data.metadata import Metadata
from recsys_dist.data.schema_file import SchemaError, load_schema
from recsys_dist.data.tabular_prepare import prepare_tabular

HEADER = "ts,user,price,clicked\n"
# train users a / b, prices 1..4; val and test have users (c, d) and prices (100, 1000) seen nowhere in train,
# and timestamps OLDER than train's: a time split of the pooled files would move them into train.
TRAIN = [("2024-02-01", "a", "1", "1"), ("2024-02-02", "b", "2", "0"), ("2024-02-03", "a", "3", "1"),
         ("2024-02-04", "b", "4", "0"), ("2024-02-05", "a", "2", "1"), ("2024-02-06", "b", "3", "0")]
VAL = [("2024-01-01", "c", "100", "1"), ("2024-01-02", "a", "2", "0")]
TEST = [("2024-01-03", "d", "1000", "0"), ("2024-01-04", "b", "1", "1"), ("2024-01-05", "d", "3", "1")]
SCHEMA = """\
label: clicked
SPLIT
categorical:
  - {column: user, min_count: 1}
numeric:
  - {column: price, name: price_log, transform: log}
  - {column: price, name: price_mm, transform: minmax}
"""


def _csv(path: Path, rows, extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER.rstrip("\n") + extra + "\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


def _files(tmp: Path) -> Path:
    raw = tmp / "raw"
    _csv(raw / "train.csv", TRAIN)
    _csv(raw / "valid.csv", VAL)
    _csv(raw / "test_part1.csv", TEST[:1])
    _csv(raw / "test_part2.csv", TEST[1:])
    return raw


def _schema(tmp: Path, split: str = "") -> Path:
    p = tmp / "raw" / "schema.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(SCHEMA.replace("SPLIT", split))
    return p


def _column(out: Path, split: str, name: str) -> np.ndarray:
    return np.concatenate([pq.read_table(out / f).column(name).to_numpy()
                           for f in Metadata.load(out).split(split).files] or [np.zeros(0)])


def _assert_given_split(out: Path) -> None:
    md = Metadata.load(out)
    assert {s: md.split(s).rows for s in ("train", "val", "test")} == {"train": 6, "val": 2, "test": 3}
    assert list(_column(out, "train", "label")) == [int(r[3]) for r in TRAIN]  # input order, file boundaries kept
    assert list(_column(out, "val", "label")) == [int(r[3]) for r in VAL]
    assert list(_column(out, "test", "label")) == [int(r[3]) for r in TEST]
    # vocabulary from train only: 0 empty, 1 OOV, then a, b; val's c and test's d are OOV, not new ids
    assert md.feature("user").num_embeddings == 4
    assert list(_column(out, "val", "user")) == [1, 2] or list(_column(out, "val", "user")) == [1, 3]
    assert _column(out, "test", "user")[0] == 1 and _column(out, "test", "user")[2] == 1
    # min / max and the dense statistics over train rows only (val / test prices 100, 1000 leak nowhere)
    assert md.source["minmax"]["price_mm"] == [1.0, 4.0]
    assert _column(out, "test", "price_mm")[0] == pytest.approx(1.0)  # 1000 clipped to the train max
    train_log = np.log1p(np.array([float(r[2]) for r in TRAIN]))
    assert md.dense_stats["price_log"]["mean"] == pytest.approx(train_log.mean(), rel=1e-5)
    assert md.dense_stats["price_log"]["max"] == pytest.approx(train_log.max(), rel=1e-5)
    assert md.source["split"]["mode"] == "files"


def test_named_input_files_are_the_split_and_only_train_feeds_vocab_and_stats(tmp_path, capsys):
    """Catches: split files pooled / re-split, or val / test values leaking into the vocabulary or statistics."""
    raw = _files(tmp_path)
    rc = main(["prepare", "--schema", str(_schema(tmp_path)), "--out", str(tmp_path / "out"), "--input",
               f"train={raw}/train.csv", f"val={raw}/valid.csv", f"test={raw}/test_part*.csv"])
    assert rc == 0
    _assert_given_split(tmp_path / "out")
    md = Metadata.load(tmp_path / "out")
    assert [Path(f).name for f in md.source["split"]["files"]["test"]] == ["test_part1.csv", "test_part2.csv"]
    assert "pooled" not in capsys.readouterr().err  # no pooling warning (the OOV warning is tests/test_oov_report.py)


def test_schema_split_files_with_glob_relative_to_the_schema(tmp_path):
    """Catches: schema split files not read, globs not expanded, or paths taken relative to the cwd."""
    _files(tmp_path)
    schema = _schema(tmp_path, "split: {train: train.csv, val: [valid.csv], test: 'test_*.csv'}")
    assert load_schema(schema).split_files["train"] == [str(tmp_path / "raw" / "train.csv")]
    prepare_tabular(PrepareConfig(out_dir=str(tmp_path / "out"), schema=str(schema)))
    _assert_given_split(tmp_path / "out")


def test_split_column_with_bad_values_reported(tmp_path):
    """Catches: a split column ignored, its aliases / case not accepted, or an unknown value silently dropped."""
    rows = [r + (f,) for r, f in zip(TRAIN + VAL + TEST, ["Train"] * 6 + [" valid", "val", "TEST", "test", "test"])]
    rows.append(("2024-03-01", "e", "1", "0", "holdout"))
    raw = _csv(tmp_path / "raw" / "all.csv", rows, extra=",fold")
    schema = _schema(tmp_path, "split: {column: fold}")
    md = prepare_tabular(PrepareConfig(input=[str(raw)], out_dir=str(tmp_path / "out"), schema=str(schema)))
    assert {s: md.split(s).rows for s in ("train", "val", "test")} == {"train": 6, "val": 2, "test": 3}
    assert md.feature("user").num_embeddings == 4 and md.source["minmax"]["price_mm"] == [1.0, 4.0]
    assert md.bad_rows["by_reason"] == {"split_value": 1}
    assert md.bad_rows["samples"][0]["line"] == 13 and "fold='holdout': expected train, val" in \
        md.bad_rows["samples"][0]["reason"]


@pytest.mark.parametrize("split, inputs, message", [
    ("timestamp: ts\nsplit: {train: train.csv, val: valid.csv}", [], r"schema\.yaml:2: timestamp='ts' and split "
     r"files .* remove `timestamp:`"),
    ("timestamp: ts", ["train=T", "val=V"], r"schema\.yaml:2: prepare\.input names split files .* remove timestamp"),
    ("split: {train: train.csv}", ["X"], r"schema\.yaml:2: the schema names the split files .* in one place"),
    ("", ["train=T", "extra.csv"], r"mixes split files \(train=\.\.\.\) with plain inputs \['extra\.csv'\]"),
    ("", ["val=V"], r"names val files but no train=PATH"),
    ("split: {train: train.csv, val: 0.1}", [], r"schema\.yaml:2: split\.val=0\.1: a ratio / seed beside split files"),
    ("split: {column: fold, test: 0.2}", [], r"schema\.yaml:2: split\.test: beside split\.column"),
    ("timestamp: ts\nsplit: {column: fold}", [], r"schema\.yaml:2: timestamp='ts' and split\.column"),
    ("split: {train: 'nothing_*.csv'}", [], r"schema\.yaml:2: '.*/raw/nothing_\*\.csv' matches no file"),
])
def test_given_split_conflicts_are_errors(tmp_path, split, inputs, message):
    """Catches: a given split silently overridden by (or mixed with) a time split, ratios, a column or plain files."""
    raw = _files(tmp_path)
    inputs = [i.replace("T", str(raw / "train.csv")).replace("V", str(raw / "valid.csv")) if "=" in i else
              str(raw / "train.csv") if i == "X" else i for i in inputs]
    with pytest.raises((SchemaError, PrepareError), match=message):
        prepare_tabular(PrepareConfig(input=inputs, out_dir=str(tmp_path / "out"),
                                      schema=str(_schema(tmp_path, split))))


def test_pooling_several_files_warns_loudly(tmp_path, capsys):
    """Catches: the issue's silent re-split of train / valid / test files by time (boundaries lost, no word)."""
    raw = _files(tmp_path)
    rc = main(["prepare", "--schema", str(_schema(tmp_path, "timestamp: ts\nsplit: {val: 0.2, test: 0.2}")),
               "--out", str(tmp_path / "out"), "--input", str(raw / "train.csv"), str(raw / "valid.csv"),
               str(raw / "test_part1.csv")])
    assert rc == 0
    err = capsys.readouterr().err
    assert "3 input files (train.csv, valid.csv, test_part1.csv) are pooled and re-split by time (timestamp: ts)" \
           ": their file boundaries are NOT kept" in err
    assert "look like a given train / val / test split" in err and "--input train=PATH val=PATH" in err
    md = Metadata.load(tmp_path / "out")
    assert md.source["split"]["warnings"] and md.source["split"]["mode"] == "time"


# -- Criteo: the papers' day protocols --------------------------------------------------------------------------
def _criteo_line(label: int, c1: int) -> str:
    return "\t".join([str(label)] + ["1"] * 13 + [f"{c1:08x}"] + ["0000000a"] * 25) + "\n"


def test_criteo_kaggle_split_is_dlrm_seven_days(tmp_path):
    """Catches: a wrong day cut (DLRM: L // 7 lines a day, the first L % 7 days one more; day 7 halves into val /
    test), or day-7 values entering the train vocabulary."""
    lines = 45  # 45 = 7 * 6 + 3: days of 7, 7, 7, 6, 6, 6, 6 lines -> train 1-39, val 40-42, test 43-45
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "train.txt").write_text("".join(_criteo_line(i % 2, 1 + i % 3 if i < 39 else 100 + i)
                                                        for i in range(lines)))
    md = prepare_criteo(PrepareConfig(input=[str(tmp_path / "raw")], out_dir=str(tmp_path / "out"),
                                      split="criteo_kaggle", categorical="vocab", min_count=1, workers=1),
                        progress=False)
    assert {s: md.split(s).rows for s in ("train", "val", "test")} == {"train": 39, "val": 3, "test": 3}
    assert md.source["split"] == {"mode": "criteo_kaggle", "days": 7, "train_lines": "1-39", "val_lines": "40-42",
                                  "test_lines": "43-45"}
    assert md.feature("C1").num_embeddings == 2 + 3  # the 3 train values; the 6 day-7 values are OOV
    assert set(_column(tmp_path / "out", "test", "C1")) == {1}
    with pytest.raises(PrepareError, match="criteo_kaggle cuts one file"):
        (tmp_path / "more.txt").write_text(_criteo_line(0, 1))  # (day files beside a train.txt: refused before)
        prepare_criteo(PrepareConfig(input=[str(tmp_path / "raw" / "train.txt"), str(tmp_path / "more.txt")],
                                     out_dir=str(tmp_path / "o2"), split="criteo_kaggle"), progress=False)


def test_criteo_terabyte_split_needs_days_0_to_23(tmp_path):
    """Catches: criteo_terabyte run on a partial set of days (it must test on day 23, not whatever day is last)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for d in range(24):
        (raw / f"day_{d}").write_text(_criteo_line(d % 2, d) * 2)
    md = prepare_criteo(PrepareConfig(input=[str(raw)], out_dir=str(tmp_path / "out"), split="criteo_terabyte",
                                      workers=1), progress=False)
    assert {s: md.split(s).rows for s in ("train", "val", "test")} == {"train": 46, "val": 1, "test": 1}
    assert md.source["split"]["val_test_file"].endswith("day_23")
    (raw / "day_7").unlink()
    with pytest.raises(PrepareError, match=r"criteo_terabyte needs exactly day_0 \.\. day_23 .*missing days \[7\]"):
        prepare_criteo(PrepareConfig(input=[str(raw)], out_dir=str(tmp_path / "o2"), split="criteo_terabyte"),
                       progress=False)
    json.dumps(md.source)
