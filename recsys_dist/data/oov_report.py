"""How much of each split falls outside the train vocabulary: per vocab-encoded field, the share of rows (of ids,
for a multi-valued field) whose id is the OOV id, i.e. a value the train split never had, or had fewer than
min_count times. Written by both prepares to metadata.source.oov and printed by `recsys-dist prepare`:

    metadata.source.oov = {"val": {"user": {"oov": 192, "of": 943, "share": 0.2036}, ...}, "test": {...}, ...}

A val / test share far above train's says the split holds values the model never learned (new users, new ads):
the printed warning names the fields above WARN_SHARE.

Hashed fields (own data's `hash_cap`, Criteo's categorical=hash) have no vocabulary; for them both prepares count, per val / test split,
the values whose hashed id no train value had (TrainIds: each split's distinct ids with counts, compared at the
end of the writing pass; Criteo's train ids as a SeenIds bitset of hash_cap bits), i.e.
rows that meet a never-trained embedding row, in metadata.source.oov_hashed with the same layout ("oov" = unseen).
A value unseen in train that collides with a train value's id counts as seen: the share is a lower bound of the
unseen values' share, and the number that matters to the model (its row was trained).
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from recsys_dist.data.criteo_encode import Vocab

WARN_SHARE = 0.2  # a val / test field with more of its rows out of the train vocabulary is named in a warning
OOV_ID = Vocab.OOV


class OovCounter:
    """Accumulates (OOV ids, ids) per split and field."""

    def __init__(self) -> None:
        self.counts: Dict[str, Dict[str, List[int]]] = {}

    def add(self, split: str, field: str, oov: int, total: int) -> None:
        c = self.counts.setdefault(split, {}).setdefault(field, [0, 0])
        c[0] += int(oov)
        c[1] += int(total)

    def merge(self, other: Dict[str, Dict[str, List[int]]]) -> None:
        for split, fields in other.items():
            for field, (oov, total) in fields.items():
                self.add(split, field, oov, total)

    def as_dict(self, splits: List[str], fields: List[str]) -> Dict[str, Dict[str, Dict[str, float]]]:
        """{split: {field: {oov, of, share}}} in the given orders (splits / fields without ids left out)."""
        out: Dict[str, Dict[str, Dict[str, float]]] = {}
        for split in splits:
            per = self.counts.get(split, {})
            rows = {f: {"oov": per[f][0], "of": per[f][1], "share": round(per[f][0] / per[f][1], 6)}
                    for f in fields if f in per and per[f][1]}
            if rows:
                out[split] = rows
        return out


class TrainIds:
    """The distinct ids of a hashed field in a split, with their counts (sorted int64; memory ~16 bytes per
    distinct id). Filled during the writing pass: the train split's ids are known only at its end, so val / test
    are counted the same way and compared then (no extra pass over the input)."""

    def __init__(self) -> None:
        self._ids = np.zeros(0, dtype=np.int64)
        self._counts = np.zeros(0, dtype=np.int64)
        self._parts: List[np.ndarray] = []
        self._part_counts: List[np.ndarray] = []
        self._pending = 0

    def add(self, ids: np.ndarray) -> None:
        if ids.size:
            u, c = np.unique(ids.astype(np.int64, copy=False), return_counts=True)
            self._parts.append(u)
            self._part_counts.append(c)
            self._pending += u.size
            if self._pending > max(1 << 16, self._ids.size):
                self._merge()

    def _merge(self) -> None:
        if self._parts:
            u, inv = np.unique(np.concatenate([self._ids, *self._parts]), return_inverse=True)
            self._counts = np.bincount(inv, weights=np.concatenate([self._counts, *self._part_counts]),
                                       minlength=u.size).astype(np.int64)
            self._ids = u
            self._parts, self._part_counts, self._pending = [], [], 0

    def merge(self, other: "TrainIds") -> None:
        """Adds another TrainIds' ids and counts (the same split of another input file)."""
        other._merge()
        if other._ids.size:
            self._parts.append(other._ids)
            self._part_counts.append(other._counts)
            self._pending += other._ids.size
            if self._pending > max(1 << 16, self._ids.size):
                self._merge()

    def unseen_in(self, train: "TrainIds | SeenIds") -> "tuple[int, int]":
        """(values of this split whose id `train` never had, values of this split)."""
        self._merge()
        return int(self._counts[~train.seen(self._ids)].sum()), int(self._counts.sum())

    def seen(self, ids: np.ndarray) -> np.ndarray:
        """Per id: does the train split have it?"""
        self._merge()
        if not self._ids.size:
            return np.zeros(ids.shape, dtype=bool)
        pos = np.minimum(np.searchsorted(self._ids, ids), self._ids.size - 1)
        return self._ids[pos] == ids


