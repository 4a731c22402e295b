"""Make a sharding plan and its report for this machine or a hypothetical cluster (no GPU or process group needed).

The tables come from a named preset (no data on disk) or from the config's prepared dataset (data.dir,
metadata.json) and model section; the topology from the flags below (or the config's `plan:` section).
`recsys-dist train ... sharding.plan=PLAN.json` then trains on exactly the plan written by --out.

Examples:
  recsys-dist plan --preset criteo-tb --world-size 16 --local-world-size 8 --gpu A100-80 --format html --out plans/tb16.json
  recsys-dist plan --preset criteo-tb+optinter --world-size 128 --local-world-size 8 --gpu H100 --format json
  recsys-dist plan --config configs/dlrm_synthetic.yaml --device cpu --world-size 2 --out plans/cpu2.json
  recsys-dist plan --preset criteo-kaggle --world-size 8 --gpu A100-80 --compare world_size=16,hbm_gib=40 --format html --out cmp.json

Presets: criteo-tb (MLPerf DLRM-DCNv2 sizes, 40M cap), criteo-kaggle, and either +optinter (OptInter's 325
cross-product tables, rows min(rows_i * rows_j, --cross-cap)). GPUs (--gpu, memory and bandwidth defaults):
V100-32, A100-40, A100-80, H100, H200, L4. Memory is per rank (device): --hbm-gib on the GPU, --ddr-gib host
memory usable by that rank. Bandwidths in GB/s.

Outputs: --out PLAN.json is the plan file; reports go beside it (PLAN.md, PLAN.report.json, PLAN.html) for
--format markdown / json / html; text goes to the terminal. Without --out, markdown and json are printed.
--compare KEY=VALUE,... plans a second variant (keys: world_size, local_world_size, device, gpu, hbm_gib,
ddr_gib, intra_bw, inter_bw, constraints) and reports both side by side.
Exit status 3 when the tables do not fit, with how much memory is missing and what would make it fit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from embedding_sharding import DEFAULT_SEARCH_BUDGET_S as DEFAULT_BUDGET_S
from recsys_dist.cli.common import bounded, config_from_args
from recsys_dist.config import ConfigError, JobConfig

RANK0_ONLY = True  # under a multi-rank launch, rank 0 does the work

FORMATS = ("text", "markdown", "json", "html")
COMPARE_KEYS = ("world_size", "local_world_size", "device", "gpu", "hbm_gib", "ddr_gib", "intra_bw", "inter_bw",
                "constraints")
MLPERF_DLRM = {"bottom_mlp": [512, 256], "top_mlp": [1024, 1024, 512, 256, 1]}  # bottom gets the dim appended


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("topology")
    g.add_argument("--world-size", type=bounded(int, "plan.world_size"), help="number of ranks / devices (plan.world_size)")
    g.add_argument("--local-world-size", type=bounded(int, "plan.local_world_size"), help="devices per node (plan.local_world_size)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), help="plan.device (auto: cuda if --gpu or a GPU)")
    g.add_argument("--gpu", help="GPU preset for memory / bandwidth defaults: V100-32, A100-40, A100-80, H100, H200, L4")
    g.add_argument("--hbm-gib", type=bounded(float, "plan.hbm_gib"), help="GPU memory per device, GiB (plan.hbm_gib)")
    g.add_argument("--ddr-gib", type=bounded(float, "plan.ddr_gib"), help="host memory per rank, GiB (plan.ddr_gib)")
    g.add_argument("--intra-bw", type=bounded(float, "plan.intra_node_bw_gbps"), help="bandwidth inside a node, GB/s (plan.intra_node_bw_gbps)")
    g.add_argument("--inter-bw", type=bounded(float, "plan.inter_node_bw_gbps"), help="bandwidth between nodes per device, GB/s (plan.inter_node_bw_gbps)")
    m = p.add_argument_group("tables")
    m.add_argument("--preset", help="criteo-tb | criteo-kaggle | criteo-tb+optinter | criteo-kaggle+optinter")
    m.add_argument("--embedding-dim", type=bounded(int, "> 0"), help="dim of a preset's tables (default 128)")
    m.add_argument("--cross-cap", type=bounded(int, "> 0"), help="rows cap of a preset's OptInter cross tables (default 1M)")
    m.add_argument("--time-budget", type=bounded(float, ">= 0"), metavar="SECONDS", default=DEFAULT_BUDGET_S,
                   help=f"seconds for the proposal search; the best plan found is kept and the report says when "
                        f"the search stopped early (default {DEFAULT_BUDGET_S:g}; 0: TorchRec's full search, which "
                        f"takes minutes for hundreds of tables on 100+ GPUs)")
    m.add_argument("--constraints", help="per-table constraints YAML (sharding.constraints)")
    o = p.add_argument_group("output")
    o.add_argument("--format", action="append", choices=FORMATS, dest="formats",
                   help="report format; repeat for several (plan.formats; default text)")
    o.add_argument("--out", help="plan file to write (plan.out); reports beside it")
    o.add_argument("--compare", metavar="KEY=VALUE,...", help="a second variant to plan and show side by side")


@dataclass
class Variant:
    """Everything that differs between two compared plans."""

    world_size: int
    local_world_size: Optional[int]
    device: str
    gpu: Optional[str]
    hbm_gib: Optional[float]
    ddr_gib: Optional[float]
    intra_bw: Optional[float]
    inter_bw: Optional[float]
    constraints: Optional[str]

    @property
    def title(self) -> str:
        lws = self.local_world_size or self.world_size
        mem = f", {self.hbm_gib:g} GiB HBM" if self.hbm_gib else ""
        gpu = f" {self.gpu}" if self.gpu else ""
        cons = f", {Path(self.constraints).name}" if self.constraints else ""
        return f"{self.world_size} x {self.device}{gpu} ({self.world_size // lws} x {lws}){mem}{cons}"


def _variant(cfg: JobConfig, args: argparse.Namespace) -> Variant:
    pc = cfg.plan
    ws = pc.world_size or int(os.environ.get("WORLD_SIZE", "1"))
    device = pc.device
    if device == "auto":
        import torch

        device = "cuda" if args.gpu or torch.cuda.is_available() else "cpu"
    return Variant(ws, pc.local_world_size, device, args.gpu, pc.hbm_gib, pc.ddr_gib, pc.intra_node_bw_gbps,
                   pc.inter_node_bw_gbps, args.constraints or cfg.sharding.constraints)


def _parse_compare(spec: str, base: Variant) -> Variant:
    changes: Dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        if "=" not in item:
            raise ConfigError(f"--compare {spec!r}: {item!r} is not KEY=VALUE")
        key, value = (s.strip() for s in item.split("=", 1))
        key = key.replace("-", "_")
        if key not in COMPARE_KEYS:
            raise ConfigError(f"--compare: unknown key {key!r}; keys: {', '.join(COMPARE_KEYS)}")
        try:
            if key in ("world_size", "local_world_size"):
                changes[key] = int(value)
            elif key in ("hbm_gib", "ddr_gib", "intra_bw", "inter_bw"):
                changes[key] = float(value)
            else:
                changes[key] = value
        except ValueError:
            raise ConfigError(f"--compare: {key}={value!r} is not a number") from None
    if not changes:
        raise ConfigError(f"--compare {spec!r}: give at least one KEY=VALUE")
    if "gpu" in changes and "device" not in changes:
        changes["device"] = "cuda"
    return replace(base, **changes)


def build_planning_model(cfg: JobConfig, args: argparse.Namespace):
    """The CTRTrainModel the trainer builds (tables on meta), from a preset or from data.dir's metadata."""
    import torch

    from recsys_dist.models.model import CTRTrainModel, build_model

    arch_args = dict(cfg.model.arch_args)
    if args.preset:
        from embedding_sharding.presets import DEFAULT_CROSS_CAP, preset_tables
        from recsys_dist.data.criteo_schema import NUM_DENSE

        cross_cap = args.cross_cap or getattr(cfg.data, "cross_table_rows", None) or DEFAULT_CROSS_CAP
        try:
            tables = preset_tables(args.preset, args.embedding_dim, cross_cap, cfg.model.max_rows_per_table)
        except ValueError as e:
            raise ConfigError(f"--preset: {e}") from None
        num_dense = NUM_DENSE
        if cfg.model.arch == "dlrm" and "bottom_mlp" not in arch_args:
            arch_args = {"bottom_mlp": MLPERF_DLRM["bottom_mlp"] + [tables[0].embedding_dim],
                         "top_mlp": MLPERF_DLRM["top_mlp"], **arch_args}
    else:
        from recsys_dist.data.metadata import Metadata, MetadataError
        from recsys_dist.job import features_for

        try:
            md = Metadata.load(cfg.data.dir)
        except MetadataError as e:
            raise ConfigError(f"{e} (or plan a named --preset)") from None
        tables, num_dense = features_for(cfg, md).tables, md.num_dense
    try:
        model = build_model(tables, num_dense, cfg.model.arch, arch_args, sparse_device="meta",
                            dense_device=torch.device("meta"))
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"model {cfg.model.arch!r} for these tables: {e.args[0] if e.args else e}") from None
    return CTRTrainModel(model)


