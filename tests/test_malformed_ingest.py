"""Criteo ingest on malformed input, checked line by line against an independent oracle (tests/malformed.py):
each defect class alone and among other bad lines, plain / .gz / multi-member .gz, several block sizes; truncated
and corrupt gzip; random binary. Good rows' values are checked, not only counts."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow.parquet as pq
import pytest

import recsys_dist.data.criteo_prepare as cp
from malformed import (DEFECTS, decode_gzip_upto_damage, expected_log_dense, good_line, good_variants, gzip_members,
                       judge, lines_of, values)
from recsys_dist.config import PrepareConfig
from recsys_dist.data.bad_rows import BAD_ROWS_FILE, MAX_SAMPLES, PrepareError
from recsys_dist.data.criteo_schema import CATEGORICAL_NAMES, DENSE_NAMES
from recsys_dist.data.metadata import Metadata

HASH_CAP = 2**33  # larger than any 8-hex-digit value: the id is the value itself


def prepare(tmp: Path, name: str, blob: bytes, gz: bool, block: int, monkeypatch, **kw) -> Tuple[Metadata, Path]:
    folder = tmp / name
    folder.mkdir(parents=True)
    f = folder / ("train.txt.gz" if gz else "train.txt")
    f.write_bytes(blob)
    monkeypatch.setattr(cp, "BLOCK_BYTES", block)
    cfg = PrepareConfig(input=[str(f)], out_dir=str(folder / "out"), workers=1, split="ratio", val_ratio=0.0,
                        test_ratio=0.0, hash_cap=HASH_CAP, **kw)
    return cp.prepare_criteo(cfg, progress=False), folder / "out"


def recorded(out: Path) -> Dict[int, Tuple[str, Optional[str]]]:
    recs = [json.loads(x) for x in (out / BAD_ROWS_FILE).read_text().splitlines()]
    assert [r["line"] for r in recs] == sorted(r["line"] for r in recs)  # in input order
    return {r["line"]: (r["kind"], r["field"] or None) for r in recs}


def check_against_oracle(md: Metadata, out: Path, data: bytes) -> None:
    """Every line's verdict (kind and field) as the oracle's; the good lines' values, in order."""
    lines = lines_of(data)
    want_bad = {}
    good = []
    for i, raw in enumerate(lines, start=1):
        kind, field = judge(raw, had_lf=i < len(lines) or data.endswith(b"\n"))
        if kind is None:
            good.append(values(raw))
        else:
            want_bad[i] = (kind, field)
    assert recorded(out) == want_bad
    assert md.bad_rows["count"] == len(want_bad) and md.source["lines"] == len(lines)
    assert [s["line"] for s in md.bad_rows["samples"]] == sorted(want_bad)[:MAX_SAMPLES]
    tables = [pq.read_table(out / f) for f in md.splits["train"].files]
    assert sum(t.num_rows for t in tables) == len(good)
    if not good:
        return
    got = {c: np.concatenate([t.column(c).to_numpy() for t in tables]) for c in tables[0].column_names}
    assert got["label"].tolist() == [g[0] for g in good]
    for i, name in enumerate(DENSE_NAMES):
        want = np.array([expected_log_dense(g[1][i]) for g in good], dtype=np.float32)
        np.testing.assert_array_equal(got[name], want, err_msg=name)
    for i, name in enumerate(CATEGORICAL_NAMES):
        assert got[name].tolist() == [0 if g[2][i] is None else g[2][i] for g in good], name


def mixed_file(seed: int) -> bytes:
    """Every defect class several times, each among other bad lines and between good ones (edge values, CRLF)."""
    rng = random.Random(seed)
    names = list(DEFECTS) * 3
    rng.shuffle(names)
    lines: List[bytes] = []
    for k, name in enumerate(names):
        lines.append(DEFECTS[name](rng))
        if k % 4 == 3:
            lines += [good_line(rng) for _ in range(rng.randint(1, 3))] + good_variants(rng)
    return b"\n".join(lines) + b"\n"


