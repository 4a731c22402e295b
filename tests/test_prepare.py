"""Criteo ingest on handmade rows: exact ids and dense values, OOV, empty fields, bad rows, gz, strict, splits."""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import List, Optional

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys_dist.config import PrepareConfig
from recsys_dist.data import criteo_encode as enc
from recsys_dist.data.criteo_prepare import PrepareError, prepare_criteo
from recsys_dist.data.criteo_schema import CATEGORICAL_NAMES, DENSE_NAMES
from recsys_dist.data.metadata import Metadata


def row(label: object = 1, dense: Optional[List[str]] = None, cats: Optional[List[str]] = None) -> str:
    dense = dense if dense is not None else [str(i) for i in range(13)]
    cats = cats if cats is not None else [f"{i:08x}" for i in range(1, 27)]
    return "\t".join([str(label)] + dense + cats)


def write(path: Path, lines: List[str], gz: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def read_split(out: Path, split: str) -> dict:
    md = Metadata.load(out)
    tables = [pq.read_table(out / f) for f in md.split(split).files]
    cols = {}
    for name in tables[0].column_names if tables else []:
        cols[name] = np.concatenate([t.column(name).to_numpy() for t in tables])
    return cols


def prep(tmp_path: Path, inputs: List[Path], **kw) -> Metadata:
    kw.setdefault("split", "ratio")
    kw.setdefault("val_ratio", 0.0)
    kw.setdefault("test_ratio", 0.0)
    cfg = PrepareConfig(input=[str(p) for p in inputs], out_dir=str(tmp_path / "out"), workers=1, **kw)
    return prepare_criteo(cfg, progress=False)


def test_hash_ids_and_log_dense_exact(tmp_path):
    dense = ["5", "-3", "", "0", "1", "2", "3", "10", "100", "", "7", "0", "1000000"]
    cats = ["ffffffff", "", "0000000a", "DEADBEEF"] + [f"{i:08x}" for i in range(5, 27)]
    f = write(tmp_path / "train.txt", [row(0, dense, cats), row(1)])
    md = prep(tmp_path, [f], hash_cap=1000)
    got = read_split(tmp_path / "out", "train")
    assert got["label"].tolist() == [0, 1] and got["label"].dtype == np.int8
    want = [math.log(6), 0.0, 0.0, 0.0, math.log(2), math.log(3), math.log(4), math.log(11), math.log(101), 0.0,
            math.log(8), 0.0, math.log(1000001)]
    np.testing.assert_allclose([got[n][0] for n in DENSE_NAMES], want, rtol=1e-6)
    assert got["I1"].dtype == np.float32
    assert got["C1"][0] == 0xFFFFFFFF % 1000 and got["C2"][0] == 0  # empty -> 0
    assert got["C3"][0] == 10 and got["C4"][0] == 0xDEADBEEF % 1000
    assert [got[c][1] for c in CATEGORICAL_NAMES] == [(i % 1000) for i in range(1, 27)]
    assert all(f.num_embeddings == 1000 and f.encoding == "hash" for f in md.sparse_features)
    assert md.dense_features == list(DENSE_NAMES) and md.dense_transform == "log"
    assert md.dense_stats["I1"]["max"] == pytest.approx(math.log(6), rel=1e-6)
    assert md.dense_stats["I3"]["empty_rate"] == 0.5


def test_vocab_ids_min_count_oov_and_empty(tmp_path):
    # C1 values in train: a x3, b x2, c x1 (below min_count=2) and one empty.
    c1 = ["0000000a", "0000000a", "0000000a", "0000000b", "0000000b", "0000000c", ""]
    lines = [row(1, cats=[v] + [f"{i:08x}" for i in range(2, 27)]) for v in c1]
    f = write(tmp_path / "train.txt", lines)
    md = prep(tmp_path, [f], categorical="vocab", min_count=2)
    got = read_split(tmp_path / "out", "train")
    # layout: 0 empty, 1 OOV, 2.. by descending count -> a=2, b=3; c is OOV
    assert got["C1"].tolist() == [2, 2, 2, 3, 3, 1, 0]
    assert md.feature("C1").num_embeddings == 4 and md.feature("C1").encoding == "vocab"
    assert md.feature("C2").num_embeddings == 3  # one value seen 7 times -> ids 0, 1, 2
    assert set(got["C2"].tolist()) == {2}


def test_vocab_counts_train_only_and_unseen_is_oov(tmp_path):
    mk = lambda v: row(1, cats=[v] + [f"{i:08x}" for i in range(2, 27)])  # noqa: E731
    d0 = write(tmp_path / "raw" / "day_0", [mk("00000001")] * 2 + [mk("00000002")] * 3)
    d1 = write(tmp_path / "raw" / "day_1", [mk("00000003")] * 4 + [mk("00000001")] * 2)
    md = prep(tmp_path, [tmp_path / "raw"], categorical="vocab", min_count=2, split="day")
    assert md.feature("C1").num_embeddings == 4  # values 1 and 2 kept (train = day_0); 3 only in the val/test day
    val, test = read_split(tmp_path / "out", "val"), read_split(tmp_path / "out", "test")
    assert val["C1"].tolist() == [1, 1, 1] and test["C1"].tolist() == [1, 3, 3]
    assert d0.exists() and d1.exists()


def test_bucketize_ids(tmp_path):
    dense = ["-3", "0", "1", "2", "3", "10", "", "100", "-100", "1000000", "2", "2", "2"]
    f = write(tmp_path / "train.txt", [row(1, dense)])
    md = prep(tmp_path, [f], dense="bucketize")
    got = read_split(tmp_path / "out", "train")
    lo = enc.BUCKET_LOW

    def bid(x: float) -> int:
        v = math.floor(math.log(x) ** 2) if x > 2 else x
        return int(max(v, lo)) - lo + 1

    want = [bid(-3), bid(0), bid(1), bid(2), bid(3), bid(10), 0, bid(100), bid(-100), bid(1e6), bid(2), bid(2), bid(2)]
    assert [int(got[n][0]) for n in DENSE_NAMES] == want
    assert want[4] == 2 - lo and want[5] == math.floor(math.log(10) ** 2) - lo + 1
    assert md.dense_features == [] and md.dense_transform == "bucketize"
    assert [f.name for f in md.sparse_features[:13]] == list(DENSE_NAMES)
    assert all(f.encoding == "bucketize" and f.num_embeddings == enc.BUCKET_ROWS for f in md.sparse_features[:13])
    assert all(0 <= int(got[n][0]) < enc.BUCKET_ROWS for n in DENSE_NAMES)


def bad_file(tmp_path: Path, gz: bool = False) -> Path:
    lines = [
        row(1),                                        # 1 ok
        "1\t2\t3",                                     # 2 wrong column count
        row(1, dense=["x"] + ["1"] * 12),              # 3 non-integer dense
        row(0),                                        # 4 ok
        row(1, cats=["zzzzzzzz"] + ["00000001"] * 25),  # 5 non-hex
        row(2),                                        # 6 label not 0/1
        "",                                            # 7 empty line
        row(1, cats=["abc"] + ["00000001"] * 25),       # 8 wrong length
        row(0, dense=[""] * 13, cats=[""] * 26),       # 9 ok: all fields empty is legal
        row(1, dense=["1.5"] + ["1"] * 12),            # 10 non-integer dense
    ]
    return write(tmp_path / ("train.txt.gz" if gz else "train.txt"), lines, gz=gz)


@pytest.mark.parametrize("gz", [False, True])
def test_bad_rows_counted_with_line_numbers(tmp_path, gz, capsys):
    md = prep(tmp_path, [bad_file(tmp_path, gz)])
    assert md.splits["train"].rows == 3
    assert md.source["lines"] == 10 == md.splits["train"].rows + md.bad_rows["count"]  # nothing dropped silently
    br = md.bad_rows
    assert br["count"] == 7
    assert {s["line"]: s["reason"].split(":")[0] for s in br["samples"]} == {
        2: "3 tab-separated fields, expected 40", 3: "I1='x'", 5: "C1='zzzzzzzz'", 6: "label='2'", 7: "empty line", 8: "C1='abc'", 10: "I1='1.5'"}
    assert br["by_reason"] == {"column_count": 1, "dense_not_integer": 2, "categorical_not_hex": 2, "label": 1,
                               "empty_line": 1}
    assert "train.txt" in capsys.readouterr().err
    got = read_split(tmp_path / "out", "train")
    assert got["label"].tolist() == [1, 0, 0]
    assert [got[c][2] for c in ("C1", "C26")] == [0, 0] and got["I1"][2] == 0.0


def test_strict_fails_at_first_bad_row(tmp_path):
    f = bad_file(tmp_path)
    with pytest.raises(PrepareError, match=r"train\.txt:2: 3 tab-separated fields, expected 40"):
        prep(tmp_path, [f], strict=True)
    g = write(tmp_path / "b" / "train.txt", [row(1), row(1), row(1, dense=["1e3"] + ["1"] * 12), "1\t2"])
    with pytest.raises(PrepareError, match=r"train\.txt:3: I1='1e3': expected an integer"):
        prep(tmp_path, [g], strict=True)


def test_truncated_gz_keeps_complete_lines_and_reports(tmp_path):
    """A cut .gz keeps every complete line before the cut and is reported as file damage (file, last line), apart
    from the bad-row count. Would catch: the unfinished line counted as a bad row, rows lost before the cut."""
    lines = [row(i % 2, cats=[f"{i:08x}"] + ["00000001"] * 25) for i in range(3000)]
    data = ("\n".join(lines) + "\n").encode()
    blob = gzip.compress(data)
    f = tmp_path / "train.txt.gz"
    f.write_bytes(blob[: len(blob) * 2 // 3])
    md = prep(tmp_path, [f])
    assert md.bad_rows["count"] == 0 and md.bad_rows["by_reason"] == {}
    (damage,) = md.bad_rows["damaged_files"]
    rows = md.splits["train"].rows
    assert 0 < rows < 3000
    assert damage["file"] == str(f) and damage["kind"] == "truncated_gz" and damage["last_line"] == rows
    got = read_split(tmp_path / "out", "train")
    assert got["C1"].tolist() == [i % 40000000 for i in range(rows)]  # every row before the cut, in order
    assert md.source["lines"] == rows
    with pytest.raises(PrepareError, match=rf"train\.txt\.gz: truncated gzip stream .*after line {rows}\b"):
        prep(tmp_path, [f], strict=True)


def test_cli_reports_a_damaged_file_apart_from_bad_rows(tmp_path, capsys):
    """`recsys-dist prepare` on a cut .gz: stdout names the damaged file and its last line, stderr says the rows
    up to it are kept, and the bad-row count stays 0."""
    from recsys_dist.cli import main

    data = ("\n".join(row(i % 2) for i in range(2000)) + "\n").encode()
    blob = gzip.compress(data)
    (tmp_path / "raw").mkdir()
    f = tmp_path / "raw" / "train.txt.gz"
    f.write_bytes(blob[: len(blob) // 2])
    assert main(["prepare", "--input", str(f), "--out", str(tmp_path / "out"), "--workers", "1",
                 "prepare.split=ratio"]) == 0
    out, err = capsys.readouterr()
    last = Metadata.load(tmp_path / "out").bad_rows["damaged_files"][0]["last_line"]
    assert "bad rows skipped: 0" in out
    assert f"damaged file: {f}: truncated gzip stream (the file ends early) after line {last}" in out
    assert f"prepare: {f}: truncated gzip stream (the file ends early) after line {last} (" in err
    assert "the rows up to it are kept" in err


def test_day_split_halves_last_day(tmp_path):
    raw = tmp_path / "raw"
    for d, n in enumerate((4, 3, 5)):
        write(raw / f"day_{d}.gz" if d == 1 else raw / f"day_{d}",
              [row(1, dense=[str(d * 100 + i)] + ["0"] * 12) for i in range(n)], gz=(d == 1))
    md = prep(tmp_path, [raw], split="auto")
    assert md.source["split"]["mode"] == "day"
    assert (md.splits["train"].rows, md.splits["val"].rows, md.splits["test"].rows) == (7, 3, 2)
    val = np.expm1(read_split(tmp_path / "out", "val")["I1"]).round().astype(int).tolist()
    test = np.expm1(read_split(tmp_path / "out", "test")["I1"]).round().astype(int).tolist()
    train = np.expm1(read_split(tmp_path / "out", "train")["I1"]).round().astype(int).tolist()
    assert train == [0, 1, 2, 3, 100, 101, 102] and val == [200, 201, 202] and test == [203, 204]


def test_ratio_split_seeded_and_adds_up(tmp_path):
    f = write(tmp_path / "train.txt", [row(i % 2, dense=[str(i)] + ["0"] * 12) for i in range(2000)])
    md = prep(tmp_path, [f], split="auto", val_ratio=0.1, test_ratio=0.2, seed=3, rows_per_file=500)
    assert md.source["split"]["mode"] == "ratio"
    r = {s: md.splits[s].rows for s in ("train", "val", "test")}
    assert sum(r.values()) == 2000
    assert abs(r["val"] - 200) < 60 and abs(r["test"] - 400) < 80
    assert all(n <= 500 for s in md.splits.values() for n in s.rows_per_file)
    ids = {s: set(np.expm1(read_split(tmp_path / "out", s)["I1"]).round().astype(int).tolist()) for s in r}
    assert set().union(*ids.values()) == set(range(2000)) and sum(len(v) for v in ids.values()) == 2000
    assert md.splits["train"].positives == int(read_split(tmp_path / "out", "train")["label"].sum())
    first = {s: sorted(v) for s, v in ids.items()}
    md2 = prep(tmp_path, [f], split="ratio", val_ratio=0.1, test_ratio=0.2, seed=3)
    again = {s: sorted(np.expm1(read_split(tmp_path / "out", s)["I1"]).round().astype(int).tolist()) for s in r}
    assert again == first and md2.splits["val"].rows == r["val"]


def test_metadata_round_trip_and_files(tmp_path):
    f = write(tmp_path / "train.txt", [row(1), row(0)])
    md = prep(tmp_path, [f], hash_cap=77)
    back = Metadata.load(tmp_path / "out")
    assert back == md
    for s in back.splits.values():
        for rel, n in zip(s.files, s.rows_per_file):
            assert pq.ParquetFile(tmp_path / "out" / rel).metadata.num_rows == n


def test_bad_options_and_inputs(tmp_path):
    with pytest.raises(PrepareError, match="no such file"):
        prep(tmp_path, [tmp_path / "missing"])
    f = write(tmp_path / "train.txt", [row(1)])
    with pytest.raises(PrepareError, match="prepare.categorical='nope'"):
        prep(tmp_path, [f], categorical="nope")
    with pytest.raises(PrepareError, match="split=day needs"):
        prep(tmp_path, [f], split="day")


def test_parse_hex8_vectorized_edge_cases():
    import pyarrow as pa

    v, e, b = enc.parse_hex8(pa.array(["00000000", None, "ffffffff", "0000000g", "123", "", "0A0b0C0d"]))
    assert v.tolist() == [0, 0, 0xFFFFFFFF, 0, 0, 0, 0x0A0B0C0D]
    assert e.tolist() == [False, True, False, False, False, True, False]
    assert b.tolist() == [False, False, False, True, True, False, False]


def test_cli_synth_then_prepare(tmp_path, capsys):
    from recsys_dist.cli import main

    assert main(["synth", "--out", str(tmp_path / "raw"), "--days", "2", "--rows-per-day", "300"]) == 0
    assert "bayes auc 0." in capsys.readouterr().out
    assert main(["prepare", "--input", str(tmp_path / "raw"), "--out", str(tmp_path / "out"),
                 "prepare.hash_cap=100", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "300 rows" in out and "C1:100" in out
    write(tmp_path / "bad" / "train.txt", [row(1), "0\t1"])
    assert main(["prepare", "--input", str(tmp_path / "bad"), "--out", str(tmp_path / "o2"), "--strict"]) == 1
    assert "train.txt:2: 2 tab-separated fields, expected 40" in capsys.readouterr().err


def test_two_worker_processes_match_one(tmp_path, monkeypatch):
    import recsys_dist.data.criteo_prepare as cp

    raw = tmp_path / "raw"
    for d in range(3):
        write(raw / f"day_{d}", [row(i % 2, dense=[str(d * 1000 + i)] + ["1"] * 12,
                                     cats=[f"{(d * 7 + i) % 5:08x}"] + ["00000001"] * 25) for i in range(200)])
    write(raw / "day_1", [row(1)] * 50 + ["bad"] + [row(0)] * 50)
    monkeypatch.setattr(cp, "PARALLEL_MIN_BYTES", 1)
    cfgs = [PrepareConfig(input=[str(raw)], out_dir=str(tmp_path / f"o{w}"), workers=w, categorical="vocab")
            for w in (1, 2)]
    a, b = (cp.prepare_criteo(c, progress=False) for c in cfgs)
    assert a.splits == b.splits and a.sparse_features == b.sparse_features and a.bad_rows == b.bad_rows
    assert a.bad_rows["samples"][0]["line"] == 51
    logs = [(tmp_path / f"o{w}" / "bad_rows.jsonl").read_text() for w in (1, 2)]
    assert logs[0] == logs[1] and '"line": 51' in logs[0]  # the workers' bad-row files joined in input order
    for s in ("train", "val", "test"):
        assert read_split(tmp_path / "o1", s).keys() == read_split(tmp_path / "o2", s).keys()
        for k, v in read_split(tmp_path / "o1", s).items():
            np.testing.assert_array_equal(v, read_split(tmp_path / "o2", s)[k])
