"""Memory of the schema-driven `prepare` that does not grow with the input: CSV read block by block without
read-ahead (raw_files.csv_batches), each split written in row groups of ROW_GROUP_ROWS; the same rows, metadata and
bad-row lines whatever the block size."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import recsys_dist.data.tabular_prepare as tp
from recsys_dist.config import PrepareConfig
from recsys_dist.data.bad_rows import BadRows, PrepareError
from recsys_dist.data.metadata import Metadata
from recsys_dist.data.schema_file import load_schema
from test_prepare_blocks import CountingStream

SCHEMA = """\
label: clicked
TIME
split: {val: 0.15, test: 0.1, seed: 5}
categorical:
  - {column: user, min_count: 2}
  - {column: item, hash_cap: 50}
multi_valued:
  - {column: tags, separator: "|", max_length: 3}
numeric:
  - {column: price, transform: log}
  - {column: price, name: price_mm, transform: minmax}
  - {column: price, name: price_b, transform: bucketize}
  - {column: price, name: price_z}
"""
HEADER = "ts,user,item,tags,price,clicked"


def good_row(i: int) -> str:
    """A fixed-width CSV line (the no-read-ahead test counts bytes by rows)."""
    return (f"2024-01-{1 + i % 28:02d}T00:00:{i % 60:02d},u{i % 37:03d},i{i * 7 % 101:03d},"
            f"t{i % 5}|t{i % 3},{(i % 97) * 1.25:07.2f},{int(i % 3 == 0)}")


def write_schema(tmp: Path, timestamp: bool) -> Path:
    p = tmp / ("schema_time.yaml" if timestamp else "schema_ratio.yaml")
    p.write_text(SCHEMA.replace("TIME", "timestamp: ts" if timestamp else ""))
    return p


def test_csv_reader_holds_one_block_not_a_read_ahead(tmp_path, monkeypatch):
    # pyarrow's streaming CSV reader (open_csv on the file) fills up to 32 blocks on a background thread while the
    # caller works on a batch, so `taken` runs far ahead of the rows consumed. Ours reads a block only when asked.
    lines = [good_row(i) for i in range(3000)]
    assert len({len(x) for x in lines}) == 1
    data = (HEADER + "\n" + "\n".join(lines) + "\n").encode()
    path = tmp_path / "clicks.csv"
    path.write_bytes(data)
    block = 8 * (len(lines[0]) + 1)
    monkeypatch.setattr(tp, "BLOCK_BYTES", block)
    streams = []

    def counting_open(p: str) -> CountingStream:
        streams.append(CountingStream(Path(p).read_bytes()))
        return streams[-1]

    monkeypatch.setattr(tp, "open_raw", counting_open)
    schema = load_schema(write_schema(tmp_path, timestamp=False))
    consumed = len(HEADER) + 1
    for table, line_numbers, _ in tp._blocks(str(path), schema, BadRows(strict=False)):
        time.sleep(0.005)  # a slow consumer: a background reader would use this time to read ahead
        consumed += table.num_rows * (len(lines[0]) + 1)
        assert streams[-1].taken - consumed < 2 * block, (streams[-1].taken, consumed)
        assert line_numbers[-1] == 1 + (consumed - len(HEADER) - 1) // (len(lines[0]) + 1)
    assert consumed == len(data) == streams[-1].taken


def make_input(tmp: Path, gz: bool) -> tuple:
    """600 rows with 14 bad ones (fewer than the 20 samples kept: every one is a sample), some at block edges."""
    bad = {0: ("1,2,3", "column_count"), 1: ("", "empty_line"), 2: (None, "label"), 3: (None, "numeric_not_number"),
           4: (None, "timestamp")}
    lines, want = [HEADER], {}
    for i in range(1, 601):
        r = good_row(i)
        if i % 43 == 7:
            text, kind = bad[i % 5]
            f = r.split(",")
            if kind == "label":
                f[5] = "2"
            elif kind == "numeric_not_number":
                f[4] = "cheap"
            elif kind == "timestamp":
                f[0] = "yesterday"
            lines.append(text if text is not None else ",".join(f))
            want[i + 1] = kind  # physical line: the header is line 1
        else:
            lines.append(r)
    data = ("\n".join(lines) + "\n").encode()
    path = tmp / ("clicks.csv.gz" if gz else "clicks.csv")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path, want


def prep(tmp: Path, data: Path, schema: Path, out: str, **kw) -> Metadata:
    return tp.prepare_tabular(PrepareConfig(input=[str(data)], out_dir=str(tmp / out), schema=str(schema), **kw))


def read_split(out: Path, md: Metadata, split: str) -> list:
    return [pq.read_table(out / f) for f in md.split(split).files]


@pytest.mark.parametrize("gz, timestamp", [(False, True), (True, False)])
def test_small_blocks_give_the_same_rows_metadata_and_bad_lines(tmp_path, monkeypatch, gz, timestamp):
    data, want = make_input(tmp_path, gz)
    if not timestamp:  # no timestamp column in the schema: its bad values are not read
        want = {line: kind for line, kind in want.items() if kind != "timestamp"}
    schema = write_schema(tmp_path, timestamp)
    mds = {}
    for block in (1 << 20, 997, 300):  # one block for the whole file; then many, cut inside lines
        monkeypatch.setattr(tp, "BLOCK_BYTES", block)
        mds[block] = prep(tmp_path, data, schema, str(block))
    ref = mds[1 << 20]
    assert sorted((s["line"]) for s in ref.bad_rows["samples"]) == sorted(want)
    by_kind = {}
    for kind in want.values():
        by_kind[kind] = by_kind.get(kind, 0) + 1
    assert ref.bad_rows["count"] == len(want) and ref.bad_rows["by_reason"] == by_kind
    assert ref.source["lines"] == 600 and sum(s.rows for s in ref.splits.values()) == 600 - len(want)
    for block, md in mds.items():
        assert md.bad_rows["by_reason"] == ref.bad_rows["by_reason"], block
        assert sorted(map(str, md.bad_rows["samples"])) == sorted(map(str, ref.bad_rows["samples"])), block
        assert md.splits == ref.splits and md.sparse_features == ref.sparse_features, block
        assert md.source == {**ref.source, "inputs": md.source["inputs"]}, block
        for name, st in ref.dense_stats.items():  # sums taken block by block: equal up to rounding
            assert md.dense_stats[name] == pytest.approx(st, rel=1e-9, abs=1e-12), (block, name)
        for s in ("train", "val", "test"):
            got, expected = read_split(tmp_path / str(block), md, s), read_split(tmp_path / str(1 << 20), ref, s)
            assert len(got) == len(expected) and all(g.equals(e) for g, e in zip(got, expected)), (block, s)
    assert all(ref.splits[s].rows > 0 for s in ("train", "val", "test"))


def test_row_groups_have_a_fixed_size_whatever_the_block(tmp_path, monkeypatch):
    # val / test get ~10% of each small block: a row group per block would be ~2 rows (and grow each open
    # ParquetWriter's footer metadata block by block). Fixed-size groups: ROW_GROUP_ROWS, a file's last shorter.
    data, _ = make_input(tmp_path, gz=False)
    schema = write_schema(tmp_path, timestamp=False)
    monkeypatch.setattr(tp, "BLOCK_BYTES", 700)  # ~15 rows a block
    monkeypatch.setattr(tp, "ROW_GROUP_ROWS", 16)
    md = prep(tmp_path, data, schema, "out", rows_per_file=100)
    for s in ("train", "val", "test"):
        info = md.splits[s]
        assert info.rows > 16
        assert info.rows_per_file == [100] * (info.rows // 100) + ([info.rows % 100] if info.rows % 100 else [])
        for name, rows in zip(info.files, info.rows_per_file):
            meta = pq.ParquetFile(tmp_path / "out" / name).metadata
            groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
            assert groups == [16] * (rows // 16) + ([rows % 16] if rows % 16 else []), (name, groups)


def test_many_bad_rows_in_one_block_keep_their_kind(tmp_path):
    # more bad rows of one kind in a block than samples kept: each is still counted under its own reason
    lines = [HEADER] + [good_row(i) if i % 2 else good_row(i)[:-1] + "7" for i in range(200)]
    data = tmp_path / "clicks.csv"
    data.write_text("\n".join(lines) + "\n")
    md = prep(tmp_path, data, write_schema(tmp_path, timestamp=False), "out")
    assert md.bad_rows["by_reason"] == {"label": 100} and md.bad_rows["count"] == 100
    assert [s["line"] for s in md.bad_rows["samples"]] == list(range(2, 42, 2))
    assert all(s["reason"] == "clicked='7': expected 0 or 1" for s in md.bad_rows["samples"])


def test_long_and_non_utf8_lines_are_bad_rows_named_by_their_line_over_the_whole_file(tmp_path, monkeypatch):
    """A line longer than a block and a line with a non-UTF-8 byte, in a later block than the first: each is one
    bad row at its physical line (the header is line 1) and the rest of the file is kept. Would catch: prepare
    stopping with Arrow's 'invalid UTF8' error, or a line number counted from the block instead of the file."""
    monkeypatch.setattr(tp, "BLOCK_BYTES", 500)
    schema = write_schema(tmp_path, timestamp=False)
    lines = [HEADER] + [good_row(i) for i in range(100)]
    long = tmp_path / "long.csv"
    long.write_text("\n".join(lines[:60] + [good_row(0) + "x" * 900] + lines[60:]) + "\n")
    md = prep(tmp_path, long, schema, "a")
    assert md.bad_rows["by_reason"] == {"line_too_long": 1} and md.bad_rows["samples"][0]["line"] == 61
    assert sum(s.rows for s in md.splits.values()) == 100
    utf = tmp_path / "utf.csv"
    utf.write_bytes(("\n".join(lines) + "\n").encode().replace(b"u010,", b"u\xff10,", 1))
    line = 1 + next(i for i in range(100) if good_row(i).split(",")[1] == "u010") + 1
    assert line > 500 // len(good_row(0))
    md = prep(tmp_path, utf, schema, "b")
    assert md.bad_rows["by_reason"] == {"invalid_utf8": 1} and md.bad_rows["samples"][0]["line"] == line
    assert md.bad_rows["samples"][0]["field"] == "user" and sum(s.rows for s in md.splits.values()) == 99
    only_header = tmp_path / "header.csv"
    only_header.write_text(HEADER)  # no row, no newline: no valid rows (not a parse error)
    with pytest.raises(PrepareError, match=r"no valid rows .*\(0 bad\)"):
        prep(tmp_path, only_header, schema, "c")
