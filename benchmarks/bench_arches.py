"""Every arch at the Criteo-Kaggle shapes of its preset: what a step costs, so a user can pick an arch by cost.

For each case (every registered arch through its configs/<arch>_criteo_kaggle.yaml, MaskFusion, OptInter's search
with its 325 cross tables, OptInter-M and its retrain, OptFusion's search and retrain) the preset gives the arch,
its arguments, the embedding dim, the batch, the fields (26 categorical + 13 numeric, or 39 categorical with
`prepare.dense: bucketize`) and the cross pairs. Each case runs in its own process (its peak memory is its own):

    dense step     forward + backward of the dense arch on [B, F, D] embeddings (F includes the cross features),
                   BCE loss, the preset's dense optimizer (and the arch optimizer of a search stage).
                   The sharded tables are not in it: their cost does not depend on the arch (bench_roofline.py
                   and bench_train_vs_torchrec.py time them), so the step rate here is an upper bound.
    CPU time       one intra-op thread (--threads), timed by the process's CPU clock (time.process_time): on a
                   box shared with other jobs, CPU seconds are what the step costs, where wall seconds also count
                   the waits for a core. samples/s = B / CPU seconds per step: the rate of one core.
    FLOPs/sample   torch.utils.flop_counter over that forward + backward (oneDNN linears counted as F.linear; the
                   in-place addmm_ and CPU fused attention it lacks are added with the formulas of their kin), of
                   the paper's model: an arch that runs cheaper ops for the same math (DenseArch.paper_ops: DeepMR)
                   is counted with the paper's ops; the FLOPs it executes are printed beside ("executed").
    roofline       FLOPs / the best fp32 GEMM rate per CPU-second on the same thread(s), measured in the same
                   process between the step windows (alternating); "x roofline" = step time / that time.
    GEMMs alone    the step's own matmuls (the ops the FLOP count counts: mm, addmm(_), bmm, baddbmm, fused
                   attention; and the oneDNN linear), recorded with their shapes and strides from one step and
                   replayed on their own (CPU time, same windows): what the step's GEMMs
                   cost at the arch's shapes with nothing else. "GEMMs / roofline" is the part of the ratio that
                   the GEMM shapes alone impose (128-row GEMMs run below the 2048 x 1024 x 1024 peak); "step /
                   GEMMs" is what the rest of the step (elementwise ops, optimizer, autograd) adds on top.
    peak memory    the process's peak RSS growth over the FLOP-counting pass and the steps (activations, gradients,
                   optimizer state).
    input          ParquetBatchReader batches per CPU-second (shuffle on, no prefetch thread) with that arch's
                   features, OptInter's cross ids computed at batch time, against the dense step rate:
                   "input / step" >= 3 means the reader keeps up using a third of a core or less.

Retrain cases read an architecture exported by a freshly initialized search-stage arch (OptInter: its argmax at
initialization; the counts are printed), so their cost is that of a typical retrain, not of a trained search.
Tables are capped at --cap rows (only the reader sees them; ids are taken modulo the cap).

    .venv/bin/python benchmarks/bench_arches.py [--small] [--only dlrm,xdeepfm] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

CONFIGS = common.ROOT / "configs"
# label -> (preset, search preset whose exported architecture a retrain reads)
CASES: Dict[str, tuple] = {
    "dlrm": ("dlrm_criteo_kaggle", None),
    "dcn": ("dcn_criteo_kaggle", None),
    "dcnv2": ("dcnv2_criteo_kaggle", None),
    "ipnn": ("ipnn_criteo_kaggle", None),
    "deepfm": ("deepfm_criteo_kaggle", None),
    "xdeepfm": ("xdeepfm_criteo_kaggle", None),
    "autoint": ("autoint_criteo_kaggle", None),
    "xdeepint": ("xdeepint_criteo_kaggle", None),
    "dynint": ("dynint_criteo_kaggle", None),
    "deepmr": ("deepmr_criteo_kaggle", None),
    "maskfusion (dlrm + dwmf)": ("maskfusion_criteo_kaggle", None),
    "optinter search (325 crosses)": ("optinter_search_criteo_kaggle", None),
    "optinter-m": ("optinter_m_criteo_kaggle", None),
    "optinter retrain": ("optinter_retrain_criteo_kaggle", "optinter_search_criteo_kaggle"),
    "optfusion search": ("optfusion_criteo_kaggle", None),
    "optfusion retrain": ("optfusion_retrain_criteo_kaggle", "optfusion_criteo_kaggle"),
}
SMALL_CASES = ("dlrm", "xdeepfm", "optinter retrain")


def _config(preset: str, data_dir: str, cap: int, extra: List[str]):
    from recsys_dist.config import load_config

    return load_config(CONFIGS / f"{preset}.yaml",
                       [f"data.dir={data_dir}", f"model.max_rows_per_table={cap}", "data.cross_min_count=0",
                        f"data.cross_table_rows={cap}", *extra])


def _dense_arch(cfg):
    """(dense arch, Features, Metadata) as the train job builds them (tables on meta: never materialized)."""
    from recsys_dist.data.metadata import Metadata
    from recsys_dist.job import features_for
    from recsys_dist.models.model import build_model

    md = Metadata.load(cfg.data.dir)
    feats = features_for(cfg, md)
    model = build_model(feats.tables, md.num_dense, cfg.model.arch, cfg.model.arch_args, sparse_device="meta")
    return model.dense_arch, feats, md


def _export_search(search: str, data_dir: str, cap: int, out: Path) -> Dict[str, Any]:
    import torch

    torch.manual_seed(0)
    arch, _, _ = _dense_arch(_config(search, data_dir, cap, []))
    exported = arch.export_architecture()
    out.write_text(json.dumps(exported))
    return exported


def _retrain_overrides(preset: str, path: Path) -> List[str]:
    if preset.startswith("optinter"):
        return [f"data.cross_pairs={path}", f"model.arch_args.methods={path}"]
    return [f"model.arch_args.architecture={path}"]


def _flop_formulas() -> Dict[Any, Any]:
    """FLOP formulas FlopCounterMode lacks for ops our arches run: the in-place addmm_ (the CIN kernel's weight
    gradient) and the CPU fused attention (DeepMR) with its backward; the same counts as their registered kin."""
    import torch
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    def addmm_(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * a_shape[0] * a_shape[1] * b_shape[1]

    def attention(q, k, v, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(q, k, v)

    def attention_backward(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, q, k, v)

    aten = torch.ops.aten
    return {aten.addmm_: addmm_, aten._scaled_dot_product_flash_attention_for_cpu: attention,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: attention_backward}


def count_flops(arch, dense, emb, paper_model: bool = True) -> int:
    """Forward + backward FLOPs of one step (oneDNN linears switched to F.linear so the counter sees them), with the
    paper's ops (`paper_model`) or with the ops the arch executes."""
    import contextlib

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import recsys_dist.models.onednn_linear as onednn
    from recsys_dist.models.arch import DenseArch

    saved, onednn._ONEDNN = onednn._ONEDNN, False
    try:
        with arch.paper_ops() if paper_model and isinstance(arch, DenseArch) else contextlib.nullcontext(), \
                FlopCounterMode(display=False, custom_mapping=_flop_formulas()) as fc:
            logits = arch(dense, emb)
            torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)).backward()
    finally:
        onednn._ONEDNN = saved
    arch.zero_grad(set_to_none=True)
    return fc.get_total_flops()


