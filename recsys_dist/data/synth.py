"""Synthetic Criteo-format click logs with a planted, learnable signal and a known (Bayes) AUC.

Each row is drawn from a known logistic model:

    logit(p) = b + sum_{f in M} w_f[v_f]                       main effects of some categorical fields
                 + sum_{(f, g) in P} <u_f[v_f], u_g[v_g]>       planted pairwise interactions (latent dim k)
                 + sum_{d in D} beta_d * z_d                    dense effect, z_d = standardized log1p(max(I_d, 0))
    label ~ Bernoulli(p)

The pairwise term is exactly what a dot-product / factorization model (DLRM, FM) represents, so a good model can
approach the generator's own AUC: the AUC of the true p against the drawn labels ("Bayes AUC"). Categorical values
follow a Zipf law (p(rank r) ~ (r + 1)^-s) over each field's vocabulary and are written as 8-digit lowercase hex
strings (distinct per field and value); a field is empty with probability `missing_rate`, and an empty field adds
nothing to the logit (an empty dense field counts as 0, which is what `prepare` maps it to).

Files: Terabyte-style `day_0 .. day_{days-1}` (or Kaggle-style `train.txt` holding all rows), optionally gzipped
(`.gz`), plus `synth_report.json` (parameters, planted fields and pairs, Bayes AUC overall, per file and per half
file: the day split's val / test rows). The output
depends only on the config (same seed, same bytes); rows are generated and written in vectorized chunks.

    >>> from recsys_dist.config import SynthConfig
    >>> report = synthesize(SynthConfig(out_dir="/tmp/synth_doc", days=2, rows_per_day=2000))
    >>> sorted(report["files"])
    ['day_0', 'day_1']
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from recsys_dist.config import SynthConfig
from recsys_dist.data.criteo_schema import CATEGORICAL_NAMES, DENSE_NAMES, NUM_CATEGORICAL, NUM_DENSE

REPORT_FILE = "synth_report.json"
# Default vocabularies: the shape of Criteo Kaggle's cardinalities (a few huge fields, many small), scaled down.
DEFAULT_VOCAB_SIZES = (
    1460, 583, 100000, 50000, 305, 24, 12517, 633, 3, 20000, 5683, 80000, 3194, 27, 14992, 60000, 10, 5652, 2173,
    4, 70000, 18, 15, 30000, 105, 14257,
)
MAX_SIGNAL_VOCAB = 120  # fields with at most this many values carry the planted signal (learnable from ~1e5 rows)
NUM_DENSE_EFFECTS = 4
CHUNK_ROWS = 1 << 18  # rows generated and written at a time (bounded memory for any rows_per_day)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_CALIBRATION_ROWS = 50000


def _fmix32(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer: a bijection on uint32 (distinct in, distinct out)."""
    x = x.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x85EBCA6B)
    x ^= x >> np.uint32(13)
    x *= np.uint32(0xC2B2AE35)
    x ^= x >> np.uint32(16)
    return x


def hex8(values: np.ndarray) -> np.ndarray:
    """uint32 [N] -> [N] of dtype S8: lowercase 8-digit hex, vectorized."""
    shifts = np.arange(28, -4, -4, dtype=np.uint32)
    nibbles = (values.astype(np.uint32)[:, None] >> shifts) & np.uint32(0xF)
    return np.ascontiguousarray(_HEX[nibbles]).view("S8").reshape(-1)