def plan_variant(v: Variant, module, cfg: JobConfig, time_budget: Optional[float] = None):
    from embedding_sharding.constraints import ConstraintsError, load_constraints
    from embedding_sharding.planner import make_plan
    from embedding_sharding.sharders import CTREmbeddingBagCollectionSharder
    from embedding_sharding.topology import make_topology
    from recsys_dist.optim import fused_params

    try:
        topo = make_topology(v.world_size, v.local_world_size, v.device, v.hbm_gib, v.ddr_gib, v.intra_bw,
                             v.inter_bw, gpu=v.gpu)
        constraints = load_constraints(v.constraints) if v.constraints else None
    except (ValueError, ConstraintsError) as e:
        raise ConfigError(str(e)) from None
    sharder = CTREmbeddingBagCollectionSharder(fused_params=fused_params(cfg.optim, v.device),
                                               allowed=cfg.sharding.sharding_types)
    try:
        return make_plan(module, topo, [sharder], constraints=constraints,
                         sharding_types=cfg.sharding.sharding_types, compute_kernel=cfg.sharding.compute_kernel,
                         batch_size=max(1, cfg.data.batch_size // v.world_size), time_budget_s=time_budget)
    except ConstraintsError as e:
        raise ConfigError(str(e)) from None


def _beside(out: Path, suffix: str) -> Path:
    return out.with_name(out.stem + suffix)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, [
        ("world_size", "plan.world_size"), ("local_world_size", "plan.local_world_size"), ("device", "plan.device"),
        ("hbm_gib", "plan.hbm_gib"), ("ddr_gib", "plan.ddr_gib"), ("intra_bw", "plan.intra_node_bw_gbps"),
        ("inter_bw", "plan.inter_node_bw_gbps"), ("preset", "plan.preset"), ("out", "plan.out"),
        ("formats", "plan.formats")])
    args.preset = cfg.plan.preset
    formats = list(dict.fromkeys(cfg.plan.formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ConfigError(f"plan.formats: {bad} not in {', '.join(FORMATS)}")
    out = Path(cfg.plan.out) if cfg.plan.out else None
    if "html" in formats and out is None:
        raise ConfigError("--format html writes a file: give --out PLAN.json (the page goes to PLAN.html)")
    variants = [_variant(cfg, args)]
    if args.compare:
        variants.append(_parse_compare(args.compare, variants[0]))

    from embedding_sharding.html_report import render_html
    from embedding_sharding.plan_file import save_plan
    from embedding_sharding.planner import PlanDoesNotFit
    from embedding_sharding.report import build_report, render_compare_text, render_markdown, render_text
    from embedding_sharding.topology import describe

    from embedding_sharding.search import show_progress

    show_progress()  # the planner's progress lines on stderr
    module = build_planning_model(cfg, args)
    results, reports = [], []
    for i, v in enumerate(variants):
        try:
            res = plan_variant(v, module, cfg, args.time_budget)
        except PlanDoesNotFit as e:
            label = f" ({v.title})" if len(variants) > 1 else ""
            print(f"recsys-dist plan: no plan{label}:\n{e}", file=sys.stderr)
            return 3
        results.append(res)
        reports.append(build_report(res, title=v.title))
        if out is not None:
            path = out if i == 0 else _beside(out, ".compare.json")
            save_plan(res.plan, path, {"source": "recsys-dist plan", "world_size": v.world_size,
                                       "local_world_size": res.topology.local_world_size, "device": v.device,
                                       "preset": args.preset, "config": args.config, "gpu": v.gpu,
                                       "topology": describe(res.topology)}, module=module)
    written: List[Tuple[str, Path]] = [("plan", out)] if out is not None else []
    if len(variants) > 1 and out is not None:
        written.append(("plan (compare)", _beside(out, ".compare.json")))
    report_json: Any = reports[0] if len(reports) == 1 else {"a": reports[0], "b": reports[1]}

    def emit(text: str, suffix: str, label: str) -> None:  # beside the plan file, or on stdout without one
        if out is None:
            print(text)
        else:
            _beside(out, suffix).write_text(text)
            written.append((label, _beside(out, suffix)))

    for fmt in formats:
        if fmt == "text":
            for r in reports:
                print(render_text(r))
            if len(reports) > 1:
                print("== side by side ==\n" + render_compare_text(*reports))
        elif fmt == "markdown":
            emit("\n".join(render_markdown(r) for r in reports), ".md", "markdown")
        elif fmt == "json":
            emit(json.dumps(report_json, indent=1), ".report.json", "json report")
        elif fmt == "html":
            title = "Sharding plan" + (f": {args.preset}" if args.preset else "") + (" (comparison)" if len(
                reports) > 1 else "")
            _beside(out, ".html").write_text(render_html(reports, title))
            written.append(("html", _beside(out, ".html")))
    for what, path in written:
        print(f"wrote {what}: {path}", file=sys.stderr)
    return 0
