"""DeepMR (Elsayed & Schmidt-Thieme): a ReZero DNN branch and a ReZero multi-head self-attention branch mixed by beta.

The equations, arguments and an example are in `DeepMRArch`'s docstring.
"""

from __future__ import annotations

import contextlib
import math
from typing import ContextManager, Iterator, Optional

import torch
from torch import nn
from torch.nn import functional as F

from recsys_dist.models.arch import ArchInputs, DenseArch, map_row_chunks
from recsys_dist.models.numeric_fields import NumericFields

_REFERENCE = False


@contextlib.contextmanager
def reference_ops() -> Iterator[None]:
    """Run DeepMR's ops as the paper writes them: Q, K, V projected at head width, the FFN on every field row, the
    whole batch at once. Same parameters and math as the default (cheaper) ops; used for the paper model's FLOP
    count (benchmarks/bench_arches.py) and as the tests' reference."""
    global _REFERENCE
    saved, _REFERENCE = _REFERENCE, True
    try:
        yield
    finally:
        _REFERENCE = saved


class ReZeroDNN(nn.Module):
    """Eq. 3-4: l_0 = x A + a;  l_{j+1} = l_j + alpha_j Dropout(ReLU(l_j W_j + b_j)), alpha_j = 0 at init.

    Args:
        in_features: N*D.  width: d_o.  num_layers: number of ReZero layers.  dropout: rate (paper: 0.35-0.45).

    Example:
        >>> ReZeroDNN(12, 8, 2)(torch.rand(4, 12)).shape
        torch.Size([4, 8])
    """

    def __init__(self, in_features: int, width: int, num_layers: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.project = nn.Linear(in_features, width)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(num_layers))
        self.alpha = nn.Parameter(torch.zeros(num_layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.project(x)
        for j, layer in enumerate(self.layers):
            h = h + self.alpha[j] * self.dropout(F.relu(layer(h)))
        return h


class ReZeroSelfAttention(nn.Module):
    """Eq. 6-8 with a ReZero residual: Z = E' + alpha (SA(E) o E') ("mul") or E' + alpha SA(E) ("add"); FFN(Z).

    SA has H heads of width d_o / H, W_h^Q, W_h^K, W_h^V in R^{D x d_o/H}, scale sqrt(d_o / H), no output
    projection (eq. 7 concatenates the heads). alpha = 0 at init, so Z = E' then.

    Args:
        in_dim: D.  width: d_o.  num_heads: H.  residual: "mul" | "add".  negative_slope: FFN Leaky-ReLU slope.
        dropout: rate on the FFN's hidden activations.

    Call:
        e [B, N, D] -> [B, N, d_o] (the FFN rows of eq. 8); the ReZero output Z is kept in `last_residual`.

    Example:
        >>> ReZeroSelfAttention(8, 8, 2)(torch.rand(4, 3, 8)).shape
        torch.Size([4, 3, 8])
    """

    def __init__(self, in_dim: int, width: int, num_heads: int, residual: str = "mul",
                 negative_slope: float = 0.01, dropout: float = 0.0) -> None:
        super().__init__()
        if residual not in ("mul", "add"):
            raise ValueError(f"deepmr: attention_residual must be 'mul' or 'add', got {residual!r}")
        self.num_heads, self.residual = num_heads, residual
        self.qkv = nn.Linear(in_dim, 3 * width, bias=False)  # [W^Q | W^K | W^V], all heads
        self.res = nn.Linear(in_dim, width, bias=False) if in_dim != width else None
        self.alpha = nn.Parameter(torch.zeros(()))
        self.ffn1 = nn.Linear(width, width)
        self.ffn2 = nn.Linear(width, width)
        self.negative_slope = negative_slope
        self.dropout = nn.Dropout(dropout)
        self.last_residual: Optional[torch.Tensor] = None

    def attention(self, e: torch.Tensor) -> torch.Tensor:
        """Eq. 6-7: [B, N, D] -> [B, N, d_o]."""
        B, N, D = e.shape
        d_h = self.qkv.out_features // (3 * self.num_heads)
        if D < d_h and not _REFERENCE:
            return self._attention_at_input_width(e, d_h)
        q, k, v = self.qkv(e).view(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # [B, H, N, d_o/H] each
        # softmax(q k^T / sqrt(d_o / H)) v in torch's fused kernel: no [B, H, N, N] scores kept for the backward
        out = F.scaled_dot_product_attention(q, k, v)  # [B, H, N, d_o/H]
        return out.transpose(1, 2).reshape(B, N, -1)

    def _attention_at_input_width(self, e: torch.Tensor, d_h: int) -> torch.Tensor:
        """The same eq. 6-7 when D < d_o/H, attending at width D on e itself:
        q_h k_h^T = e (W_h^Q W_h^K^T) e^T = (e M_h) e^T and softmax(.) v_h = (softmax(.) e) W_h^V."""
        B, N, D = e.shape
        H = self.num_heads
        wq, wk, wv = self.qkv.weight.view(3, H, d_h, D)  # nn.Linear rows: q = e wq^T
        m = wq.transpose(1, 2) @ wk  # M_h [H, D, D]
        # the H heads' queries side by side: [B, 1, N H, D], query row n H + h (rows attend independently)
        q = (e.reshape(B * N, D) @ m.permute(1, 0, 2).reshape(D, H * D)).view(B, 1, N * H, D)
        kv = e.unsqueeze(1)  # [B, 1, N, D], shared by all heads
        out = F.scaled_dot_product_attention(q, kv, kv, scale=1.0 / math.sqrt(d_h)).view(B, N, H, D)
        return torch.einsum("bnhd,hed->bnhe", out, wv).reshape(B, N, H * d_h)

    def forward(self, e: torch.Tensor, sum_fields: bool = False) -> torch.Tensor:
        """[B, N, D] -> the FFN rows [B, N, d_o], or with `sum_fields` their sum over fields [B, d_o] (eq. 8 + the
        sum of DeepMRArch), computed as FFN's second layer on the summed hidden rows (it is linear)."""
        sa = self.attention(e)
        base = e if self.res is None else self.res(e)
        z = base + self.alpha * (sa * base if self.residual == "mul" else sa)
        self.last_residual = z
        hidden = self.dropout(F.leaky_relu(self.ffn1(z), self.negative_slope))
        if not sum_fields:
            return self.ffn2(hidden)
        if _REFERENCE:
            return self.ffn2(hidden).sum(dim=1)
        return F.linear(hidden.sum(dim=1), self.ffn2.weight) + hidden.shape[1] * self.ffn2.bias


class DeepMRArch(DenseArch):
    """DeepMR (Elsayed & Schmidt-Thieme, "Deep Multi-Representation Model for Click-Through Rate Prediction").

    Field embeddings with learned positional encodings feed two parallel branches whose outputs are mixed by beta:

        e^(n)    = x^(n) W^(n) + P^(n)                                  (eq. 1; x^(n) W^(n) is the sparse arch's output)
        O_DNN    = ReZero-DNN(concat_col(e^(n)))                        (eq. 2-4)
                   l_0 = E_DNN A + a (a linear projection to width d_o),  l_{j+1} = l_j + alpha_j ReLU(l_j W_j + b_j)
        SA       = concat_col_h softmax(Q_h K_h^T / sqrt(d_o / H)) V_h, Q_h = E_SA W_h^Q, ...          (eq. 5-7)
        Z        = E' + alpha_SA (SA o E')  (multiplicative ReZero, the paper's choice)  or  E' + alpha_SA SA (additive)
        O_SA     = sum_n FFN(Z^(n)),  FFN(z) = LeakyReLU(z W^(1) + b^(1)) W^(2) + b^(2)                     (eq. 8)
        O_comb   = beta O_SA + (1 - beta) O_DNN                                                           (eq. 9)
        y_hat    = sigmoid(sum_r O_comb^(r))                                                              (eq. 10)

    All alpha start at 0 (ReZero), so every ReZero block is the identity at init. E' is E_SA itself when d_o = D,
    else E_SA W_res (a linear map to width d_o, as AutoInt's residual). Eq. 8 concatenates the N per-field FFN
    rows while eq. 9 needs O_SA in R^{d_o}; the rows are summed over fields, as the authors' code does. The block
    (attention + FFN) can be stacked `num_attention_layers` times. beta is fixed, or learnable from its initial
    value (the paper's beta_L starts at 0.5). Raw numeric features become extra fields (numeric_fields).

    Cheaper ops, same math and parameters (`reference_ops()` runs the paper's): where D < d_o/H the attention runs
    at width D on e itself (scores (e W_h^Q W_h^K^T) e^T, W_h^V applied after the softmax); the last block's FFN
    second layer runs on the field-summed rows (it is linear); the attention branch runs over batch chunks of
    CHUNK_BYTES per [rows, N, d_o] activation on CPU (no per-step allocation over glibc's 32 MiB mmap threshold).

    Args:
        inputs: ArchInputs; N = num_dense + num_sparse fields of dim D.
        width: d_o, the width of both branches' outputs.
        num_dnn_layers: ReZero layers after the projection (paper: 1..5).
        num_heads: H, must divide d_o.
        num_attention_layers: stacked ReZero attention + FFN blocks.
        beta: the eq. 9 mixing weight (0 = DNN branch only, 1 = attention branch only).
        learn_beta: train beta (starting at `beta`).
        attention_residual: "mul" (multiplicative ReZero, paper's best) or "add".
        negative_slope: of the FFN's Leaky-ReLU.
        dropout: rate on the ReZero DNN's ReLU outputs and the FFN's hidden activations (the paper's grid search
            chose 0.35 on Frappe / LastFM, 0.45 on MovieLens; its Sec. 4.1 does not say where; 0 = none).

    Example:
        >>> arch = DeepMRArch(ArchInputs(0, ("C1", "C2", "C3"), 8), width=8, num_heads=2)
        >>> arch(torch.zeros(4, 0), torch.rand(4, 3, 8)).shape
        torch.Size([4])
    """

    # The dense optimizer when a config sets none (recsys_dist/arch_defaults.py): Adam, the paper's optimizer, at
    # 3e-3 like DLRM / DeepFM / xDeepInt (the paper's 5e-6..1e-4 is for embedding 512 on its datasets, untested
    # here). With the global Adagrad 0.01 DeepMR trailed on UCI Adult (test AUC 0.897; Adam 3e-3: 0.905, one
    # seed); planted data 0.742 (Bayes 0.754): docs/arches.md, "Defaults on data nobody tuned for".
    # Tables: row-wise Adagrad at lr 0.1, eps 0.01 (the global 0.01, 1e-8 trains DeepMR's tables too slowly: planted
    # gap, 1 process, 0.0181 -> 0.0128; lr 0.03 or 0.1 alone 0.0134; eps 0.01 alone 0.025). Every other arch is
    # worse with these tables (planted); UCI Adult: docs/arches.md, "Optimizer defaults, measured on both".
    OPTIM_DEFAULTS = {"dense": "adam", "dense_lr": 3e-3, "sparse": "rowwise_adagrad", "sparse_lr": 0.1,
                      "sparse_eps": 0.01}
    CHUNK_BYTES = 4 << 20  # the attention branch's per-chunk activation [rows, N, d_o] (bench_deepmr_attention.py)

    def __init__(self, inputs: ArchInputs, width: int = 256, num_dnn_layers: int = 3, num_heads: int = 4,
                 num_attention_layers: int = 1, beta: float = 0.5, learn_beta: bool = False,
                 attention_residual: str = "mul", negative_slope: float = 0.01, dropout: float = 0.0) -> None:
        super().__init__(inputs)
        D = inputs.embedding_dim
        if width < 1 or num_heads < 1 or width % num_heads != 0:
            raise ValueError(f"deepmr: width ({width}) must be a positive multiple of num_heads ({num_heads})")
        if num_dnn_layers < 0 or num_attention_layers < 1:
            raise ValueError("deepmr: num_dnn_layers must be >= 0 and num_attention_layers >= 1, got "
                             f"{num_dnn_layers}, {num_attention_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"deepmr: dropout must be in [0, 1), got {dropout}")
        self.fields = NumericFields(inputs.num_dense, D)
        N = self.fields.num_fields(inputs.num_sparse)
        if N == 0:
            raise ValueError("deepmr needs at least one field (dense or sparse)")
        self.width = width
        self.position = nn.Parameter(torch.empty(N, D))  # P^(n), eq. 1
        nn.init.normal_(self.position, std=0.01)
        self.dnn = ReZeroDNN(N * D, width, num_dnn_layers, dropout)
        self.attention = nn.ModuleList(
            ReZeroSelfAttention(D if i == 0 else width, width, num_heads, attention_residual, negative_slope,
                                dropout)
            for i in range(num_attention_layers)
        )
        beta_t = torch.tensor(float(beta))
        if learn_beta:
            self.beta = nn.Parameter(beta_t)
        else:
            self.register_buffer("beta", beta_t)

    def branches(self, dense: torch.Tensor, embeddings: torch.Tensor) -> tuple:
        """(O_SA, O_DNN), each [B, d_o]."""
        e = self.fields(dense, embeddings) + self.position  # eq. 1
        o_dnn = self.dnn(e.flatten(1))  # eq. 2-4
        if _REFERENCE or e.device.type != "cpu":  # chunks: for the CPU's allocator and caches (unmeasured on CUDA)
            return self._attention_branch(e), o_dnn
        # the attention branch over chunks of the batch: its [rows, N, d_o] temporaries stay under glibc's 32 MiB
        # mmap threshold (a larger block is mapped, faulted in and unmapped on every step)
        rows = max(1, self.CHUNK_BYTES // (e.shape[1] * self.width * e.element_size()))
        return map_row_chunks(self._attention_branch, rows, e), o_dnn

    def _attention_branch(self, e: torch.Tensor) -> torch.Tensor:
        z = e
        for block in self.attention[:-1]:
            z = block(z)
        return self.attention[-1](z, sum_fields=True)  # eq. 8 rows summed over fields

    def paper_ops(self) -> ContextManager[None]:
        return reference_ops()

    def forward(self, dense: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        o_sa, o_dnn = self.branches(dense, embeddings)
        return (self.beta * o_sa + (1.0 - self.beta) * o_dnn).sum(dim=-1)  # eq. 9-10 (logit)
