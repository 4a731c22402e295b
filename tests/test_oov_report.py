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


def test_own_data_hashed_fields_report_ids_unseen_in_train(tmp_path, capsys):
    """Defects caught: hashed fields (hash_cap) left out of the unseen-value report, train ids not collected from
    the train split alone (val's c would then count as seen), empty cells counted as values, a multi-valued field
    counted by rows instead of ids, or no printed line / warning naming the field. hash_cap 1 maps every value to
    id 0: all seen (a collision hides an unseen value: the share is a lower bound, as documented)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    files = {"train": "a,x|y,1\nb,y,0\n,x,1\n", "valid": "c,x|z,1\na,,0\n", "test": "d,w|w|y,0\nb,x,1\nd,y,1\n,y,0\n"}
    for name, body in files.items():
        (raw / f"{name}.csv").write_text("user,tags,clicked\n" + body)
    (raw / "schema.yaml").write_text(
        "label: clicked\ncategorical:\n  - {column: user, hash_cap: 1000003}\n"
        "  - {column: user, name: user_one, hash_cap: 1}\n"
        "multi_valued:\n  - {column: tags, hash_cap: 1000003}\n")
    assert main(["prepare", "--schema", str(raw / "schema.yaml"), "--out", str(tmp_path / "out"), "--input",
                 f"train={raw}/train.csv", f"val={raw}/valid.csv", f"test={raw}/test.csv"]) == 0
    hashed = Metadata.load(tmp_path / "out").source["oov_hashed"]
    assert "train" not in hashed  # every train id is a train id
    assert hashed["val"]["user"] == {"oov": 1, "of": 2, "share": 0.5}  # c unseen, a seen
    assert hashed["test"]["user"] == {"oov": 2, "of": 3, "share": 0.666667}  # d, d; the empty cell: no value
    assert hashed["val"]["tags"] == {"oov": 1, "of": 2, "share": 0.5}  # x seen, z unseen; the empty row: no id
    assert hashed["test"]["tags"] == {"oov": 2, "of": 6, "share": 0.333333}  # w, w of w w y x y y
    assert hashed["val"]["user_one"]["oov"] == 0 and hashed["test"]["user_one"] == {"oov": 0, "of": 3, "share": 0.0}
    out, err = capsys.readouterr()
    assert "  test   hashed ids unseen in train: mean 33.3% of rows over 3 hashed field(s), worst user 66.7%" in out
    assert ("prepare: warning: test: user 66.7% (2 of 3), tags 33.3% (2 of 6) with a hashed id no train value had "
            "(> 20%): never-trained embedding rows; check the split") in err


def test_train_ids_merge_blocks_exactly():
    """Defects caught: ids of blocks added after a merge (or still pending before one) lost, so values train had
    are reported unseen; counts attached to the wrong ids (or repeats lost) in a merge, so a val split's unseen
    count is off; the merge triggers every 65 536 new distinct ids."""
    import numpy as np

    from recsys_dist.data.oov_report import TrainIds

    rng = np.random.default_rng(0)
    train = rng.integers(0, 1 << 40, 300_000)
    ids = TrainIds()
    for block in np.array_split(train, 37):
        ids.add(block)
    probe = np.concatenate([train[::7], rng.integers(1 << 41, 1 << 42, 1000)])
    assert ids.seen(probe).tolist() == [True] * train[::7].size + [False] * 1000
    # a val split counted the same way: values (with repeats, over several merges) whose id train never had
    val_values = np.concatenate([rng.choice(train, 150_000), rng.integers(1 << 41, 1 << 42, 90_000)])
    val_values = np.concatenate([val_values, val_values[:5000]])  # repeats across blocks
    val = TrainIds()
    for block in np.array_split(val_values, 23):
        val.add(block)
    assert val.unseen_in(ids) == (int((~np.isin(val_values, train)).sum()), val_values.size)


def test_criteo_hashed_prepare_reports_values_unseen_in_train(tmp_path, capsys):
    """`prepare` (Criteo, categorical=hash, day split) counts per val / test split and field the values whose
    hashed id no train value had, as the own-data path does. Would catch: the report missing for Criteo (it was),
    empty cells counted as values, the per-file ids not merged (train day_0 + day_1 vs the last day), or repeats
    of an unseen value counted once."""
    base = [f"{i:08x}" for i in range(1, 27)]

    def line(c1: str, c2: str) -> str:
        return row(1, cats=[c1, c2] + base[2:])

    raw = tmp_path / "raw"
    write(raw / "day_0", [line("000000aa", "00000001"), line("000000bb", "")])
    write(raw / "day_1", [line("000000cc", "00000002")])
    # day_2: val = lines 1-3, test = lines 4-6
    write(raw / "day_2", [line("000000aa", "00000001"), line("000000dd", "00000009"), line("000000dd", ""),
                          line("000000cc", "00000002"), line("000000ee", "00000001"), line("000000bb", "")])
    assert main(["prepare", "--input", str(raw), "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    out, err = capsys.readouterr()
    report = Metadata.load(tmp_path / "out").source["oov_hashed"]
    assert report["val"]["C1"] == {"oov": 2, "of": 3, "share": round(2 / 3, 6)}  # dd twice
    assert report["val"]["C2"] == {"oov": 1, "of": 2, "share": 0.5}  # 9; the empty cell is no value
    assert report["test"]["C1"] == {"oov": 1, "of": 3, "share": round(1 / 3, 6)}  # ee
    assert report["test"]["C2"] == {"oov": 0, "of": 2, "share": 0.0}
    assert report["val"]["C3"] == {"oov": 0, "of": 3, "share": 0.0}
    assert "  val    hashed ids unseen in train: mean " in out and "worst C1 66.7%" in out
    assert "prepare: warning: val: C1 66.7% (2 of 3), C2 50.0% (1 of 2) with a hashed id no train value had" in err