class PlantedModel:
    """The generator's parameters (drawn from `cfg.seed`) and its row sampler.

    Attributes (all numpy): `vocab_sizes` [26]; `raw_values[f]` [V_f] uint32 (the value written for rank r);
    `main_fields`, `pairs` (field indices); `w[f]` [V_f]; `u[f]` [V_f, k]; `dense_fields`, `beta`, `dense_mean`,
    `dense_std` [|D|]; `bias`.
    """

    def __init__(self, cfg: SynthConfig) -> None:
        self.cfg = cfg
        vs = list(cfg.vocab_sizes) if cfg.vocab_sizes is not None else list(DEFAULT_VOCAB_SIZES)
        if len(vs) != NUM_CATEGORICAL or min(vs) < 1 or max(vs) > 2**32:
            raise ValueError(f"synth.vocab_sizes: expected {NUM_CATEGORICAL} sizes in [1, 2^32], got {vs}")
        self.vocab_sizes = np.asarray(vs, dtype=np.int64)
        rng = np.random.default_rng([cfg.seed, 0x5EED])
        # Distinct hex value per (field, rank): a bijection of rank, salted per field.
        salts = rng.integers(0, 2**32, size=NUM_CATEGORICAL, dtype=np.uint64)
        self.raw_values = [
            _fmix32((np.arange(v, dtype=np.uint64) * np.uint64(0x9E3779B1) + salts[f]) & np.uint64(0xFFFFFFFF))
            for f, v in enumerate(vs)
        ]
        ranks = [np.arange(1, v + 1, dtype=np.float64) ** -cfg.zipf_exponent for v in vs]
        self.cdf = [(np.cumsum(r) / r.sum()).astype(np.float32) for r in ranks]

        # The planted signal lives on the fields with small vocabularies (the smallest if too few qualify).
        order = np.argsort(self.vocab_sizes, kind="stable")
        eligible = [int(f) for f in order if self.vocab_sizes[f] <= MAX_SIGNAL_VOCAB and self.vocab_sizes[f] > 1]
        need = max(cfg.num_main_fields, 2 if cfg.num_pairs else 0)
        if len(eligible) < need:
            eligible = [int(f) for f in order if self.vocab_sizes[f] > 1][: max(need, len(eligible))]
        k = cfg.latent_dim
        s = cfg.signal_scale
        self.main_fields = sorted(rng.choice(eligible, size=min(cfg.num_main_fields, len(eligible)), replace=False))
        all_pairs = [(a, b) for i, a in enumerate(sorted(eligible)) for b in sorted(eligible)[i + 1:]]
        pick = rng.choice(len(all_pairs), size=min(cfg.num_pairs, len(all_pairs)), replace=False)
        self.pairs = sorted(all_pairs[int(i)] for i in pick)
        self.w = {f: rng.normal(0.0, 0.36 * s, size=vs[f]) for f in self.main_fields}
        pair_fields = sorted({f for p in self.pairs for f in p})
        # <u, u'> has std 0.15 s for any latent dim: each u entry ~ N(0, sqrt(0.15 s) / k^(1/4)).
        self.u = {f: rng.normal(0.0, np.sqrt(0.15 * s) / k**0.25, size=(vs[f], k)) for f in pair_fields}

        # Dense fields: floor(lognormal) counts; I2 shifted down by 3 so it has negatives, as in Criteo.
        self.dense_mu = rng.uniform(0.0, 4.0, size=NUM_DENSE)
        self.dense_sigma = rng.uniform(0.8, 2.0, size=NUM_DENSE)
        self.dense_shift = np.zeros(NUM_DENSE, dtype=np.int64)
        self.dense_shift[1] = 3
        self.dense_fields = sorted(rng.choice(NUM_DENSE, size=NUM_DENSE_EFFECTS, replace=False).tolist())
        self.beta = rng.choice([-1.0, 1.0], size=NUM_DENSE_EFFECTS) * rng.uniform(0.12, 0.24, NUM_DENSE_EFFECTS) * s
        self.dense_mean = np.zeros(NUM_DENSE_EFFECTS)
        self.dense_std = np.ones(NUM_DENSE_EFFECTS)
        self.bias = 0.0
        # Calibrate the dense standardization and the bias (base CTR) on a fixed sample.
        cal = self.sample(_CALIBRATION_ROWS, np.random.default_rng([cfg.seed, 0xCA1]), with_labels=False)
        z = self._dense_log(cal["dense"], cal["dense_missing"])
        self.dense_mean, self.dense_std = z.mean(0), z.std(0) + 1e-6
        logit0 = self._logit(cal)
        lo, hi = -20.0, 20.0
        for _ in range(60):  # bisection: mean sigmoid(logit0 + b) = base_ctr
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if _sigmoid(logit0 + mid).mean() < cfg.base_ctr else (lo, mid)
        self.bias = 0.5 * (lo + hi)

    # -- sampling -------------------------------------------------------------------------------------------
    def _dense_log(self, dense: np.ndarray, missing: np.ndarray) -> np.ndarray:
        x = np.where(missing[:, self.dense_fields], 0, dense[:, self.dense_fields])
        return np.log1p(np.maximum(x, 0).astype(np.float64))

    def _logit(self, rows: Dict[str, np.ndarray]) -> np.ndarray:
        idx, miss = rows["cat"], rows["cat_missing"]
        out = np.full(idx.shape[0], self.bias)
        for f in self.main_fields:
            out += np.where(miss[:, f], 0.0, self.w[f][idx[:, f]])
        for f, g in self.pairs:
            dot = np.einsum("nk,nk->n", self.u[f][idx[:, f]], self.u[g][idx[:, g]])
            out += np.where(miss[:, f] | miss[:, g], 0.0, dot)
        z = (self._dense_log(rows["dense"], rows["dense_missing"]) - self.dense_mean) / self.dense_std
        return out + z @ self.beta

    def sample(self, n: int, rng: np.random.Generator, with_labels: bool = True) -> Dict[str, np.ndarray]:
        """n rows: `cat` [n, 26] value ranks, `cat_missing`, `dense` [n, 13] int64, `dense_missing`,
        and (with_labels) `p` [n] true click probabilities and `label` [n] int8."""
        cat = np.empty((n, NUM_CATEGORICAL), dtype=np.int64)
        uni = rng.random((n, NUM_CATEGORICAL), dtype=np.float32)
        for f in range(NUM_CATEGORICAL):
            cat[:, f] = np.minimum(np.searchsorted(self.cdf[f], uni[:, f], side="right"), self.vocab_sizes[f] - 1)
        rows = {
            "cat": cat,
            "cat_missing": rng.random((n, NUM_CATEGORICAL), dtype=np.float32) < self.cfg.missing_rate,
            "dense": np.floor(np.exp(rng.standard_normal((n, NUM_DENSE), dtype=np.float32) * self.dense_sigma
                                     + self.dense_mu)).astype(np.int64) - self.dense_shift,
            "dense_missing": rng.random((n, NUM_DENSE), dtype=np.float32) < self.cfg.missing_rate,
        }
        if with_labels:
            rows["p"] = _sigmoid(self._logit(rows))
            rows["label"] = (rng.random(n) < rows["p"]).astype(np.int8)
        return rows

    # -- writing --------------------------------------------------------------------------------------------
    def to_table(self, rows: Dict[str, np.ndarray]) -> pa.Table:
        """Criteo columns: label int8, I1..I13 int64 (null = empty), C1..C26 8-hex strings (null = empty)."""
        n = rows["label"].shape[0]
        cols: List[pa.Array] = [pa.array(rows["label"], type=pa.int8())]
        for d in range(NUM_DENSE):
            cols.append(pa.array(rows["dense"][:, d], type=pa.int64(), mask=rows["dense_missing"][:, d]))
        offsets = pa.py_buffer(np.arange(0, 8 * n + 1, 8, dtype=np.int32))
        for f in range(NUM_CATEGORICAL):
            data = hex8(self.raw_values[f][rows["cat"][:, f]])
            valid = pa.py_buffer(np.packbits(~rows["cat_missing"][:, f], bitorder="little"))
            cols.append(pa.StringArray.from_buffers(n, offsets, pa.py_buffer(data), valid))
        return pa.Table.from_arrays(cols, names=["label", *DENSE_NAMES, *CATEGORICAL_NAMES])

    def summary(self) -> Dict[str, Any]:
        return {
            "vocab_sizes": self.vocab_sizes.tolist(),
            "main_effect_fields": [CATEGORICAL_NAMES[f] for f in self.main_fields],
            "planted_pairs": [[CATEGORICAL_NAMES[f], CATEGORICAL_NAMES[g]] for f, g in self.pairs],
            "dense_effect_fields": [DENSE_NAMES[d] for d in self.dense_fields],
            "dense_effect_beta": [round(float(b), 4) for b in self.beta],
            "bias": round(float(self.bias), 4),
        }


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def bayes_auc(p: np.ndarray, labels: np.ndarray) -> float:
    """AUC of the true probabilities against the drawn labels (torchmetrics, exact)."""
    import torch
    from torchmetrics.functional.classification import binary_auroc

    if labels.min() == labels.max():
        return float("nan")
    return float(binary_auroc(torch.from_numpy(p.astype(np.float32)), torch.from_numpy(labels.astype(np.int64))))


