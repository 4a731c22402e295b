"""Reduced precision: FP16 table weights (model.embedding_dtype) and the bf16 dense path through the train job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dist_harness import run_on_ranks
from planted import FIXED_OPTIM, PlantedRun
from prepared_fixtures import write_dataset
from recsys_dist.config import ConfigError, load_config
from recsys_dist.models.sparse import TableSpec, table_configs
from torchrec.modules.embedding_configs import DataType

REPO = Path(__file__).resolve().parents[1]
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


FP16_ON_CPU = "model.fp16_tables_on_cpu=true"  # refused on CPU without it; here the loss is what is measured
DLRM = {"bottom_mlp": [64, 16], "top_mlp": [64, 32, 1]}
SPARSE_DIST = ("train.pipeline=sparse_dist", *FIXED_OPTIM)  # TrainPipelineSparseDist fx-traces CTRTrainModel;
# the optimizer setting these were measured with (planted.FIXED_OPTIM), not the defaults the acceptance uses
PLANTED_RUNS = [PlantedRun("fp32", "dlrm", DLRM, SPARSE_DIST),
                PlantedRun("bf16", "dlrm", DLRM, (*SPARSE_DIST, "train.mixed_precision=bf16")),
                PlantedRun("fp16_tables", "dlrm", DLRM, (*SPARSE_DIST, "model.embedding_dtype=fp16", FP16_ON_CPU))]
AUC_TOLERANCE = 0.005  # same data, seed and test rows (50k); measured here: bf16 - fp32 = -0.0001


def _auc(planted_results, run: str) -> float:
    return planted_results[__name__][run]["test"]["auc"]


@pytest.mark.slow  # trained in the session's shared planted-data process group (conftest.planted_results)
def test_bf16_dense_reaches_fp32s_auc(planted_data, planted_results):
    """bf16 dense arch through TrainPipelineSparseDist (autocast must not take its device from the batch, which
    the pipeline's fx tracing sees as a proxy) on 2 ranks, against the same job in fp32, on planted data.

    Defect caught: a bf16 path that trains worse than fp32 by more than AUC_TOLERANCE (the same assertion was seen
    failing on fp16 tables, below: a real 0.023 gap that the former `0 <= auc <= 1` check let through)."""
    fp32, bf16 = _auc(planted_results, "fp32"), _auc(planted_results, "bf16")
    print(f"test AUC fp32 {fp32:.4f}, bf16 dense {bf16:.4f}, generator {planted_data.bayes_auc:.4f}")
    assert fp32 >= planted_data.bayes_auc - 0.02  # fp32 learned the signal, so a worse model shows
    assert abs(bf16 - fp32) <= AUC_TOLERANCE, (bf16, fp32)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="known, open: fp16 table weights lose ~0.02 test AUC with these settings "
                   "(measured 0.7212 vs fp32 0.7440): FBGEMM's CPU update rounds fp16 rows to nearest, "
                   "stochastic_rounding is ignored on CPU, so updates below half an fp16 ulp are lost "
                   "(test_fbgemm_cpu_fp16_updates_round_to_nearest)")
def test_fp16_tables_reach_fp32s_auc(planted_data, planted_results):
    """Defect caught: fp16 table rows whose updates are lost (this is what it shows today: strict xfail, so a
    fix turns it into a failure that asks for the mark to be removed)."""
    fp32, fp16 = _auc(planted_results, "fp32"), _auc(planted_results, "fp16_tables")
    print(f"test AUC fp32 {fp32:.4f}, fp16 tables {fp16:.4f}")
    assert abs(fp16 - fp32) <= AUC_TOLERANCE, (fp16, fp32)


def test_fbgemm_cpu_fp16_updates_round_to_nearest():
    """Why fp16 tables lose AUC on CPU (the xfail above): FBGEMM's CPU TBE rounds each fp16 row update to nearest
    and ignores stochastic_rounding, so 1000 SGD steps of 2e-6 on a weight of 0.05 (half an fp16 ulp there is
    ~1.5e-5) move it by ~1e-5 instead of 2e-3, with or without stochastic rounding. Fails (asking for the fp16
    findings in docs/benchmarks.md and the xfail to be revisited) when an FBGEMM release rounds stochastically
    on CPU or keeps the updates."""
    from fbgemm_gpu.split_embedding_configs import EmbOptimType, SparseType
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (ComputeDevice, EmbeddingLocation,
                                                                         SplitTableBatchedEmbeddingBagsCodegen)

    def moved(precision, stochastic: bool) -> float:
        tbe = SplitTableBatchedEmbeddingBagsCodegen([(10, 8, EmbeddingLocation.HOST, ComputeDevice.CPU)],
                                                    optimizer=EmbOptimType.EXACT_SGD, learning_rate=2e-6,
                                                    weights_precision=precision, stochastic_rounding=stochastic)
        with torch.no_grad():
            tbe.split_embedding_weights()[0].fill_(0.05)
        ids, offsets = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2, 3])
        for _ in range(1000):
            tbe(ids, offsets).sum().backward()
        return (tbe.split_embedding_weights()[0][:3].float() - 0.05).mean().item()

    assert moved(SparseType.FP32, False) == pytest.approx(-2e-3, rel=1e-3)
    for stochastic in (True, False):
        assert abs(moved(SparseType.FP16, stochastic)) < 1e-4  # ~1.2e-5: 99% of the updates lost


def _cli_train(root, out, *overrides):
    cmd = [sys.executable, "-m", "recsys_dist.cli", "train", "--data", str(root), "--out", str(out),
           "model.embedding_dim=8", "model.arch_args={bottom_mlp: [8], top_mlp: [8, 1]}", "data.batch_size=32",
           "train.max_steps=2", "train.threads=1", "train.tensorboard=false", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))


def test_fp16_tables_on_cpu_are_refused_unless_asked_for(tmp_path):
    """Defect caught: fp16 tables on a CPU run accepted without a word (the ~0.02 AUC loss of the xfail above
    found only after training), a refusal that does not say why or what to use, or an opt-in that does not train."""
    root = tmp_path / "data"
    write_dataset(root, {"train": 64, "test": 32})
    r = _cli_train(root, tmp_path / "refused", "model.embedding_dtype=fp16")  # train.device=auto: CPU here
    assert r.returncode == 2, r.stderr[-2000:]
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("recsys-dist train: config error: override 'model.embedding_dtype=fp16': "
                           "model.embedding_dtype=fp16 on CPU: FBGEMM's CPU kernel rounds each fp16 row update to "
                           "nearest"), line
    assert "use model.embedding_dtype=fp32" in line and "model.fp16_tables_on_cpu=true" in line
    assert not (tmp_path / "refused").exists()
    r = _cli_train(root, tmp_path / "asked", "model.embedding_dtype=fp16", "model.fp16_tables_on_cpu=true")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "asked" / "result.json").read_text())["steps"] == 2


def test_fp16_tables_pass_where_updates_round_stochastically(tmp_path, monkeypatch):
    """Defect caught: fp16 tables refused on CUDA (its kernels round stochastically, also for a GPU named
    resource `-h`), or the torchx component letting a CPU job (--gpu 0) with fp16 tables through to its ranks."""
    sys.path.insert(0, str(REPO))
    monkeypatch.chdir(REPO)
    from launch.components import train
    from recsys_dist.table_precision import check_table_precision

    cfg = load_config(None, ["model.embedding_dtype=fp16"])
    check_table_precision(cfg, "cuda")
    with pytest.raises(ConfigError, match="model.embedding_dtype=fp16 on CPU"):
        check_table_precision(cfg, "cpu")
    check_table_precision(load_config(None, ["model.embedding_dtype=fp16", FP16_ON_CPU]), "cpu")
    fp16 = ["model.embedding_dtype=fp16", f"data.dir={tmp_path}/not_here"]
    train(*fp16, j="1x2", gpu=2)  # the ranks will train on CUDA
    with pytest.raises(ConfigError, match="model.embedding_dtype=fp16 on CPU"):
        train(*fp16, j="1x2", gpu=0, check="config")
    train(*fp16, FP16_ON_CPU, j="1x2", gpu=0)
    train(*fp16, j="1x1", h="aws_p3.2xlarge")  # a named resource with a GPU
