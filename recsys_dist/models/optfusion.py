"""OptFusion (Zhang et al., "Fusion Matters: Learning Fusion in Deep CTR Models", WSDM'25): a learned fusion DAG.

Components E (embedding), S0 (auxiliary shallow block), C1..Cn (cross), D1..Dn (deep, one MLP layer each), O
(output), on levels that only let a component read lower levels (eq. 5; see `optfusion_dag`). The input of
component j fuses its connected inputs (eq. 6, 13):

    e^_j = sum_{o in O} p_j^o o({S(alpha_ij) e_i}),      p_j^o = exp(beta_j^o) / sum_o' exp(beta_j^o')   (eq. 12)

with S the straight-through unit step (eq. 9-11): S(a) = 1 if a > 0 else 0 forward, dS/da = 1 backward, and
the operations ADD, PROD, CONCAT, ATT of Table 1 (`fusion_ops`). E's output is x_0 = [e_1 || ... || e_F'] (one
field x_k v_k per numeric feature, then the sparse embeddings, d = F' D); cross components compute f(x_0, e^_j)
(CrossNet, CrossNetV2 or CIN, Table 6), deep components ReLU(W e^_j + b), and O the logit w^T e^_O + b.

Two stages (Algorithm 1):
- selection (`architecture=None`): alpha (one per valid edge, init 0.5) and beta (one row of 4 per component
  with an operation, init 0 = equal weights) are `architecture_parameters()`, trained together with the model;
  `export_architecture()` returns the selected DAG (edges with alpha > 0, p_j) as a JSON-able dict;
- retrain (`architecture=path or dict`, `mode=soft|hard`): the DAG is fixed, no architecture parameters.
  Soft = eq. 13 with the exported p_j fixed; Hard = the argmax operation only. Components with no path into O
  are not built.

Args:
    inputs: ArchInputs (num_dense may be 0).
    num_components: n (default 3; in retrain taken from the architecture file).
    cross_type: crossnet (default) | crossnetv2 | cin (in retrain taken from the architecture file).
    architecture: None (selection stage), or an exported architecture (JSON path or dict) to retrain.
    mode: soft | hard, retrain only (default soft). Hard refuses a selection whose operation for some live
        component is undecided (`FusionArchitecture.immature`: top two weights within MIN_OP_MARGIN), naming the
        components; `allow_immature=True` retrains it anyway.
    alpha_init: initial alpha of every edge (paper: 0.5).
    deep_batch_norm, deep_dropout: options of the deep components.

Example:
    >>> arch = OptFusionArch(ArchInputs(2, ("C1", "C2"), 4), num_components=2)
    >>> arch(torch.rand(5, 2), torch.rand(5, 2, 4)).shape
    torch.Size([5])
    >>> retrain = OptFusionArch(ArchInputs(2, ("C1", "C2"), 4), architecture=arch.export_architecture(),
    ...                         mode="hard")
    >>> retrain.architecture_parameters()
    []
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from recsys_dist.models.arch import ArchInputs, DenseArch
from recsys_dist.models.fusion_ops import MixedFusion
from recsys_dist.models.numeric_fields import NumericFields
from recsys_dist.models.optfusion_components import DeepComponent, make_cross_component
from recsys_dist.models.optfusion_dag import (CROSS_TYPES, MIN_OP_MARGIN, OPS, FusionArchitecture, FusionSpace,
                                              edge_key)


class UnitStepSTE(torch.autograd.Function):
    """Straight-through estimator (OptFusion eq. 9-11, Bengio et al. 2013): forward S(x) = 1[x > 0], backward
    dS/dx = 1 (the incoming gradient passes unchanged)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


def unit_step_ste(x: torch.Tensor) -> torch.Tensor:
    return UnitStepSTE.apply(x)


