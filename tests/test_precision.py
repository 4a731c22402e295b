"""Reduced precision: FP16 table weights (model.embedding_dtype) and the bf16 dense path through the train job."""

from __future__ import annotations

import pytest
import torch

from dist_harness import run_on_ranks
from prepared_fixtures import write_dataset
from recsys_dist.config import ConfigError, load_config
from recsys_dist.models.sparse import TableSpec, table_configs
from torchrec.modules.embedding_configs import DataType

TABLES = [TableSpec("a", 50, 8), TableSpec("b", 30, 8), TableSpec("c", 20, 8)]


def test_table_configs_dtype():
    assert {c.data_type for c in table_configs(TABLES)} == {DataType.FP32}
    assert {c.data_type for c in table_configs(TABLES, "fp16")} == {DataType.FP16}
    with pytest.raises(ValueError, match="'bf8'"):
        table_configs(TABLES, "bf8")


def test_config_rejects_unknown_embedding_dtype():
    with pytest.raises(ConfigError, match="model.embedding_dtype='int8'"):
        load_config(None, ["model.embedding_dtype=int8"])


def _fp16_lookup(rank, world):
    """2 ranks, tables table-wise in FBGEMM's TBE at fp16: weights are stored as fp16 and the pooled output
    equals the fp32 sum of those fp16 rows (computed from the gathered full tables)."""
    import torch.distributed as dist
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.types import ShardingEnv
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from embedding_sharding.planner import plan_sharding
    from embedding_sharding.sharders import CTREmbeddingBagCollectionSharder
    from embedding_sharding.topology import make_topology
    from recsys_dist.models.sparse import SparseArch

    arch = SparseArch(TABLES, device="meta", dtype="fp16")
    sharder = CTREmbeddingBagCollectionSharder(fused_params={"learning_rate": 0.1})
    plan = plan_sharding(arch, make_topology(world, world, "cpu"), [sharder], sharding_types=["table_wise"])
    dmp = DistributedModelParallel(arch, env=ShardingEnv.from_process_group(dist.GroupMember.WORLD),
                                   device=torch.device("cpu"), plan=plan, sharders=[sharder])
    g = torch.Generator().manual_seed(rank)
    lengths = torch.randint(0, 3, (len(TABLES) * 4,), generator=g)
    ids = torch.cat([torch.randint(0, t.num_embeddings, (int(n),), generator=g)
                     for t, n in zip(TABLES, lengths.view(len(TABLES), 4).sum(1))])
    kjt = KeyedJaggedTensor.from_lengths_sync([t.feature for t in TABLES], ids, lengths.int())
    out = dmp(kjt)  # [4, 3, 8]
    full = {}
    dtypes = set()
    for t in TABLES:
        st = dmp.state_dict()[f"ebc.embedding_bags.{t.table_name}.weight"]
        dtypes |= {s.tensor.dtype for s in st.local_shards()}
        dst = torch.empty(t.num_embeddings, t.embedding_dim, dtype=torch.float16)
        st.gather(dst=0, out=dst if rank == 0 else None)
        full[t.feature] = dst
    if rank != 0:
        return None
    expected = torch.zeros(4, len(TABLES), 8)
    for f, (t, jt) in enumerate(zip(TABLES, kjt.to_dict().values())):
        for i, row_ids in enumerate(jt.to_dense()):
            expected[i, f] = full[t.feature][row_ids].float().sum(0)
    return {"dtypes": dtypes, "out_dtype": out.dtype, "max_err": float((out - expected).abs().max())}


def test_fp16_tables_two_ranks_match_fp16_rows():
    r = run_on_ranks(_fp16_lookup, 2)[0]
    assert r["dtypes"] == {torch.float16}
    assert r["out_dtype"] == torch.float32
    assert r["max_err"] < 1e-5


def _train(rank, world, data_dir, out):
    from recsys_dist.config import load_config
    from recsys_dist.train import train

    cfg = load_config(None, [f"data.dir={data_dir}", "data.batch_size=32", "data.eval_batch_size=64",
                             "model.embedding_dim=4", "model.arch_args={bottom_mlp: [8, 4], top_mlp: [8, 1]}",
                             f"train.out_dir={out}", "train.checkpoint=false", "train.tensorboard=false",
                             "train.log_every_steps=0", "train.mixed_precision=bf16", "model.embedding_dtype=fp16",
                             "train.pipeline=sparse_dist"])
    return train(cfg)


def test_bf16_dense_and_fp16_tables_train_through_the_sparse_dist_pipeline(tmp_path):
    """TrainPipelineSparseDist fx-traces CTRTrainModel: autocast must not take its device from the batch."""
    write_dataset(tmp_path / "data", {"train": 256, "val": 64, "test": 64})
    results = run_on_ranks(_train, 2, (tmp_path / "data", tmp_path / "run"))
    assert results[0]["steps"] == 256 // 32
    assert 0.0 <= results[0]["test"]["auc"] <= 1.0
    assert results[0]["test"]["logloss"] == results[1]["test"]["logloss"]