class _GemmRecorder:
    """Records the step's calls of the ops the FLOP count counts (mm, addmm(_), bmm, baddbmm, fused attention) and
    of the oneDNN linear (op, argument shapes and strides) with a TorchDispatchMode."""

    def __init__(self) -> None:
        import torch
        from torch.utils.flop_counter import flop_registry

        self.ops = set(flop_registry) | set(_flop_formulas())
        if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
            self.ops.add(torch.ops.mkldnn._linear_pointwise)
        self.calls: List[tuple] = []

    def record(self, step) -> None:
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_map

        def spec(x):
            return ("tensor", tuple(x.shape), tuple(x.stride()), x.dtype) if isinstance(x, torch.Tensor) else x

        recorder = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func.overloadpacket in recorder.ops:
                    recorder.calls.append((func, tree_map(spec, args), tree_map(spec, kwargs)))
                return func(*args, **kwargs)

        with Mode():
            step()

    def replay_seconds(self, reps: int) -> float:
        """Best-of CPU seconds of running every recorded GEMM once, on fresh tensors of the same layout."""
        import torch
        from torch.utils._pytree import tree_map

        def make(x):
            if isinstance(x, tuple) and len(x) == 4 and x[0] == "tensor":
                return torch.empty_strided(x[1], x[2], dtype=x[3]).normal_(0, 0.05)
            return x

        calls = [(f, tree_map(make, a, is_leaf=lambda x: isinstance(x, tuple) and x[:1] == ("tensor",)),
                  tree_map(make, k, is_leaf=lambda x: isinstance(x, tuple) and x[:1] == ("tensor",)))
                 for f, a, k in self.calls]
        best = float("inf")
        for _ in range(reps + 1):
            t = time.process_time()
            for f, a, k in calls:
                f(*a, **k)
            best = min(best, time.process_time() - t)
        return best


