"""Lazy Adam on CPU tables (recsys_dist/lazy_adam.py) against torch's AdamW, one optimizer per row.

Reference: every row of every table is its own parameter with its own torch.optim.AdamW, stepped only on the
batches whose ids include the row, with the row's gradient summed over the batch (a dense float64 autograd of the
same pooled lookup). That is lazy Adam with per-row bias correction, written with torch's optimizer.
The last test trains through `recsys-dist train` on planted labels.
"""

from __future__ import annotations

import pytest
import torch
from fbgemm_gpu.split_table_batched_embeddings_ops_common import PoolingMode
from torch.nn import functional as F

from recsys_dist.lazy_adam import LazyAdamTBE

ROWS, DIMS = [40, 7], [4, 8]  # table 0: some rows never looked up; table 1: rows seen in most batches
FEATURE_TABLE = [0, 1, 0]  # table 0 is looked up by two features
HP = dict(learning_rate=0.05, beta1=0.8, beta2=0.95, eps=1e-3, weight_decay=0.01)


def _batch(gen: torch.Generator, b: int, max_len: int = 4, weighted: bool = False):
    """FBGEMM layout: per feature b bags of 0..max_len ids, with repeats (few rows, many ids)."""
    lengths = torch.randint(0, max_len + 1, (len(FEATURE_TABLE) * b,), generator=gen)
    ids = [torch.randint(0, ROWS[t], (int(lengths[f * b:(f + 1) * b].sum()),), generator=gen)
           for f, t in enumerate(FEATURE_TABLE)]
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    indices = torch.cat(ids)
    psw = torch.rand(indices.numel(), generator=gen) + 0.5 if weighted else None
    return indices, offsets, psw


class RowAdamReference:
    """One torch.optim.AdamW per row (float64), stepped only when its row is looked up."""

    def __init__(self, tables, hp, mode: str):
        self.rows = [[torch.nn.Parameter(r.double().clone()) for r in t] for t in tables]
        self.opts = [[torch.optim.AdamW([p], lr=hp["learning_rate"], betas=(hp["beta1"], hp["beta2"]),
                                        eps=hp["eps"], weight_decay=hp["weight_decay"]) for p in t]
                     for t in self.rows]
        self.mode = mode

    def step(self, indices, offsets, psw, upstream):
        tables = [torch.stack(list(t)) for t in self.rows]
        b = (offsets.numel() - 1) // len(FEATURE_TABLE)
        outs, touched = [], [set(), set()]
        for f, t in enumerate(FEATURE_TABLE):
            s, e = int(offsets[f * b]), int(offsets[(f + 1) * b])
            outs.append(F.embedding_bag(indices[s:e], tables[t], offsets[f * b:(f + 1) * b + 1] - s, mode=self.mode,
                                        per_sample_weights=None if psw is None else psw[s:e].double(),
                                        include_last_offset=True))
            touched[t] |= set(indices[s:e].tolist())
        (torch.cat(outs, 1) * upstream.double()).sum().backward()
        for t, rows in enumerate(touched):
            for r in rows:
                self.opts[t][r].step()
        for t in self.rows:
            for p in t:
                p.grad = None

    def table(self, t):
        return torch.stack([p.detach() for p in self.rows[t]])

    def state(self, t, name):
        return torch.stack([self.opts[t][r].state[p][name] if self.opts[t][r].state.get(p) else torch.zeros_like(p)
                            for r, p in enumerate(self.rows[t])])


def _train(pooling: PoolingMode, weighted: bool, steps: int = 6, b: int = 5):
    gen = torch.Generator().manual_seed(0)
    tbe = LazyAdamTBE(ROWS, DIMS, FEATURE_TABLE, pooling_mode=pooling, **HP)
    for w in tbe.split_embedding_weights():
        w.uniform_(-0.5, 0.5, generator=gen)
    ref = RowAdamReference(tbe.split_embedding_weights(), HP, "sum" if pooling == PoolingMode.SUM else "mean")
    for _ in range(steps):
        indices, offsets, psw = _batch(gen, b, weighted=weighted)
        upstream = torch.randn(b, sum(DIMS[t] for t in FEATURE_TABLE), generator=gen)
        (tbe(indices, offsets, psw) * upstream).sum().backward()
        ref.step(indices, offsets, psw, upstream)
    return tbe, ref


@pytest.mark.parametrize("pooling,weighted", [(PoolingMode.SUM, False), (PoolingMode.MEAN, False),
                                              (PoolingMode.SUM, True)])
