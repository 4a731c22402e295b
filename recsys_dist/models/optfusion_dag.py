"""OptFusion's search space and selected architecture: components, levels, candidate edges, JSON, diagrams.

Pure Python (no torch): the arch (`recsys_dist.models.optfusion`) builds its modules from a `FusionSpace`, and a
search run's result is a `FusionArchitecture` (JSON file) that a retrain run reads back.

Search space (OptFusion, Zhang et al. WSDM'25, Sec. 3.1 and 4.1.4): one embedding component E, the auxiliary
shallow block S0 (so that stacked structures exist: E -> S0 -> D1), n cross components C1..Cn, n deep components
D1..Dn and one output component O, with levels

    L(E) = 0,  L(S0) = 1,  L(Ci) = L(Di) = i + 1,  L(O) = n + 2.

Level constraint (eq. 5):   c(G_i, G_j) = 1  ->  L(i) < L(j)

so every component may read from every component of a lower level (a full DAG on levels). Without S0 that is the
paper's 2n^2 + 2n + 1 edges; S0 adds its input E -> S0 and its 2n + 1 outputs: 2n^2 + 4n + 3 candidate edges
(33 for n = 3). Fusion operations (eq. 12-13) are selected for C1..Cn, D1..Dn and O (2n + 1 components, as the
paper's k^(2n+1)); S0 has a single input and no operation, as in the authors' code.

Example:
    >>> space = FusionSpace(3)
    >>> space.inputs_of("C1")
    ('E', 'S0')
    >>> len(space.edges)
    33
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from recsys_dist.json_file import read_json, write_atomic

OPS: Tuple[str, ...] = ("ADD", "PROD", "CONCAT", "ATT")  # Table 1, in the order of beta's columns
CROSS_TYPES: Tuple[str, ...] = ("crossnet", "crossnetv2", "cin")  # Table 6
FORMAT = "recsys-dist/optfusion-architecture"
VERSION = 1
# Hard retraining needs a decided operation: p(top) - p(second) >= this for every live component. Equal-init
# weights (beta = 0) moved by noise for a few steps stay within ~0.01 of each other (tests/test_optfusion.py).
MIN_OP_MARGIN = 0.05

Edge = Tuple[str, str]


@dataclass(frozen=True)
class FusionSpace:
    """The candidate DAG for n cross and n deep components (levels as in the module docstring)."""

    n: int

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"optfusion: num_components must be an integer >= 1, got {self.n!r}")

    @property
    def components(self) -> Tuple[str, ...]:
        """All components in topological order: E, S0, C1, D1, ..., Cn, Dn, O."""
        mid = [name for i in range(1, self.n + 1) for name in (f"C{i}", f"D{i}")]
        return ("E", "S0", *mid, "O")

    def level(self, name: str) -> int:
        if name == "E":
            return 0
        if name == "S0":
            return 1
        if name == "O":
            return self.n + 2
        if name[:1] in ("C", "D") and name[1:].isdigit() and 1 <= int(name[1:]) <= self.n:
            return int(name[1:]) + 1
        raise KeyError(f"optfusion: no component {name!r} for n = {self.n}; components: {', '.join(self.components)}")

    def kind(self, name: str) -> str:
        self.level(name)
        return {"E": "embedding", "S0": "cross", "O": "output"}.get(name) or (
            "cross" if name.startswith("C") else "deep")

    def inputs_of(self, name: str) -> Tuple[str, ...]:
        """Candidate inputs of a component: every component of a lower level, in topological order (eq. 5)."""
        lv = self.level(name)
        return tuple(c for c in self.components if self.level(c) < lv)

    @property
    def edges(self) -> Tuple[Edge, ...]:
        """Every valid (src, dst) edge, grouped by dst in topological order: alpha's index order."""
        return tuple((src, dst) for dst in self.components[1:] for src in self.inputs_of(dst))

    @property
    def op_components(self) -> Tuple[str, ...]:
        """Components with a fusion-operation choice (beta's row order): C1, D1, ..., Cn, Dn, O."""
        return self.components[2:]


def edge_key(edge: Edge) -> str:
    return f"{edge[0]}->{edge[1]}"


