"""Per-field transforms of the schema's numeric columns (`numeric[].transform`), fitted on the train split only.

    standardize (default)  (x - mean) / std, mean / std over the field's non-empty train values, clipped to
                           [-clip, clip] (`clip`, default DEFAULT_CLIP standard deviations)
    log                    ln(1 + max(x, 0)): negatives become 0 (counted as clipped below)
    minmax                 (x - min) / (max - min), min / max over train, clipped to [0, 1] (OptInter's eq. 20)
    none                   x as is
    bucketize              the Criteo winners' floor(ln(x)^2) buckets, a sparse feature (criteo_encode.bucketize)

An empty value is 0 after the transform (for standardize: the train mean). A field with one train value (or none)
has std / range 0 and is 0 everywhere. Values the transform clips are counted per split and field
(ClipCounter -> metadata.source.numeric_clipped) and reported by `recsys-dist prepare`: many clipped val / test
values mean they lie outside what train had; many clipped train values under standardize mean a heavy tail, for
which `log` keeps more of the range.
"""

from __future__ import annotations

import math
from typing import Dict, List, Tuple

import numpy as np

TRANSFORMS = ("none", "log", "minmax", "standardize", "bucketize")
DEFAULT_TRANSFORM = "standardize"
DEFAULT_CLIP = 5.0  # standardize: |z| above this many train standard deviations is clipped
FITTED = ("standardize", "minmax")  # transforms that need train statistics (a counting pass)
WARN_SHARE = 0.01  # a split's field with more of its values clipped than this is named in a warning


CHUNK = 65536  # NumericFit folds values in chunks of this many, whatever the read blocks: the same bits for any


class NumericFit:
    """Count, mean, sum of squared deviations (Chan et al.'s parallel update: exact for large offsets such as epoch
    seconds, unlike sum(x^2) - n mean^2), min and max of a field's non-empty train values. Values are folded in
    fixed chunks of CHUNK in input order, so the statistics do not depend on how the input was cut into blocks."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0
        self.lo, self.hi = math.inf, -math.inf
        self._pending: List[np.ndarray] = []
        self._pending_n = 0

    def add(self, values: np.ndarray) -> None:
        if values.size:
            self._pending.append(np.asarray(values, dtype=np.float64))
            self._pending_n += values.size
        if self._pending_n >= CHUNK:
            buf = np.concatenate(self._pending)
            full = buf.size - buf.size % CHUNK
            for k in range(0, full, CHUNK):
                self._fold(buf[k:k + CHUNK])
            self._pending, self._pending_n = ([buf[full:]] if full < buf.size else []), buf.size - full

    def _flush(self) -> None:
        if self._pending_n:
            buf = np.concatenate(self._pending)
            self._pending, self._pending_n = [], 0
            self._fold(buf)

    def _fold(self, values: np.ndarray) -> None:
        n, mean = values.size, float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.count * n / total
        self.mean += delta * n / total
        self.count = total
        self.lo, self.hi = min(self.lo, float(values.min())), max(self.hi, float(values.max()))

    def merge(self, other: "NumericFit") -> None:
        """Adds another fit's values (another input file's, fitted apart): Chan et al.'s pairwise combination."""
        self._flush()
        other._flush()
        if other.count:
            total = self.count + other.count
            delta = other.mean - self.mean
            self.m2 += other.m2 + delta * delta * self.count * other.count / total
            self.mean += delta * other.count / total
            self.count = total
            self.lo, self.hi = min(self.lo, other.lo), max(self.hi, other.hi)

    def finish(self) -> "NumericFit":
        self._flush()
        return self

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else 0.0

    def as_dict(self) -> Dict[str, float]:
        self._flush()
        return {"count": self.count, "mean": self.mean, "std": self.std,
                "min": self.lo if self.count else None, "max": self.hi if self.count else None}