def test_matches_per_row_adamw(pooling, weighted):
    """Weights, exp_avg, exp_avg_sq and per-row step counts equal one AdamW per row stepped when the row is looked
    up (repeated ids summed, sum / mean pooling, per-sample weights). Catches: a missing or global-step bias
    correction, duplicates applied one by one instead of summed, eps inside the sqrt, coupled weight decay, rows
    updated that the batch did not touch."""
    tbe, ref = _train(pooling, weighted)
    states = tbe.get_optimizer_state()
    for t in range(len(ROWS)):
        torch.testing.assert_close(tbe.split_embedding_weights()[t].double(), ref.table(t), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(states[t]["exp_avg"].double(), ref.state(t, "exp_avg"), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(states[t]["exp_avg_sq"].double(), ref.state(t, "exp_avg_sq"), rtol=1e-5,
                                   atol=1e-9)
        steps = torch.stack([ref.opts[t][r].state[p]["step"] if ref.opts[t][r].state.get(p) else torch.tensor(0.)
                             for r, p in enumerate(ref.rows[t])])
        assert torch.equal(states[t]["row_counter"], steps.float())
    counts = tbe.row_counter
    assert (counts == 0).any() and len(set(counts.tolist())) > 3, counts  # untouched rows; rows of other ages


def test_rows_not_in_the_batch_do_not_change():
    """A step leaves every row the batch does not name bitwise as it was: weight, both moments, count. Catches an
    update (e.g. decay of the moments, weight decay) applied to the whole table, i.e. a cost that follows the
    table size."""
    tbe, _ = _train(PoolingMode.SUM, False)
    before = {k: getattr(tbe, k).clone() for k in ("weights", "exp_avg", "exp_avg_sq", "row_counter")}
    indices = torch.tensor([2, 2, 5, 1, 3])  # feature 0: rows 2, 2, 5 of table 0; feature 1: row 1; feature 2: 3
    offsets = torch.tensor([0, 3, 4, 5])
    tbe(indices, offsets).sum().backward()
    touched = {0: [2, 3, 5], 1: [1]}
    for t in range(len(ROWS)):
        keep = [r for r in range(ROWS[t]) if r not in touched[t]]
        for name, old in before.items():
            new = getattr(tbe, name)
            view = (lambda x: tbe._view(x, t)) if name != "row_counter" else (
                lambda x: x.narrow(0, tbe.rows_offsets[t], ROWS[t]))
            assert torch.equal(view(new)[keep], view(old)[keep]), (name, t)
            assert not torch.equal(view(new)[touched[t]], view(old)[touched[t]]), (name, t)


def test_per_sample_weight_gradient():
    """The gradient of the per-sample weights (a learnable feature processor's) is d loss / d w_i =
    <upstream of the bag, row>, as autograd gives for F.embedding_bag."""
    gen = torch.Generator().manual_seed(1)
    tbe = LazyAdamTBE(ROWS, DIMS, FEATURE_TABLE, **HP)
    for w in tbe.split_embedding_weights():
        w.uniform_(-0.5, 0.5, generator=gen)
    indices, offsets, psw = _batch(gen, 4, weighted=True)
    upstream = torch.randn(4, sum(DIMS[t] for t in FEATURE_TABLE), generator=gen)
    tables = [w.clone() for w in tbe.split_embedding_weights()]
    psw_a = psw.clone().requires_grad_()
    (tbe(indices, offsets, psw_a) * upstream).sum().backward()
    psw_b = psw.clone().requires_grad_()
    outs = []
    for f, t in enumerate(FEATURE_TABLE):
        s, e = int(offsets[f * 4]), int(offsets[(f + 1) * 4])
        outs.append(F.embedding_bag(indices[s:e], tables[t], offsets[f * 4:(f + 1) * 4 + 1] - s,
                                    mode="sum", per_sample_weights=psw_b[s:e], include_last_offset=True))
    (torch.cat(outs, 1) * upstream).sum().backward()
    torch.testing.assert_close(psw_a.grad, psw_b.grad)


def _train_planted(rank, world, root, out):
    from recsys_dist.config import load_config
    from recsys_dist.train import train

    return train(load_config(None, [
        f"data.dir={root}", "data.batch_size=128", "data.eval_batch_size=512", "model.embedding_dim=8",
        "model.arch_args={bottom_mlp: [16, 8], top_mlp: [16, 1]}", "optim.sparse=adam", "optim.sparse_lr=0.05",
        "optim.dense=adam", "optim.dense_lr=0.01", f"train.out_dir={out}", "train.epochs=3",
        "train.log_every_steps=0", "train.threads=1", "train.tensorboard=false", "train.checkpoint=false"]))


def test_adam_tables_learn_a_planted_signal(tmp_path):
    """`recsys-dist train` with optim.sparse=adam on CPU learns labels planted in two tables' ids
    (sigmoid(w0[s0] + w1[s1]), test_reshard_resume's generator): test AUC within 0.06 of the Bayes AUC (measured
    0.814 vs 0.865; row-wise Adagrad 0.1: 0.828). Catches an update that does not descend (e.g. a sign error)."""
    from dist_harness import run_on_ranks
    from prepared_fixtures import write_dataset
    from test_reshard_resume import _plant_labels

    write_dataset(tmp_path / "data", {"train": 3072, "val": 256, "test": 1024}, vocab=(50, 60, 70))
    bayes = _plant_labels(tmp_path / "data")
    [res] = run_on_ranks(_train_planted, 1, (tmp_path / "data", tmp_path / "run"))
    assert res["test"]["auc"] > bayes - 0.06, (res["test"], bayes)
