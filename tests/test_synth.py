"""The planted-signal generator: format, determinism, Bayes AUC, and learnability through prepare."""

from __future__ import annotations

import gzip
import hashlib
import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from recsys_dist.config import PrepareConfig, SynthConfig
from recsys_dist.data.criteo_prepare import prepare_criteo
from recsys_dist.data.criteo_schema import CATEGORICAL_NAMES, DENSE_NAMES, NUM_COLUMNS
from recsys_dist.data.metadata import Metadata
from recsys_dist.data.synth import REPORT_FILE, PlantedModel, bayes_auc, synthesize

_INT = re.compile(r"^-?[0-9]+$")
_HEX = re.compile(r"^[0-9a-f]{8}$")


def test_format_and_report(tmp_path):
    cfg = SynthConfig(out_dir=str(tmp_path), days=2, rows_per_day=3000, missing_rate=0.1)
    rep = synthesize(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["day_0", "day_1", REPORT_FILE]
    lines = (tmp_path / "day_0").read_text().split("\n")
    assert lines[-1] == "" and len(lines) == 3001
    empties, negatives = 0, 0
    for line in lines[:-1]:
        f = line.split("\t")
        assert len(f) == NUM_COLUMNS and f[0] in ("0", "1")
        assert all(x == "" or _INT.match(x) for x in f[1:14])
        assert all(x == "" or _HEX.match(x) for x in f[14:])
        empties += sum(x == "" for x in f[1:])
        negatives += f[2].startswith("-")
    assert 0.07 < empties / (3000 * 39) < 0.13 and negatives > 0
    assert json.loads((tmp_path / REPORT_FILE).read_text()) == json.loads(json.dumps(rep))
    assert rep["rows"] == 6000 and set(rep["files"]) == {"day_0", "day_1"}
    assert 0.7 < rep["bayes_auc"] < 0.85 and 0.2 < rep["ctr"] < 0.3
    assert all(len(p) == 2 and set(p) <= set(CATEGORICAL_NAMES) for p in rep["planted_pairs"])
    assert len(rep["planted_pairs"]) == cfg.num_pairs


def test_deterministic_and_seed_dependent(tmp_path):
    def digest(seed: int, sub: str, **kw) -> str:
        synthesize(SynthConfig(out_dir=str(tmp_path / sub), days=1, rows_per_day=2000, seed=seed, **kw))
        name = "train.txt.gz" if kw.get("gzip") else "day_0"
        data = (tmp_path / sub / name).read_bytes()
        return hashlib.sha256(gzip.decompress(data) if kw.get("gzip") else data).hexdigest()

    a = digest(1, "a")
    assert digest(1, "b") == a and digest(2, "c") != a
    assert digest(1, "d", gzip=True, layout="kaggle") == a  # same rows, one gzipped train.txt


def test_bayes_auc_is_the_auc_of_the_true_probabilities():
    model = PlantedModel(SynthConfig())
    rows = model.sample(20000, np.random.default_rng(0))
    p, y = rows["p"], rows["label"]
    pos, neg = p[y == 1], p[y == 0]  # AUC = P(p_pos > p_neg), by brute force on a subsample
    ref = (pos[:800, None] > neg[None, :2400]).mean() + 0.5 * (pos[:800, None] == neg[None, :2400]).mean()
    assert bayes_auc(p, y) == pytest.approx(ref, abs=0.02)
    assert abs(bayes_auc(p, y) - bayes_auc(np.random.default_rng(1).random(20000), y) - 0.25) < 0.1
    noise = PlantedModel(SynthConfig(signal_scale=0.0)).sample(20000, np.random.default_rng(0))
    assert abs(bayes_auc(noise["p"] + np.random.default_rng(2).random(20000) * 1e-6, noise["label"]) - 0.5) < 0.03


def test_half_file_bayes_auc_is_on_the_day_splits_val_and_test_rows(tmp_path):
    """bayes_auc_halves[1] is the generator's AUC on exactly the rows `prepare --split day` makes the test split (the
    planted acceptance tests compare each arch with it). Defect caught: halves cut elsewhere than prepare's
    (floor vs ceil on an odd line count, swapped halves) or computed on other rows."""
    cfg = SynthConfig(out_dir=str(tmp_path / "raw"), days=2, rows_per_day=3001)
    rep = synthesize(cfg)
    md = prepare_criteo(PrepareConfig(input=[str(tmp_path / "raw")], out_dir=str(tmp_path / "out"),
                                      categorical="vocab", split="day", workers=1), progress=False)
    # the last day's rows again: the generator's own per-file stream (same seed, same rows, same labels)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0xDA7A]).spawn(cfg.days)[-1])
    rows = PlantedModel(cfg).sample(cfg.rows_per_day, rng)
    p, y = rows["p"], rows["label"]
    file_labels = [int(line[0]) for line in (tmp_path / "raw" / "day_1").read_text().splitlines()]
    assert file_labels == y.tolist()
    val, test = (_load(tmp_path / "out", md, [s])[2].numpy() for s in ("val", "test"))
    assert (val.size, test.size) == (1501, 1500) and test.tolist() == y[1501:].tolist()
    assert rep["files"]["day_1"]["bayes_auc_halves"] == [bayes_auc(p[:1501], y[:1501]), bayes_auc(p[1501:], y[1501:])]


def test_auc_gap_noise_on_the_planted_test_split_is_far_below_the_acceptance_bar():
    """The planted acceptance tests (tests/planted.py) compare a model's test AUC with the generator's AUC on the
    same rows and labels. Re-drawing the labels of the ROWS_PER_DAY / 2 test rows moves that gap (for a model about
    0.01 below the generator) by an sd of ~0.001, and each AUC alone by ~0.002: a 0.01 bar is ~10 sd of the gap's
    noise. Defect caught: a test split made so small that a 0.01 bar would be within noise."""
    from planted import ROWS_PER_DAY, SEED

    model = PlantedModel(SynthConfig(seed=SEED))
    p = model.sample(ROWS_PER_DAY // 2, np.random.default_rng(0))["p"]
    rng = np.random.default_rng(1)
    score = np.log(p / (1 - p)) + rng.normal(0.0, 0.3, p.size)  # a model ~0.01 below the generator
    gaps, bayes = [], []
    for _ in range(10):
        y = (rng.random(p.size) < p).astype(np.int8)
        bayes.append(bayes_auc(p, y))
        gaps.append(bayes[-1] - bayes_auc(score, y))
    assert 0.005 < np.mean(gaps) < 0.015
    assert np.std(gaps, ddof=1) < 0.002 and np.std(bayes, ddof=1) < 0.004, (np.std(gaps), np.std(bayes))


class TinyDLRM(nn.Module):
    """EmbeddingBag per field, bottom MLP, pairwise dot interaction, top MLP (DLRM, Naumov et al. 2019)."""

    def __init__(self, rows: list, dim: int = 8) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.EmbeddingBag(n, dim, mode="sum") for n in rows)
        for t in self.tables:  # torchrec's default init: U(-sqrt(1/n), sqrt(1/n))
            nn.init.uniform_(t.weight, -(1 / t.num_embeddings) ** 0.5, (1 / t.num_embeddings) ** 0.5)
        self.bottom = nn.Sequential(nn.Linear(13, 32), nn.ReLU(), nn.Linear(32, dim), nn.ReLU())
        f = len(rows) + 1
        self.register_buffer("iu", torch.triu_indices(f, f, 1), persistent=False)
        self.top = nn.Sequential(nn.Linear(dim + f * (f - 1) // 2, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, dense: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        z = self.bottom(dense)
        e = torch.stack([z] + [t(ids[:, i: i + 1]) for i, t in enumerate(self.tables)], 1)
        inter = torch.bmm(e, e.transpose(1, 2))[:, self.iu[0], self.iu[1]]
        return self.top(torch.cat([z, inter], 1)).squeeze(-1)


def _load(out, md: Metadata, splits):
    tabs = [pq.read_table(out / f) for s in splits for f in md.split(s).files]
    col = lambda n: np.concatenate([t.column(n).to_numpy() for t in tabs])  # noqa: E731
    dense = torch.from_numpy(np.stack([col(n) for n in DENSE_NAMES], 1))
    ids = torch.from_numpy(np.stack([col(n) for n in CATEGORICAL_NAMES], 1))
    return dense, ids, torch.from_numpy(col("label").astype(np.float32))


def test_learnable_to_within_002_of_bayes_auc(tmp_path):
    """synth (defaults, 3 days) -> prepare (vocab, day split) -> one epoch of a small DLRM on days 0-1 ->
    AUC on day 2 (val + test) within 0.02 of the generator's Bayes AUC on day 2."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rep = synthesize(SynthConfig(out_dir=str(tmp_path / "raw"), days=3, rows_per_day=100000))
    md = prepare_criteo(PrepareConfig(input=[str(tmp_path / "raw")], out_dir=str(tmp_path / "out"),
                                      categorical="vocab", min_count=1, split="day", workers=1), progress=False)
    assert md.splits["val"].rows + md.splits["test"].rows == rep["files"]["day_2"]["rows"]
    dense, ids, y = _load(tmp_path / "out", md, ["train"])
    model = TinyDLRM([f.num_embeddings for f in md.sparse_features])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    perm = torch.randperm(len(y))
    for i in range(0, len(y), 512):
        b = perm[i: i + 512]
        loss = nn.functional.binary_cross_entropy_with_logits(model(dense[b], ids[b]), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    dense, ids, y = _load(tmp_path / "out", md, ["val", "test"])
    with torch.no_grad():
        p = torch.sigmoid(model(dense, ids)).numpy()
    auc, bayes = bayes_auc(p, y.numpy().astype(np.int8)), rep["files"]["day_2"]["bayes_auc"]
    assert bayes > 0.7
    assert auc > bayes - 0.02, (auc, bayes)


def test_synth_warns_about_raw_files_it_did_not_write(tmp_path, capsys):
    """Catches a silent mix: data/raw holding an earlier run's day_3 (or a kaggle train.txt beside day files)
    after `recsys-dist synth --out data/raw`, which `prepare --input data/raw` then reads as part of the dataset
    (docs/data.md's commands in a row did so)."""
    from recsys_dist.cli import main

    out = tmp_path / "raw"
    assert main(["synth", "--out", str(out), "--days", "3", "--rows-per-day", "500"]) == 0
    assert "warning" not in capsys.readouterr().err  # a fresh folder
    assert main(["synth", "--out", str(out), "--days", "2", "--rows-per-day", "500"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {out} also holds day_2, not written by this run" in err, err
    assert main(["synth", "--out", str(out), "--layout", "kaggle", "--rows-per-day", "500"]) == 0
    assert "also holds day_0, day_1, day_2, not written" in capsys.readouterr().err
