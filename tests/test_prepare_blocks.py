"""Memory of `prepare` that does not grow with the input: raw files read block by block without read-ahead
(line_blocks), and each split written in row groups of ROW_GROUP_ROWS whatever its share of a block; the same
rows and bad-row lines whatever the block and row group sizes."""

from __future__ import annotations

import io
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

import recsys_dist.data.criteo_prepare as cp
from recsys_dist.data.bad_rows import BadRows
from recsys_dist.data.raw_files import LongLine, line_blocks
from test_prepare import prep, read_split, row, write


class CountingStream(io.RawIOBase):
    """A byte stream that records how many bytes its reader has taken so far."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)
        self.taken = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._f.readinto(b)
        self.taken += n
        return n


def test_line_blocks_cut_after_line_ends_and_keep_every_byte():
    data = b"".join(b"x" * (i % 7) + b"\n" for i in range(200)) + b"no newline"
    pieces = [bytes(p) for p in line_blocks(io.BytesIO(data), 16)]
    assert b"".join(pieces) == data
    assert all(p.endswith(b"\n") for p in pieces[:-1])
    assert pieces[-1].endswith(b"no newline")  # the short last read is one piece, not cut
    assert max(len(p) for p in pieces) < 16 + 7  # one read plus the partial line carried over
    assert [bytes(p) for p in line_blocks(io.BytesIO(b""), 16)] == []


def test_line_blocks_reads_only_when_asked():
    data = b"".join(b"%05d\n" % i for i in range(1000))
    s = CountingStream(data)
    it = line_blocks(s, 60)
    first = next(it)
    assert s.taken == 60 and bytes(first) == data[:60]
    second = next(it)
    assert s.taken == 120 and bytes(second) == data[60:120]


def test_line_longer_than_a_block_is_a_bad_row_and_reading_goes_on(tmp_path, monkeypatch):
    """A line longer than the read block is one bad row (its length and first bytes); the lines after it are read.
    Would catch: the whole prepare stopping at such a line, or the rest of the line read as further lines."""
    pieces = list(line_blocks(io.BytesIO(b"ab\n" + b"y" * 40 + b"\ncd\n"), 8))
    assert bytes(pieces[0]) == b"ab\n" and isinstance(pieces[1], LongLine) and pieces[1].size == 41
    assert b"".join(bytes(p) for p in pieces[2:]) == b"cd\n"
    f = write(tmp_path / "train.txt", [row(1), row(0), "1\t" + "9" * 5000, row(1)])
    monkeypatch.setattr(cp, "BLOCK_BYTES", 1024)
    md = prep(tmp_path, [f])
    assert md.splits["train"].rows == 3 and md.bad_rows["by_reason"] == {"line_too_long": 1}
    assert md.bad_rows["samples"][0]["line"] == 3 and "5003 bytes" in md.bad_rows["samples"][0]["reason"]


def test_reader_holds_one_block_not_a_read_ahead(tmp_path, monkeypatch):
    # pyarrow's streaming CSV reader fills up to 32 blocks on a background thread while the caller works on a
    # batch: with it, `taken` runs far ahead of the rows consumed. Ours reads the next block only when asked.
    lines = [row(i % 2, cats=[f"{i:08x}"] + ["00000001"] * 25) for i in range(2000)]
    data = ("\n".join(lines) + "\n").encode()
    block = 8 * len(lines[0])
    monkeypatch.setattr(cp, "BLOCK_BYTES", block)
    s = CountingStream(data)
    consumed = 0
    for rows in cp._reader("mem", s, BadRows(strict=False)):
        batch = rows.batch
        time.sleep(0.005)  # a slow consumer: a background reader would use this time to read ahead
        consumed += batch.num_rows * (len(lines[0]) + 1)
        assert s.taken - consumed < 2 * block, (s.taken, consumed)
    assert consumed == len(data) == s.taken


def _by_line(bad: dict) -> list:
    return sorted((s["line"], s["reason"]) for s in bad["samples"])


@pytest.mark.parametrize("gz", [False, True])
def test_small_blocks_give_the_same_rows_and_bad_line_numbers(tmp_path, monkeypatch, gz):
    bad_rows = {0: ("1\t2\t3", "3 tab-separated fields"), 1: ("", "empty line"),
                2: (row(1, cats=["zzzzzzzz"] + ["00000001"] * 25), "C1='zzzzzzzz'")}
    lines, want_bad = [], {}
    for i in range(1, 601):
        if i % 37 == 5:  # 16 bad rows (fewer than the 20 samples kept), some at block edges
            text, why = bad_rows[i % 3]
            lines.append(text)
            want_bad[i] = why
        else:
            lines.append(row(int(i % 3 == 0), dense=[str(i)] + ["1"] * 12, cats=[f"{i:08x}"] + ["00000002"] * 25))
    f = write(tmp_path / "raw" / ("train.txt.gz" if gz else "train.txt"), lines, gz=gz)
    mds = {}
    for block in (1 << 20, 3000, 700):  # one block for the whole file; then many, cut inside lines
        monkeypatch.setattr(cp, "BLOCK_BYTES", block)
        mds[block] = prep(tmp_path / str(block), [f], val_ratio=0.2, test_ratio=0.1)
    ref = mds[1 << 20]
    assert [(line, why[:len(want_bad[line])]) for line, why in _by_line(ref.bad_rows)] == sorted(want_bad.items())
    assert ref.bad_rows["count"] == len(want_bad) and ref.source["lines"] == 600
    for block, md in mds.items():
        assert _by_line(md.bad_rows) == _by_line(ref.bad_rows), block
        assert md.bad_rows["by_reason"] == ref.bad_rows["by_reason"] and md.splits == ref.splits, block
        for s in ("train", "val", "test"):
            want = read_split(tmp_path / str(1 << 20) / "out", s)
            got = read_split(tmp_path / str(block) / "out", s)
            assert got.keys() == want.keys()
            for k in want:
                np.testing.assert_array_equal(got[k], want[k])
    assert all(len(read_split(tmp_path / "700" / "out", s)["label"]) > 0 for s in ("train", "val", "test"))


def test_row_groups_have_a_fixed_size_whatever_the_split_share(tmp_path, monkeypatch):
    # val / test get ~10% of each small block: one row group per block would make them ~2-row groups (and grow each
    # open file's footer metadata block by block). Fixed-size groups: ROW_GROUP_ROWS each, a file's last shorter.
    lines = [row(i % 2, dense=[str(i)] + ["1"] * 12, cats=[f"{i:08x}"] + ["00000003"] * 25) for i in range(1500)]
    f = write(tmp_path / "raw" / "train.txt", lines)
    ref = prep(tmp_path / "ref", [f], val_ratio=0.1, test_ratio=0.1)  # defaults: one block, one group per split
    monkeypatch.setattr(cp, "BLOCK_BYTES", 2000)  # ~20 rows a block
    monkeypatch.setattr(cp, "ROW_GROUP_ROWS", 16)
    md = prep(tmp_path / "small", [f], val_ratio=0.1, test_ratio=0.1, rows_per_file=100)
    out = tmp_path / "small" / "out"
    for s in ("train", "val", "test"):
        info = md.splits[s]
        assert info.rows == ref.splits[s].rows and info.positives == ref.splits[s].positives
        assert info.rows_per_file == [100] * (info.rows // 100) + ([info.rows % 100] if info.rows % 100 else [])
        for name, rows in zip(info.files, info.rows_per_file):
            meta = pq.ParquetFile(out / name).metadata
            groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
            assert groups == [16] * (rows // 16) + ([rows % 16] if rows % 16 else []), (name, groups)
        want, got = read_split(tmp_path / "ref" / "out", s), read_split(out, s)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    assert md.bad_rows == ref.bad_rows and md.dense_stats.keys() == ref.dense_stats.keys()
    for name, st in ref.dense_stats.items():  # sums taken block by block: equal up to rounding
        assert md.dense_stats[name] == pytest.approx(st, rel=1e-9, abs=1e-12)


def test_parse_hex8_matches_python_on_both_paths():
    import pyarrow as pa

    from recsys_dist.data import criteo_encode as enc

    rng = np.random.default_rng(1)
    vals = rng.integers(0, 2**32, 3000).tolist() + [0, 2**32 - 1]
    strs = [f"{v:08x}" if i % 2 else f"{v:08X}" for i, v in enumerate(vals)]
    v, e, b = enc.parse_hex8(pa.array(strs))  # all 8 chars, no nulls: the contiguous fast path
    assert v.tolist() == vals and not e.any() and not b.any()
    strs[7], strs[100] = "0000000g", "zz345678"  # still 8 chars each: the fast path must flag them
    v, e, b = enc.parse_hex8(pa.array(strs))
    assert np.flatnonzero(b).tolist() == [7, 100] and v[7] == v[100] == 0
    assert v[8:100].tolist() == vals[8:100]
    v, e, b = enc.parse_hex8(pa.array(strs[:10] + [None, "", "abc"]))  # the gather path
    assert np.flatnonzero(b).tolist() == [7, 12] and np.flatnonzero(e).tolist() == [10, 11]
    assert v[:7].tolist() == vals[:7] and v[8:10].tolist() == vals[8:10]


def test_every_bad_row_of_a_block_keeps_its_kind_beyond_the_samples():
    """A block with more bad rows of one check than the samples shown: all are counted under their own kind
    (they were counted under '?' past the 21st)."""
    import numpy as np
    import pyarrow as pa

    from recsys_dist.data.bad_rows import MAX_SAMPLES
    from recsys_dist.data.criteo_prepare import _first_bad

    n = 100
    labels = pa.array([str(i % 3) for i in range(n)])           # every third row has label "2"
    bad_label = np.array([i % 3 == 2 for i in range(n)])
    bad_dense = np.array([i % 5 == 0 for i in range(n)])
    rows, reasons = _first_bad([("label", bad_label, "label", labels),
                                ("dense_not_integer", bad_dense, "I1", labels)], n)
    assert rows.tolist() == np.flatnonzero(bad_label | bad_dense).tolist()
    kinds = [k for k, _, _ in reasons]
    assert kinds.count("label") == int(bad_label.sum()) > MAX_SAMPLES + 1
    assert kinds.count("dense_not_integer") == int((bad_dense & ~bad_label).sum())
    assert reasons[0] == ("dense_not_integer", "I1", "I1='0': expected an integer (-?[0-9]+, int64) or empty")
    assert reasons[-1][2].startswith("label='2'") and "must be 0 or 1" in reasons[-1][2]


def test_samples_are_the_first_bad_rows_by_line_whatever_the_block_size(tmp_path, monkeypatch):
    """More bad rows than samples, of two kinds a block reports at different times (column-count errors come from
    the parser, value errors after it): the samples are the first MAX_SAMPLES by line for every block size."""
    from recsys_dist.data.bad_rows import MAX_SAMPLES

    lines, bad_lines = [], []
    for i in range(1, 401):
        if i % 9 == 0:      # alternating: too few fields / a bad label
            lines.append("1\t2\t3" if i % 2 else row(1, cats=["00000001"] * 26).replace("1", "7", 1))
            bad_lines.append(i)
        else:
            lines.append(row(int(i % 3 == 0), dense=[str(i)] + ["1"] * 12, cats=[f"{i:08x}"] + ["00000002"] * 25))
    assert len(bad_lines) > MAX_SAMPLES
    f = write(tmp_path / "raw" / "train.txt", lines)
    for block in (1 << 20, 2500):
        monkeypatch.setattr(cp, "BLOCK_BYTES", block)
        md = prep(tmp_path / str(block), [f], val_ratio=0.2, test_ratio=0.1)
        assert [s["line"] for s in md.bad_rows["samples"]] == bad_lines[:MAX_SAMPLES], block
        assert md.bad_rows["count"] == len(bad_lines)


def test_bad_rows_keep_the_first_samples_by_file_then_line():
    from recsys_dist.data.bad_rows import MAX_SAMPLES, BadRows

    b = BadRows(strict=False)
    for line in range(100, 0, -3):            # added out of order
        b.add("a.txt", line, "label", f"row {line}")
    other = BadRows(strict=False)
    other.add("b.txt", 1, "label", "b row 1")
    b.merge(other.as_dict())
    assert [s["line"] for s in b.samples] == sorted(range(100, 0, -3))[:MAX_SAMPLES]
    assert all(s["file"] == "a.txt" for s in b.samples)     # a.txt came first: its rows precede b.txt's
    assert b.count == 35 and b.by_reason == {"label": 35}
