"""OptInter's cross features: ids, pair selection, and the frequency filter (counting pass)."""

from collections import Counter
from itertools import combinations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from prepared_fixtures import write_dataset
from recsys_dist.config import ConfigError, load_config
from recsys_dist.data.cross_counts import count_frequent, counts_dir
from recsys_dist.data.cross_features import (CrossPair, CrossTransform, cross_features, frequent_ids, mix64,
                                             select_pairs)
from recsys_dist.data.metadata import Metadata, SparseFeature, SplitInfo


def _cfg(root, *extra):
    return load_config(None, [f"data.dir={root}", "model.embedding_dim=4", *extra])


def test_exact_ids_are_the_cross_product():
    p = CrossPair("a", "b", 5, 7, 35)
    assert p.exact
    ia, ib = np.repeat(np.arange(5), 7), np.tile(np.arange(7), 5)
    assert np.array_equal(p.bucket(ia, ib), np.arange(35))  # a bijection of (id_a, id_b) onto [0, 35)


def test_hashed_ids_deterministic_in_range_equal_for_equal_values_and_differ_across_pairs():
    rng = np.random.default_rng(0)
    ia, ib = rng.integers(0, 10**6, 20000), rng.integers(0, 10**6, 20000)
    p, q = CrossPair("C1", "C2", 10**6, 10**6, 999_983), CrossPair("C3", "C4", 10**6, 10**6, 999_983)
    assert not p.exact
    h = p.bucket(ia, ib)
    assert np.array_equal(h, p.bucket(ia.copy(), ib.copy()))  # deterministic
    assert h.dtype == np.int64 and h.min() >= 0 and h.max() < 999_983
    # equal value pairs -> equal ids, wherever they are in the batch
    dup = np.concatenate([ia[:100], ia[:100]]), np.concatenate([ib[:100], ib[:100]])
    hd = p.bucket(*dup)
    assert np.array_equal(hd[:100], hd[100:])
    # the same values in another pair land elsewhere (the pair's seed), and (a, b) != (b, a)
    assert np.mean(h == q.bucket(ia, ib)) < 0.001
    assert np.mean(h == p.bucket(ib, ia)) < 0.001
    # distinct value pairs rarely collide: about n^2 / 2S collisions expected
    assert len(np.unique(h)) > 20000 - 2 * 20000**2 / (2 * 999_983)


def test_hash_spreads_sequential_ids_evenly():
    ia, ib = np.repeat(np.arange(256), 256), np.tile(np.arange(256), 256)
    counts = np.bincount(CrossPair("a", "b", 10**9, 10**9, 64).bucket(ia, ib), minlength=64)
    expected = len(ia) / 64  # 1024 per bucket; chi-square with 63 dof stays far below 150 for a good mix
    assert ((counts - expected) ** 2 / expected).sum() < 150


def test_mix64_is_a_bijection_on_a_sample():
    x = np.arange(100000, dtype=np.uint64)
    assert len(np.unique(mix64(x))) == len(x)


def _md(names, multi=()):
    return Metadata(dense_features=[], sparse_features=[SparseFeature(n, 10, multi_valued=n in multi) for n in names],
                    splits={"train": SplitInfo([], 0, [])})


def test_select_pairs(tmp_path):
    criteo = _md([f"C{i}" for i in range(1, 27)])
    assert len(select_pairs("all", criteo)) == 325
    md = _md(["a", "b", "c", "m"], multi=("m",))
    assert select_pairs("all", md) == [("a", "b"), ("a", "c"), ("b", "c")]  # multi-valued fields are not crossed
    assert select_pairs(["c, a", "b,c"], md) == [("a", "c"), ("b", "c")]  # metadata order within a pair
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"methods": {"axb": "factorize", "axc": "memorize", "bxc": "naive"},
                                "pairs": {"axb": ["a", "b"], "axc": ["a", "c"], "bxc": ["b", "c"]}}))
    assert select_pairs(str(arch), md) == [("a", "c")]  # only the memorized pairs get tables
    for bad, msg in ((["a,z"], "'z' is not a sparse feature"), (["a,m"], "multi-valued"), (["a"], "expected a pair"),
                     (["a,b", "b,a"], "listed twice"), (["a,a"], "with itself"), (3, "expected 'all'"),
                     (str(tmp_path / "nope.json"), "not found")):
        with pytest.raises(ConfigError, match=msg):
            select_pairs(bad, md)


def test_frequent_ids_map_rare_to_oov():
    freq = np.array([3, 8, 20])
    assert frequent_ids(np.array([3, 4, 8, 20, 21, 0]), freq).tolist() == [1, 0, 2, 3, 0, 0]
    assert frequent_ids(np.array([1, 2]), np.array([], np.int64)).tolist() == [0, 0]


def _train_rows(root, md):
    cols = {n: [] for n in md.sparse_names}
    for f in md.split("train").files:
        t = pq.read_table(root / f)
        for n in cols:
            cols[n].append(t.column(n).to_numpy())
    return {n: np.concatenate(v) for n, v in cols.items()}


