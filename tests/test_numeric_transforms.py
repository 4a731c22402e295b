"""Numeric fields of your own data (schema `numeric[].transform`): standardize by default with train-only mean / std,
log / minmax / none, clipping counted and reported, bad entries refused before any output, and a model that learns
from raw-scale columns (incomes ~5e4, signed balances ~1e5) through the default."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys_dist.cli import main
from recsys_dist.data.metadata import Metadata
from recsys_dist.data.numeric_transforms import CHUNK, NumericFit, apply

HEADER = "seg,amount,clicked\n"
TRAIN = [("a", "10", "1"), ("b", "20", "0"), ("a", "30", "1"), ("b", "40", "0"), ("a", "", "1"), ("b", "-50", "0")]
VAL = [("a", "25", "1"), ("b", "1000000", "0")]  # 1e6: far above anything in train
TEST = [("a", "-1000000", "0"), ("b", "40", "1"), ("a", "", "1")]
SCHEMA = """\
label: clicked
categorical:
  - {column: seg}
numeric:
  - {column: amount}
  - {column: amount, name: amount_z2, transform: standardize, clip: 1.5}
  - {column: amount, name: amount_log, transform: log}
  - {column: amount, name: amount_mm, transform: minmax}
  - {column: amount, name: amount_raw, transform: none}