class SeenIds:
    """The train split's ids of a hashed field whose ids are < `cap` (Criteo's hash_cap), as a bitset: cap / 8 bytes
    whatever the number of rows or distinct values (the train split is the big one). Answers `seen` like TrainIds,
    so a val / test TrainIds counts its unseen values against it."""

    def __init__(self, cap: int) -> None:
        self.cap = int(cap)
        self.bits: "np.ndarray | None" = None  # allocated at the first id

    def add(self, ids: np.ndarray) -> None:
        if ids.size:
            if self.bits is None:
                self.bits = np.zeros((self.cap + 7) // 8, dtype=np.uint8)
            ids = ids.astype(np.int64, copy=False)
            np.bitwise_or.at(self.bits, ids >> 3, (1 << (ids & 7)).astype(np.uint8))

    def merge(self, other: "SeenIds") -> None:
        if other.bits is not None:
            if self.bits is None:
                self.bits = other.bits.copy()
            else:
                self.bits |= other.bits

    def seen(self, ids: np.ndarray) -> np.ndarray:
        if self.bits is None:
            return np.zeros(ids.shape, dtype=bool)
        ids = ids.astype(np.int64, copy=False)
        return ((self.bits[ids >> 3] >> (ids & 7).astype(np.uint8)) & 1).astype(bool)


def unseen_hashed(ids: "Dict[str, Dict[str, TrainIds | SeenIds]]",
                  fields: List[str]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """metadata.source.oov_hashed: per val / test split and hashed field, the values whose id train never had."""
    counter = OovCounter()
    for split in ("val", "test"):
        for f in fields:
            counter.add(split, f, *ids[split][f].unseen_in(ids["train"][f]))  # type: ignore[union-attr]
    return counter.as_dict(["val", "test"], fields)


_VOCAB = ("out of the train vocabulary (OOV)", "vocab field(s)", "out of the train vocabulary", "values the model "
          "never learned")
_HASHED = ("hashed ids unseen in train", "hashed field(s)", "with a hashed id no train value had",
           "never-trained embedding rows")


def summary_lines(report: Dict[str, Dict[str, Dict[str, float]]], hashed: bool = False) -> List[str]:
    """One line per split: mean and worst share over the vocab (or hashed) fields."""
    lines = []
    what, unit = (_HASHED if hashed else _VOCAB)[:2]
    for split, fields in report.items():
        shares = {f: v["share"] for f, v in fields.items()}
        worst = max(shares, key=lambda f: shares[f])
        mean = 100 * sum(shares.values()) / len(shares)
        lines.append(f"  {split:<6} {what}: mean {mean:.1f}% of rows over {len(shares)} "
                     f"{unit}, worst {worst} {100 * shares[worst]:.1f}%")
    return lines


def warning_lines(report: Dict[str, Dict[str, Dict[str, float]]], limit: float = WARN_SHARE,
                  hashed: bool = False) -> List[str]:
    """One line per val / test split with fields whose OOV share exceeds `limit`, the worst first (up to 5), each
    beside train's own share (with min_count > 1 train has OOV rows too: a share near it is the min count's doing)."""
    lines = []
    train = report.get("train", {})
    for split in ("val", "test"):
        fields = report.get(split, {})
        high = sorted((f for f in fields if fields[f]["share"] > limit), key=lambda f: -fields[f]["share"])
        if high:
            named = ", ".join(f"{f} {100 * fields[f]['share']:.1f}% ({fields[f]['oov']} of {fields[f]['of']}"
                              + (f"; train {100 * train[f]['share']:.1f}%)" if f in train else ")")
                              for f in high[:5])
            more = f" and {len(high) - 5} more" if len(high) > 5 else ""
            what, why = (_HASHED if hashed else _VOCAB)[2:]
            lines.append(f"prepare: warning: {split}: {named}{more} {what} (> "
                         f"{100 * limit:.0f}%): {why}; check the split")
    return lines
