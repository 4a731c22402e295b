"""Your own data: schema file -> prepare (CSV == Parquet), multi-valued KJTs and pooling, schema / data errors,
and the generated example trained on 2 gloo ranks == 1 process, with per-row predictions."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from dist_harness import run_on_ranks
from recsys_dist.config import PrepareConfig, load_config
from recsys_dist.data.bad_rows import PrepareError
from recsys_dist.data.metadata import Metadata
from recsys_dist.data.schema_file import SchemaError, load_schema
from recsys_dist.data.tabular_prepare import prepare_tabular

# ts (shuffled), user, tags, price, rating: the time split puts the 6 oldest in train, then 2 val, 2 test
ROWS = [
    ("2024-01-05T00:00:00", "alice", "a|b", "3.5", "5"),
    ("2024-01-01T00:00:00", "bob", "a", "10", "2"),
    ("2024-01-09T00:00:00", "alice", "", "0", "4"),
    ("2024-01-02T00:00:00", "carol", "c|a|b|b", "", "1"),
    ("2024-01-03T00:00:00", "bob", "b|a", "1e3", "4"),
    ("2024-01-10T00:00:00", "dave", "a", "7", "3"),
    ("2024-01-04T00:00:00", "alice", "a|c", "2", "5"),
    ("2024-01-08T00:00:00", "bob", "b", "4", "4"),
    ("2024-01-06T00:00:00", "carol", "a||b", "0.5", "2"),
    ("2024-01-07T00:00:00", "erin", "c", "100", "5"),
]
SCHEMA = """\
label: "rating >= 4"
timestamp: ts
split: {val: 0.2, test: 0.2, seed: 3}
categorical:
  - {column: user, name: user_id}
multi_valued:
  - {column: tags, separator: "|", pooling: POOLING, max_length: 3}
numeric:
  - {column: price, transform: log}
  - {column: price, name: price_mm, transform: minmax}
  - {column: price, name: price_b, transform: bucketize}
