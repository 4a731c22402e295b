"""Real-world shapes of click logs through `recsys-dist prepare` (the CLI's entry point, as docs/own_data.md tells
a user): float-typed Parquet id columns (pandas' int column with nulls), timestamp formats (Avazu's YYMMDDHH,
epoch milliseconds, compact dates), CSV records with newlines inside quotes, backslash-escaped quotes."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys_dist.cli import main

IDS = [3, 7, None, 123456789012, 3, 10**15 + 1, 7, 42, None, 3] * 3  # pandas: float64 with NaN for the Nones


def _run(tmp_path, schema_text, data, out, capsys, *extra):
    (tmp_path / "schema.yaml").write_text(schema_text)
    code = main(["prepare", "--schema", str(tmp_path / "schema.yaml"), "--input", str(data), "--out",
                 str(tmp_path / out), *extra])
    return code, capsys.readouterr().err


def _tables(out):
    return {s: pq.read_table(out / s).to_pydict() for s in ("train", "val", "test")}


ID_SCHEMA = """label: clicked
split: {val: 0.2, test: 0.2, seed: 3}
categorical:
  - {column: user}
  - {column: item, hash_cap: 1000}
multi_valued:
  - {column: tags}
"""


def test_float_parquet_ids_get_the_ids_of_integers(tmp_path, capsys):
    """Catches a float64 Parquet id column (pandas writes an int column with nulls so: 3.0, NaN) giving other ids
    than the CSV's `3` and an int64 Parquet's 3: Arrow's float-to-text cast writes 123456789012.0 as
    '1.23456789012e+11' (every id >= 1e10 got another key), -0.0 as '-0'; a NaN cell (not a Parquet null) was the
    value 'nan' instead of empty. A non-integral 3.5 stays the text '3.5' in both formats."""
    n = len(IDS)
    items = [None if v is None else (v + 0.5 if i % 3 == 0 else v) for i, v in enumerate(IDS)]
    labels = [i % 2 for i in range(n)]
    tags = [[v, 5] if v is not None else [] for v in IDS]

    def text(v):
        return "" if v is None else (str(v) if float(v).is_integer() else repr(v))

    csv = ["user,item,tags,clicked"] + [f"{text(u)},{text(it)},{'|'.join(text(t) for t in tg)},{y}"
                                        for u, it, tg, y in zip(IDS, items, tags, labels)]
    (tmp_path / "ids.csv").write_text("\n".join(csv) + "\n")
    as_int = pa.table({"user": pa.array(IDS, pa.int64()), "item": pa.array([text(v) for v in items]),
                       "tags": pa.array(tags, pa.list_(pa.int64())), "clicked": pa.array(labels, pa.int64())})
    user_f = np.array([np.nan if v is None else float(v) for v in IDS])
    as_float = pa.table({"user": pa.array(user_f, from_pandas=True),
                         "item": pa.array([None if v is None else float(v) for v in items], pa.float64()),
                         "tags": pa.array([[float(t) for t in tg] for tg in tags], pa.list_(pa.float64())),
                         "clicked": pa.array(labels, pa.float64())})
    assert as_float.column("user").null_count == IDS.count(None)
    with_nan = as_float.set_column(0, "user", pa.array(user_f, pa.float64()))  # NaN values, not nulls
    neg_zero = as_int.set_column(0, "user", pa.array([0 if v == 3 else v for v in IDS], pa.int64()))
    neg_zero_f = as_float.set_column(0, "user", pa.array([-0.0 if v == 3 else (None if v is None else float(v))
                                                          for v in IDS], pa.float64()))
    pq.write_table(as_int, tmp_path / "int.parquet")
    pq.write_table(as_float, tmp_path / "float.parquet")
    pq.write_table(with_nan, tmp_path / "nan.parquet")
    pq.write_table(neg_zero, tmp_path / "zero.parquet")
    pq.write_table(neg_zero_f, tmp_path / "negzero.parquet")
    outs = {}
    for name in ("ids.csv", "int.parquet", "float.parquet", "nan.parquet", "zero.parquet", "negzero.parquet"):
        code, err = _run(tmp_path, ID_SCHEMA, tmp_path / name, name.replace(".", "_"), capsys)
        assert code == 0, (name, err)
        outs[name] = _tables(tmp_path / name.replace(".", "_"))
    assert outs["int.parquet"] == outs["ids.csv"]
    assert outs["float.parquet"] == outs["ids.csv"]
    assert outs["nan.parquet"] == outs["ids.csv"]
    assert outs["negzero.parquet"] == outs["zero.parquet"]
    assert {1000000000000001.5, 123456789012.5} <= set(items)  # non-integral, compared as their repr text
    (tmp_path / "dot0.csv").write_text("\n".join([csv[0]] + [r.replace("3,", "3.0,", 1) for r in csv[1:]]) + "\n")
    code, err = _run(tmp_path, ID_SCHEMA, tmp_path / "dot0.csv", "dot0", capsys)
    assert code == 0 and _tables(tmp_path / "dot0")["train"]["user"] != outs["ids.csv"]["train"]["user"]  # as docs
