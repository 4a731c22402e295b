"""optim.lr_decay (recsys_dist/lr_schedule.py): the factor's shape; on 2 gloo ranks every learning rate the
kernels and optimizers use follows it (dense Adam, FBGEMM's row-wise Adagrad tables, our lazy Adam tables), and a
run resumed from a checkpoint continues the schedule (ends bitwise equal to the straight run)."""

import json
import math
import shutil

import pytest
import torch

from dist_harness import run_on_ranks
from prepared_fixtures import write_dataset
from recsys_dist.config import ConfigError, load_config
from recsys_dist.lr_schedule import lr_factor

STEPS = 15  # 960 rows / global batch 64


def test_factor_warmup_then_linear_and_cosine_decay():
    """Defect caught: a decay that starts too early or late, ends elsewhere than decay_end_factor, or drops the
    warm-up."""
    lin = [lr_factor(s, 10, warmup_steps=2, decay="linear", decay_start=0.5, end_factor=0.1) for s in range(10)]
    assert lin[:6] == pytest.approx([0.5, 1, 1, 1, 1, 1])
    assert lin[6:] == pytest.approx([1 - 0.9 * q for q in (0.2, 0.4, 0.6, 0.8)])
    cos = [lr_factor(s, 10, decay="cosine") for s in range(11)]
    assert cos[0] == 1 and cos[10] == pytest.approx(0) and cos[5] == pytest.approx(0.5)
    assert all(a > b for a, b in zip(cos, cos[1:]))
    assert lr_factor(3, 10, warmup_steps=4) == 1 and lr_factor(9, 10) == 1


@pytest.mark.parametrize("bad", ["optim.lr_decay=step", "optim.decay_start=1", "optim.decay_end_factor=1.5"])
def test_bad_schedule_refused_naming_the_key(bad):
    with pytest.raises(ConfigError, match=bad.split("=")[0]):
        load_config(None, [bad])


def _cfg(root, out, *extra):
    return load_config(None, [
        f"data.dir={root}", "data.batch_size=64", "data.eval_batch_size=200", "data.shuffle=true",
        "data.shuffle_buffer_rows=100", "model.embedding_dim=8", "model.arch_args={bottom_mlp: [16, 8], top_mlp: [16, 1]}",
        f"train.out_dir={out}", "train.epochs=1", "train.log_every_steps=5", "train.threads=1", "train.test=false",
        "optim.dense=adam", "optim.dense_lr=0.01", "optim.sparse_lr=0.05", "optim.warmup_steps=2",
        "optim.lr_decay=cosine", "optim.decay_start=0.2", "optim.decay_end_factor=0.1",
        "sharding.sharding_types=[row_wise]", *extra])


def _recording_lrs():
    """Patches the table kernels' forward (the lr a step's backward uses is the kernel's at its forward) and
    every torch optimizer's step; returns the lists they append to."""
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import SplitTableBatchedEmbeddingBagsCodegen
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from recsys_dist.lazy_adam import LazyAdamTBE

    seen = {"tables": [], "dense": []}
    for cls in (SplitTableBatchedEmbeddingBagsCodegen, LazyAdamTBE):
        forward = cls.forward

        def recorded(self, *a, _forward=forward, **k):
            if self.training and torch.is_grad_enabled():
                seen["tables"].append((id(self), self.get_learning_rate()))
            return _forward(self, *a, **k)
        cls.forward = recorded

    def dense_step(opt, *_):  # the dense Adam's (the fused table optimizers are torch Optimizers too)
        if isinstance(opt, torch.optim.Adam):
            seen["dense"].append((id(opt), opt.param_groups[0]["lr"]))
    register_optimizer_step_pre_hook(dense_step)
    return seen


def _ranks(rank, world, root, tmp):
    import torch.distributed as dist

    from recsys_dist.train import train

    seen = _recording_lrs()
    out = {}
    for sparse in ("rowwise_adagrad", "adam"):
        seen["tables"].clear(), seen["dense"].clear()
        train(_cfg(root, tmp / sparse, f"optim.sparse={sparse}"))
        out[sparse] = {k: list(v) for k, v in seen.items()}
    # resume: A straight with a checkpoint at step 6, B from that checkpoint
    train(_cfg(root, tmp / "A", "train.checkpoint_every_steps=6"))
    if rank == 0:
        (tmp / "B" / "checkpoints").mkdir(parents=True)
        shutil.copytree(tmp / "A" / "checkpoints" / "step_00000006", tmp / "B" / "checkpoints" / "step_00000006")
    dist.barrier()
    out["B"] = train(_cfg(root, tmp / "B"))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lr_schedule")
    root = tmp / "data"
    write_dataset(root, {"train": 960, "val": 100, "test": 100}, vocab=(50, 60, 70))
    return tmp, run_on_ranks(_ranks, 2, (root, tmp), timeout=300)


@pytest.mark.parametrize("sparse", ["rowwise_adagrad", "adam"])
def test_every_lr_follows_the_schedule_on_two_ranks(runs, sparse):
    """Defect caught: the schedule reaching the dense optimizer but not the fused table kernels (FBGEMM's or the
    lazy Adam's), or lagging them by a step, or the total steps it decays over being wrong."""
    _, ranks = runs
    want = [lr_factor(s, STEPS, 2, "cosine", 0.2, 0.1) for s in range(STEPS)]
    for rank in ranks:
        seen = rank[sparse]
        for part, base in (("tables", 0.05), ("dense", 0.01)):
            per_module = {}
            for key, lr in seen[part]:
                per_module.setdefault(key, []).append(lr)
            assert per_module, f"no {part} lr recorded"
            for lrs in per_module.values():
                assert lrs == pytest.approx([base * f for f in want], rel=1e-6), part
    assert min(want) < 0.15 and want[0] == 0.5  # the schedule checked above both warms up and decays


def test_resumed_run_continues_the_schedule_bitwise(runs, tmp_path):
    """Defect caught: the schedule's position not checkpointed (a resumed run would restart the warm-up and the
    decay: its weights differ from the straight run's)."""
    from test_checkpoint_resume import _assert_bitwise_equal, _full_state

    tmp, ranks = runs
    assert ranks[0]["B"]["resumed_from_step"] == 6 and ranks[0]["B"]["steps"] == STEPS
    a, b = _full_state(tmp / "A" / "checkpoint", tmp_path), _full_state(tmp / "B" / "checkpoint", tmp_path)
    assert a["scheduler"]["last_epoch"] == STEPS
    assert _assert_bitwise_equal(a, b) > 10
    events = [json.loads(x) for x in (tmp / "B" / "metrics.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "resume" and events[0]["step"] == 6