def file_names(cfg: SynthConfig) -> List[str]:
    if cfg.layout == "terabyte":
        names = [f"day_{d}" for d in range(cfg.days)]
    elif cfg.layout == "kaggle":
        names = ["train.txt"]
    else:
        raise ValueError(f"synth.layout={cfg.layout!r} is not one of terabyte, kaggle")
    return [n + ".gz" if cfg.gzip else n for n in names]


def _check(cfg: SynthConfig) -> None:
    if cfg.days < 1 or cfg.rows_per_day < 1:
        raise ValueError(f"synth: days ({cfg.days}) and rows_per_day ({cfg.rows_per_day}) must be >= 1")
    if not 0.0 <= cfg.missing_rate < 1.0:
        raise ValueError(f"synth.missing_rate={cfg.missing_rate} must be in [0, 1)")
    if not 0.0 < cfg.base_ctr < 1.0:
        raise ValueError(f"synth.base_ctr={cfg.base_ctr} must be in (0, 1)")
    if cfg.zipf_exponent < 0 or cfg.latent_dim < 1 or cfg.signal_scale < 0:
        raise ValueError("synth: zipf_exponent and signal_scale must be >= 0, latent_dim >= 1")


def synthesize(cfg: SynthConfig, progress: bool = False) -> Dict[str, Any]:
    """Writes the files and `synth_report.json` into cfg.out_dir; returns the report."""
    _check(cfg)
    t0 = time.perf_counter()
    model = PlantedModel(cfg)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = file_names(cfg)
    rows_per_file = cfg.rows_per_day * (cfg.days if cfg.layout == "kaggle" else 1)
    opts = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none", batch_size=1 << 16)
    seeds = np.random.SeedSequence([cfg.seed, 0xDA7A]).spawn(len(names))
    per_file: Dict[str, Dict[str, Any]] = {}
    all_p: List[np.ndarray] = []
    all_y: List[np.ndarray] = []
    bar = _progress(len(names) * rows_per_file, progress)
    for name, seq in zip(names, seeds):
        rng = np.random.default_rng(seq)
        ps, ys = [], []
        tmp = out / (name + ".tmp")
        sink = pa.output_stream(str(tmp), compression="gzip" if cfg.gzip else None)
        with sink, pacsv.CSVWriter(sink, _schema(), write_options=opts) as writer:
            for start in range(0, rows_per_file, CHUNK_ROWS):
                n = min(CHUNK_ROWS, rows_per_file - start)
                rows = model.sample(n, rng)
                writer.write_table(model.to_table(rows))
                ps.append(rows["p"].astype(np.float32))
                ys.append(rows["label"])
                if bar is not None:
                    bar.update(n)
        os.replace(tmp, out / name)
        p, y = np.concatenate(ps), np.concatenate(ys)
        half = (y.size + 1) // 2  # `prepare --split day` makes the last day's first (ceil) half val, the rest test
        per_file[name] = {"rows": int(y.size), "positives": int(y.sum()), "bayes_auc": bayes_auc(p, y),
                          "bayes_auc_halves": [bayes_auc(p[:half], y[:half]), bayes_auc(p[half:], y[half:])]}
        all_p.append(p)
        all_y.append(y)
    if bar is not None:
        bar.close()
    p, y = np.concatenate(all_p), np.concatenate(all_y)
    report = {
        "config": asdict(cfg),
        "files": per_file,
        "rows": int(y.size),
        "ctr": float(y.mean()),
        "bayes_auc": bayes_auc(p, y),
        **model.summary(),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2))
    return report


def load_report(folder: str | Path) -> Dict[str, Any]:
    path = Path(folder) / REPORT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; `recsys-dist synth` writes it beside the data")
    return json.loads(path.read_text())


def _schema() -> pa.Schema:
    return pa.schema([("label", pa.int8())] + [(n, pa.int64()) for n in DENSE_NAMES]
                     + [(n, pa.string()) for n in CATEGORICAL_NAMES])


def _progress(total: int, enabled: bool) -> Optional[Any]:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="rows", unit_scale=True, desc="synth", disable=None)
