"""Files as exported by other tools, through `recsys-dist prepare` (the CLI's own entry point): a UTF-8 byte-order
mark (Excel's "CSV UTF-8"), duplicate column names (pandas / spreadsheet exports). Each either prepares as the
clean file does, or stops with one line naming the file and the column."""

import codecs
import subprocess
import sys
import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from recsys_dist.cli import main

HEADER = "ts,user,item,price,clicked"
ROWS = [f"2024-01-{d:02d}T00:00:00,u{d % 3},i{d % 5},{d * 1.5},{d % 2}" for d in range(1, 29)]
SCHEMA = """label: clicked
timestamp: ts
split: {val: 0.1, test: 0.1}
categorical:
  - {column: user}
  - {column: item}
numeric:
  - {column: price, transform: log}
"""


def _prepare(tmp_path, data, out, capsys):
    (tmp_path / "schema.yaml").write_text(SCHEMA)
    code = main(["prepare", "--schema", str(tmp_path / "schema.yaml"), "--input", str(data), "--out", str(out)])
    return code, capsys.readouterr().err


def _tables(out):
    return {s: pq.read_table(out / s).to_pydict() for s in ("train", "val", "test")}


def test_csv_with_a_byte_order_mark_prepares_like_without(tmp_path, capsys):
    """Catches the BOM read as part of the first column's name: the schema's `timestamp: ts` was 'not a column'
    (the error listed a column that printed as `"ts"`), or in a headerless file glued to the first value."""
    text = "\n".join([HEADER] + ROWS) + "\n"
    (tmp_path / "plain.csv").write_text(text)
    (tmp_path / "bom.csv").write_bytes(codecs.BOM_UTF8 + text.encode())
    assert _prepare(tmp_path, tmp_path / "plain.csv", tmp_path / "a", capsys)[0] == 0
    code, err = _prepare(tmp_path, tmp_path / "bom.csv", tmp_path / "b", capsys)
    assert code == 0, err
    assert _tables(tmp_path / "b") == _tables(tmp_path / "a")
    assert json.loads((tmp_path / "b" / "metadata.json").read_text())["bad_rows"]["count"] == 0


def test_criteo_tsv_with_a_byte_order_mark_keeps_its_first_row(tmp_path, capsys):
    """Guards the Criteo path against the same BOM: line 1's label '\\ufeff0' would be a bad row of a clean file
    (Arrow's CSV reader skips a BOM in its first block, and open_raw now skips it before any reader sees it)."""
    line = "\t".join(["0"] + [str(i) for i in range(13)] + ["68fd1e64"] * 26)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train.txt").write_bytes(codecs.BOM_UTF8 + ("\n".join([line] * 40) + "\n").encode())
    code = main(["prepare", "--input", str(raw / "train.txt"), "--out", str(tmp_path / "p"),
                 "prepare.split=ratio"])
    assert code == 0, capsys.readouterr().err
    md = json.loads((tmp_path / "p" / "metadata.json").read_text())
    assert md["bad_rows"]["count"] == 0, md["bad_rows"]
    assert sum(s["rows"] for s in md["splits"].values()) == 40


def test_csv_with_a_duplicated_column_name_the_schema_uses_is_refused(tmp_path, capsys):
    """Catches a CSV whose header names `user` twice being read silently from one of the two columns."""
    (tmp_path / "dup.csv").write_text("\n".join(["ts,user,user,price,clicked"] + ROWS) + "\n")
    code, err = _prepare(tmp_path, tmp_path / "dup.csv", tmp_path / "o", capsys)
    assert code != 0
    assert "schema.yaml:5: categorical[0].column='user': " in err and "dup.csv has 2 columns of that name " \
        "(columns 2, 3); expected one" in err, err
    assert not (tmp_path / "o" / "metadata.json").exists()


def test_parquet_with_duplicated_column_names_is_a_schema_error_not_a_traceback(tmp_path, capsys):
    """Catches pyarrow's KeyError ('Column user does not exist in schema') escaping as a traceback for a Parquet
    file with two columns of one name, and the same file preparing once the schema does not use that name."""
    t = pacsv.read_csv(pa.py_buffer(("\n".join([HEADER] + ROWS) + "\n").encode()))
    dup = pa.table(list(t.columns) + [t["user"]], names=t.column_names + ["user"])
    pq.write_table(dup, tmp_path / "dup.parquet")
    code, err = _prepare(tmp_path, tmp_path / "dup.parquet", tmp_path / "o", capsys)
    assert code != 0 and "Traceback" not in err
    assert "categorical[0].column='user': " in err and "dup.parquet has 2 columns of that name (columns 2, 6)" in err
    renamed = pa.table(list(t.columns) + [t["user"]], names=t.column_names[:1] + ["x"] + t.column_names[2:] + ["x"])
    pq.write_table(renamed.append_column("user", t["user"]), tmp_path / "unused_dup.parquet")
    code, err = _prepare(tmp_path, tmp_path / "unused_dup.parquet", tmp_path / "p", capsys)
    assert code == 0, err


