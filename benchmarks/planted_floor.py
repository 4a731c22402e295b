"""The estimation floor of the planted acceptance data: how close to the generator's AUC a model that knows the
generator's structure gets from the same train rows (tests/planted.py's data: synth 3 days x 100k, seed 0, day
split, vocab min_count 2; train = days 0-1, test = the second half of day 2).

Logistic regression, full-batch L-BFGS, L2 on every weight, fitted on the prepared train split, scored on test:
- `oracle`: exactly the generator's inputs: one weight per value of the 8 main-effect fields, one per value pair
  of each of the 6 planted pairs (a superset of the generator's rank-4 factors), the 4 dense fields it uses.
- `one-hot + planted crosses`: every field one-hot (the 18 signal-free ones too), the planted pair crosses, all 13
  dense fields: what a model that found the pairs but must learn that most fields are noise can do.
- `one-hot`: every field one-hot and all dense fields, no crosses (a model with no interactions).

    python benchmarks/planted_floor.py                    # makes the data in a temporary folder (~15 s)
    python benchmarks/planted_floor.py --data DIR         # DIR/raw (synth) + DIR/prepared, e.g. make_planted's

Prints each model's test AUC and gap to the generator's AUC on the test rows. Results: docs/arches.md,
"Acceptance on planted data". A few minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _load(prepared: Path, split: str) -> Dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    t = pq.read_table(prepared / split)
    return {c: t[c].to_numpy() for c in t.column_names}


def fit_logistic(train: Dict[str, np.ndarray], test: Dict[str, np.ndarray], sizes: Dict[str, int],
                 fields: Sequence[str], crosses: Sequence[Tuple[str, str]], dense: Sequence[str],
                 l2: float) -> float:
    """Test AUC of an L2 logistic regression on one-hot `fields`, one-hot `crosses` and standardized `dense`."""
    import torch
    from torchmetrics.functional.classification import binary_auroc

    def features(rows):
        ids, offset = [], 0
        for f in fields:
            ids.append(rows[f] + offset)
            offset += sizes[f]
        for a, b in crosses:
            ids.append(rows[a] * sizes[b] + rows[b] + offset)
            offset += sizes[a] * sizes[b]
        x = np.stack([rows[d] for d in dense], 1) if dense else np.zeros((len(rows["label"]), 0))
        return torch.from_numpy(np.stack(ids, 1)), torch.from_numpy(x.astype(np.float64)), offset

    ids, x, n = features(train)
    test_ids, test_x, _ = features(test)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x, test_x = (x - mu) / sd, (test_x - mu) / sd
    y = torch.from_numpy(train["label"].astype(np.float64))
    w = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    beta = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    logit = lambda i, d: w[i].sum(1) + d @ beta + bias  # noqa: E731
    opt = torch.optim.LBFGS([w, beta, bias], max_iter=300, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit(ids, x), y) \
            + l2 * (w.square().sum() + beta.square().sum())
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(binary_auroc(logit(test_ids, test_x), torch.from_numpy(test["label"].astype(np.int64))))


def floors(data: Path, l2s: Sequence[float] = (1e-4, 3e-4, 1e-3)) -> List[Dict[str, object]]:
    report = json.loads((data / "raw" / "synth_report.json").read_text())
    meta = json.loads((data / "prepared" / "metadata.json").read_text())
    sizes = {f["name"]: f["num_embeddings"] for f in meta["sparse_features"]}
    bayes = report["files"][f"day_{report['config']['days'] - 1}"]["bayes_auc_halves"][1]
    train, test = _load(data / "prepared", "train"), _load(data / "prepared", "test")
    pairs = [tuple(p) for p in report["planted_pairs"]]
    every_field = [f["name"] for f in meta["sparse_features"]]
    models = [("oracle", report["main_effect_fields"], pairs, report["dense_effect_fields"]),
              ("one-hot + planted crosses", every_field, pairs, meta["dense_features"]),
              ("one-hot", every_field, [], meta["dense_features"])]
    rows = []
    for name, fields, crosses, dense in models:
        for l2 in l2s:
            auc = fit_logistic(train, test, sizes, fields, crosses, dense, l2)
            rows.append({"model": name, "l2": l2, "test_auc": auc, "gap": bayes - auc, "bayes_auc": bayes})
            print(f"{name:28s} l2 {l2:g}: test AUC {auc:.4f}, gap {bayes - auc:+.4f} (generator {bayes:.4f})",
                  flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="a folder with raw/ (synth) and prepared/ (default: make it)")
    args = ap.parse_args(argv)
    if args.data is not None:
        floors(args.data)
        return 0
    sys.path.insert(0, str(ROOT / "tests"))
    from planted import make_planted  # the acceptance tests' own data

    with tempfile.TemporaryDirectory() as tmp:
        floors(make_planted(Path(tmp)).dir.parent)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