@pytest.mark.parametrize("min_count", [2, 4])
def test_oov_filter_is_exact_on_a_handmade_dataset(tmp_path, min_count):
    md = write_dataset(tmp_path, {"train": 300, "val": 50}, vocab=(4, 5, 30), num_dense=1, seed=3)
    tables, transform = cross_features(_cfg(tmp_path, "data.cross_pairs=all",
                                            f"data.cross_min_count={min_count}"), md)
    assert [t.feature for t in tables] == ["s0xs1", "s0xs2", "s1xs2"]
    rows = _train_rows(tmp_path, md)
    out = transform(rows)
    for t, (a, b) in zip(tables, combinations(["s0", "s1", "s2"], 2)):
        counts = Counter(zip(rows[a].tolist(), rows[b].tolist()))
        frequent = sorted(v for v, c in counts.items() if c >= min_count)
        assert t.num_embeddings == 1 + len(frequent)  # one OOV row + one per frequent cross value
        ids = out[t.feature]
        for k, v in enumerate(zip(rows[a].tolist(), rows[b].tolist())):
            assert (ids[k] == 0) == (counts[v] < min_count), (t.feature, v, counts[v])
        # distinct frequent values -> distinct ids 1..k
        seen = {v: i for v, i in zip(zip(rows[a].tolist(), rows[b].tolist()), ids.tolist()) if i}
        assert sorted(seen.values()) == list(range(1, len(frequent) + 1))
    # the counts are stored next to the dataset and reused
    folder = counts_dir(tmp_path, md, min_count)
    assert json.loads((folder / "manifest.json").read_text())["pairs"]["s0xs2"]["frequent"] == tables[1].num_embeddings - 1
    again, _ = cross_features(_cfg(tmp_path, "data.cross_pairs=['s1,s2']", f"data.cross_min_count={min_count}"), md)
    assert again[0].num_embeddings == tables[2].num_embeddings


def test_hashed_counting_never_drops_a_frequent_cross(tmp_path):
    md = write_dataset(tmp_path, {"train": 400}, vocab=(40, 50), num_dense=0, seed=5)
    rows = _train_rows(tmp_path, md)
    p = CrossPair("s0", "s1", 40, 50, 64)  # 2000 value pairs hashed into 64 buckets: many collisions
    [freq] = count_frequent(tmp_path, md, [p], 3).values()
    ids = CrossTransform([p], {"s0xs1": freq})(rows)["s0xs1"]
    counts = Counter(zip(rows["s0"].tolist(), rows["s1"].tolist()))
    for k, v in enumerate(zip(rows["s0"].tolist(), rows["s1"].tolist())):
        if counts[v] >= 3:
            assert ids[k] > 0
    # and the bucket counts it keeps are exactly those of the bucketed data
    b = p.bucket(rows["s0"], rows["s1"])
    assert freq.tolist() == sorted(u for u, c in Counter(b.tolist()).items() if c >= 3)


def test_no_filter_table_is_the_bucket_space(tmp_path):
    md = write_dataset(tmp_path, {"train": 50}, vocab=(7, 11, 13), num_dense=0)
    tables, transform = cross_features(_cfg(tmp_path, "data.cross_pairs=all", "data.cross_table_rows=100"), md)
    assert [t.num_embeddings for t in tables] == [77, 91, 100]  # 11 * 13 = 143 > 100: hashed into 100
    out = transform(_train_rows(tmp_path, md))
    assert all(out[t.feature].max() < t.num_embeddings for t in tables)
    with pytest.raises(ConfigError, match="cross_table_rows"):
        cross_features(_cfg(tmp_path, "data.cross_pairs=all", "data.cross_table_rows=0"), md)


def test_a_cross_with_a_rare_base_value_is_rare(tmp_path):
    """Defect caught: crosses built after the base fields' OOV step, so (OOV_a, v_b) pools every rare value of a
    with v_b, passes the count and gets its own row (the paper counts crosses on raw values: a cross holding a
    value seen < 20 times is seen < 20 times). Vocab fields (id 1 = OOV) only; hashed fields are unchanged."""
    md = write_dataset(tmp_path, {"train": 400}, vocab=(4, 5, 6), num_dense=0, seed=7)
    md.sparse_features[0].encoding = "vocab"  # s0: id 1 is its OOV id; s1, s2 stay hashed (no OOV id)
    md.save(tmp_path)
    rows = _train_rows(tmp_path, md)
    tables, transform = cross_features(_cfg(tmp_path, "data.cross_pairs=all", "data.cross_min_count=3"), md)
    out = transform(rows)
    pairs = list(zip(rows["s0"].tolist(), rows["s1"].tolist()))
    counts = Counter(pairs)
    assert any(a == 1 and counts[(a, b)] >= 3 for a, b in pairs)  # the case: a frequent cross with an OOV side
    for k, (a, b) in enumerate(pairs):
        assert (out["s0xs1"][k] == 0) == (a == 1 or counts[(a, b)] < 3), (a, b, counts[(a, b)])
    kept = {v for v, c in counts.items() if c >= 3 and v[0] != 1}
    assert tables[0].num_embeddings == 1 + len(kept)  # OOV-side crosses take no row
    s12 = Counter(zip(rows["s1"].tolist(), rows["s2"].tolist()))  # two hashed fields: every frequent cross kept
    assert tables[2].num_embeddings == 1 + sum(c >= 3 for c in s12.values())