def _reader_rate(cfg, feats, md, batch: int, passes: int) -> float:
    """CPU seconds per batch of ParquetBatchReader with one torch thread, best of `passes` passes."""
    import torch

    from pipelines.parquet_input import ParquetBatchReader

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    reader = ParquetBatchReader(cfg.data.dir, "train", batch, mode="train", shuffle=True, seed=0,
                                shuffle_buffer_rows=cfg.data.shuffle_buffer_rows, prefetch=0, metadata=md,
                                table_rows={t.feature: t.num_embeddings for t in feats.tables},
                                feature_transform=feats.transform, extra_features=feats.extra_names)
    best = float("inf")
    for epoch in range(passes):
        reader.set_epoch(epoch)
        t = time.process_time()
        n = sum(1 for _ in reader)
        best = min(best, (time.process_time() - t) / max(n, 1))
    torch.set_num_threads(threads)
    return best


class Case:
    """One case built as `train` builds it (threads and allocator by dist_env.setup_compute): the preset's config,
    its dense arch, a batch of inputs and `step()` (forward + backward + the preset's optimizers)."""

    def __init__(self, label: str, data_dirs: Dict[str, str], cap: int, batch: Optional[int], tmp: Path,
                 threads: int = 1, tune_malloc: bool = True) -> None:
        import torch

        from recsys_dist.dist_env import setup_compute
        from recsys_dist.optim import _torch_optimizer

        self.label = label
        self.preset, search = CASES[label]
        compute = [f"train.threads={threads}", f"train.tune_malloc={str(tune_malloc).lower()}"]
        raw = _config(self.preset, data_dirs["plain"], cap, compute)
        _, self.malloc_tuned = setup_compute(raw.train, local_world_size=1)  # as `train` sets them
        data_dir = data_dirs["bucketized" if raw.prepare.dense == "bucketize" else "plain"]
        extra, self.note = [], ""
        if search:
            path = tmp / f"{self.preset}.architecture.json"
            exported = _export_search(search, data_dir, cap, path)
            extra = _retrain_overrides(self.preset, path)
            if "counts" in exported:
                self.note = f"methods {dict(zip(exported['count_order'], exported['counts']))}"
        self.cfg = cfg = _config(self.preset, data_dir, cap, compute + extra)
        self.preset_batch = cfg.data.batch_size
        self.B = B = batch or cfg.data.batch_size
        torch.manual_seed(0)
        self.arch, self.feats, self.md = arch, _, md = _dense_arch(cfg)
        self.F, self.D = len(self.feats.tables), cfg.model.embedding_dim
        g = torch.Generator().manual_seed(0)
        self.dense = dense = torch.rand(B, md.num_dense, generator=g)
        self.emb = emb = torch.randn(B, self.F, self.D, generator=g).mul_(0.05).requires_grad_(True)
        labels = torch.randint(0, 2, (B,), generator=g).float()
        o = cfg.optim
        arch_ids = {id(p) for p in arch.architecture_parameters()}
        opts = [_torch_optimizer(o.dense, [p for p in arch.parameters() if id(p) not in arch_ids], o.dense_lr,
                                 o.dense_eps, o.weight_decay)]
        if arch_ids:
            opts.append(torch.optim.Adam(arch.architecture_parameters(), lr=o.arch_lr, betas=(0.5, 0.999)))

        def step() -> None:
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            emb.grad = None
            loss = torch.nn.functional.binary_cross_entropy_with_logits(arch(dense, emb), labels)
            reg = arch.regularization_loss()
            (loss if reg is None else loss + reg).backward()
            for opt in opts:
                opt.step()

        self.step = step


