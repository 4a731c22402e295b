"""Every arch's per-step temporaries at its preset's shapes: which allocations of one dense step are large.

A train step allocates and frees its activations every step. With `train.tune_malloc` (recsys_dist/malloc.py)
glibc keeps freed blocks up to its mmap threshold (32 MiB, the most glibc allows) in the process; **a single
allocation above 32 MiB is still a fresh mmap() every step**, page-faulted in and zeroed by the kernel, then
munmap()ed (issue 17 met it as xDeepFM's CIN [B, H, m, D] outer products, 800 MiB at batch 512). This benchmark
lists, per case of bench_arches.py (same presets, same `Case`: the dense step with the preset's optimizers), the
step's allocations from `torch.profiler` (profile_memory=True): the step's peak above its start, the largest
single allocation and the op that made it (and, for a backward op, the autograd node it ran in), and the
allocations over 32 MiB per step (count, total).

By default each case runs at its preset's batch. `--batch N` runs it at N and 2N instead and projects each
allocation to the preset's batch linearly (the step is the same sequence of ops at both batches, so the i-th
allocation of one is the i-th of the other; a case whose sequences differ is measured, not projected, and says
so): for the cases too large to profile at their batch on this machine (OptFusion: ~7 GB at 4096). The step's
peak is then the one measured at 2N (at small batches the optimizer's parameter-sized temporaries dominate it).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_arch_memory.py [--only dlrm,xdeepfm] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_arches  # noqa: E402
import common  # noqa: E402

MIB = 1 << 20


def _op_of(node) -> str:
    """The op that made an allocation: its nearest enclosing op, and the autograd node it ran in if any."""
    op, grad_fn, p = None, None, node.parent
    while p is not None:
        if op is None and p.name.startswith("aten::"):
            op = p.name
        if p.name.startswith("autograd::engine::evaluate_function: "):
            grad_fn = p.name.split(": ", 1)[1]
            break
        p = p.parent
    op = op or (node.parent.name if node.parent is not None else "?")
    return f"{op} in {grad_fn}" if grad_fn else op


def step_allocations(step) -> Tuple[List[Tuple[int, str]], int]:
    """One call of `step` under torch.profiler: its allocations in order [(bytes, op)] and its peak bytes
    allocated above its start (the running sum of allocations and frees)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        n = stack.pop()
        stack.extend(n.children)
        if n.tag == torch._C._profiler._EventType.Allocation:
            events.append((n.start_time_ns, n.extra_fields.alloc_size, n))
    events.sort(key=lambda e: e[0])
    live = peak = 0
    for _, size, _ in events:  # frees are negative sizes (the previous step's gradients too)
        live += size
        peak = max(peak, live)
    return [(size, _op_of(n)) for _, size, n in events if size > 0], peak


def arch_step_allocations(arch, dense, embeddings) -> List[Tuple[int, str]]:
    """The allocations [(bytes, op)] of one Adam training step of a dense arch (sum of its logits as the loss),
    after one warm-up step (Adam's state and the allocator's first blocks)."""
    import torch

    opt = torch.optim.Adam(arch.parameters())

    def step():
        opt.zero_grad(set_to_none=True)
        arch(dense, embeddings).sum().backward()
        opt.step()

    step()
    return step_allocations(step)[0]