def test_line_checks_match_pythons_decoder_line_by_line():
    """Random blocks of LF-separated lines (bytes chosen around the UTF-8 edge cases, NUL, CR): each line's first
    defect (kind, offset) is what Python's strict decoder and a byte search find in that line alone. Would catch:
    a line ending in a cut multi-byte sequence making the stray continuation byte at the next line's start legal."""
    from recsys_dist.data.line_checks import CR, NUL, UTF8, LineIndex, line_defects

    rng = random.Random(5)
    alphabet = [0x41, 0x0A, 0x0D, 0x00, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0, 0xE1, 0xED,
                0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xFF]
    for _ in range(3000):
        b = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        d = np.frombuffer(b, dtype=np.uint8)
        ix = LineIndex(d)
        code, where = line_defects(d, ix, check_utf8=True)
        want = []
        for start, end in zip(ix.start.tolist(), ix.term.tolist()):
            line = b[start:end]
            text = line[:-1] if line.endswith(b"\r") and end < len(b) else line  # a CR right before LF
            try:
                line.decode("utf-8")
                bad = (0, -1)
            except UnicodeDecodeError as e:
                bad = (UTF8, start + e.start)
            if bad[0] == 0 and b"\0" in text:
                bad = (NUL, start + text.index(b"\0"))
            if bad[0] == 0 and b"\r" in text:
                bad = (CR, start + text.index(b"\r"))
            want.append(bad)
        assert list(zip(code.tolist(), where.tolist())) == want, b


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_each_defect_alone_in_a_good_file(tmp_path, monkeypatch, defect):
    """One bad line among good ones (its block's other values all parse). Would catch a verdict that depends on
    the rest of the block: '0x10' taken as 16, '+5' crashing, a non-UTF-8 byte stopping the whole prepare."""
    rng = random.Random(defect)
    lines = [good_line(rng) for _ in range(5)] + [DEFECTS[defect](rng)] + [good_line(rng) for _ in range(5)]
    data = b"\n".join(lines) + b"\n"
    assert judge(lines[5])[0] is not None  # the generator made a bad line
    md, out = prepare(tmp_path, "a", data, False, 1 << 20, monkeypatch)
    check_against_oracle(md, out, data)


@pytest.mark.parametrize("block", [1 << 20, 2000, 700])
def test_mixed_defects_same_verdicts_for_every_block_size(tmp_path, monkeypatch, block):
    """All defect classes, each surrounded by bad rows, in blocks of several sizes: the same verdict per line as
    the oracle's (so as each defect alone). Would catch: '-9223372036854775808' or '0x10' judged by the rest of
    the block, a lone CR taken as a line break (shifted line numbers), bad lines past the 20th not recorded."""
    data = mixed_file(1)
    md, out = prepare(tmp_path, "m", data, False, block, monkeypatch)
    check_against_oracle(md, out, data)
    assert md.bad_rows["count"] > 3 * MAX_SAMPLES


@pytest.mark.parametrize("members", [1, 9])
def test_gzip_single_and_multi_member_same_as_plain(tmp_path, monkeypatch, members):
    """The mixed file gzipped (one member, or members cut inside lines): the same verdicts and rows as plain."""
    data = mixed_file(2)
    md, out = prepare(tmp_path, "g", gzip_members(data, random.Random(members), members), True, 2000, monkeypatch)
    check_against_oracle(md, out, data)
    assert md.bad_rows["damaged_files"] == []