def run_case(label: str, data_dirs: Dict[str, str], cap: int, small: bool, rounds: int, steps: int,
             batch: Optional[int], tmp: Path, threads: int = 1, tune_malloc: bool = True) -> Dict[str, Any]:
    """One case in this process: the row of the table (see the module docstring)."""
    import torch

    from bench_roofline import gemm_gflops

    case = Case(label, data_dirs, cap, batch, tmp, threads, tune_malloc)
    cfg, feats, md, step, B, F, D = case.cfg, case.feats, case.md, case.step, case.B, case.F, case.D
    preset, note, malloc_tuned = case.preset, case.note, case.malloc_tuned
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # before the first forward + backward (FLOP count)
    flops = count_flops(case.arch, case.dense, case.emb)
    from recsys_dist.models.arch import DenseArch

    own_ops = type(case.arch).paper_ops is not DenseArch.paper_ops  # else the executed ops are the paper's
    executed = count_flops(case.arch, case.dense, case.emb, paper_model=False) if own_ops else flops

    step()  # warm-up (optimizer state, allocator)
    gemms = _GemmRecorder()
    times, peaks, gemm_times, faults = [], [], [], []
    for _ in range(rounds):
        peaks.append(gemm_gflops(torch.float32, reps=2 if small else 8, clock=time.process_time))
        best = float("inf")
        for _ in range(steps):
            f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t = time.process_time()
            step()
            best = min(best, time.process_time() - t)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)
        times.append(best)
        if not gemms.calls:  # peak memory of the steps alone, before the GEMM replay allocates its own
            peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
            gemms.record(step)
        gemm_times.append(gemms.replay_seconds(reps=steps))
    read = _reader_rate(cfg, feats, md, B, passes=1 if small else 2)
    step_s = statistics.median(times)
    roof = [flops / (p * 1e9) for p in peaks]
    return {"case": label, "preset": preset, "batch": B, "fields": F, "dim": D, "num_dense": md.num_dense,
            "samples_per_s": B / step_s, "step_s": step_s, "mflop_per_sample": flops / B / 1e6,
            "mflop_per_sample_executed": executed / B / 1e6,
            "gemm_gflops": statistics.median(peaks),
            "x_roofline": statistics.median(t / r for t, r in zip(times, roof)),
            "gemm_s": statistics.median(gemm_times), "gemm_calls": len(gemms.calls),
            "gemm_x_roofline": statistics.median(g / r for g, r in zip(gemm_times, roof)),
            "step_over_gemm": statistics.median(t / g for t, g in zip(times, gemm_times)),
            "peak_mib": peak_mib, "read_s_per_batch": read, "input_over_step": step_s / read, "note": note,
            "threads": torch.get_num_threads(), "malloc_tuned": malloc_tuned,
            "minor_faults_per_step": statistics.median(faults)}


def _write_data(root: Path, rows: int, cap: int) -> Dict[str, str]:
    from recsys_dist.data.criteo_schema import KAGGLE_ROWS

    cards = [min(r, cap) for r in KAGGLE_ROWS]
    dirs = {"plain": root / "plain", "bucketized": root / "bucketized"}
    common.write_criteo_like(dirs["plain"], rows, cards, rows_per_file=65536)
    common.write_criteo_like(dirs["bucketized"], rows, cards, rows_per_file=65536, bucketized=True)
    return {k: str(v) for k, v in dirs.items()}