def measure(label: str, data_dirs: Dict[str, str], cap: int, batch: Optional[int], tmp: Path) -> Dict[str, Any]:
    """The row of one case: at `batch` and 2 x `batch` projected to the preset's batch, or at the preset's."""
    batches = [batch, 2 * batch] if batch else [None]
    runs, preset_batch = [], None
    for b in batches:
        case = bench_arches.Case(label, data_dirs, cap, b, tmp)
        case.step()  # warm-up: optimizer state is allocated once, not per step
        allocs, peak = step_allocations(case.step)
        runs.append((case.B, allocs, peak))
        preset_batch = case.preset_batch
        del case
    B_target = preset_batch
    projected = len(runs) == 2 and len(runs[0][1]) == len(runs[1][1])
    if len(runs) == 1 or not projected:
        B_at, allocs, peak = runs[-1]
        sizes = [(s, op) for s, op in allocs]
        scale = B_target / B_at if B_at != B_target else 1.0
        note = "" if B_at == B_target else f"measured at batch {B_at}; allocation sequences differ, not projected"
        peak_at = B_at
    else:
        (b1, a1, p1), (b2, a2, p2) = runs
        sizes = [(s2 + (s2 - s1) * (B_target - b2) / (b2 - b1), op) for (s1, _), (s2, op) in zip(a1, a2)]
        peak, peak_at = p2, b2  # not projected: at small batches the optimizer's parameter-sized peak dominates
        B_at, note, scale = B_target, f"allocations projected from batches {b1} and {b2}", 1.0
    from recsys_dist.malloc import MMAP_THRESHOLD_MAX

    big = sorted(((s, op) for s, op in sizes if s > MMAP_THRESHOLD_MAX), key=lambda x: -x[0])
    by_op: Dict[str, List[float]] = {}
    for s, op in big:
        by_op.setdefault(op, []).append(s)
    largest = max(sizes, key=lambda x: x[0]) if sizes else (0, "-")
    return {"case": label, "batch": B_at, "preset_batch": B_target, "note": note, "scale_unmeasured": scale,
            "peak_mib": peak / MIB, "peak_batch": peak_at,
            "allocations": len(sizes), "largest_mib": largest[0] / MIB, "largest_op": largest[1],
            "over_32mib": len(big), "over_32mib_total_mib": sum(s for s, _ in big) / MIB,
            "over_32mib_ops": {op: [round(s / MIB) for s in v] for op, v in sorted(by_op.items(),
                                                                                   key=lambda kv: -sum(kv[1]))}}


def table(rows: List[Dict[str, Any]]) -> str:
    out = ["| case | batch | step peak MiB (at batch) | largest allocation (MiB, op) | allocations > 32 MiB "
           "per step (MiB) |", "|---|---:|---:|---|---:|"]
    for r in rows:
        out.append(f"| {r['case']} | {r['batch']} | {r['peak_mib']:,.0f} ({r['peak_batch']}) | "
                   f"{r['largest_mib']:,.1f} `{r['largest_op']}` | {r['over_32mib']} "
                   f"({r['over_32mib_total_mib']:,.0f}) |")
    return "\n".join(out)


def main(argv=None) -> List[Dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=None, help="comma-separated case labels of bench_arches.py (default: all)")
    p.add_argument("--batch", type=int, default=None, help="measure at N and 2N, project to the preset's batch")
    p.add_argument("--cap", type=int, default=100_000, help="rows per table (ids only; the tables are not built)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: one case, print its JSON
    p.add_argument("--data", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.case:
        with tempfile.TemporaryDirectory(prefix="bench_mem_") as tmp:
            row = measure(a.case, json.loads(a.data), a.cap, a.batch, Path(tmp))
        print("ROW " + json.dumps(row))
        return [row]
    labels = [x.strip() for x in a.only.split(",")] if a.only else list(bench_arches.CASES)
    unknown = [x for x in labels if x not in bench_arches.CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; known: {', '.join(bench_arches.CASES)}")
    print(f"machine: {common.machine()}")
    print(f"settings: one dense step per case after a warm-up, torch.profiler(profile_memory=True), "
          f"{'batches N and 2N projected to the preset batch, N = ' + str(a.batch) if a.batch else 'preset batch'}")
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_arch_memory_") as tmp:
        dirs = bench_arches._write_data(Path(tmp), 1024, a.cap)  # the cases read metadata only
        for label in labels:
            t = time.perf_counter()
            cmd = [sys.executable, __file__, "--case", label, "--data", json.dumps(dirs), "--cap", str(a.cap)]
            cmd += ["--batch", str(a.batch)] if a.batch else []
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            if proc.returncode != 0:
                raise SystemExit(f"{label}: failed\n{proc.stderr[-3000:]}")
            row = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("ROW "))[4:])
            rows.append(row)
            print(f"{label}: batch {row['batch']}, step peak {row['peak_mib']:,.0f} MiB at batch {row['peak_batch']}, "
                  f"{row['allocations']} allocations, largest "
                  f"{row['largest_mib']:,.1f} MiB ({row['largest_op']}), {row['over_32mib']} over 32 MiB "
                  f"({row['over_32mib_total_mib']:,.0f} MiB): {row['over_32mib_ops']} {row['note']} "
                  f"[{time.perf_counter() - t:.0f} s, load {os.getloadavg()[0]:.1f}]", flush=True)
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