class OptFusionArch(DenseArch):
    def __init__(
        self,
        inputs: ArchInputs,
        num_components: Optional[int] = None,
        cross_type: Optional[str] = None,
        architecture: Union[None, str, Path, Mapping[str, Any]] = None,
        mode: Optional[str] = None,
        alpha_init: float = 0.5,
        deep_batch_norm: bool = False,
        deep_dropout: float = 0.0,
        allow_immature: bool = False,
    ) -> None:
        super().__init__(inputs)
        self.num_fields = inputs.num_sparse + inputs.num_dense
        self.field_dim = inputs.embedding_dim
        if self.num_fields < 1:
            raise ValueError("optfusion: needs at least one sparse or dense feature")
        d = self.num_fields * self.field_dim

        self.searching = architecture is None
        if self.searching:
            if mode is not None:
                raise ValueError("optfusion: mode (soft|hard) is for retraining; set architecture too")
            n = 3 if num_components is None else num_components
            cross_type = cross_type or "crossnet"
            self.selected: Optional[FusionArchitecture] = None
            self.space = FusionSpace(n)
            live = self.space.components
        else:
            sel = (FusionArchitecture.load(architecture) if isinstance(architecture, (str, Path))
                   else FusionArchitecture.from_dict(architecture))
            for key, given, saved in (("num_components", num_components, sel.n), ("cross_type", cross_type,
                                                                                  sel.cross_type)):
                if given is not None and given != saved:
                    raise ValueError(f"optfusion: arch_args {key}={given!r} but the architecture has {saved!r}")
            if mode is None:
                mode = "soft"
            if mode not in ("soft", "hard"):
                raise ValueError(f"optfusion: mode must be soft or hard, got {mode!r}")
            if mode == "hard" and not allow_immature and sel.immature():
                _refuse_immature(sel, architecture)
            n, cross_type = sel.n, sel.cross_type
            self.selected, self.space = sel, sel.space
            live = sel.live_components()
        if cross_type not in CROSS_TYPES:
            raise ValueError(f"optfusion: cross_type {cross_type!r} is not one of {', '.join(CROSS_TYPES)}")
        self.n, self.cross_type, self.mode = n, cross_type, mode

        self.fields = NumericFields(inputs.num_dense, self.field_dim)  # numeric features as extra fields
        # the components to run (topological order) and each one's inputs
        self._order: List[str] = [c for c in live if c != "E"]
        self._inputs: Dict[str, Tuple[str, ...]] = {
            c: self.space.inputs_of(c) if self.searching else self.selected.inputs_of(c) for c in self._order}
        self.cross = nn.ModuleDict()
        self.deep = nn.ModuleDict()
        self.fusion = nn.ModuleDict()
        hard = self.selected.hard_ops() if self.selected is not None else {}
        for c in self._order:
            kind = self.space.kind(c)
            if kind == "cross":
                self.cross[c] = make_cross_component(cross_type, self.num_fields, self.field_dim)
            elif kind == "deep":
                self.deep[c] = DeepComponent(d, batch_norm=deep_batch_norm, dropout=deep_dropout)
            if c != "S0" and self._inputs[c]:
                ops = (hard[c],) if mode == "hard" else OPS
                self.fusion[c] = MixedFusion(len(self._inputs[c]), d, ops)
                if not self.searching:  # fixed operation weights p_j (Soft) or [1] (Hard)
                    w = [1.0] if mode == "hard" else self.selected.op_weights[c]
                    self.register_buffer(f"op_weights_{c}", torch.tensor(w))
        self.output = nn.Linear(d, 1)

        if self.searching:
            edges = self.space.edges
            self.alpha = nn.Parameter(torch.full((len(edges),), float(alpha_init)))
            self.beta = nn.Parameter(torch.zeros(len(self.space.op_components), len(OPS)))
            self._edge_slice = {}
            for c in self._order:
                first = edges.index((self._inputs[c][0], c))
                self._edge_slice[c] = (first, first + len(self._inputs[c]))
            self._beta_row = {c: i for i, c in enumerate(self.space.op_components)}
            self.register_buffer("selection_steps", torch.zeros((), dtype=torch.long))

    # ---- DenseArch ----
    def architecture_parameters(self) -> List[nn.Parameter]:
        return [self.alpha, self.beta] if self.searching else []

    def forward(self, dense: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        x0 = self.fields(dense, embeddings).flatten(1)  # the embedding component E: [B, d]
        outs: Dict[str, torch.Tensor] = {"E": x0}
        if self.searching:
            mask = unit_step_ste(self.alpha)  # c(G_i, G_j) per valid edge, eq. 9-11
            p = torch.softmax(self.beta, dim=1)  # eq. 12
            if self.training:
                with torch.no_grad():
                    self.selection_steps += 1
        for c in self._order:
            srcs = self._inputs[c]
            m = mask[self._edge_slice[c][0]:self._edge_slice[c][1]] if self.searching else None
            if not srcs:
                xin = torch.zeros_like(x0)
            elif c == "S0":  # one input (E), no operation
                xin = x0 * m[0] if m is not None else x0
            else:
                x = [outs[s] for s in srcs]  # m inputs [B, d] (no [B, m, d] stack: fusion_ops)
                w = p[self._beta_row[c]] if self.searching else getattr(self, f"op_weights_{c}")
                xin = self.fusion[c](x, m, w)  # eq. 13
            kind = self.space.kind(c)
            if kind == "cross":
                outs[c] = self.cross[c](x0, xin)
            elif kind == "deep":
                outs[c] = self.deep[c](xin)
            else:
                outs[c] = self.output(xin)
        return outs["O"].squeeze(-1)

    # ---- selection result ----
    def export_architecture(self) -> Dict[str, Any]:
        """The selected DAG as a JSON-able dict (edges with alpha > 0, p_j per component, a text diagram).

        In the retrain stage, the fixed architecture being trained. If no edge into the output component has
        alpha > 0, the one with the largest alpha is kept (a model must read something) and a warning says so.
        """
        if not self.searching:
            return self.selected.to_dict()
        alpha = self.alpha.detach().cpu().tolist()
        p = torch.softmax(self.beta.detach().double(), dim=1).cpu().tolist()
        edges = [e for e, a in zip(self.space.edges, alpha) if a > 0]
        warnings = []
        if not any(dst == "O" for _, dst in edges):
            into_o = [(a, e) for e, a in zip(self.space.edges, alpha) if e[1] == "O"]
            best = max(into_o)[1]
            edges.append(best)
            warnings.append(f"no edge into O had alpha > 0; kept the largest, {edge_key(best)}")
        sel = FusionArchitecture(
            n=self.n, cross_type=self.cross_type, edges=edges,
            op_weights={c: p[i] for i, c in enumerate(self.space.op_components)},
            alpha={edge_key(e): a for e, a in zip(self.space.edges, alpha)})
        out = sel.to_dict()
        out["selection_steps"] = int(self.selection_steps)
        if sel.immature():
            warnings.append(f"operation undecided (top two weights within {MIN_OP_MARGIN}) for "
                            f"{', '.join(sel.immature())} after {int(self.selection_steps)} steps: "
                            "retrain with mode soft, or select longer / with a larger optim.arch_lr")
        if warnings:
            out["warnings"] = warnings
        return out


def _refuse_immature(sel: FusionArchitecture, source: Any) -> None:
    from recsys_dist.config import ConfigError  # a config problem: the CLI reports it without a traceback

    where = source if isinstance(source, (str, Path)) else "the architecture"
    margins = sel.op_margins()
    detail = "; ".join(f"{c}: {' '.join(f'{o} {w:.3f}' for o, w in zip(OPS, sel.op_weights[c]))}"
                       for c in sel.immature())
    raise ConfigError(
        f"optfusion: mode hard: the selection in {where} has not decided the fusion operation of "
        f"{', '.join(sel.immature())} (top two weights within {MIN_OP_MARGIN}: {detail}); Hard would keep an "
        f"operation picked by noise (min margin {min(margins.values()):.4f}). Use mode: soft, select longer or "
        "with a larger optim.arch_lr, or set model.arch_args.allow_immature=true to retrain it anyway")