cross_pairs: [[user_id, price_b]]
"""


def write_csv(path: Path, rows=ROWS, header="ts,user,tags,price,rating") -> Path:
    path.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


def write_parquet(path: Path) -> Path:
    pq.write_table(pa.table({
        "ts": pa.array([datetime.fromisoformat(r[0]) for r in ROWS], pa.timestamp("s")),
        "user": [r[1] for r in ROWS],
        "tags": pa.array([[t for t in r[2].split("|")] if r[2] else [] for r in ROWS], pa.list_(pa.string())),
        "price": pa.array([float(r[3]) if r[3] else None for r in ROWS], pa.float64()),
        "rating": pa.array([int(r[4]) for r in ROWS], pa.int64()),
    }), path)
    return path


def schema_file(tmp: Path, text: str = SCHEMA, pooling: str = "sum") -> Path:
    p = tmp / f"schema_{pooling}.yaml"
    p.write_text(text.replace("POOLING", pooling))
    return p


def prep(tmp: Path, data: Path, schema: Path, out: str = "out", **kw) -> Metadata:
    cfg = PrepareConfig(input=[str(data)], out_dir=str(tmp / out), schema=str(schema), **kw)
    return prepare_tabular(cfg)


def read(out: Path, split: str) -> pa.Table:
    md = Metadata.load(out)
    return pa.concat_tables([pq.read_table(out / f) for f in md.split(split).files])


def test_csv_and_parquet_give_identical_prepared_output(tmp_path):
    s = schema_file(tmp_path)
    md_csv = prep(tmp_path, write_csv(tmp_path / "clicks.csv"), s, "a")
    md_pq = prep(tmp_path, write_parquet(tmp_path / "clicks.parquet"), s, "b")
    for split in ("train", "val", "test"):
        assert read(tmp_path / "a", split).equals(read(tmp_path / "b", split)), split
    a, b = json.loads(md_csv.to_json()), json.loads(md_pq.to_json())
    assert a["source"].pop("inputs") != b["source"].pop("inputs")
    assert a == b
    # time split: train = the 6 oldest rows, in input order; val the next 2, test the newest 2
    tr, va, te = read(tmp_path / "a", "train"), read(tmp_path / "a", "val"), read(tmp_path / "a", "test")
    assert tr.column("label").to_pylist() == [1, 0, 0, 1, 1, 0]  # rows 1, 2, 4, 5, 7, 9: rating >= 4
    assert va.column("label").to_pylist() == [1, 1] and te.column("label").to_pylist() == [1, 0]
    # vocab over train: alice 2, bob 2, carol 2 (ties by key) -> ids 2..4; dave / erin unseen -> OOV 1
    users = tr.column("user_id").to_pylist()
    assert sorted(set(users)) == [2, 3, 4] and users[0] == users[4] and users[1] == users[3]
    assert te.column("user_id").to_pylist()[1] == 1 and va.column("user_id").to_pylist()[1] == 1
    np.testing.assert_allclose(tr.column("price").to_pylist(), np.log1p([3.5, 10, 0, 1000, 2, 0.5]), rtol=1e-6)
    # minmax over train prices (empty excluded): min 0.5, max 1000; clipped outside; empty -> 0
    np.testing.assert_allclose(tr.column("price_mm").to_pylist(), [3 / 999.5, 9.5 / 999.5, 0, 1, 1.5 / 999.5, 0],
                               rtol=1e-6)
    assert te.column("price_mm").to_pylist() == [0.0, pytest.approx(6.5 / 999.5)]  # 0 clipped; 7
    # bucketize (Criteo winners on floor(x)): x <= 2 -> x + 17; x > 2 -> floor(ln(x)^2) + 17; empty -> 0
    assert tr.column("price_b").to_pylist() == [18, 22, 0, 64, 19, 17]
    assert md_csv.source["cross_pairs"] == ["user_id,price_b"]
    assert md_csv.source["split"]["mode"] == "time"


def test_multi_valued_kjt_exact_and_pooling_mean_vs_sum(tmp_path):
    from embedding_sharding.planner import table_constraints
    from pipelines.parquet_input import ParquetBatchReader
    from recsys_dist.job import features_for
    from recsys_dist.models.sparse import SparseArch

    data = write_csv(tmp_path / "clicks.csv")
    pooled = {}
    for pooling in ("sum", "mean"):
        md = prep(tmp_path, data, schema_file(tmp_path, pooling=pooling), pooling)
        f = md.feature("tags")
        assert f.multi_valued and f.pooling == pooling
        # train rows' tags (max_length 3, empty items dropped): a|b, a, c|a|b, b|a, a|c, a|b -> 12 ids / 6 rows
        assert f.avg_ids_per_sample == pytest.approx(2.0)
        # vocab by train count: a 6, b 4, c 2 -> a=2, b=3, c=4 (+ 0 empty, 1 OOV)
        assert f.num_embeddings == 5
        [batch] = list(ParquetBatchReader(tmp_path / pooling, "train", batch_size=6, mode="eval", prefetch=0))
        kjt = batch.sparse_features["tags"]
        assert kjt.lengths().tolist() == [2, 1, 3, 2, 2, 2]
        assert kjt.values().tolist() == [2, 3, 2, 4, 2, 3, 3, 2, 2, 4, 2, 3]
        assert batch.sparse_features["user_id"].lengths().tolist() == [1] * 6
        [test] = list(ParquetBatchReader(tmp_path / pooling, "test", batch_size=2, mode="eval", prefetch=0))
        assert test.sparse_features["tags"].lengths().tolist() == [0, 1]  # an empty field: no id
        assert test.sparse_features["tags"].values().tolist() == [2]

        cfg = load_config(None, [f"data.dir={tmp_path / pooling}", "model.embedding_dim=4"])
        tables = features_for(cfg, md).tables
        arch = SparseArch(tables, device="cpu")
        # the planner sees the real pooling factor of the multi-valued table
        assert table_constraints(arch)["t_tags"].pooling_factors == [pytest.approx(2.0)]
        w = torch.arange(20, dtype=torch.float32).view(5, 4)
        arch.ebc.embedding_bags["t_tags"].weight.data.copy_(w)
        k = arch.feature_names.index("tags")
        pooled[pooling] = arch(batch.sparse_features)[:, k]
        torch.testing.assert_close(arch(test.sparse_features)[:, k], torch.stack([torch.zeros(4), w[2]]))
    rows = [[2, 3], [2], [4, 2, 3], [3, 2], [2, 4], [2, 3]]
    want_sum = torch.stack([w[r].sum(0) for r in rows])
    want_mean = torch.stack([w[r].mean(0) for r in rows])
    torch.testing.assert_close(pooled["sum"], want_sum)
    torch.testing.assert_close(pooled["mean"], want_mean)


@pytest.mark.parametrize("edit, message", [
    (("{column: user, name: user_id}", "{column: usr, name: user_id}"),
     r"schema_sum\.yaml:5: categorical\[0\]\.column='usr' is not a column of .*clicks\.csv \(columns: ts, user"),
    (("transform: minmax", "transform: sqrt"),
     r"schema_sum\.yaml:10: numeric\[1\]\.transform='sqrt' is not one of none, log, minmax, standardize, "
     r"bucketize"),
    (('label: "rating >= 4"', "label: rating"),
     r"schema_sum\.yaml:1: label='rating' is not a binary column: 9 of the first 10 rows of .*clicks\.csv are "
     r"not 0 / 1 .*label: \"rating >= 4\""),
    (('label: "rating >= 4"', 'label: "rating => 4"'),
     r"schema_sum\.yaml:1: label='rating => 4': a rule must be `column OP number`"),
    (("pooling: POOLING", "pooling: max"),
     r"schema_sum\.yaml:7: multi_valued\[0\]\.pooling='max' is not one of sum, mean"),
    (("cross_pairs: [[user_id, price_b]]", "cross_pairs: [[user_id, tags]]"),
     r"schema_sum\.yaml:\d+: cross_pairs\[0\]: 'tags' is not a single-valued categorical"),
])
def test_schema_errors_name_file_line_key_and_value(tmp_path, edit, message):
    data = write_csv(tmp_path / "clicks.csv")
    s = schema_file(tmp_path, SCHEMA.replace(*edit))
    with pytest.raises(SchemaError, match=message):
        prep(tmp_path, data, s)
    assert not (tmp_path / "out" / "metadata.json").exists()


@pytest.mark.parametrize("row, message, kind", [
    (("2024-01-11T00:00:00", "bob", "a", "cheap", "4"), r"clicks\.csv:12: price='cheap': expected a number or empty",
     "numeric_not_number"),
    (("2024-01-11T00:00:00", "bob", "a", "4"), r"clicks\.csv:12: 4 fields, expected 5 \(','-separated\): "
     r"'2024-01-11T00:00:00,bob,a,4'", "column_count"),
    (("yesterday", "bob", "a", "4", "4"),
     r"clicks\.csv:12: ts='yesterday': expected epoch seconds \(below 1e11: not milliseconds\) or ISO-8601",
     "timestamp"),
    (("2024-01-11T00:00:00", "bob", "a", "4", "n/a"), r"clicks\.csv:12: rating='n/a': expected a number for the "
     r"label rule rating >= 4", "label"),
])
def test_data_errors_counted_and_reported_or_strict(tmp_path, row, message, kind, capsys):
    data = write_csv(tmp_path / "clicks.csv", ROWS + [row])
    s = schema_file(tmp_path)
    md = prep(tmp_path, data, s)
    assert md.bad_rows["count"] == 1 and md.bad_rows["by_reason"] == {kind: 1}
    sample = md.bad_rows["samples"][0]
    import re

    assert re.search(message, f"{sample['file']}:{sample['line']}: {sample['reason']}")
    assert sum(x.rows for x in md.splits.values()) == 10 and md.source["lines"] == 11
    assert re.search(message, capsys.readouterr().err)
    with pytest.raises(PrepareError, match=message):
        prep(tmp_path, data, s, "strict", strict=True)


def test_non_utf8_byte_is_a_bad_row_not_a_crash(tmp_path, capsys):
    """A byte that is not UTF-8 in one CSV line: that line is a bad row named by file, line and column (it stopped
    prepare with Arrow's 'invalid UTF8 data' before); the other rows are kept; --strict stops at it."""
    data = write_csv(tmp_path / "clicks.csv", ROWS + [("2024-01-11T00:00:00", "bXob", "a", "4", "4")])
    data.write_bytes(data.read_bytes().replace(b"bXob", b"b\xffob"))
    md = prep(tmp_path, data, schema_file(tmp_path))
    assert md.bad_rows["by_reason"] == {"invalid_utf8": 1} and sum(x.rows for x in md.splits.values()) == 10
    message = "clicks.csv:12: user: invalid UTF-8 at byte 22 of the line (0xff)"
    assert message in capsys.readouterr().err
    record = json.loads((tmp_path / "out" / "bad_rows.jsonl").read_text())
    assert record["field"] == "user" and record["excerpt"].startswith("2024-01-11T00:00:00,b\\xffob,a")
    with pytest.raises(PrepareError, match=re.escape(message)):
        prep(tmp_path, data, schema_file(tmp_path), "strict", strict=True)


def test_parquet_column_of_wrong_type_is_a_schema_error(tmp_path):
    p = tmp_path / "clicks.parquet"
    pq.write_table(pa.table({"ts": [1.0], "user": ["a"], "tags": [1.5], "price": [1.0], "rating": [4]}), p)
    with pytest.raises(SchemaError, match=r"multi_valued\[0\]\.column='tags': in .*clicks\.parquet the column is "
                                          r"double; expected a list column or separated text"):
        prep(tmp_path, p, schema_file(tmp_path))


def test_schema_file_parses_and_refuses_unknown_keys(tmp_path):
    s = load_schema(schema_file(tmp_path))
    assert s.label.column == "rating" and s.label.op == ">=" and s.label.threshold == 4
    assert [c.name for c in s.single()] == ["user_id"] and s.multi()[0].max_length == 3
    p = tmp_path / "bad.yaml"
    p.write_text("label: clicked\ncategorical:\n  - {column: user, hashcap: 10}\n")
    with pytest.raises(SchemaError, match=r"bad\.yaml:3: categorical\[0\]\.hashcap: unknown key"):
        load_schema(p)
    p.write_text("label: clicked\ncategorical:\n  - {column: user, hash_cap: 10, min_count: 2}\n")
    with pytest.raises(SchemaError, match=r"bad\.yaml:3: categorical\[0\]: give min_count .* or hash_cap"):
        load_schema(p)


# -- the generated example on 2 ranks == 1 process ----------------------------------------------------------------
def _cfg(root, out):
    return load_config(None, [
        f"data.dir={root}", "data.batch_size=128", "data.eval_batch_size=256", "data.shuffle=false",
        "model.embedding_dim=8", "model.arch_args={bottom_mlp: [16, 8], top_mlp: [16, 1]}", f"train.out_dir={out}",
        "train.epochs=2", "train.log_every_steps=100", "train.threads=1", "train.tensorboard=false",
        "optim.sparse_lr=0.05", "optim.dense_lr=0.05", "sharding.sharding_types=[data_parallel]"])


def _train_and_predict(rank, world, root, out):
    from recsys_dist.evaluate import evaluate
    from recsys_dist.train import train

    result = train(_cfg(root, out))
    ev = evaluate(_cfg(root, out), Path(out) / "checkpoint", "test", predictions=Path(out) / "pred.parquet")
    return result["test"], ev


def _single_process_copy(src: Path, dst: Path, world: int, local_batch: int) -> None:
    """The train split reordered so that a 1-process run's step k batch holds exactly the rows the `world` ranks
    read at step k (the reader gives rank r the contiguous block [r * S * b, (r + 1) * S * b))."""
    shutil.copytree(src, dst)
    md = Metadata.load(src)
    table = read(src, "train")
    steps = table.num_rows // (world * local_batch)
    order = [r * steps * local_batch + k * local_batch + i
             for k in range(steps) for r in range(world) for i in range(local_batch)]
    for f in md.split("train").files:
        (dst / f).unlink()
    pq.write_table(table.take(pa.array(order)), dst / "train" / "part-00000.parquet")
    md.splits["train"].files, md.splits["train"].rows = ["train/part-00000.parquet"], len(order)
    md.splits["train"].rows_per_file = [len(order)]
    md.save(dst)


def test_example_trains_on_two_ranks_like_one_process_and_beats_constant(tmp_path):
    from recsys_dist.data.example_clicklog import write_example
    from recsys_dist.metrics import binary_metrics

    report = write_example(tmp_path / "raw", rows=2000, fmt="csv", seed=1)
    md = prep(tmp_path, tmp_path / "raw" / "clicks.csv", tmp_path / "raw" / "schema.yaml", "data")
    assert md.feature("tags").multi_valued and md.feature("tags").pooling == "mean"
    _single_process_copy(tmp_path / "data", tmp_path / "data1", 2, 64)

    (m2, ev2), _ = run_on_ranks(_train_and_predict, 2, (tmp_path / "data", tmp_path / "run2"))
    [(m1, ev1)] = run_on_ranks(_train_and_predict, 1, (tmp_path / "data1", tmp_path / "run1"))
    p2, p1 = pq.read_table(tmp_path / "run2" / "pred.parquet"), pq.read_table(tmp_path / "run1" / "pred.parquet")
    labels = read(tmp_path / "data", "test").column("label").to_numpy()
    assert p2.num_rows == p1.num_rows == labels.size == md.split("test").rows  # every row once, no padding
    assert (p2.column("label").to_numpy() == labels).all()
    assert (p2.column("row").to_numpy() == np.arange(labels.size)).all()
    np.testing.assert_allclose(p2.column("logit").to_numpy(), p1.column("logit").to_numpy(), atol=2e-4)
    assert m2["auc"] == pytest.approx(m1["auc"], abs=1e-4) and ev2["auc"] == pytest.approx(m2["auc"], abs=1e-6)
    # better than the best constant predictor (the train click rate) on the test split
    ctr = md.split("train").positives / md.split("train").rows
    const = binary_metrics(torch.stack([torch.full((labels.size,), float(np.log(ctr / (1 - ctr)))),
                                        torch.from_numpy(labels).float(), torch.ones(labels.size)]))
    assert ev2["logloss"] < const["logloss"] - 0.03
    assert ev2["auc"] > 0.70 and report["bayes_auc_newest_10pct"] > ev2["auc"]


def test_text_label_rule_csv_and_parquet_and_the_hint(tmp_path, capsys):
    """A label given as text (Adult's income '>50K' / '<=50K'): `label: "income == '>50K'"` makes 1 where the cell,
    without surrounding spaces, is that text (`!=` the others); an empty cell is a bad row naming the rule; CSV and
    Parquet agree; and a text column given as a plain label is refused with a hint at the text rule.
    Catches: a text label needing a hand-made 0/1 column first, spaces (' >50K' in UCI's files) giving 0."""
    values = [">50K", " >50K", "<=50K", "<=50K ", ">50K", "<=50K", "<=50K", ">50K", "<=50K", "<=50K"]
    rows = [(*r[:4], v) for r, v in zip(ROWS, values)]
    csv = write_csv(tmp_path / "adult.csv", rows + [("2024-01-11T00:00:00", "bob", "a", "4", "")],
                    header="ts,user,tags,price,income")
    parquet = tmp_path / "adult.parquet"
    pq.write_table(pa.table({"ts": [r[0] for r in rows], "user": [r[1] for r in rows], "tags": [r[2] for r in rows],
                             "price": [r[3] for r in rows], "income": values}), parquet)

    def labels(out: str) -> list:
        return sorted(zip(*(pa.concat_tables([read(tmp_path / out, s) for s in ("train", "val", "test")])
                             .column(c).to_pylist() for c in ("user_id", "label"))))

    for op, out, data in (("==", "csv", csv), ("==", "pq", parquet), ("!=", "neq", csv)):
        s = schema_file(tmp_path, SCHEMA.replace('label: "rating >= 4"', f"label: \"income {op} '>50K'\""))
        md = prep(tmp_path, data, s, out)
        assert md.source["label"] == f"income {op} '>50K'"
        n = sum(x.rows for x in md.splits.values())
        assert n == 10 and sum(x.positives for x in md.splits.values()) == (4 if op == "==" else 6)
    assert labels("csv") == labels("pq")
    assert md.bad_rows["by_reason"] == {"label": 1}
    assert "adult.csv:12: income is empty: expected a value for the label rule income != '>50K'" in capsys.readouterr().err
    s = schema_file(tmp_path, SCHEMA.replace('label: "rating >= 4"', "label: income"))
    with pytest.raises(SchemaError, match=r"label='income' is not a binary column: .* a text one e\.g\. label: "
                                          r"\"income == '>50K'\""):
        prep(tmp_path, csv, s, "plain")
