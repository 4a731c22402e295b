"""How approximate is the hashed counting pass of OptInter's min-count filter (recsys_dist.data.cross_counts)?

One pair of Zipf-distributed fields (the skew of Criteo's categorical fields), rows_i * rows_j far above the bucket
space, so the pair is hashed. Reference in the same run: exact counts of the (id_i, id_j) values (np.unique on
the 64-bit key). Bucket counts merge colliding values, so counts only go up: no frequent value may be lost
(checked), and some rare values are kept because they share a frequent bucket. Reported per bucket space S:
the share of rare distinct values / rare rows that get a non-OOV id, and the table rows vs the exact count.

    .venv/bin/python benchmarks/bench_cross_count_collisions.py [--rows 4000000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys_dist.data.cross_features import CrossPair, frequent_ids  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=4_000_000)
    ap.add_argument("--vocab", type=int, default=200_000)
    ap.add_argument("--zipf", type=float, default=1.2)
    ap.add_argument("--min-count", type=int, default=20)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    ia = (rng.zipf(a.zipf, a.rows) - 1) % a.vocab
    ib = (rng.zipf(a.zipf, a.rows) - 1 + rng.integers(0, 3, a.rows)) % a.vocab
    key = ia * a.vocab + ib
    values, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    frequent = counts >= a.min_count
    rare_rows = ~frequent[inverse]
    print(f"{a.rows} rows, {len(values)} distinct crosses, {frequent.sum()} seen >= {a.min_count} times "
          f"({(~rare_rows).mean():.1%} of rows)")
    print("| buckets S | table rows (exact: %d + 1) | frequent kept | rare values kept | rare rows kept |"
          % frequent.sum())
    print("|---|---|---|---|---|")
    for s in (2**18, 2**20, 2**22, 2**24):
        p = CrossPair("a", "b", a.vocab, a.vocab, s)
        b = p.bucket(ia, ib)
        u, c = np.unique(b, return_counts=True)
        freq_buckets = u[c >= a.min_count]
        ids = frequent_ids(b, freq_buckets)
        kept_rows = ids > 0
        lost = np.count_nonzero(~kept_rows & ~rare_rows)
        assert lost == 0, f"S={s}: {lost} rows of frequent values mapped to OOV"
        kept_values = np.zeros(len(values), bool)
        kept_values[inverse[kept_rows]] = True
        rare_kept = kept_values[~frequent].mean()
        print(f"| {s} | {len(freq_buckets) + 1} | 100% | {rare_kept:.2%} | {kept_rows[rare_rows].mean():.2%} |")


if __name__ == "__main__":
    main()