@pytest.mark.parametrize("gz", [False, True])
def test_byte_order_mark_only_at_the_start_is_skipped(tmp_path, capsys, gz):
    """A BOM inside the file is data (a bad value of its field, reported), only the file's first bytes are
    skipped; also through a .gz."""
    import gzip

    text = ("\n".join([HEADER] + ROWS[:5] + ["\ufeff" + ROWS[5]] + ROWS[6:]) + "\n").encode()
    name = "mid.csv.gz" if gz else "mid.csv"
    (tmp_path / name).write_bytes(gzip.compress(codecs.BOM_UTF8 + text) if gz else codecs.BOM_UTF8 + text)
    code, err = _prepare(tmp_path, tmp_path / name, tmp_path / "o", capsys)
    assert code == 0, err
    assert f"{name}:7: ts=" in err  # line 7: the 6th data row, its timestamp '\ufeff2024-...' unparsable
    md = json.loads((tmp_path / "o" / "metadata.json").read_text())
    assert md["bad_rows"]["count"] == 1


def test_labels_other_than_0_1_are_bad_rows_named_by_value(tmp_path, capsys):
    """Catches the reasons a user saw for bad labels: `clicked=None: expected label must be 0 or 1` for an empty
    cell (None is no value of the file) and the doubled wording for the others."""
    rows = list(ROWS)
    for i, label in ((3, "2"), (4, "-1"), (5, "yes"), (6, "")):
        rows[i] = rows[i].rsplit(",", 1)[0] + "," + label
    (tmp_path / "labels.csv").write_text("\n".join([HEADER] + rows) + "\n")
    code, err = _prepare(tmp_path, tmp_path / "labels.csv", tmp_path / "o", capsys)
    assert code == 0, err
    for line, shown in ((5, "clicked='2'"), (6, "clicked='-1'"), (7, "clicked='yes'"), (8, "clicked is empty")):
        assert f"labels.csv:{line}: {shown}: expected 0 or 1\n" in err, err
    md = json.loads((tmp_path / "o" / "metadata.json").read_text())
    assert md["bad_rows"]["by_reason"] == {"label": 4}
    assert sum(s["rows"] for s in md["splits"].values()) == len(ROWS) - 4


