"""`metadata.json`: the contract between `prepare` and everything that reads a prepared dataset.

A prepared dataset is a folder:
    metadata.json
    train/part-00000.parquet ...   val/...   test/...
Each Parquet file has the columns: `label` (int8, 0/1), one float32 column per dense feature, one int64 column
per single-valued sparse feature (ids already in [0, num_embeddings)), or list<int64> for a multi-valued one.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from recsys_dist.json_file import read_json, write_atomic

METADATA_FILE = "metadata.json"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


class MetadataError(ValueError):
    """A prepared dataset's metadata.json is missing, malformed or inconsistent with its files."""


@dataclass
class SparseFeature:
    name: str
    num_embeddings: int  # ids are in [0, num_embeddings)
    multi_valued: bool = False  # list column: several ids per sample, pooled by the EmbeddingBag
    pooling: str = "sum"  # sum | mean
    avg_ids_per_sample: float = 1.0  # pooling factor, for the planner
    embedding_dim: Optional[int] = None  # None: the model's embedding_dim
    encoding: str = "hash"  # hash | vocab | bucketize | identity


@dataclass
class SplitInfo:
    files: List[str]  # relative to the dataset folder
    rows: int
    rows_per_file: List[int]
    positives: int = 0


@dataclass
class Metadata:
    dense_features: List[str]
    sparse_features: List[SparseFeature]
    splits: Dict[str, SplitInfo]
    label: str = "label"
    source: Dict[str, Any] = field(default_factory=dict)  # format, input files, options used by prepare
    dense_transform: str = "log"  # log | bucketize | none | minmax (what produced the dense columns)
    dense_stats: Dict[str, Dict[str, float]] = field(default_factory=dict)
    bad_rows: Dict[str, Any] = field(default_factory=dict)  # count, by_reason, samples (file, line, reason)
    format_version: int = FORMAT_VERSION

    # -- derived -------------------------------------------------------------------------------------------
    @property
    def num_dense(self) -> int:
        return len(self.dense_features)

    @property
    def sparse_names(self) -> List[str]:
        return [f.name for f in self.sparse_features]

    def feature(self, name: str) -> SparseFeature:
        for f in self.sparse_features:
            if f.name == name:
                return f
        raise KeyError(f"no sparse feature {name!r}; have {', '.join(self.sparse_names)}")

    def table_rows(self, cap: Optional[int] = None) -> Dict[str, int]:
        """Rows of each sparse feature's table: num_embeddings, or `cap` if smaller (ids then arrive modulo it)."""
        return {f.name: min(f.num_embeddings, cap) if cap else f.num_embeddings for f in self.sparse_features}

    def split(self, name: str) -> SplitInfo:
        if name not in self.splits:
            raise MetadataError(f"split {name!r} not in the dataset; have {', '.join(self.splits)}")
        return self.splits[name]

    # -- files ---------------------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / METADATA_FILE
        write_atomic(path, self.to_json())
        return path

    @classmethod
    def from_dict(cls, d: Dict[str, Any], source: str = METADATA_FILE) -> "Metadata":
        try:
            version = d.get("format_version", FORMAT_VERSION)
            if version != FORMAT_VERSION:
                raise MetadataError(f"{source}: format_version {version}, this code reads {FORMAT_VERSION}")
            sparse = [SparseFeature(**f) for f in d["sparse_features"]]
            splits = {k: SplitInfo(**v) for k, v in d["splits"].items()}
            rest = {k: v for k, v in d.items() if k not in ("sparse_features", "splits")}
            md = cls(sparse_features=sparse, splits=splits, **rest)
        except MetadataError:
            raise
        except KeyError as e:
            raise MetadataError(f"{source}: missing key {e}") from None
        except TypeError as e:
            raise MetadataError(f"{source}: {e}") from None
        md.check(source)
        return md

    @classmethod
    def load(cls, folder: str | Path) -> "Metadata":
        path = Path(folder) / METADATA_FILE
        d = read_json(path, MetadataError, f"{path}: not found; run `recsys-dist prepare` to make a dataset folder")
        return cls.from_dict(d, str(path))

    def check(self, source: str = METADATA_FILE) -> None:
        names = self.sparse_names + list(self.dense_features)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise MetadataError(f"{source}: duplicate feature names {dup}")
        for f in self.sparse_features:
            if f.num_embeddings <= 0:
                raise MetadataError(f"{source}: sparse feature {f.name}: num_embeddings must be > 0")
            if f.pooling not in ("sum", "mean"):
                raise MetadataError(f"{source}: sparse feature {f.name}: pooling {f.pooling!r} not sum|mean")
        for name, s in self.splits.items():
            if len(s.files) != len(s.rows_per_file) or sum(s.rows_per_file) != s.rows:
                raise MetadataError(f"{source}: split {name}: files / rows_per_file / rows disagree")