"""


def _write(tmp: Path, schema: str = SCHEMA) -> Path:
    raw = tmp / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", TRAIN), ("valid", VAL), ("test", TEST)):
        (raw / f"{name}.csv").write_text(HEADER + "".join(",".join(r) + "\n" for r in rows))
    (raw / "schema.yaml").write_text(schema)
    return raw


def _prepare(raw: Path, out: Path) -> int:
    return main(["prepare", "--schema", str(raw / "schema.yaml"), "--out", str(out), "--input",
                 f"train={raw}/train.csv", f"val={raw}/valid.csv", f"test={raw}/test.csv"])


def _col(out: Path, split: str, name: str) -> np.ndarray:
    md = Metadata.load(out)
    return np.concatenate([pq.read_table(out / f).column(name).to_numpy() for f in md.split(split).files])


def test_default_standardize_train_only_statistics_exact_values_and_clip_report(tmp_path, capsys):
    """Defects caught: a numeric field without `transform:` reaching the model raw (the old default `none`); mean /
    std taken over val / test too (val's 1e6 and test's -1e6 would move every value: a leak); empty cells counted in
    the statistics or not written as 0 (= the train mean); values beyond `clip` standard deviations not clipped;
    log silently zeroing negatives; minmax clipping unreported; the clip counts missing from metadata / the report."""
    raw = _write(tmp_path)
    assert _prepare(raw, tmp_path / "out") == 0
    captured = capsys.readouterr()
    md = Metadata.load(tmp_path / "out")
    train = np.array([10, 20, 30, 40, -50], dtype=np.float64)  # the non-empty train values only
    mean, std = train.mean(), train.std()
    info = md.source["numeric"]
    assert info["amount"]["transform"] == "standardize" and info["amount"]["clip"] == 5.0
    assert info["amount"]["mean"] == pytest.approx(mean) and info["amount"]["std"] == pytest.approx(std)
    assert info["amount"]["count"] == 5 and (info["amount"]["min"], info["amount"]["max"]) == (-50.0, 40.0)
    z = lambda x, c=5.0: np.clip((np.asarray(x, dtype=np.float64) - mean) / std, -c, c)  # noqa: E731
    np.testing.assert_allclose(_col(tmp_path / "out", "train", "amount"), [*z([10, 20, 30, 40]), 0.0, *z([-50])],
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(_col(tmp_path / "out", "val", "amount"), [*z([25]), 5.0], rtol=1e-6)
    np.testing.assert_allclose(_col(tmp_path / "out", "test", "amount"), [-5.0, *z([40]), 0.0], rtol=1e-6)
    # clip: 1.5 clips train's -50 (z = -1.90) too
    np.testing.assert_allclose(_col(tmp_path / "out", "train", "amount_z2"), [*z([10, 20, 30, 40], 1.5), 0, -1.5],
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(_col(tmp_path / "out", "test", "amount_log"), [0.0, np.log1p(40), 0.0], rtol=1e-6)
    np.testing.assert_allclose(_col(tmp_path / "out", "val", "amount_mm"), [75 / 90, 1.0], rtol=1e-6)
    np.testing.assert_allclose(_col(tmp_path / "out", "val", "amount_raw"), [25, 1e6], rtol=1e-6)
    assert md.source["minmax"]["amount_mm"] == [-50.0, 40.0]
    assert md.dense_stats["amount"]["mean"] == pytest.approx(z(train).sum() / 6, abs=1e-6)  # empty row = 0
    clipped = md.source["numeric_clipped"]
    assert clipped["train"] == {"amount_z2": {"below": 1, "above": 0, "of": 5, "share": 0.2},
                                "amount_log": {"below": 1, "above": 0, "of": 5, "share": 0.2}}
    assert clipped["val"]["amount"] == {"below": 0, "above": 1, "of": 2, "share": 0.5}
    assert clipped["val"]["amount_mm"] == {"below": 0, "above": 1, "of": 2, "share": 0.5}
    assert clipped["test"]["amount"] == {"below": 1, "above": 0, "of": 2, "share": 0.5}
    assert "amount_raw" not in clipped["val"]
    assert "  val    numeric values clipped to the train range: amount 1 (50.00%)" in captured.out
    assert ("prepare: warning: test: amount_log: 1 of 2 values are negative and log sets them to 0; use "
            "transform: standardize") in captured.err
    assert "prepare: warning: val: amount: 50.0% of values clipped by standardize (0 below, 1 above, of 2)" \
        in captured.err


@pytest.mark.parametrize("entry, message", [
    ("{column: amount, transform: sqrt}",
     "schema.yaml:5: numeric[0].transform='sqrt' is not one of none, log, minmax, standardize, bucketize"),
    ("{column: amount, transform: Standardize}",
     "schema.yaml:5: numeric[0].transform='Standardize' is not one of none, log, minmax, standardize, bucketize"),
    ("{column: amount, transform: log, clip: 3}",
     "schema.yaml:5: numeric[0].clip=3: clip is for transform: standardize (this field is log"),
    ("{column: amount, clip: -1}", "schema.yaml:5: numeric[0].clip=-1: expected a number > 0"),
    ("{column: amount, clip: .inf}", "schema.yaml:5: numeric[0].clip=inf: expected a number > 0"),
    ("{column: amount, scale: log}",
     "schema.yaml:5: numeric[0].scale: unknown key; expected one of column, name, transform, clip"),
])
def test_bad_numeric_entry_refused_before_any_output(tmp_path, capsys, entry, message):
    """Defects caught: a misspelt transform silently falling back to a default (the field reaching the model in
    another scale than asked), `clip` accepted where nothing uses it, or the error found after files were written /
    not naming the schema line and field."""
    raw = _write(tmp_path, "label: clicked\ncategorical:\n  - {column: seg}\nnumeric:\n  - " + entry + "\n")
    assert _prepare(raw, tmp_path / "out") == 2  # a config error (the schema), exit 2 as any config error
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "out").exists()


def test_fit_is_exact_for_large_offsets_and_independent_of_blocks():
    """Defects caught: variance by sum(x^2) - n mean^2 (epoch seconds ~1.7e9 with a spread of seconds lose every
    digit to cancellation), or statistics that change in their last bits with the read block size (prepare's
    output must not depend on it)."""
    rng = np.random.default_rng(0)
    x = 1.7e9 + rng.normal(0, 3.0, 3 * CHUNK + 123)
    whole = NumericFit()
    whole.add(x)
    whole.finish()
    assert whole.std == pytest.approx(x.std(), rel=1e-9) and whole.mean == pytest.approx(x.mean(), rel=1e-15)
    for cuts in ([1, 7, 1000], [CHUNK - 1, 2], [50_000]):
        fit, start = NumericFit(), 0
        for k, n in enumerate(np.resize(cuts, 10_000)):
            fit.add(x[start:start + n])
            start += n
            if start >= x.size:
                break
        fit.finish()
        assert (fit.count, fit.mean, fit.std, fit.lo, fit.hi) == (whole.count, whole.mean, whole.std, whole.lo,
                                                                   whole.hi)
    v, e, _ = apply("standardize", np.array([whole.mean + 10 * whole.std, 0.0]), np.array([False, True]), whole)
    assert v.tolist() == [5.0, 0.0]


def _planted(root: Path, rows: int = 6000, seed: int = 0) -> float:
    """income ~ N(5e4, 2e4), balance ~ N(-1e5, 3e5) (signed), visits a heavy-tailed count, written as train / val /
    test files (70 / 10 / 20 %); the label depends on income's and balance's standardized values. Returns the Bayes
    AUC (the true probabilities') on the test rows."""
    import torch

    from recsys_dist.metrics import binary_metrics

    rng = np.random.default_rng(seed)
    income, balance = rng.normal(5e4, 2e4, rows), rng.normal(-1e5, 3e5, rows)
    visits = np.floor(rng.lognormal(2.0, 1.5, rows))
    seg = rng.integers(0, 4, rows)
    logit = 1.5 * (income - 5e4) / 2e4 - 1.2 * (balance + 1e5) / 3e5 + 0.3 * (seg - 1.5)
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    root.mkdir(parents=True, exist_ok=True)
    lines = [f"s{s},{i:.2f},{b:.2f},{int(v)},{c}\n" for s, i, b, v, c in zip(seg, income, balance, visits, y)]
    cut = [0, int(0.7 * rows), int(0.8 * rows), rows]
    for k, name in enumerate(("train", "valid", "test")):
        (root / f"{name}.csv").write_text("seg,income,balance,visits,clicked\n" + "".join(lines[cut[k]:cut[k + 1]]))
    (root / "schema.yaml").write_text("label: clicked\ncategorical:\n  - {column: seg}\nnumeric:\n"
                                      "  - {column: income}\n  - {column: balance}\n  - {column: visits}\n")
    t = slice(cut[2], rows)
    return float(binary_metrics(torch.stack([torch.from_numpy(logit[t]).float(), torch.from_numpy(y[t]).float(),
                                             torch.ones(rows - cut[2])]))["auc"])


def test_a_model_learns_raw_scale_numeric_columns_through_the_default(tmp_path):
    """Defect caught: raw-scale numerics (incomes ~5e4, balances ~-1e5 +- 3e5) reaching the MLP untransformed or
    mis-scaled (transform `none`, the old default, or statistics that do not make the columns usable): the model
    then falls far below the Bayes AUC. Drives the documented CLI: prepare --schema with split files, then train."""
    bayes = _planted(tmp_path / "raw")
    assert _prepare(tmp_path / "raw", tmp_path / "data") == 0
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "recsys_dist.cli", "train", "--data", str(tmp_path / "data"), "--out",
                        str(run), "model.embedding_dim=4", "model.arch_args={bottom_mlp: [16, 4], top_mlp: [16, 1]}",
                        "data.batch_size=128", "train.epochs=2", "optim.dense=adam", "optim.dense_lr=0.01"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    auc = json.loads((run / "result.json").read_text())["test"]["auc"]
    print(f"test AUC {auc:.4f}, Bayes {bayes:.4f}")
    assert auc > bayes - 0.03, (auc, bayes)
    stats = Metadata.load(tmp_path / "data").dense_stats
    assert all(abs(stats[f]["mean"]) < 0.1 and 0.8 < stats[f]["std"] < 1.1 for f in ("income", "balance")), stats