@pytest.mark.parametrize("damage", ["truncated", "not_parquet"])
def test_a_damaged_parquet_file_is_an_error_naming_it(tmp_path, capsys, damage):
    """Catches pyarrow's ArrowInvalid ('Parquet magic bytes not found in footer') escaping as a traceback for a
    Parquet file cut short by a copy, or a file that is not Parquet under a .parquet name."""
    t = pacsv.read_csv(pa.py_buffer(("\n".join([HEADER] + ROWS) + "\n").encode()))
    pq.write_table(t, tmp_path / "whole.parquet")
    blob = (tmp_path / "whole.parquet").read_bytes()
    (tmp_path / "bad.parquet").write_bytes(blob[: len(blob) // 2] if damage == "truncated" else b"ts,user\n")
    code, err = _prepare(tmp_path, tmp_path / "bad.parquet", tmp_path / "o", capsys)
    assert code == 1 and "Traceback" not in err, err
    assert "bad.parquet: not a readable Parquet file (" in err, err
    assert "damaged (truncated, corrupt), or not Parquet" in err, err
    assert not (tmp_path / "o" / "metadata.json").exists()


def test_csv_record_with_a_newline_inside_quotes_leaves_no_half_row(tmp_path, capsys):
    """Catches a quoted field holding a newline (spreadsheet exports of free text) silently making a wrong row:
    its second physical line `u2b",i2,...` has the right field count and was kept as user='u2b"' with the record's
    item, price and label, while only the first half was reported (as a misleading '1 fields, expected 5').
    Since 2026-12-01 the two lines are one record (RFC 4180), read as the same row a Parquet file of the value
    'u2\\nu2b' gives; no half of it is a row of its own."""
    rows = ROWS[:4] + ['2024-01-05T00:00:00,"u2', 'u2b",i2,7.5,1'] + ROWS[4:]
    (tmp_path / "nl.csv").write_text("\n".join([HEADER] + rows) + "\n")
    records = ROWS[:4] + ['2024-01-05T00:00:00,"u2\nu2b",i2,7.5,1'] + ROWS[4:]
    t = pacsv.read_csv(pa.py_buffer(("\n".join([HEADER] + records) + "\n").encode()),
                       parse_options=pacsv.ParseOptions(newlines_in_values=True),
                       convert_options=pacsv.ConvertOptions(column_types={"ts": pa.string()}))
    assert t["user"][4].as_py() == "u2\nu2b"
    pq.write_table(t, tmp_path / "nl.parquet")
    assert _prepare(tmp_path, tmp_path / "nl.parquet", tmp_path / "a", capsys)[0] == 0
    code, err = _prepare(tmp_path, tmp_path / "nl.csv", tmp_path / "b", capsys)
    assert code == 0, err
    assert (tmp_path / "b" / "bad_rows.jsonl").read_text() == ""
    assert _tables(tmp_path / "b") == _tables(tmp_path / "a")
    md = json.loads((tmp_path / "b" / "metadata.json").read_text())
    assert md["source"]["lines"] == len(records)


def test_timestamps_with_nanoseconds_and_epoch_milliseconds(tmp_path, capsys):
    """Catches (1) ISO text with 7-9 fractional digits (pandas' nanosecond output) being a bad row, (2) a Parquet
    timestamp[ns] column with sub-microsecond values crashing prepare with pyarrow's 'would lose data' traceback,
    and (3) an epoch-milliseconds value in a column of seconds being taken as seconds (the year 55972: sorted
    into test, silently). Same rows, same split, as the plain file; the ms value is a bad row naming ts."""
    rows = [r.replace("T00:00:00", "T00:00:00.123456789") if i % 2 else r for i, r in enumerate(ROWS)]
    (tmp_path / "plain.csv").write_text("\n".join([HEADER] + ROWS) + "\n")
    (tmp_path / "ns.csv").write_text("\n".join([HEADER] + rows + ["1704153600000,u0,i0,1.5,1"]) + "\n")
    assert _prepare(tmp_path, tmp_path / "plain.csv", tmp_path / "a", capsys)[0] == 0
    code, err = _prepare(tmp_path, tmp_path / "ns.csv", tmp_path / "b", capsys)
    assert code == 0, err
    assert f"ns.csv:{len(rows) + 2}: ts='1704153600000': expected epoch seconds (below 1e11: not milliseconds)" \
        in err, err
    md = json.loads((tmp_path / "b" / "metadata.json").read_text())
    assert md["bad_rows"]["count"] == 1, md["bad_rows"]
    assert _tables(tmp_path / "b") == _tables(tmp_path / "a")
    t = pacsv.read_csv(tmp_path / "plain.csv", convert_options=pacsv.ConvertOptions(
        column_types={"ts": pa.timestamp("ns")}))
    ts = pa.array(t["ts"].combine_chunks().cast(pa.int64()).to_numpy() + 1, pa.timestamp("ns"))  # +1 ns
    pq.write_table(t.set_column(0, "ts", ts), tmp_path / "ns.parquet")
    code, err = _prepare(tmp_path, tmp_path / "ns.parquet", tmp_path / "c", capsys)
    assert code == 0, err
    assert _tables(tmp_path / "c") == _tables(tmp_path / "a")


def test_config_errors_exit_2_data_errors_exit_1(tmp_path, capsys):
    """Catches a command that cannot work (a schema value not allowed, no schema file, an input path that does
    not exist, a schema column that is in the file only in another case) exiting 1 like a data error, instead
    of 2 with one 'config error' line as every other config error; and a bad row under --strict not exiting 1
    with file:line: field. The first case runs the real entry point (a subprocess) for the exit status."""
    (tmp_path / "clicks.csv").write_text("\n".join([HEADER] + ROWS + ["2024-02-01T00:00:00,u1,i1,cheap,1"]) + "\n")
    (tmp_path / "schema.yaml").write_text(SCHEMA)
    (tmp_path / "sqrt.yaml").write_text(SCHEMA.replace("transform: log", "transform: sqrt"))
    (tmp_path / "case.yaml").write_text(SCHEMA.replace("label: clicked", "label: Clicked"))
    r = subprocess.run([sys.executable, "-m", "recsys_dist.cli", "prepare", "--schema", str(tmp_path / "sqrt.yaml"),
                        "--input", str(tmp_path / "clicks.csv"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"recsys-dist prepare: config error: {tmp_path / 'sqrt.yaml'}:8: numeric[0].transform='sqrt' is not one "
        "of none, log, minmax, standardize, bucketize"], (r.returncode, r.stderr[-2000:])
    cases = {
        ("nothere.yaml", "clicks.csv"): "nothere.yaml: schema file not found",
        ("schema.yaml", "nothere.csv"): "nothere.csv: no such file or folder",
        ("case.yaml", "clicks.csv"): "case.yaml:1: label='Clicked' is not a column of ",
    }
    for (schema, data), message in cases.items():
        code = main(["prepare", "--schema", str(tmp_path / schema), "--input", str(tmp_path / data),
                     "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and "config error: " in err and message in err, \
            (schema, data, code, err)
    assert "'clicked' differs only in case" in err, err
    code = main(["prepare", "--schema", str(tmp_path / "schema.yaml"), "--input", str(tmp_path / "clicks.csv"),
                 "--out", str(tmp_path / "o"), "--strict"])
    err = capsys.readouterr().err
    assert code == 1 and f"clicks.csv:{len(ROWS) + 2}: price='cheap': expected a number or empty" in err, err
    assert not (tmp_path / "o" / "metadata.json").exists()


def test_tsv_file_is_tab_separated_without_a_csv_key(tmp_path, capsys):
    """Catches a `.tsv` file (docs: "CSV (or TSV)") read with the comma default: its whole header was one column
    and prepare refused the schema's columns with a list that printed tabs; and a ';'-separated export (a
    European Excel) refused without saying which delimiter its header holds. The TSV gives the CSV's dataset."""
    (tmp_path / "plain.csv").write_text("\n".join([HEADER] + ROWS) + "\n")
    (tmp_path / "plain.tsv").write_text("\n".join(x.replace(",", "\t") for x in [HEADER] + ROWS) + "\n")
    (tmp_path / "semi.csv").write_text("\n".join(x.replace(",", ";") for x in [HEADER] + ROWS) + "\n")
    assert _prepare(tmp_path, tmp_path / "plain.csv", tmp_path / "a", capsys)[0] == 0
    code, err = _prepare(tmp_path, tmp_path / "plain.tsv", tmp_path / "b", capsys)
    assert code == 0, err
    assert _tables(tmp_path / "b") == _tables(tmp_path / "a")
    code, err = _prepare(tmp_path, tmp_path / "semi.csv", tmp_path / "c", capsys)
    assert code == 2 and "the header line holds ';': set csv: {delimiter: ';'} in the schema" in err, err


def test_empty_file_among_inputs_is_warned_and_adds_no_rows(tmp_path, capsys):
    """Catches an empty CSV (a failed export: 0 bytes, or a byte-order mark alone) among good files stopping
    prepare as a schema error ('empty; expected a header line ... or csv: {header: false}') that no schema
    change fixes, and an empty Criteo day file passing unmentioned (as the last day it silently left val and
    test empty). Each is warned about by name, listed in metadata.source.empty_files, and adds no rows."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("\n".join([HEADER] + ROWS) + "\n")
    (tmp_path / "in" / "b.csv").write_bytes(b"")
    (tmp_path / "in" / "c.csv").write_bytes(codecs.BOM_UTF8)
    assert _prepare(tmp_path, tmp_path / "in" / "a.csv", tmp_path / "a", capsys)[0] == 0
    code, err = _prepare(tmp_path, tmp_path / "in", tmp_path / "b", capsys)
    assert code == 0, err
    for name in ("b.csv", "c.csv"):
        assert f"{tmp_path / 'in' / name}: empty file (no lines): it adds no rows" in err, err
    md = json.loads((tmp_path / "b" / "metadata.json").read_text())
    assert md["source"]["empty_files"] == [str(tmp_path / "in" / n) for n in ("b.csv", "c.csv")]
    assert sum(s["rows"] for s in md["splits"].values()) == len(ROWS)
    line = "\t".join(["0"] + [str(i) for i in range(13)] + ["68fd1e64"] * 26)
    raw = tmp_path / "raw"
    raw.mkdir()
    for day in (0, 1):
        (raw / f"day_{day}").write_text("\n".join([line] * 10) + "\n")
    (raw / "day_2").write_bytes(b"")
    assert main(["prepare", "--input", str(raw), "--out", str(tmp_path / "p")]) == 0
    err = capsys.readouterr().err
    assert f"{raw / 'day_2'}: empty file (no lines)" in err and "the val and test splits are empty" in err, err
    assert json.loads((tmp_path / "p" / "metadata.json").read_text())["source"]["empty_files"] == [str(raw / "day_2")]


def test_parquet_with_an_all_null_column_reads_as_empty_cells(tmp_path, capsys):
    """Catches a Parquet file whose optional columns hold no value at all (pandas writes an all-None column as
    Arrow type `null`) being refused as 'the column is null; expected numbers or text': its cells are empty, as
    the same column typed string / double with nulls gives (item id 0, price the train mean)."""
    t = pacsv.read_csv(pa.py_buffer(("\n".join([HEADER] + ROWS) + "\n").encode()))
    n = t.num_rows
    typed = t.set_column(2, "item", pa.nulls(n, pa.string())).set_column(3, "price", pa.nulls(n, pa.float64()))
    untyped = t.set_column(2, "item", pa.nulls(n)).set_column(3, "price", pa.nulls(n))
    assert untyped.schema.field("price").type == pa.null()
    pq.write_table(typed, tmp_path / "typed.parquet")
    pq.write_table(untyped, tmp_path / "untyped.parquet")
    assert _prepare(tmp_path, tmp_path / "typed.parquet", tmp_path / "a", capsys)[0] == 0
    code, err = _prepare(tmp_path, tmp_path / "untyped.parquet", tmp_path / "b", capsys)
    assert code == 0, err
    assert _tables(tmp_path / "b") == _tables(tmp_path / "a")
    assert set(_tables(tmp_path / "b")["train"]["item"]) == {0}


def test_missing_value_markers_and_number_forms_in_own_csv(tmp_path, capsys):
    """Pins what docs/own_data.md says of cells a practitioner's exports hold, so a change to the number parser
    cannot silently turn markers into values: a numeric `NA`, `NULL`, `\\N`, `nan`, `inf`, `-`, `"1,000"` is a
    bad row naming the field (never 0, never empty); ` 12 ` and `1e3` are numbers; a label `1.0` / ` 1 ` is 1,
    `true` / `yes` / `2` are bad rows; a categorical `NULL` is a value of its own (only an empty cell is empty)."""
    base = "2024-01-{:02d}T00:00:00,{},i1,{},{}"
    cells = [("u1", " 12 ", "1"), ("u1", "1e3", "0"), ("u1", "NA", "1"), ("u1", "NULL", "1"), ("u1", "\\N", "1"),
             ("u1", "nan", "1"), ("u1", "inf", "1"), ("u1", "-", "1"), ("u1", '"1,000"', "1"), ("u1", "3", "1.0"),
             ("u1", "4", " 1 "), ("u1", "5", "true"), ("u1", "6", "yes"), ("u1", "7", "2"), ("NULL", "8", "0"),
             ("", "9", "0")]
    rows = [base.format(d + 1, u, p, y) for d, (u, p, y) in enumerate(cells)]
    (tmp_path / "m.csv").write_text("\n".join([HEADER] + rows) + "\n")
    (tmp_path / "schema.yaml").write_text(SCHEMA.replace("timestamp: ts\nsplit: {val: 0.1, test: 0.1}",
                                                         "split: {val: 0, test: 0}").replace("log", "none"))
    assert main(["prepare", "--schema", str(tmp_path / "schema.yaml"), "--input", str(tmp_path / "m.csv"),
                 "--out", str(tmp_path / "o")]) == 0, capsys.readouterr().err
    bad = {b["line"]: (b["field"], b["kind"]) for b in map(json.loads, (tmp_path / "o" / "bad_rows.jsonl")
                                                            .read_text().splitlines())}
    assert bad == {**{n: ("price", "numeric_not_number") for n in range(4, 11)},
                   **{n: ("clicked", "label") for n in (13, 14, 15)}}, bad
    t = pq.read_table(tmp_path / "o" / "train").to_pydict()
    assert t["price"] == [12.0, 1000.0, 3.0, 4.0, 8.0, 9.0] and t["label"] == [1, 0, 1, 1, 0, 0], t
    user = t["user"]
    assert user[0] == user[1] == user[2] == user[3] >= 2 and user[4] >= 2 and user[4] != user[0] and user[5] == 0


@pytest.mark.parametrize("header, message", [
    ("\r".join([HEADER] + ROWS[:3]), "a carriage return (CR) at character 27 of the header line: lines end at LF"),
    ("ts,user," + "x" * 200_000 + ",price,clicked", "the header line is not CSV (field larger than field limit"),
])
def test_header_line_python_csv_cannot_read_is_an_error_not_a_traceback(tmp_path, capsys, header, message):
    """Catches `_csv.Error` escaping as a traceback from the header line: a file with CR-only line ends (classic
    Mac OS exports: the whole file is one line, 'new-line character seen in unquoted field'), or a header field
    over Python's csv field limit (a binary file under a .csv name). Exit 1 naming file:1 and the cause."""
    (tmp_path / "h.csv").write_text(header + "\n" + "\n".join(ROWS) + "\n", newline="")
    code, err = _prepare(tmp_path, tmp_path / "h.csv", tmp_path / "o", capsys)
    assert code == 1 and "Traceback" not in err and f"{tmp_path / 'h.csv'}:1: {message}" in err, (code, err)


def test_folder_upper_case_extension_read_and_plain_text_named_gz(tmp_path, capsys):
    """Catches a folder's `B.CSV` (a Windows export) being left out of the dataset without a word (only
    lower-case extensions were inputs), and a plain-text file named `.csv.gz` reported as 'empty; expected a
    header line ... or csv: {header: false}' (or, after the empty-file warning, as an empty file) instead of as
    the corrupt gzip stream it is."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("\n".join([HEADER] + ROWS[:14]) + "\n")
    (tmp_path / "in" / "B.CSV").write_text("\n".join([HEADER] + ROWS[14:]) + "\n")
    code, err = _prepare(tmp_path, tmp_path / "in", tmp_path / "o", capsys)
    assert code == 0, err
    md = json.loads((tmp_path / "o" / "metadata.json").read_text())
    assert [p.rsplit("/", 1)[1] for p in md["source"]["inputs"]] == ["B.CSV", "a.csv"]
    assert sum(s["rows"] for s in md["splits"].values()) == len(ROWS)
    (tmp_path / "plain.csv.gz").write_text("\n".join([HEADER] + ROWS) + "\n")
    code, err = _prepare(tmp_path, tmp_path / "plain.csv.gz", tmp_path / "g", capsys)
    assert code == 1 and "empty" not in err and (
        f"{tmp_path / 'plain.csv.gz'}: corrupt gzip stream (Error -3 while decompressing data: incorrect header "
        "check) before the end of the header line; expected a gzip-compressed CSV") in err, err


def test_time_split_on_coarse_timestamps_says_why_the_shares_are_off(tmp_path, capsys):
    """Catches a time split on dates without a time silently giving 50% / 0% / 50% for an asked 80 / 10 / 10
    (every row at a cutoff goes to the later split), and a constant timestamp column stopping with 'no train
    rows' and no word of why. Both print the shares got and asked, and the cause."""
    schema = SCHEMA.replace("split: {val: 0.1, test: 0.1}", "split: {val: 0.1, test: 0.1, seed: 0}")
    two = [f"2024-01-0{1 + d % 2},u{d % 3},i{d % 5},{d},{d % 2}" for d in range(40)]
    (tmp_path / "two.csv").write_text("\n".join([HEADER] + two) + "\n")
    (tmp_path / "one.csv").write_text("\n".join([HEADER] + [r.replace("-02,", "-01,") for r in two]) + "\n")
    (tmp_path / "schema.yaml").write_text(schema)
    for data, code_want, got in (("two.csv", 0, "train 50.0% / val 0.0% / test 50.0%"),
                                 ("one.csv", 1, "train 0.0% / val 0.0% / test 100.0%")):
        code = main(["prepare", "--schema", str(tmp_path / "schema.yaml"), "--input", str(tmp_path / data),
                     "--out", str(tmp_path / data.replace(".", "_"))])
        err = capsys.readouterr().err
        assert code == code_want and f"the time split (timestamp: ts) gave {got} of the rows, asked 80% / 10% / " \
            "10%: many rows share the timestamp at a cutoff" in err, (data, code, err)
    md = json.loads((tmp_path / "two_csv" / "metadata.json").read_text())
    assert "many rows share the timestamp" in md["source"]["split"]["warnings"][0]


def test_input_glob_no_shell_expanded(tmp_path, capsys):
    """Catches a quoted glob (or one in a YAML config, where no shell expands it) as a plain input being refused
    as 'no such file or folder', while the docs expand globs for `test=raw/test_*.csv`: plain inputs take their
    matches too (Criteo day files in day order), and a pattern matching nothing is a config error (exit 2)."""
    (tmp_path / "p1.csv").write_text("\n".join([HEADER] + ROWS[:14]) + "\n")
    (tmp_path / "p2.csv").write_text("\n".join([HEADER] + ROWS[14:]) + "\n")
    code, err = _prepare(tmp_path, tmp_path / "p*.csv", tmp_path / "o", capsys)
    assert code == 0, err
    md = json.loads((tmp_path / "o" / "metadata.json").read_text())
    assert md["source"]["inputs"] == [str(tmp_path / "p1.csv"), str(tmp_path / "p2.csv")]
    line = "\t".join(["0"] + [str(i) for i in range(13)] + ["68fd1e64"] * 26)
    for day in (10, 2):
        (tmp_path / f"day_{day}").write_text("\n".join([line] * (day + 1)) + "\n")
    assert main(["prepare", "--input", str(tmp_path / "day_*"), "--out", str(tmp_path / "c")]) == 0
    md = json.loads((tmp_path / "c" / "metadata.json").read_text())
    assert md["source"]["inputs"] == [str(tmp_path / "day_2"), str(tmp_path / "day_10")]
    assert md["splits"]["train"]["rows"] == 3 and md["source"]["split"]["val_test_file"] == str(tmp_path / "day_10")
    capsys.readouterr()
    code, err = _prepare(tmp_path, tmp_path / "q*.csv", tmp_path / "n", capsys)
    assert code == 2 and f"{tmp_path / 'q*.csv'}: the pattern matches no file" in err, err


def test_schema_file_saved_as_utf16_or_with_a_bom(tmp_path, capsys):
    """Catches a schema saved by Windows Notepad as "Unicode" (UTF-16) crashing prepare with a UnicodeDecodeError
    traceback (exit 1) instead of a config error (exit 2) naming the file; a UTF-8 schema with a byte-order
    mark and CRLF line ends prepares like the plain one (its errors name the right line)."""
    (tmp_path / "clicks.csv").write_text("\n".join([HEADER] + ROWS) + "\n")
    (tmp_path / "u16.yaml").write_bytes(SCHEMA.encode("utf-16"))
    (tmp_path / "bom.yaml").write_bytes(codecs.BOM_UTF8 + SCHEMA.replace("\n", "\r\n").encode())
    (tmp_path / "bad.yaml").write_bytes(codecs.BOM_UTF8 + SCHEMA.replace("item}", "itm}").encode())

    def run(schema, out):
        code = main(["prepare", "--schema", str(tmp_path / schema), "--input", str(tmp_path / "clicks.csv"),
                     "--out", str(tmp_path / out)])
        return code, capsys.readouterr().err

    code, err = run("u16.yaml", "a")
    assert code == 2 and f"{tmp_path / 'u16.yaml'}: not UTF-8 text (byte 1 is 0xff); save the schema file as " \
        "UTF-8" in err and "Traceback" not in err, (code, err)
    assert run("bom.yaml", "b")[0] == 0
    code, err = run("bad.yaml", "c")
    assert code == 2 and "bad.yaml:6: categorical[1].column='itm' is not a column" in err, err


def test_header_only_csv_says_it_holds_no_data_lines(tmp_path, capsys):
    """Catches a CSV with its header line and no row being reported as 'the input holds no lines' (it holds
    one: the header), which sends a user looking for a broken or empty file."""
    (tmp_path / "h.csv").write_text(HEADER + "\n")
    code, err = _prepare(tmp_path, tmp_path / "h.csv", tmp_path / "o", capsys)
    assert code == 1 and "(0 bad): the input holds no data lines (empty files, or a header line only)" in err, err


def test_override_after_input_as_the_docs_write_it(tmp_path, capsys):
    """Catches docs/data.md's own example `recsys-dist prepare --input train.txt prepare.dense=bucketize --strict`
    failing: argparse's `--input` (nargs="+") took the override for a path ('prepare.dense=bucketize: no such
    file or folder'). The override applies."""
    line = "\t".join(["0"] + [str(i) for i in range(13)] + ["68fd1e64"] * 26)
    (tmp_path / "train.txt").write_text("\n".join([line] * 20) + "\n")
    code = main(["prepare", "--input", str(tmp_path / "train.txt"), "prepare.dense=bucketize", "--strict",
                 "--out", str(tmp_path / "o")])
    assert code == 0, capsys.readouterr().err
    md = json.loads((tmp_path / "o" / "metadata.json").read_text())
    assert md["dense_transform"] == "bucketize" and md["source"]["inputs"] == [str(tmp_path / "train.txt")], md


def test_input_file_named_twice_is_refused_not_read_twice(tmp_path, capsys):
    """Catches a file given both directly and through its folder (or twice, or by overlapping globs) having its
    rows read twice into the dataset without a word (own data), or a Criteo train.txt given twice doubling the
    data; a config error (exit 2) naming the file."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("\n".join([HEADER] + ROWS) + "\n")
    (tmp_path / "schema.yaml").write_text(SCHEMA)
    code = main(["prepare", "--schema", str(tmp_path / "schema.yaml"), "--input", str(tmp_path / "in" / "a.csv"),
                 str(tmp_path / "in"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and f"{tmp_path / 'in' / 'a.csv'}: given twice" in err, err
    line = "\t".join(["0"] + [str(i) for i in range(13)] + ["68fd1e64"] * 26)
    (tmp_path / "train.txt").write_text("\n".join([line] * 20) + "\n")
    code = main(["prepare", "--input", str(tmp_path / "train.txt"), str(tmp_path / "train.txt"),
                 "--out", str(tmp_path / "c"), "prepare.split=ratio"])
    err = capsys.readouterr().err
    assert code == 2 and "train.txt: given twice" in err, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "c" / "metadata.json").exists()


def test_day_files_beside_a_train_txt_are_refused_not_pooled(tmp_path, capsys):
    """Catches a folder holding day_N files and a train.txt (synth runs in a row, or a Kaggle file copied beside
    Terabyte days) being read whole and re-split at random without a word; a config error (exit 2) naming both."""
    line = "\t".join(["0"] + [str(i) for i in range(13)] + ["68fd1e64"] * 26)
    for name in ("day_0", "day_1", "train.txt"):
        (tmp_path / name).write_text("\n".join([line] * 20) + "\n")
    code = main(["prepare", "--input", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "day files and" in err and "train.txt given together" in err, err
    assert not (tmp_path / "o" / "metadata.json").exists()


def test_long_free_text_cell_hashes_fast_and_to_the_same_key(monkeypatch):
    """Catches a categorical cell of free text (1 MiB: a pasted document, a JSON blob) costing one numpy pass per
    byte position (4.3 s for one such value here, 20 s for a prepare of a file with a 2 MiB one), and the
    one-by-one hash of long values giving other keys than the vectorized one (ids would change with a value's
    length crossing LONG_VALUE_BYTES)."""
    import time

    from recsys_dist.data import tabular_encode as te

    values = pa.array(["y" * (1 << 20), "ab", "", "é" * 3000, "z" * 5000 + "ü", "u1"])
    start = time.perf_counter()
    fast = te._hash_unique(values)
    assert time.perf_counter() - start < 2.0
    monkeypatch.setattr(te, "LONG_VALUE_BYTES", 1 << 30)  # every value through the vectorized loop
    assert (te._hash_unique(values) == fast).all()


def test_minus_one_plus_one_labels_get_the_rule_that_fits(tmp_path, capsys):
    """Catches -1 / +1 labels (libsvm, Vowpal Wabbit click logs) being answered with a hint that does not fit
    them ('e.g. label: "clicked >= 4"'); the message names them and gives the rule that does, and that rule
    prepares the file with -1 -> 0, +1 -> 1."""
    rows = [r.rsplit(",", 1)[0] + ("," + ("1" if i % 4 == 0 else "-1")) for i, r in enumerate(ROWS)]
    (tmp_path / "pm.csv").write_text("\n".join([HEADER] + rows) + "\n")
    code, err = _prepare(tmp_path, tmp_path / "pm.csv", tmp_path / "o", capsys)
    assert code == 2 and "label='clicked' is -1 / +1, not 0 / 1" in err and 'label: "clicked > 0"' in err, err
    (tmp_path / "rule.yaml").write_text(SCHEMA.replace("label: clicked", 'label: "clicked > 0"'))
    assert main(["prepare", "--schema", str(tmp_path / "rule.yaml"), "--input", str(tmp_path / "pm.csv"),
                 "--out", str(tmp_path / "r")]) == 0
    md = json.loads((tmp_path / "r" / "metadata.json").read_text())
    assert sum(s["positives"] for s in md["splits"].values()) == sum(i % 4 == 0 for i in range(len(ROWS)))


def test_stray_quote_line_gets_one_verdict_whatever_its_block(tmp_path, capsys):
    """Catches a line with an odd number of quotes (`u1,5" screen,...`: a stray inch mark, or half of a record
    split by a newline inside quotes) being kept as a row when its block is otherwise clean (Arrow reads a quote
    inside an unquoted field literally) but made a bad line when a defect elsewhere sends the block through the
    line-by-line pass: the verdict would depend on its neighbours."""
    stray = '2024-01-05T00:00:00,u1,5" screen,7.5,1'
    for name, extra in (("alone", []), ("mixed", ["2024-01-06T00:00:00,u\x001,i1,1,1"])):
        rows = ROWS[:4] + [stray] + extra + ROWS[4:]
        (tmp_path / f"{name}.csv").write_text("\n".join([HEADER] + rows) + "\n")
        code, err = _prepare(tmp_path, tmp_path / f"{name}.csv", tmp_path / name, capsys)
        assert code == 0, err
        bad = [json.loads(x) for x in (tmp_path / name / "bad_rows.jsonl").read_text().splitlines()]
        assert (bad[0]["line"], bad[0]["kind"], bad[0]["field"]) == (6, "unparsable", "item"), (name, bad)


def test_a_headerless_csv_read_with_a_header_says_so(tmp_path, capsys):
    """Catches a click log exported without a header line (the usual for logs) meeting the default header: true
    with only "label='clicked' is not a column of ... (columns: 2024-01-01T00:00:00, u1, ...)", which does not
    say why (seen failing without the hint); a header that shares a column with the schema gets no such hint;
    the schema that then sets header: false with the columns prepares."""
    (tmp_path / "noheader.csv").write_text("\n".join(ROWS) + "\n")
    code, err = _prepare(tmp_path, tmp_path / "noheader.csv", tmp_path / "o", capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, (code, err)
    assert "none of the schema's columns is in the first line, 2 of its 5 fields are numbers: if the file has no " \
           "header line, set csv: {header: false, columns: [...]} in the schema (5 names" in err, err
    (tmp_path / "renamed.csv").write_text("\n".join([HEADER.replace("clicked", "click")] + ROWS) + "\n")
    code, err = _prepare(tmp_path, tmp_path / "renamed.csv", tmp_path / "o2", capsys)
    assert code == 2 and "label='clicked' is not a column" in err and "first line" not in err, err
    (tmp_path / "schema.yaml").write_text(SCHEMA + "csv: {header: false, columns: [ts, user, item, price, clicked]}\n")
    assert main(["prepare", "--schema", str(tmp_path / "schema.yaml"), "--input", str(tmp_path / "noheader.csv"),
                 "--out", str(tmp_path / "o3")]) == 0


def test_a_latin1_csv_names_the_encoding_to_convert_from(tmp_path, capsys):
    """Catches a Windows-1252 export (accented values as single bytes) leaving only per-line 'invalid UTF-8 at
    byte N' bad rows with no word of what to do about the file (seen failing without the hint); the clean lines
    still prepare."""
    rows = [r.replace(",u1,", ",Zoë,") for r in ROWS]
    (tmp_path / "latin1.csv").write_bytes(("\n".join([HEADER] + rows) + "\n").encode("cp1252"))
    code, err = _prepare(tmp_path, tmp_path / "latin1.csv", tmp_path / "o", capsys)
    assert code == 0 and "invalid_utf8" in err, (code, err)
    assert "re-encoded first, e.g. iconv -f cp1252 -t utf-8" in err, err