@pytest.mark.parametrize("cut", [0.3, 0.77])
def test_truncated_gzip_keeps_every_line_before_the_cut(tmp_path, monkeypatch, cut):
    """A multi-member .gz cut short: every complete line decoded before the cut is judged as the oracle judges
    it; the cut is file damage (file, last complete line), not a bad row. Would catch: rows lost before the cut,
    the unfinished line counted as a bad row, an invented line number."""
    data = mixed_file(3)
    blob = gzip_members(data, random.Random(4), 5)
    blob = blob[: int(len(blob) * cut)]
    decoded, kind = decode_gzip_upto_damage(blob)
    assert kind == "truncated_gz"
    complete = decoded[: decoded.rfind(b"\n") + 1]
    md, out = prepare(tmp_path, "t", blob, True, 2000, monkeypatch)
    check_against_oracle(md, out, complete)
    (damage,) = md.bad_rows["damaged_files"]
    assert damage["kind"] == "truncated_gz" and damage["last_line"] == len(lines_of(complete))
    assert damage["dropped_bytes"] == len(decoded) - len(complete)
    assert damage["file"].endswith("train.txt.gz")


def test_corrupt_gzip_keeps_every_line_decoded_before_the_damage(tmp_path, monkeypatch):
    """A byte of a deflate stream overwritten: the lines decoded before zlib notices are kept (fed byte by byte in
    the oracle), the rest of the file is file damage."""
    data = b"".join(good_line(random.Random(i)) + b"\n" for i in range(3000))
    blob = bytearray(gzip.compress(data, compresslevel=1))
    for k in range(200):
        blob[len(blob) // 2 + k] ^= 0xA5
    decoded, kind = decode_gzip_upto_damage(bytes(blob))
    assert kind == "corrupt_gz" and 0 < decoded.count(b"\n") < 3000
    complete = decoded[: decoded.rfind(b"\n") + 1]
    md, out = prepare(tmp_path, "c", bytes(blob), True, 1 << 16, monkeypatch)
    check_against_oracle(md, out, complete)
    (damage,) = md.bad_rows["damaged_files"]
    assert damage["kind"] == "corrupt_gz" and damage["last_line"] == len(lines_of(complete))
    cut = gzip.compress(data)[:5000]  # strict: the damage stops prepare (good lines before it)
    last = decode_gzip_upto_damage(cut)[0].count(b"\n")
    with pytest.raises(PrepareError, match=rf"train\.txt\.gz: truncated gzip stream .* after line {last}\b"):
        prepare(tmp_path, "s", cut, True, 1 << 16, monkeypatch, strict=True)


@pytest.mark.parametrize("gz", [False, True])
def test_random_binary_never_crashes(tmp_path, monkeypatch, gz):
    """Random bytes (plain and gzipped), then one good line: prepare finishes, every line judged as the oracle
    judges it; the random bytes alone are refused (no valid rows, tests/test_prepare_no_rows.py), never a crash."""
    rng = random.Random(7)
    noise = bytes(rng.getrandbits(8) for _ in range(40000))
    data = noise + b"\n" + good_line(rng) + b"\n"
    md, out = prepare(tmp_path, "r", gzip.compress(data) if gz else data, gz, 4096, monkeypatch)
    check_against_oracle(md, out, data)
    assert md.splits["train"].rows == 1 and md.bad_rows["count"] == len(lines_of(data)) - 1
    with pytest.raises(PrepareError, match=r"no valid rows in .* \(\d+ bad: .*\); first: .*train\.txt(\.gz)?:1: "):
        prepare(tmp_path, "n", gzip.compress(noise) if gz else noise, gz, 4096, monkeypatch)


def test_bad_rows_file_records_every_line_bounded(tmp_path, monkeypatch):
    """Every bad line is in bad_rows.jsonl with file, line, field, kind, reason, its length and an excerpt of its
    raw bytes, each record bounded whatever the line's length. Would catch: only the first 20 listed anywhere."""
    rng = random.Random(9)
    huge = b"1\t" + b"9" * 100_000 + b"\t" + b"\t".join([b""] * 38)
    lines = [DEFECTS["int_hex_0x10"](rng) for _ in range(50)] + [huge, b"\xff\xfe" * 50, good_line(rng)]
    data = b"\n".join(lines) + b"\n"  # one good line: a dataset, not the no-valid-rows error
    md, out = prepare(tmp_path, "b", data, False, 1 << 20, monkeypatch)
    recs = [json.loads(x) for x in (out / BAD_ROWS_FILE).read_text().splitlines()]
    assert len(recs) == 52 == md.bad_rows["count"] and md.bad_rows["file"] == BAD_ROWS_FILE
    assert set(recs[0]) == {"file", "line", "field", "kind", "reason", "bytes", "excerpt"}
    assert recs[0]["reason"].endswith("='0x10': expected an integer (-?[0-9]+, int64) or empty")
    assert recs[50]["kind"] == "dense_not_integer" and recs[50]["bytes"] == len(huge)
    assert recs[51]["kind"] == "invalid_utf8" and recs[51]["excerpt"].startswith("\\xff\\xfe")
    assert max(len(x) for x in (out / BAD_ROWS_FILE).read_text().splitlines()) < 2000


def test_failed_prepare_leaves_no_temporary_files(tmp_path, monkeypatch):
    """--strict stops at a bad line in the second of two files read by two worker processes: the output folder
    holds no file afterwards (no .tmp parts, no bad-row parts, no metadata of an older run)."""
    rng = random.Random(11)
    raw = tmp_path / "raw"
    raw.mkdir()
    for d in range(2):
        lines = [good_line(rng) for _ in range(400)]
        if d == 1:
            lines[300] = DEFECTS["int_plus"](rng)
        (raw / f"day_{d}").write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    monkeypatch.setattr(cp, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(cp, "BLOCK_BYTES", 4096)
    cp.prepare_criteo(PrepareConfig(input=[str(raw)], out_dir=str(out), workers=2, split="ratio",
                                    val_ratio=0.1, test_ratio=0.1), progress=False)
    assert (out / "metadata.json").exists() and (out / BAD_ROWS_FILE).exists()
    with pytest.raises(PrepareError, match=r"day_1:301: I\d+='\+5'"):
        cp.prepare_criteo(PrepareConfig(input=[str(raw)], out_dir=str(out), workers=2, split="ratio",
                                        strict=True), progress=False)
    assert [p for p in out.rglob("*") if p.is_file()] == []


# -- own CSV data (prepare --schema) ----------------------------------------------------------------------------
OWN_SCHEMA = """\
label: clicked
split: {val: 0.0, test: 0.0}
categorical:
  - {column: user, min_count: 1}
  - {column: item, hash_cap: 1000}
multi_valued:
  - {column: tags, separator: "|"}
numeric:
  - {column: price, transform: none}
"""
OWN_HEADER = b"user,item,tags,price,clicked"
OWN_BAD = {  # a bad CSV line -> its kind (field)
    b"u\xff1,i1,a|b,1.5,1": ("invalid_utf8", "user"),
    b"u1,i\x001,a,2,0": ("nul_byte", "item"),
    b"u1,i1,a\rb,2,0": ("carriage_return", "tags"),
    b'"u1,i1,a,2,0': ("unparsable", "user"),  # a quote that never closes (odd count) would take the next
    b'u"1,"i1,a,2,0': ("column_count", ""),  # lines along; two stray quotes parse as one field
    b'u1,i1,a,2,"0': ("unparsable", "clicked"),  # five fields, the last running past its line
    b"": ("empty_line", ""),
    b"u1,i1,a,2": ("column_count", ""),
    b"u1,i1,a,cheap,1": ("numeric_not_number", "price"),
}


def own_good(i: int) -> bytes:
    user = f'"u{i % 7},x"' if i % 5 == 0 else f"u{i % 7}"  # quoted fields holding the delimiter are fine
    return f"{user},i{i % 11},t{i % 3}|t{i % 4},{i * 0.25},{i % 2}".encode() + (b"\r" if i % 6 == 0 else b"")


def own_prepare(tmp: Path, name: str, lines: List[bytes], block: int, monkeypatch) -> Tuple[Metadata, Path]:
    import recsys_dist.data.tabular_prepare as tp

    folder = tmp / name
    folder.mkdir(parents=True)
    (folder / "schema.yaml").write_text(OWN_SCHEMA)
    data = folder / "clicks.csv"
    data.write_bytes(b"\n".join([OWN_HEADER] + lines) + b"\n")
    monkeypatch.setattr(tp, "BLOCK_BYTES", block)
    md = tp.prepare_tabular(PrepareConfig(input=[str(data)], out_dir=str(folder / "out"),
                                          schema=str(folder / "schema.yaml")))
    return md, folder / "out"


def own_rows(md: Metadata, out: Path) -> dict:
    tables = [pq.read_table(out / f) for f in md.splits["train"].files]
    return {c: sum((t.column(c).to_pylist() for t in tables), []) for c in tables[0].column_names}


@pytest.mark.parametrize("block", [1 << 20, 400, 120])
def test_own_csv_bad_lines_judged_alone_and_mixed_for_every_block_size(tmp_path, monkeypatch, block):
    """Own CSV data: a non-UTF-8 byte, a NUL, a lone CR, an unclosed quote, ... make that line a bad row (kind,
    field, file:line) and every other line is kept with the values it has in a file without the bad lines: each
    defect alone, and all of them mixed, in blocks of several sizes. Would catch: Arrow's 'invalid UTF8' error
    stopping prepare, a CR or an open quote merging lines (shifted line numbers, lost rows)."""
    good = [own_good(i) for i in range(40)]
    clean, clean_out = own_prepare(tmp_path, "clean", good, 1 << 20, monkeypatch)
    want = own_rows(clean, clean_out)
    cases = [[bad] for bad in OWN_BAD] + [list(OWN_BAD) * 2]  # each alone, then all mixed (and twice)
    for k, bads in enumerate(cases):
        lines, where = [], {}
        for i, g in enumerate(good):
            lines.append(g)
            if i % 3 == 1 and bads:
                bad = bads.pop(0)
                lines.append(bad)
                where[len(lines) + 1] = OWN_BAD[bad]  # physical line: the header is line 1
        md, out = own_prepare(tmp_path, f"{k}", lines, block, monkeypatch)
        assert {r["line"]: (r["kind"], r["field"]) for r in map(json.loads, (out / BAD_ROWS_FILE).read_text()
                                                                .splitlines())} == where, k
        assert own_rows(md, out) == want, k
        assert md.source["lines"] == len(lines) and md.bad_rows["count"] == len(where)


def test_own_csv_failed_prepare_leaves_no_files(tmp_path, monkeypatch):
    """--strict on own CSV data stops at a NUL byte in a later block of the writing pass: no part, bad-row or
    metadata file is left in the output folder (parts are written under temporary names, renamed at the end)."""
    import recsys_dist.data.tabular_prepare as tp

    lines = [own_good(i) for i in range(60)]
    own_prepare(tmp_path, "ok", lines[:50], 200, monkeypatch)  # a first run leaves a dataset there
    lines[50] = b"u1,i\x001,a,2,0"
    folder = tmp_path / "s"
    folder.mkdir()
    one_pass = OWN_SCHEMA.replace("min_count: 1", "hash_cap: 100").replace("\"|\"}", "\"|\", hash_cap: 50}")
    (folder / "schema.yaml").write_text(one_pass)  # hashing only: one pass, the writing one
    (folder / "clicks.csv").write_bytes(b"\n".join([OWN_HEADER] + lines) + b"\n")
    with pytest.raises(PrepareError, match=r"clicks\.csv:52: item: a NUL byte"):
        tp.prepare_tabular(PrepareConfig(input=[str(folder / "clicks.csv")], out_dir=str(tmp_path / "ok" / "out"),
                                         schema=str(folder / "schema.yaml"), strict=True))
    assert [p for p in (tmp_path / "ok" / "out").rglob("*") if p.is_file()] == []