def apply(transform: str, values: np.ndarray, empty: np.ndarray, fit: NumericFit | None,
          clip: float = DEFAULT_CLIP) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float32 column, clipped below, clipped above) for one block of a dense field; empty -> 0, never clipped."""
    below = np.zeros(values.shape, dtype=bool)
    above = np.zeros(values.shape, dtype=bool)
    if transform == "log":
        below = values < 0
        x = np.log1p(np.maximum(values, 0.0))
    elif transform == "minmax":
        if fit is not None and fit.count and fit.hi > fit.lo:
            below, above = values < fit.lo, values > fit.hi
            x = np.clip((values - fit.lo) / (fit.hi - fit.lo), 0.0, 1.0)
        else:
            x = np.zeros_like(values)
    elif transform == "standardize":
        if fit is not None and fit.count and fit.std > 0:
            z = (values - fit.mean) / fit.std
            below, above = z < -clip, z > clip
            x = np.clip(z, -clip, clip)
        else:
            x = np.zeros_like(values)
    elif transform == "none":
        x = values
    else:
        raise ValueError(f"numeric transform {transform!r} is not one of {', '.join(TRANSFORMS)}")
    return np.where(empty, 0.0, x).astype(np.float32), below & ~empty, above & ~empty


class ClipCounter:
    """(below, above, non-empty values) per split and field."""

    def __init__(self) -> None:
        self.counts: Dict[str, Dict[str, List[int]]] = {}

    def add(self, split: str, field: str, below: np.ndarray, above: np.ndarray, empty: np.ndarray) -> None:
        c = self.counts.setdefault(split, {}).setdefault(field, [0, 0, 0])
        c[0] += int(below.sum())
        c[1] += int(above.sum())
        c[2] += int((~empty).sum())

    def merge(self, other: Dict[str, Dict[str, List[int]]]) -> None:
        for split, fields in other.items():
            for field, counts in fields.items():
                c = self.counts.setdefault(split, {}).setdefault(field, [0, 0, 0])
                for k in range(3):
                    c[k] += counts[k]

    def as_dict(self, splits: List[str], fields: List[str]) -> Dict[str, Dict[str, Dict[str, float]]]:
        """{split: {field: {below, above, of, share}}} for the fields with a clipped value."""
        out: Dict[str, Dict[str, Dict[str, float]]] = {}
        for split in splits:
            per = self.counts.get(split, {})
            rows = {f: {"below": per[f][0], "above": per[f][1], "of": per[f][2],
                        "share": round((per[f][0] + per[f][1]) / per[f][2], 6)}
                    for f in fields if f in per and per[f][2] and per[f][0] + per[f][1]}
            if rows:
                out[split] = rows
        return out


def report_lines(clipped: Dict[str, Dict[str, Dict[str, float]]], transforms: Dict[str, str],
                 limit: float = WARN_SHARE) -> Tuple[List[str], List[str]]:
    """(summary lines for stdout, warning lines for stderr): one summary line per split with clipped values; a
    warning per field whose share exceeds `limit` (or any negative under log: those are set to 0), with the hint
    that fits it."""
    summary, warnings = [], []
    for split, fields in clipped.items():
        named = ", ".join(f"{f} {v['below'] + v['above']} ({100 * v['share']:.2f}%)" for f, v in fields.items())
        summary.append(f"  {split:<6} numeric values clipped to the train range: {named}")
        for f, v in fields.items():
            t = transforms.get(f, "")
            if t == "log" and v["below"]:
                warnings.append(f"prepare: warning: {split}: {f}: {v['below']} of {v['of']} values are negative and "
                                "log sets them to 0; use transform: standardize (or minmax) for a signed field")
            elif v["share"] > limit:
                hint = ("a heavy tail: transform: log keeps more of its range" if split == "train" and
                        t == "standardize" else "values outside what train had: check the split or the column")
                warnings.append(f"prepare: warning: {split}: {f}: {100 * v['share']:.1f}% of values clipped by "
                                f"{t} ({v['below']} below, {v['above']} above, of {v['of']}): {hint}")
    return summary, warnings