def table(rows: List[Dict[str, Any]]) -> str:
    out = ["| case | batch | fields x dim | samples/s (1 core) | MFLOP/sample | step / roofline "
           "| GEMMs alone / roofline | step / GEMMs alone | peak MiB | input / step |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        flag = (" **>3x**" if r["x_roofline"] > 3 else "")
        in_flag = (" **<3x**" if r["input_over_step"] < 3 else "")
        out.append(f"| {r['case']} | {r['batch']} | {r['fields']} x {r['dim']} | {r['samples_per_s']:,.0f} | "
                   f"{_mflop(r)} | {r['x_roofline']:.2f}{flag} | {r['gemm_x_roofline']:.2f} | "
                   f"{r['step_over_gemm']:.2f} | {r['peak_mib']:,.0f} | "
                   f"{r['input_over_step']:.1f}{in_flag} |")
    return "\n".join(out)


def _mflop(row: Dict[str, Any]) -> str:
    """The paper model's MFLOP/sample, and what the arch executes when that differs."""
    paper, executed = row["mflop_per_sample"], row.get("mflop_per_sample_executed", row["mflop_per_sample"])
    return f"{paper:,.1f}" + (f" (executed {executed:,.1f})" if abs(executed - paper) > 0.05 * paper else "")


def _line(row: Dict[str, Any]) -> str:
    return (f"{row['case']}: batch {row['batch']}, {row['fields']} fields x {row['dim']}, "
            f"{row['samples_per_s']:,.0f} samples per CPU-s, {_mflop(row)} MFLOP/sample, "
            f"{row['x_roofline']:.2f}x roofline (GEMM {row['gemm_gflops']:.0f} GFLOP per CPU-s), its "
            f"{row['gemm_calls']} GEMMs alone {row['gemm_x_roofline']:.2f}x roofline, step / GEMMs alone "
            f"{row['step_over_gemm']:.2f}, peak +{row['peak_mib']:,.0f} MiB, "
            f"{row['minor_faults_per_step']:,.0f} minor faults/step (malloc tuned: {row['malloc_tuned']}), "
            f"input {1 / row['read_s_per_batch']:,.1f} batches per CPU-s = "
            f"{row['input_over_step']:.1f}x the step rate {row['note']}")


def main(argv=None) -> List[Dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help=f"batch 32, {', '.join(SMALL_CASES)} only, in-process")
    p.add_argument("--only", default=None, help="comma-separated case labels (default: all)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="steps per window (the best counts: a shared box)")
    p.add_argument("--batch", type=int, default=None, help="override the presets' batch (default: theirs)")
    p.add_argument("--cap", type=int, default=100_000, help="rows per table (the reader's id space)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of the dense step")
    p.add_argument("--no-tune-malloc", action="store_true", help="as train.tune_malloc=false (default: tuned, "
                   "as `train` runs)")
    p.add_argument("--compare-malloc", type=int, default=0, metavar="N",
                   help="N alternating pairs of case processes, tuned and not: the ratio of their step times")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one case, print its JSON
    p.add_argument("--data", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    rounds = a.rounds or (1 if a.small else 3)
    steps = a.steps or (1 if a.small else 3)
    batch = 32 if a.small else a.batch
    tune = not a.no_tune_malloc
    if a.case:
        dirs = json.loads(a.data)
        with tempfile.TemporaryDirectory(prefix="bench_arch_") as tmp:
            row = run_case(a.case, dirs, a.cap, a.small, rounds, steps, batch, Path(tmp), a.threads, tune)
        print("ROW " + json.dumps(row))
        return [row]
    labels = [x.strip() for x in a.only.split(",")] if a.only else list(SMALL_CASES if a.small else CASES)
    unknown = [x for x in labels if x not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; known: {', '.join(CASES)}")
    print(f"machine: {common.machine()}")
    print(f"settings: {a.threads} thread(s) per dense step, CPU-time clocks, {rounds} round(s) x best of {steps} "
          f"steps, tables capped at {a.cap} rows, train.tune_malloc={str(tune).lower()}")
    rows_needed = (4 if a.small else 6) * (32 if a.small else max(4096, batch or 0))
    results: List[Dict[str, Any]] = []

    def run(label: str, dirs: Dict[str, str], tuned: bool) -> Dict[str, Any]:
        if a.small:  # in-process: fast enough for the smoke test (peak memory then includes earlier cases)
            with tempfile.TemporaryDirectory(prefix="bench_arch_") as case_tmp:
                return run_case(label, dirs, a.cap, True, rounds, steps, batch, Path(case_tmp), a.threads, tuned)
        cmd = [sys.executable, __file__, "--case", label, "--data", json.dumps(dirs), "--cap", str(a.cap),
               "--rounds", str(rounds), "--steps", str(steps), "--threads", str(a.threads)]
        cmd += (["--batch", str(batch)] if batch else []) + ([] if tuned else ["--no-tune-malloc"])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        if proc.returncode != 0:
            raise SystemExit(f"{label}: failed\n{proc.stderr[-3000:]}")
        return json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("ROW "))[4:])

    with tempfile.TemporaryDirectory(prefix="bench_arches_") as tmp:
        dirs = _write_data(Path(tmp), rows_needed, a.cap)
        for label in labels:
            if a.compare_malloc:
                ratios = []
                for i in range(a.compare_malloc):  # alternating order: tuned first in even pairs
                    pair = {}
                    for tuned in ((True, False) if i % 2 == 0 else (False, True)):
                        t = time.perf_counter()
                        pair[tuned] = run(label, dirs, tuned)
                        print(f"pair {i}, tuned {tuned}: {_line(pair[tuned])} "
                              f"[{time.perf_counter() - t:.0f} s, load {os.getloadavg()[0]:.1f}]", flush=True)
                    ratios.append(pair[False]["step_s"] / pair[True]["step_s"])
                    results.append(pair[True])
                print(f"{label}: ratio step CPU time glibc default / tune_malloc (> 1: tuning helps): median "
                      f"{statistics.median(ratios):.2f} (pairs {', '.join(f'{r:.2f}' for r in ratios)})", flush=True)
                continue
            t = time.perf_counter()
            row = run(label, dirs, tune)
            results.append(row)
            print(f"{_line(row)} [{time.perf_counter() - t:.0f} s, load {os.getloadavg()[0]:.1f}]", flush=True)
    print(table(results))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    worst = max(results, key=lambda r: r["x_roofline"])
    print(f"worst step / roofline: {worst['case']} {worst['x_roofline']:.2f}; lowest input / step: "
          f"{min(r['input_over_step'] for r in results):.1f}")
    return results


if __name__ == "__main__":
    main()
