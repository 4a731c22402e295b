"""Lazy (sparse) Adam for pooled embedding tables on CPU, fused into the backward like FBGEMM's TBE.

FBGEMM's fused ADAM is CUDA-only, and TorchRec's DENSE kernel hands the optimizer a gradient as big as the table.
`LazyAdamTBE` is a table-batched embedding bag (several tables in one flat buffer, FBGEMM's indices / offsets /
feature_table_map layout) whose backward updates only the rows looked up in the batch:

    g   = sum of the row's gradients in the batch (repeated ids and every bag of every feature of the table)
    c  += 1                        per-row step: how many batches touched the row (state `row_counter`)
    m   = b1 m + (1 - b1) g        `exp_avg`;   v = b2 v + (1 - b2) g^2   `exp_avg_sq`
    w  -= lr (m / (1 - b1^c) / (sqrt(v / (1 - b2^c)) + eps) + wd w)

Rows not in the batch keep their weight, moments and count. This is FBGEMM's CUDA Adam kernel with
`use_rowwise_bias_correction=True` (the same formula, state names and layout), so `optim.sparse=adam` means the
same update on both devices. Bias correction per row rather than per global step: a row's moments average only
the batches that touched it, so its bias is that count's; with the global step a row first seen at step 10^4
gets m = 0.1 g, v = 0.001 g^2 uncorrected, i.e. a first step of 3.2 lr instead of lr. A row touched every step
gets exactly torch.optim.Adam's update (with decoupled weight decay, as FBGEMM). The per-row counter also shards,
checkpoints and reshards like the weights (no global counter to keep in step across row shards).
Cost per step: O(ids in the batch x dim) plus a sort of the ids, independent of the table size
(benchmarks/bench_table_optimizers.py).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from fbgemm_gpu.split_table_batched_embeddings_ops_common import PoolingMode
from torch import nn
from torch.nn import functional as F


class LazyAdamTBE(nn.Module):
    """Tables `rows[i] x dims[i]` in one fp32 buffer; features map to tables by `feature_table_map`.

    forward(indices, offsets, per_sample_weights) -> [B, sum of the features' dims], as FBGEMM's TBE: feature f's
    bags are offsets[f*B : (f+1)*B + 1], ids are local row numbers of its table.
    """

    def __init__(self, rows: Sequence[int], dims: Sequence[int], feature_table_map: Sequence[int],
                 pooling_mode: PoolingMode = PoolingMode.SUM, learning_rate: float = 0.001, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                 device: Optional[torch.device] = None) -> None:
        super().__init__()
        if pooling_mode not in (PoolingMode.SUM, PoolingMode.MEAN):
            raise ValueError(f"LazyAdamTBE pools by sum or mean, not {pooling_mode}")
        self.rows, self.dims = list(rows), list(dims)
        self.feature_table_map = list(feature_table_map)
        self.pooling_mode = pooling_mode
        self.hparams: Dict[str, float] = {"learning_rate": learning_rate, "beta1": beta1, "beta2": beta2,
                                          "eps": eps, "weight_decay": weight_decay}
        sizes = [r * d for r, d in zip(self.rows, self.dims)]
        self.weights_offsets = [sum(sizes[:t]) for t in range(len(sizes))]
        self.rows_offsets = [sum(self.rows[:t]) for t in range(len(self.rows))]
        kw = {"dtype": torch.float32, "device": device}
        self.register_buffer("weights", torch.zeros(sum(sizes), **kw))
        self.register_buffer("exp_avg", torch.zeros(sum(sizes), **kw))
        self.register_buffer("exp_avg_sq", torch.zeros(sum(sizes), **kw))
        self.register_buffer("row_counter", torch.zeros(sum(self.rows), **kw))

    # -- views per table (what TorchRec's kernel and fused optimizer read and checkpoint) ------------------------
    def _view(self, flat: torch.Tensor, t: int) -> torch.Tensor:
        n = self.rows[t] * self.dims[t]
        return flat.narrow(0, self.weights_offsets[t], n).view(self.rows[t], self.dims[t])

    def split_embedding_weights(self) -> List[torch.Tensor]:
        return [self._view(self.weights, t) for t in range(len(self.rows))]

    def get_optimizer_state(self) -> List[Dict[str, torch.Tensor]]:
        """Per table, FBGEMM's names for Adam with row-wise bias correction."""
        return [{"exp_avg": self._view(self.exp_avg, t), "exp_avg_sq": self._view(self.exp_avg_sq, t),
                 "row_counter": self.row_counter.narrow(0, self.rows_offsets[t], self.rows[t])}
                for t in range(len(self.rows))]

    def get_learning_rate(self) -> float:
        return self.hparams["learning_rate"]

    def set_learning_rate(self, lr: float) -> None:
        self.hparams["learning_rate"] = float(lr)

    def update_hyper_parameters(self, params: Dict[str, float]) -> None:
        unknown = set(params) - set(self.hparams) - {"lr"}
        if unknown:
            raise ValueError(f"LazyAdamTBE: unknown hyper-parameter(s) {sorted(unknown)}")
        for k, v in params.items():
            self.hparams["learning_rate" if k == "lr" else k] = float(v)

    def set_optimizer_step(self, step: int) -> None:
        """Nothing to set: bias correction counts per row (`row_counter`), not by a global step."""

    def flush(self) -> None:
        pass

    def reset_cache_states(self) -> None:
        pass

    # -- forward / backward -----------------------------------------------------------------------------------
    def forward(self, indices: torch.Tensor, offsets: torch.Tensor,
                per_sample_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        trigger = torch.zeros(0, requires_grad=torch.is_grad_enabled() and self.training)
        return _LazyAdamLookup.apply(trigger, self, indices.long(), offsets.long(), per_sample_weights)

    def _bags(self, offsets: torch.Tensor):
        """Per feature: (table, first id, last id + 1, bag offsets relative to the first id, output column)."""
        nf = len(self.feature_table_map)
        b = (offsets.numel() - 1) // nf
        cuts = offsets[:: b].tolist() if b else [0] * (nf + 1)
        col = 0
        for f, t in enumerate(self.feature_table_map):
            yield t, cuts[f], cuts[f + 1], offsets[f * b: (f + 1) * b + 1] - cuts[f], col, b
            col += self.dims[t]

    def pool(self, indices: torch.Tensor, offsets: torch.Tensor,
             per_sample_weights: Optional[torch.Tensor]) -> torch.Tensor:
        mode = "sum" if self.pooling_mode == PoolingMode.SUM else "mean"
        tables = self.split_embedding_weights()
        outs = []
        for t, start, end, bag_offsets, _, _ in self._bags(offsets):
            psw = None if per_sample_weights is None else per_sample_weights[start:end]
            outs.append(F.embedding_bag(indices[start:end], tables[t], bag_offsets, mode=mode,
                                        per_sample_weights=psw, include_last_offset=True))
        return torch.cat(outs, dim=1)

    def row_gradients(self, grad_out: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor,
                      per_sample_weights: Optional[torch.Tensor]) -> Dict[int, tuple]:
        """Per table: (unique row ids, their summed gradient [U, dim])."""
        per_table: Dict[int, List[tuple]] = {}
        for t, start, end, bag_offsets, col, b in self._bags(offsets):
            if end == start:
                continue
            lengths = bag_offsets.diff()
            bag = torch.repeat_interleave(torch.arange(b), lengths)
            g = grad_out[:, col: col + self.dims[t]].index_select(0, bag)
            if per_sample_weights is not None:
                g = g * per_sample_weights[start:end].unsqueeze(1)
            if self.pooling_mode == PoolingMode.MEAN:
                g = g / lengths.index_select(0, bag).unsqueeze(1).to(g.dtype)
            per_table.setdefault(t, []).append((indices[start:end], g))
        out = {}
        for t, parts in per_table.items():
            ids = torch.cat([p[0] for p in parts])
            grads = torch.cat([p[1] for p in parts])
            rows, inverse = torch.unique(ids, return_inverse=True)
            summed = torch.zeros(rows.numel(), self.dims[t], dtype=torch.float32).index_add_(0, inverse, grads)
            out[t] = (rows, summed)
        return out

    @torch.no_grad()
    def apply_adam(self, grads: Dict[int, tuple]) -> None:
        h = self.hparams
        lr, b1, b2, eps, wd = h["learning_rate"], h["beta1"], h["beta2"], h["eps"], h["weight_decay"]
        states = self.get_optimizer_state()
        for t, (rows, g) in grads.items():
            w, m, v, c = (self._view(self.weights, t), states[t]["exp_avg"], states[t]["exp_avg_sq"],
                          states[t]["row_counter"])
            count = c.index_select(0, rows) + 1
            c.index_copy_(0, rows, count)
            m_r = m.index_select(0, rows).mul_(b1).add_(g, alpha=1 - b1)
            v_r = v.index_select(0, rows).mul_(b2).addcmul_(g, g, value=1 - b2)
            m.index_copy_(0, rows, m_r)
            v.index_copy_(0, rows, v_r)
            count = count.unsqueeze(1)
            bias1 = 1 - torch.pow(b1, count)
            bias2 = 1 - torch.pow(b2, count)
            w_r = w.index_select(0, rows)
            step = m_r.div_(bias1).div_(v_r.div_(bias2).sqrt_().add_(eps))
            if wd:
                step.add_(w_r, alpha=wd)
            w.index_copy_(0, rows, w_r.sub_(step, alpha=lr))


class _LazyAdamLookup(torch.autograd.Function):
    """Pooled lookup whose backward applies the Adam update to the touched rows (the tables get no .grad)."""

    @staticmethod
    def forward(ctx, trigger, module: LazyAdamTBE, indices, offsets, per_sample_weights):  # type: ignore[override]
        ctx.module = module
        ctx.save_for_backward(indices, offsets, per_sample_weights)
        return module.pool(indices, offsets, per_sample_weights)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        module: LazyAdamTBE = ctx.module
        indices, offsets, psw = ctx.saved_tensors
        grad_out = grad_out.float().contiguous()
        grad_psw = None
        if psw is not None and ctx.needs_input_grad[4]:
            grad_psw = torch.empty_like(psw)
            tables = module.split_embedding_weights()
            for t, start, end, bag_offsets, col, b in module._bags(offsets):
                bag = torch.repeat_interleave(torch.arange(b), bag_offsets.diff())
                rows = tables[t].index_select(0, indices[start:end])
                grad_psw[start:end] = (grad_out[:, col: col + module.dims[t]].index_select(0, bag) * rows).sum(1)
        module.apply_adam(module.row_gradients(grad_out, indices, offsets, psw))
        return None, None, None, None, grad_psw