@dataclass
class FusionArchitecture:
    """A selected fusion design: connected edges (alpha > 0) and per-component operation weights p_j (eq. 12).

    `op_weights[j]` lists p_j^o in `OPS` order; Soft retraining uses them as they are, Hard the argmax.
    `alpha` optionally keeps every candidate edge's learned value (for reports; retraining reads `edges`).
    """

    n: int
    cross_type: str
    edges: List[Edge]
    op_weights: Dict[str, List[float]]
    alpha: Dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def space(self) -> FusionSpace:
        return FusionSpace(self.n)

    def validate(self, source: str = "architecture") -> None:
        space = FusionSpace(self.n) if isinstance(self.n, int) and self.n >= 1 else None
        if space is None:
            raise ValueError(f"{source}: num_components must be an integer >= 1, got {self.n!r}")
        if self.cross_type not in CROSS_TYPES:
            raise ValueError(f"{source}: cross_type {self.cross_type!r} is not one of {', '.join(CROSS_TYPES)}")
        valid = set(space.edges)
        seen = set()
        for i, edge in enumerate(self.edges):
            if not (isinstance(edge, (list, tuple)) and len(edge) == 2):
                raise ValueError(f"{source}: edges[{i}] must be a [src, dst] pair, got {edge!r}")
            src, dst = edge
            for name in (src, dst):
                try:
                    space.level(name)
                except KeyError as e:
                    raise ValueError(f"{source}: edges[{i}]: {e.args[0]}") from None
            if (src, dst) not in valid:
                raise ValueError(f"{source}: edges[{i}] {src}->{dst} violates the level constraint (eq. 5): "
                                 f"L({src}) = {space.level(src)} must be < L({dst}) = {space.level(dst)}")
            if (src, dst) in seen:
                raise ValueError(f"{source}: edges[{i}] {src}->{dst} is listed twice")
            seen.add((src, dst))
        self.edges = [tuple(e) for e in sorted(seen, key=space.edges.index)]  # type: ignore[misc]
        missing = [c for c in space.op_components if c not in self.op_weights]
        extra = [c for c in self.op_weights if c not in space.op_components]
        if missing or extra:
            raise ValueError(f"{source}: op_weights needs exactly the components {', '.join(space.op_components)}"
                             + (f"; missing {', '.join(missing)}" if missing else "")
                             + (f"; unknown {', '.join(map(str, extra))}" if extra else ""))
        for c, w in self.op_weights.items():
            ok = (isinstance(w, (list, tuple)) and len(w) == len(OPS)
                  and all(isinstance(x, (int, float)) and x >= 0 and math.isfinite(x) for x in w))
            if not ok or abs(sum(w) - 1.0) > 1e-4:
                raise ValueError(f"{source}: op_weights.{c} must be {len(OPS)} non-negative weights for "
                                 f"{', '.join(OPS)} summing to 1 (a softmax, eq. 12), got {w!r}")
            self.op_weights[c] = [float(x) for x in w]
        if not any(dst == "O" for _, dst in self.edges):
            raise ValueError(f"{source}: no edge into the output component O: the model would ignore its input")

    def op_margins(self) -> Dict[str, float]:
        """Per live component with inputs: how clearly one operation won, p(top) - p(second) over the operations
        that compute different things on its inputs (with one input ADD, PROD and ATT all return it, so they
        count as one choice against CONCAT). Near 0: the selection has not decided that component's operation."""
        live = set(self.live_components())
        out: Dict[str, float] = {}
        for c, w in self.op_weights.items():
            if c not in live or not self.inputs_of(c):
                continue
            by = dict(zip(OPS, w))
            groups = ([by["ADD"] + by["PROD"] + by["ATT"], by["CONCAT"]] if len(self.inputs_of(c)) == 1
                      else list(w))
            top, second = sorted(groups, reverse=True)[:2]
            out[c] = top - second
        return out

    def immature(self, min_margin: float = MIN_OP_MARGIN) -> List[str]:
        """Live components whose operation the selection has not decided (margin < min_margin): OptFusion-Hard
        would keep an operation picked by noise (argmax of near-equal weights)."""
        return [c for c, m in self.op_margins().items() if m < min_margin]

    def hard_ops(self) -> Dict[str, str]:
        """OptFusion-Hard: the operation with the largest weight per component (Sec. 3.4.2)."""
        return {c: OPS[max(range(len(OPS)), key=lambda k: w[k])] for c, w in self.op_weights.items()}

    def inputs_of(self, name: str) -> Tuple[str, ...]:
        return tuple(src for src, dst in self.edges if dst == name)

    def live_components(self) -> Tuple[str, ...]:
        """Components on a path into O (the others cannot change the prediction), in topological order."""
        live = {"O"}
        for src, dst in reversed(self.edges):  # edges are grouped by dst in topological order
            if dst in live:
                live.add(src)
        return tuple(c for c in self.space.components if c in live)

    # ---- JSON ----
    def to_dict(self) -> Dict[str, Any]:
        hard = self.hard_ops()
        return {
            "format": FORMAT,
            "version": VERSION,
            "num_components": self.n,
            "cross_type": self.cross_type,
            "ops": list(OPS),
            "edges": [list(e) for e in self.edges],
            "op_weights": {c: self.op_weights[c] for c in self.space.op_components},
            "hard_ops": {c: hard[c] for c in self.space.op_components},
            "live_components": list(self.live_components()),
            "op_margins": {c: round(m, 6) for c, m in self.op_margins().items()},
            "immature_components": self.immature(),
            "alpha": dict(self.alpha),
            "diagram": render_text(self).splitlines(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "architecture") -> "FusionArchitecture":
        if not isinstance(d, Mapping):
            raise ValueError(f"{source}: expected a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise ValueError(f"{source}: format must be {FORMAT!r} (an OptFusion export), got {d.get('format')!r}")
        if d.get("version") != VERSION:
            raise ValueError(f"{source}: version {d.get('version')!r} is not supported (expected {VERSION})")
        if list(d.get("ops", [])) != list(OPS):
            raise ValueError(f"{source}: ops must be {list(OPS)} (the order of op_weights), got {d.get('ops')!r}")
        for key in ("num_components", "cross_type", "edges", "op_weights"):
            if key not in d:
                raise ValueError(f"{source}: missing field {key!r}")
        if not isinstance(d["edges"], list):
            raise ValueError(f"{source}: edges must be a list of [src, dst] pairs")
        if not isinstance(d["op_weights"], Mapping):
            raise ValueError(f"{source}: op_weights must be an object component -> [{', '.join(OPS)}] weights")
        arch = cls.__new__(cls)
        arch.n, arch.cross_type = d["num_components"], d["cross_type"]
        arch.edges = [tuple(e) if isinstance(e, list) else e for e in d["edges"]]
        arch.op_weights, arch.alpha = dict(d["op_weights"]), dict(d.get("alpha", {}))
        arch.validate(source)
        return arch

    def save(self, path: str | Path) -> None:
        write_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "FusionArchitecture":
        p = Path(path)
        d = read_json(p, ValueError, f"optfusion architecture file not found: {p}", missing_error=FileNotFoundError)
        return cls.from_dict(d, source=str(p))


# ---- pictures of the DAG ----
def render_text(arch: FusionArchitecture) -> str:
    """A readable diagram: one line per component, by level, with its inputs and its fusion operation.

        level 2  C1  cross   <- ADD(E, S0)     ADD .40 PROD .20 CONCAT .20 ATT .20
    """
    space, hard, live = arch.space, arch.hard_ops(), set(arch.live_components())
    lines = [f"OptFusion DAG: n = {arch.n}, cross = {arch.cross_type}, "
             f"{len(arch.edges)} of {len(space.edges)} edges selected"]
    width = max(len(c) for c in space.components)
    last_level = -1
    for c in space.components:
        lv = space.level(c)
        head = f"level {lv}" if lv != last_level else ""
        last_level = lv
        ins = arch.inputs_of(c)
        if c == "E":
            body = "<- features"
        elif c == "S0":
            body = f"<- {ins[0]}" if ins else "<- (nothing)"
        else:
            body = f"<- {hard[c]}({', '.join(ins)})" if ins else "<- (nothing)"
        weights = ""
        if c in arch.op_weights:
            weights = "  " + " ".join(f"{o} {w:.2f}" for o, w in zip(OPS, arch.op_weights[c]))
        note = "" if c in live else "  [unused: no path to O]"
        lines.append(f"{head:<8} {c:<{width}}  {space.kind(c):<9} {body:<28}{weights}{note}".rstrip())
    return "\n".join(lines)


def render_dot(arch: FusionArchitecture) -> str:
    """Graphviz DOT (render with `dot -Tsvg file.dot`): components ranked by level, edges labelled by alpha."""
    space, hard, live = arch.space, arch.hard_ops(), set(arch.live_components())
    out = ["digraph optfusion {", "  rankdir=LR;", '  node [shape=box, fontname="Helvetica"];']
    for lv in range(space.level("O") + 1):
        names = [c for c in space.components if space.level(c) == lv]
        nodes = []
        for c in names:
            label = c if c not in hard else f"{c}\\n{hard[c]}"
            style = "" if c in live else ", style=dashed"
            nodes.append(f'"{c}" [label="{label}"{style}];')
        out.append("  { rank=same; " + " ".join(nodes) + " }")
    for src, dst in arch.edges:
        a = arch.alpha.get(edge_key((src, dst)))
        out.append(f'  "{src}" -> "{dst}"' + (f' [label="{a:.2f}"];' if a is not None else ";"))
    out.append("}")
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m recsys_dist.models.optfusion_dag ARCH.json [--dot]`: print the diagram of an exported DAG."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("architecture", help="architecture JSON written by an OptFusion search run")
    ap.add_argument("--dot", action="store_true", help="print Graphviz DOT instead of the text diagram")
    args = ap.parse_args(argv)
    arch = FusionArchitecture.load(args.architecture)
    print(render_dot(arch) if args.dot else render_text(arch))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
