"""OptInter (Lyu et al., "Memorize, Factorize, or be Naive: Learning Optimal Feature Interaction Methods for CTR
Prediction", ICDE 2022): per feature pair, memorize (a cross-product table), factorize (Hadamard product), or
nothing (naive), searched with Gumbel-softmax and then re-trained with the chosen method.

The cross tables are ordinary tables of the sharded EmbeddingBagCollection (recsys_dist.data.cross_features makes
the "CixCj" features); their pooled embeddings arrive in `embeddings` after the base fields. This file holds the
combination block (eq. 14-19) and the classifier (eq. 9-12).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from recsys_dist.models.arch import ArchInputs, DenseArch
from recsys_dist.models.numeric_fields import NumericFields
from recsys_dist.models.pair_products import mixed_pair_products, pair_runs

METHODS = ("memorize", "factorize", "naive")  # k in K, in the order of alpha's columns
FIXED = ("memorize", "factorize", "naive")


class CombinationBlock(nn.Module):
    """Feature interaction embeddings e^b of P pairs (OptInter eq. 14-19).

        e^f_(i,j) = e^o_i (Hadamard) e^o_j                                            (14)
        e^b_(i,j) in {e^m_(i,j), e^f_(i,j), e^n}, e^n = 0                             (15)
        search:  g = -log(-log(u)), u ~ U(0, 1)                                       (16)
                 p^k_(i,j) = softmax_k((log alpha^k_(i,j) + g^k_(i,j)) / tau)           (17)
                 e^b_(i,j) = p^m e^m_(i,j) + p^f e^f_(i,j) + p^n e^n                  (18)
        fixed:   e^b_(i,j) = e^{k*}_(i,j), k* = argmax_k alpha^k_(i,j)                 (19)

    `alpha` here is the unconstrained log alpha (logits); the Gumbel noise is drawn in training only (eval uses
    the noiseless softmax). In fixed mode naive pairs are dropped (a zero vector carries nothing), so the output
    holds only the memorized and factorized pairs.

    Args:
        pairs: P pairs (i, j) as indices into the base fields e^o.
        methods: "search", or one method per pair from memorize | factorize | naive.
        memorized: for each pair, its index into the memorized embeddings e^m, or -1 (no cross table).
        tau, tau_min, tau_decay: temperature tau_t = max(tau_min, tau - tau_decay * t) at training step t.
        gumbel: add the Gumbel noise of eq. 16 (search only).

    Shapes: forward(e_o [B, M, D], e_m [B, P_m, D]) -> e_b [B, P_out, D] (P_out = P in search, else the
    memorized + factorized pairs, in pair order); forward(e_o, e_m, prefix [B, K, D]) -> [B, K + P_out, D].

    Example:
        >>> blk = CombinationBlock([(0, 1), (0, 2)], "search", memorized=[0, 1])
        >>> blk(torch.randn(4, 3, 8), torch.randn(4, 2, 8)).shape
        torch.Size([4, 2, 8])
    """

    def __init__(self, pairs: Sequence[Tuple[int, int]], methods: Any, memorized: Sequence[int],
                 tau: float = 1.0, tau_min: float = 0.01, tau_decay: float = 0.0, gumbel: bool = True) -> None:
        super().__init__()
        self.search = methods == "search"
        if not self.search and len(methods) != len(pairs):
            raise ValueError(f"{len(pairs)} pairs but {len(methods)} methods")
        if len(memorized) != len(pairs):
            raise ValueError(f"{len(pairs)} pairs but {len(memorized)} memorized indices")
        needs_table = range(len(pairs)) if self.search else [k for k, m in enumerate(methods) if m == "memorize"]
        lacking = [pairs[k] for k in needs_table if memorized[k] < 0]
        if lacking:
            raise ValueError(f"pairs {lacking[:5]} need a memorized (cross) embedding but have none")
        if tau <= 0 or tau_min <= 0 or tau_decay < 0:
            raise ValueError(f"need tau > 0, tau_min > 0, tau_decay >= 0; got {tau}, {tau_min}, {tau_decay}")
        self.methods = None if self.search else list(methods)
        self.tau, self.tau_min, self.tau_decay, self.gumbel = float(tau), float(tau_min), float(tau_decay), gumbel
        kept = list(range(len(pairs))) if self.search else [k for k, m in enumerate(methods) if m != "naive"]
        self.num_pairs, self.num_out = len(pairs), len(kept)
        i = torch.tensor([pairs[k][0] for k in kept], dtype=torch.long)
        j = torch.tensor([pairs[k][1] for k in kept], dtype=torch.long)
        mem_list = [max(memorized[k], 0) for k in kept]
        mem = torch.tensor(mem_list, dtype=torch.long)
        use_mem = torch.tensor([self.search or methods[k] == "memorize" for k in kept])
        self.register_buffer("i", i, persistent=False)
        self.register_buffer("j", j, persistent=False)
        self.register_buffer("mem", mem, persistent=False)
        self.register_buffer("use_mem", use_mem.view(1, -1, 1), persistent=False)
        self.mem_span = as_range(mem_list)  # search: every pair's cross table, in order: a view, no gather
        # eq. 14 (and 18) by runs of pairs sharing i with consecutive j (pair_products); None: the gathered form
        kinds = ["memorize" if self.search or methods[k] == "memorize" else "factorize" for k in kept]
        factorized = [pairs[k] for k, m in zip(kept, kinds) if self.search or m == "factorize"]
        self.runs: Optional[List[Tuple[int, int, int, int]]] = pair_runs(factorized)
        self.num_factorized = len(factorized)
        # fixed: the output in pair order as slices of e_m's memorized pairs and of the factorized products
        mem_sel = [memorized[k] for k, m in zip(kept, kinds) if m == "memorize"]
        self.register_buffer("mem_sel", torch.tensor(mem_sel, dtype=torch.long), persistent=False)
        self.mem_sel_span = as_range(mem_sel)
        self.segments: List[Tuple[str, int, int]] = []  # (kind, first, stop) into the memorized / factorized ones
        seen = {"memorize": 0, "factorize": 0}
        for m in kinds:
            if self.segments and self.segments[-1][0] == m:
                self.segments[-1] = (m, self.segments[-1][1], self.segments[-1][2] + 1)
            else:
                self.segments.append((m, seen[m], seen[m] + 1))
            seen[m] += 1
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.alpha = nn.Parameter(torch.zeros(len(pairs), len(METHODS))) if self.search else None

    def temperature(self) -> float:
        return max(self.tau_min, self.tau - self.tau_decay * int(self.step))

    def weights(self, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """p [P, 3] of eq. 17 (columns in METHODS order); `noise` is g of eq. 16 (None: no noise)."""
        logits = self.alpha if noise is None else self.alpha + noise
        return torch.softmax(logits / self.temperature(), dim=-1)

    def forward(self, e_o: torch.Tensor, e_m: torch.Tensor, prefix: Optional[torch.Tensor] = None) -> torch.Tensor:
        """e^b [B, P_out, D], or cat([prefix, e^b], dim=1) when a prefix [B, K, D] is given (one buffer)."""
        if self.runs is None:
            e_b = self._forward_gathered(e_o, e_m)
            return e_b if prefix is None else torch.cat([prefix, e_b], dim=1)
        if not self.search:  # eq. 19: memorized or factorized, naive pairs already dropped
            kinds = {m for m, _, _ in self.segments}
            parts = {"factorize": mixed_pair_products(e_o, self.runs, self.num_factorized)  # eq. 14
                     if "factorize" in kinds else None,
                     "memorize": take_fields(e_m, self.mem_sel, self.mem_sel_span) if "memorize" in kinds else None}
            out = ([] if prefix is None else [prefix]) + [parts[m][:, a:b] for m, a, b in self.segments]
            return e_o[:, :0] if not out else out[0] if len(out) == 1 else torch.cat(out, dim=1)
        p = self._search_weights()
        # eq. 18 (p^n e^n = 0) with eq. 14's products made inside
        return mixed_pair_products(e_o, self.runs, self.num_pairs, w_f=p[:, 1],
                                   e_m=take_fields(e_m, self.mem, self.mem_span), w_m=p[:, 0], prefix=prefix)

    def _search_weights(self) -> torch.Tensor:
        noise = None
        if self.training and self.gumbel:
            u = torch.rand_like(self.alpha).clamp_(1e-10, 1.0 - 1e-7)
            noise = -torch.log(-torch.log(u))  # eq. 16
        p = self.weights(noise)
        if self.training:
            with torch.no_grad():
                self.step += 1
        return p

    def _forward_gathered(self, e_o: torch.Tensor, e_m: torch.Tensor) -> torch.Tensor:
        """The same outputs by index gathers of both sides of every pair (the reference; `runs = None`)."""
        e_f = e_o[:, self.i] * e_o[:, self.j]  # eq. 14
        if not self.search:  # eq. 19
            if e_m.shape[1] == 0:
                return e_f
            return torch.where(self.use_mem, take_fields(e_m, self.mem, self.mem_span), e_f)
        p = self._search_weights()
        e_mem = take_fields(e_m, self.mem, self.mem_span)
        return p[:, 0].view(1, -1, 1) * e_mem + p[:, 1].view(1, -1, 1) * e_f  # eq. 18

    def chosen(self) -> List[str]:
        """The method per pair: argmax_k alpha (eq. 19) in search, else the fixed ones."""
        if not self.search:
            return list(self.methods)
        return [METHODS[k] for k in self.alpha.detach().argmax(dim=-1).tolist()]


def as_range(idx: Sequence[int]) -> Optional[Tuple[int, int]]:
    """(start, stop) when `idx` is start, start + 1, ..., stop - 1 (a slice then replaces a gather), else None."""
    idx = list(idx)
    return (idx[0], idx[-1] + 1) if idx and idx == list(range(idx[0], idx[0] + len(idx))) else None


def take_fields(x: torch.Tensor, idx: torch.Tensor, span: Optional[Tuple[int, int]]) -> torch.Tensor:
    """x[:, idx] for x [B, F, D]: a view when the indices are a contiguous range (`span`), else a gather."""
    return x[:, span[0]:span[1]] if span is not None else x[:, idx]


class LayerNormMLP(nn.Module):
    """OptInter's classifier (eq. 9-12): a^(l+1) = LN(relu(W^(l) a^(l) + b^(l))), a^0 = e; logit = w^T a^(h) + b
    (y_hat = sigmoid(logit), applied by the loss). Xavier-uniform weights, as the paper's setup.

    With LN the readout is parametrized as logit = w^T a^(h) / sqrt(h_width) + b: the same functions, but an Adam
    step (each w_i moves by ~lr) changes the logit by ~lr * sum|a_i| / sqrt(h_width) instead of ~lr * 0.8 * h_width
    (LN makes every a_i of unit scale): at lr 6e-3 and width 700 that was ~3.4 per step, the loss reached 3-4
    within 10 steps and search and retrain ended near a constant model (docs/optinter.md).

    Args:
        in_features: width of e; hidden: widths of the LN layers (e.g. [700] * 5); layer_norm: False drops LN.
    Shapes: forward(e [B, in_features]) -> logits [B].

    Example:
        >>> LayerNormMLP(6, [8, 8])(torch.randn(3, 6)).shape
        torch.Size([3])
    """

    def __init__(self, in_features: int, hidden: Sequence[int], layer_norm: bool = True) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        width = in_features
        for h in hidden:
            if not isinstance(h, int) or h <= 0:
                raise ValueError(f"optinter: mlp widths must be positive integers, got {list(hidden)}")
            layers += [nn.Linear(width, h), nn.ReLU()] + ([nn.LayerNorm(h)] if layer_norm else [])
            width = h
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(width, 1)
        self.readout_scale = 1.0 / math.sqrt(width) if layer_norm and hidden else 1.0
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(e) * self.readout_scale).squeeze(-1)


def split_features(names: Sequence[str]) -> Tuple[List[str], Dict[str, Tuple[str, str]]]:
    """Feature names -> (base fields, {cross name "AxB": (A, B)}): a cross is a name "AxB" with A and B among the
    other names (recsys_dist.data.cross_features names them so)."""
    present = set(names)
    crosses: Dict[str, Tuple[str, str]] = {}
    for n in names:
        for k, ch in enumerate(n):
            if ch == "x" and n[:k] in present and n[k + 1:] in present:
                crosses[n] = (n[:k], n[k + 1:])
                break
    return [n for n in names if n not in crosses], crosses


class OptInterArch(DenseArch):
    """OptInter: e = [e^o, e^b] -> LN-MLP -> logit (eq. 9-12), e^b from the CombinationBlock (eq. 14-19).

    e^o are the base sparse fields plus, if num_dense > 0, one field x_k v_k per numeric feature (the paper's
    eq. 20 way of embedding a continuous feature: its value times a learned vector). Pairs are crossed among the
    base sparse fields only.

    Args:
        inputs: ArchInputs; feature names "AxB" are cross features (their embeddings are e^m).
        methods: "search" (Algorithm 1: all pairs with a cross table, 3 candidates each, Gumbel-softmax over alpha),
            "memorize" (OptInter-M: every cross table present), "factorize" (OptInter-F: every pair of base
            fields), "naive" (no interaction embeddings), or the path of an architecture JSON written by a search
            (Algorithm 2: the chosen method per pair; its memorized pairs must have tables, i.e.
            `data.cross_pairs` = the same JSON).
        mlp: hidden widths of the classifier (Table IV Criteo: [700] * 5); layer_norm: LN in each layer.
        tau, tau_min, tau_decay, gumbel: the search's temperature schedule and noise (CombinationBlock).

    Shapes: forward(dense [B, num_dense], embeddings [B, F, D]) -> logits [B].

    Example:
        >>> arch = OptInterArch(ArchInputs(2, ("C1", "C2", "C3", "C1xC2", "C2xC3"), 4), methods="search", mlp=[8])
        >>> arch(torch.rand(5, 2), torch.randn(5, 5, 4)).shape
        torch.Size([5])
        >>> export = arch.export_architecture()  # {"methods": {"C1xC2": ...}, "counts": [m, f, n], ...}
    """

    def __init__(self, inputs: ArchInputs, methods: str = "search", mlp: Sequence[int] = (700,) * 5,
                 layer_norm: bool = True, tau: float = 1.0, tau_min: float = 0.01, tau_decay: float = 0.0,
                 gumbel: bool = True) -> None:
        super().__init__(inputs)
        base, crosses = split_features(inputs.feature_names)
        if len(base) < 2 and methods != "naive":
            raise ValueError(f"optinter: needs at least 2 base sparse fields to cross, got {base}")
        names = list(inputs.feature_names)
        base_idx, cross_idx = [names.index(n) for n in base], [names.index(n) for n in crosses]
        self.register_buffer("base_idx", torch.tensor(base_idx, dtype=torch.long), persistent=False)
        self.register_buffer("cross_idx", torch.tensor(cross_idx, dtype=torch.long), persistent=False)
        # the base fields come first and the crosses after them (data.cross_pairs): slices, not gathers
        # (from the lists: the buffers are meta tensors when the model is built on the meta device)
        self.base_span, self.cross_span = as_range(base_idx), as_range(cross_idx)
        cross_names = list(crosses)
        pos = {n: k for k, n in enumerate(base)}
        if methods in ("search", "memorize"):
            if not crosses:
                raise ValueError(f"optinter: methods={methods!r} needs cross tables; set data.cross_pairs "
                                 "(e.g. all)")
            pair_names = cross_names
            pairs = [crosses[n] for n in cross_names]
            per_pair: Any = "search" if methods == "search" else ["memorize"] * len(pairs)
        elif methods in ("factorize", "naive"):
            if crosses:
                raise ValueError(f"optinter: methods={methods!r} uses no cross tables but the inputs have "
                                 f"{len(crosses)} ({cross_names[:3]}...); unset data.cross_pairs")
            pairs = [(base[a], base[b]) for a in range(len(base)) for b in range(a + 1, len(base))]
            pair_names = [f"{a}x{b}" for a, b in pairs]
            per_pair = [methods] * len(pairs)
        elif isinstance(methods, str) and methods.endswith(".json"):
            arch = _read_architecture(methods)
            pair_names = list(arch["methods"])
            pairs = [tuple(arch["pairs"][n]) for n in pair_names]
            per_pair = [arch["methods"][n] for n in pair_names]
            for (a, b), n in zip(pairs, pair_names):
                if a not in pos or b not in pos:
                    raise ValueError(f"optinter: {methods}: pair {n} uses fields not in the inputs ({a}, {b})")
            want = {n for n, m in zip(pair_names, per_pair) if m == "memorize"}
            if want != set(cross_names):
                raise ValueError(
                    f"optinter: {methods} memorizes {len(want)} pairs but the inputs have {len(crosses)} cross "
                    f"tables (missing: {sorted(want - set(cross_names))[:5]}, unused: "
                    f"{sorted(set(cross_names) - want)[:5]}); set data.cross_pairs to the same JSON")
        else:
            raise ValueError(f"optinter: methods={methods!r} is not search | memorize | factorize | naive | "
                             "a path to an architecture .json")
        self.mode = methods if methods in FIXED + ("search",) else "retrain"
        self.source = str(methods)
        self.pair_names = pair_names
        self.pairs = [tuple(p) for p in pairs]
        mem_pos = {n: k for k, n in enumerate(cross_names)}
        memorized = [mem_pos.get(n, -1) for n in pair_names]
        self.combination = CombinationBlock([(pos[a], pos[b]) for a, b in self.pairs], per_pair, memorized,
                                            tau=tau, tau_min=tau_min, tau_decay=tau_decay, gumbel=gumbel)
        self.numeric = NumericFields(inputs.num_dense, inputs.embedding_dim)
        width = (inputs.num_dense + len(base) + self.combination.num_out) * inputs.embedding_dim
        self.classifier = LayerNormMLP(width, list(mlp), layer_norm)

    def forward(self, dense: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        if self.base_span is not None and self.cross_span == (self.base_span[1], embeddings.shape[1]) \
                and self.base_span[0] == 0:  # one split: its backward is one cat, not two zero-filled [B, F, D]
            e_o, e_m = embeddings.split([self.base_span[1], self.cross_span[1] - self.cross_span[0]], dim=1)
        else:
            e_o = take_fields(embeddings, self.base_idx, self.base_span)
            e_m = take_fields(embeddings, self.cross_idx, self.cross_span)
        e = self.combination(e_o, e_m, prefix=self.numeric(dense, e_o))  # [e^o, e^b], numeric fields first
        return self.classifier(e.flatten(1))

    def score_chunk_rows(self, rows: int) -> int:
        """At most as many rows as keep the fp32 classifier input [rows, width] under 30 MiB: above glibc's 32 MiB
        mmap threshold it is page-faulted afresh each chunk (scoring 2,048 rows a chunk measured 1.07-1.12x slower
        than 512-1,024; docs/benchmarks.md, section 9b)."""
        first = self.classifier.hidden[0] if len(self.classifier.hidden) else self.classifier.out
        return max(1, min(rows, (30 << 20) // (4 * first.in_features)))

    def architecture_parameters(self) -> List[nn.Parameter]:
        return [self.combination.alpha] if self.combination.alpha is not None else []

    def export_architecture(self) -> Dict[str, Any]:
        """The chosen method per pair (eq. 19) and the counts [memorize, factorize, naive] as Table VI."""
        chosen = self.combination.chosen()
        out: Dict[str, Any] = {
            "arch": "optinter",
            "mode": self.mode,
            "counts": [chosen.count(m) for m in METHODS],
            "count_order": list(METHODS),
            "methods": dict(zip(self.pair_names, chosen)),
            "pairs": {n: list(p) for n, p in zip(self.pair_names, self.pairs)},
        }
        if self.combination.alpha is not None:
            out["alpha"] = {n: [round(float(x), 6) for x in row]
                            for n, row in zip(self.pair_names, self.combination.alpha.detach().tolist())}
        return out


def _read_architecture(path: str) -> Dict[str, Any]:
    from recsys_dist.data.cross_features import read_architecture  # one reader of the file format

    try:
        return read_architecture(path)
    except Exception as e:  # ConfigError is a ValueError; keep the message
        raise ValueError(str(e)) from None
