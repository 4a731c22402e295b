"""optim.embedding_l2 (recsys_dist/embedding_l2.py): the L2 of the looked-up embeddings, added to the loss.

1. Its gradient, through CTRTrainModel's loss and a real EmbeddingBagCollection: a touched row r gets exactly
   2 lambda (sum of the weights of the batch rows that look r up) w_r / (sum of the weights), untouched rows none.
2. On 2 gloo ranks, sharded (table-, row-, column-wise, data-parallel tables), SGD on tables and dense params: the
   same tables and dense parameters as one process on the global batches, and not those of lambda = 0.
3. The config: a negative lambda is refused before any work; the trainer's model carries the configured lambda.
"""

from __future__ import annotations

import pytest
import torch

from dist_harness import run_on_ranks
from test_sharding_types import FEATURES, full_model, full_reference, initial_weights, sharded_sgd_run

LAM = 0.3  # large beside the BCE gradient of these tiny batches, so a penalty scaled wrong by 2 shows
ARCH = "dlrm"
TYPES = ("table_wise", "row_wise", "column_wise", "data_parallel")


def _batch(ids_per_feature, weights):
    from pipelines.batch import CTRBatch
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    values = [i for ids in ids_per_feature for i in ids]
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=[f for f, _ in FEATURES], values=torch.tensor(values),
                                              lengths=torch.ones(len(values), dtype=torch.long))
    b = len(weights)
    return CTRBatch(dense_features=torch.rand(b, 3), sparse_features=kjt, labels=torch.tensor([1.0, 0.0] * (b // 2)),
                    weights=torch.tensor(weights))


def _table_grads(model, batch):
    model.zero_grad()
    model(batch)[0].backward()
    return {n.split("embedding_bags.")[1].removesuffix(".weight"): p.grad.clone()
            for n, p in model.named_parameters() if "embedding_bags." in n}


def test_gradient_is_two_lambda_weighted_count_row_over_batch_weight():
    """The penalty's gradient on a looked-up row is 2 lambda c w / sum(weights), c the summed weight of the batch
    rows that look it up (repeated ids count each time, padding rows with weight 0 not at all); rows not looked up
    get none. Defect caught: a penalty on the whole table (untouched rows would move), one not divided by the
    batch weight or divided by B with padding rows counted, one that ignores repeats, or one not added at all."""
    model = full_model(ARCH, "cpu")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embedding_bags." in name:
                p.copy_(initial_weights()[name.split("embedding_bags.")[1].removesuffix(".weight")])
    # 4 rows: feature f0 looks up 3, 3, 5, 7 (row 3 twice); the last batch row is padding (weight 0)
    ids = [[3, 3, 5, 7], [1, 2, 1, 9], [0, 4, 4, 4]]
    weights = [1.0, 1.0, 1.0, 0.0]
    batch = _batch(ids, weights)
    base = _table_grads(model, batch)
    model.embedding_l2 = LAM
    with_l2 = _table_grads(model, batch)
    for fi, (f, n) in enumerate(FEATURES):
        w = initial_weights()[f"t_{f}"]
        count = torch.zeros(n)
        for row, weight in zip(ids[fi], weights):
            count[row] += weight
        expect = 2 * LAM * count[:, None] * w / sum(weights)
        torch.testing.assert_close(with_l2[f"t_{f}"] - base[f"t_{f}"], expect, atol=1e-6, rtol=1e-5,
                                   msg=lambda m: f"t_{f}: {m}")
        untouched = torch.ones(n, dtype=torch.bool)
        untouched[ids[fi]] = False
        assert bool((with_l2[f"t_{f}"][untouched] == 0).all()), f"t_{f}: rows not looked up got a gradient"
    assert bool((count > 0).any())


def _reference(lam: float):
    """One process, unsharded, SGD on everything, the global batches: (tables, dense parameters)."""
    _, tables, dense = full_reference(ARCH, lam)
    return tables, dense


def _worker(rank: int, world_size: int):
    results = {}
    for st in TYPES:
        _, _, tables, dense = sharded_sgd_run(ARCH, st, rank, world_size, embedding_l2=LAM)
        results[st] = {"tables": tables, "dense": dense}
    return results


@pytest.fixture(scope="module")
def two_rank_runs():
    return run_on_ranks(_worker, world_size=2, args=(), timeout=300)


def _gathered(runs, st, name, like):
    full = torch.full_like(like, float("nan"))
    for r in runs:
        for off, t in r[st]["tables"][name]:
            t = torch.from_numpy(t)
            full[off[0]:off[0] + t.shape[0], off[1]:off[1] + t.shape[1]] = t
    return full


@pytest.mark.parametrize("sharding_type", TYPES)
def test_two_ranks_sharded_same_as_one_process(two_rank_runs, sharding_type):
    """DLRM with embedding_l2 on 2 ranks (each adds its half batch's mean penalty) equals one process on the
    global batch: every table and dense parameter after 3 SGD steps; and differs from the lambda = 0 run, so the
    penalty reached the sharded tables. Defect caught: a penalty summed instead of averaged (the all-to-all
    backward divides table gradients by the world size, so a rank's sum would count half; seen failing), one
    divided by the global batch on each rank, or a penalty that never reaches the sharded tables' backward."""
    ref_tables, ref_dense = _reference(LAM)
    plain_tables, _ = _reference(0.0)
    moved = 0.0
    for name, ref in ref_tables.items():
        full = _gathered(two_rank_runs, sharding_type, name, ref)
        torch.testing.assert_close(full, ref, atol=1e-5, rtol=1e-5, msg=lambda m: f"{sharding_type} {name}: {m}")
        moved = max(moved, float((full - plain_tables[name]).abs().max()))
    assert moved > 1e-3, f"{sharding_type}: tables equal the lambda = 0 run's (max diff {moved:g})"
    for rank, r in enumerate(two_rank_runs):
        for k, ref in ref_dense.items():
            key = next(d for d in r[sharding_type]["dense"] if d.endswith(k.removeprefix("model.")))
            torch.testing.assert_close(torch.from_numpy(r[sharding_type]["dense"][key]), ref, atol=1e-5, rtol=1e-5,
                                       msg=lambda m: f"{sharding_type} rank {rank} {k}: {m}")


def _built_lambda(rank, world, data_dir):
    from recsys_dist.config import load_config
    from recsys_dist.dist_env import init_distributed
    from recsys_dist.job import build_sharded_model

    cfg = load_config(None, [f"data.dir={data_dir}", "model.embedding_dim=8", "optim.embedding_l2=0.25",
                             "model.arch_args={bottom_mlp: [8, 8], top_mlp: [8, 1]}"])
    built = build_sharded_model(cfg, init_distributed("cpu"))
    return [m.embedding_l2 for m in built.dmp.modules() if type(m).__name__ == "CTRTrainModel"]


def test_negative_lambda_refused_and_the_trainer_uses_the_configured_one(tmp_path):
    """A negative optim.embedding_l2 is a config error naming the key; the trainer's model (DMP over
    CTRTrainModel) carries the configured lambda. Defect caught: the key accepted but never passed to the loss."""
    from prepared_fixtures import write_dataset
    from recsys_dist.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"optim.embedding_l2=-0.1 must be >= 0"):
        load_config(None, ["optim.embedding_l2=-0.1"])
    write_dataset(tmp_path, {"train": 64, "val": 16, "test": 16})
    assert run_on_ranks(_built_lambda, 1, (tmp_path,), timeout=120) == [[0.25]]
