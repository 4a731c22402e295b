"""Where a train step's time goes: per-stage times from torch.profiler for the plain loop, TorchRec's
TrainPipelineSparseDist (what `recsys-dist train` runs) and TrainPipelineSemiSync, on our full path (Parquet ->
ParquetBatchReader -> DMP(CTRTrainModel)) at the foundation DLRM's settings, 2 ranks.

Stages (rank 0's main thread; an interval counted once even when nested):
    input            waiting for the next batch from the reader (`next()` on its iterator)
    input_a2a        ShardedEmbeddingBagCollection.input_dist + waits on KJT all-to-all awaitables
    lookup           the embedding lookup modules' forward + FBGEMM's backward (which applies the fused
                     row-wise Adagrad update)
    output_a2a       the pooled-embedding all-to-all: output_dist, its waits, and its backward
    dense_allreduce  DDP's gradient all-reduce of the dense params
    dense_fwd        the rest of the forward (bottom MLP, interaction, top MLP, loss)
    dense_bwd        the rest of the backward
    optimizer        the dense Adagrad step (+ zero_grad)

For each pipeline the three pipelines are profiled in alternating rounds; it prints the step time (wall / steps),
the sum of the stages and their max: step ~ sum means nothing overlaps, step ~ max would be perfect overlap.
The last line is the ratio step time / sum of stages for our pipeline (< 1: overlap achieved).

    .venv/bin/python benchmarks/bench_pipeline_breakdown.py [--small]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

STAGES = ("input", "input_a2a", "lookup", "output_a2a", "dense_allreduce", "dense_fwd", "dense_bwd", "optimizer")


def _label(fn, name: str):
    from torch.autograd.profiler import record_function

    def wrapped(*args, **kwargs):
        with record_function(name):
            return fn(*args, **kwargs)

    return wrapped


def instrument(dmp) -> None:
    """Labels the sharded EBC's input dist, lookups and output dists (instance-level forward wrappers)."""
    from torchrec.distributed.embeddingbag import ShardedEmbeddingBagCollection

    for m in dmp.modules():
        if isinstance(m, ShardedEmbeddingBagCollection):
            m.input_dist = _label(m.input_dist, "stage:input_a2a")
            for lk in m._lookups:
                lk.forward = _label(lk.forward, "stage:lookup")
            for od in m._output_dists:
                od.forward = _label(od.forward, "stage:output_a2a")


class LabeledIterator:
    def __init__(self, it) -> None:
        self.it = it

    def __iter__(self):
        return self

    def __next__(self):
        from torch.autograd.profiler import record_function

        with record_function("stage:input"):
            return next(self.it)


def _classify(name: str) -> str | None:
    n = name.lower()
    if n.startswith("stage:"):
        return name[6:]
    if "wait()" in n and "kjt" in n:
        return "input_a2a"
    if "wait()" in n and ("pooled" in n or "alltoone" in n or "reducescatter" in n):
        return "output_a2a"
    if "all2all_pooled" in n or "reduce_scatter" in n and "backward" in n:
        return "output_a2a"
    if "split_embedding" in n or "splitlookup" in n or "embedding_backward" in n:
        return "lookup"
    if "allreduce" in n or "all_reduce" in n:
        return "dense_allreduce"
    if n.startswith("## optimizer") or n.startswith("## zero_grad") or n.startswith("optimizer.step"):
        return "optimizer"
    return None


def _union(iv: List[Tuple[float, float]]) -> List[Tuple[float, float]]:
    out: List[Tuple[float, float]] = []
    for a, b in sorted(iv):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _length(iv: List[Tuple[float, float]]) -> float:
    return sum(b - a for a, b in iv)


def _intersect_len(a: List[Tuple[float, float]], b: List[Tuple[float, float]]) -> float:
    i = j = 0
    total = 0.0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            total += hi - lo
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def stage_times(prof, steps: int) -> Dict[str, float]:
    """Seconds per step of each stage on the main thread, from the profiler's events."""
    import threading

    events = prof.events()
    main = threading.get_ident()
    tids = {e.thread for e in events if e.name.startswith("## forward") or e.name == "stage:input"}
    tid = next(iter(tids)) if len(tids) == 1 else main
    per: Dict[str, List[Tuple[float, float]]] = {s: [] for s in STAGES}
    fwd: List[Tuple[float, float]] = []
    bwd: List[Tuple[float, float]] = []
    for e in events:
        if e.thread != tid:
            continue
        iv = (e.time_range.start, e.time_range.end)
        if e.name.startswith("## forward"):
            fwd.append(iv)
        elif e.name.startswith("## backward"):
            bwd.append(iv)
        s = _classify(e.name)
        if s is not None:
            per[s].append(iv)
    per = {k: _union(v) for k, v in per.items()}
    fwd, bwd = _union(fwd), _union(bwd)
    other = _union([iv for s in STAGES if s not in ("dense_fwd", "dense_bwd") for iv in per[s]])
    out = {s: _length(per[s]) for s in STAGES if s not in ("dense_fwd", "dense_bwd")}
    out["dense_fwd"] = _length(fwd) - _intersect_len(fwd, other)
    out["dense_bwd"] = _length(bwd) - _intersect_len(bwd, other)
    return {k: v / 1e6 / steps for k, v in out.items()}  # us -> s per step


def _plain_step(dmp, optimizer, it):
    from torch.autograd.profiler import record_function

    batch = next(it)
    with record_function("## zero_grad ##"):
        optimizer.zero_grad()
    with record_function("## forward ##"):
        loss, _ = dmp(batch)
    with record_function("## backward ##"):
        loss.backward()
    with record_function("## optimizer ##"):
        optimizer.step()
    return loss


def _rank(rank: int, world: int, data_dir: str, s: Dict, pipelines: List[str]):
    import torch.distributed as dist
    from torch.profiler import ProfilerActivity, profile
    from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
    from torchrec.distributed.train_pipeline.train_pipelines import TrainPipelineSemiSync

    from bench_train_vs_torchrec import build_ours

    o = build_ours(data_dir, s, ["train.pipeline=sparse_dist", "data.prefetch_batches=4"], None)
    dmp, optimizer, device = o.built.dmp, o.optimizer, o.device

    def endless():  # pipelines read ahead and drop batches when detached: never run out
        epoch = 0
        while True:
            o.reader.set_epoch(epoch)
            yield from o.reader
            epoch += 1

    it = endless()
    instrument(dmp)
    it = LabeledIterator(it)

    def make(name: str):
        if name == "sparse_dist":
            return TrainPipelineSparseDist(dmp, optimizer, device, execute_all_batches=True)
        if name == "semi_sync":
            return TrainPipelineSemiSync(dmp, optimizer, device, execute_all_batches=True, start_batch=0)
        return None

    def run(name: str, n: int, prof: bool):
        pipe = make(name)
        step = (lambda: pipe.progress(it)) if pipe is not None else (lambda: _plain_step(dmp, optimizer, it))
        for _ in range(2):  # fill the pipeline (and trace the model) outside the measurement
            step()
        dist.barrier()
        t = time.perf_counter()
        if prof:
            with profile(activities=[ProfilerActivity.CPU]) as p:
                for _ in range(n):
                    step()
            dist.barrier()
            wall = (time.perf_counter() - t) / n
            stages = stage_times(p, n)
        else:
            for _ in range(n):
                step()
            dist.barrier()
            wall, stages = (time.perf_counter() - t) / n, {}
        if pipe is not None and hasattr(pipe, "detach"):
            pipe.detach()
        return wall, stages

    for name in pipelines:  # warm-up, traced once
        run(name, s["warmup"], False)
    result: Dict[str, Dict[str, List[float]]] = {n: {"wall": [], "wall_profiled": [], **{k: [] for k in STAGES}}
                                                  for n in pipelines}
    for _ in range(s["rounds"]):
        for name in pipelines:
            wall, _ = run(name, s["steps"], False)
            wall_p, stages = run(name, s["steps"], True)
            result[name]["wall"].append(wall)
            result[name]["wall_profiled"].append(wall_p)
            for k, v in stages.items():
                result[name][k].append(v)
    return result


def _semi_sync_applies() -> bool:
    """TrainPipelineSemiSync needs CUDA: on CPU (torchrec 1.8) its start_embedding_lookup calls
    KeyedJaggedTensor.record_stream(torch.cpu.Stream), which raises "unknown parameter type"."""
    import torch

    return torch.cuda.is_available()


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    a = p.parse_args(argv)
    import tempfile

    from bench_train_vs_torchrec import _settings
    from recsys_dist.data.criteo_schema import KAGGLE_ROWS

    s = _settings(a.small)
    s["rounds"] = a.rounds or (2 if a.small else 3)
    s["steps"] = a.steps or (3 if a.small else 8)
    pipelines = ["plain", "sparse_dist"] + (["semi_sync"] if _semi_sync_applies() else [])
    if "semi_sync" not in pipelines:
        print("TrainPipelineSemiSync: does not apply here (CPU: torchrec 1.8 records CUDA streams on the KJTs)")
    world = 2
    steps_needed = len(pipelines) * (s["warmup"] + 2 + s["rounds"] * 2 * (s["steps"] + 2)) + 8
    print(f"machine: {common.machine()}")
    print(f"settings: {world} ranks x 1 thread, global batch {s['batch']}, dim {s['dim']}, tables capped at "
          f"{s['cap']}, {s['rounds']} rounds x {s['steps']} steps per pipeline (profiled and not)")
    with tempfile.TemporaryDirectory(prefix="bench_breakdown_") as tmp:
        cards = KAGGLE_ROWS if not a.small else [min(r, 50 * s["cap"]) for r in KAGGLE_ROWS]
        common.write_criteo_like(Path(tmp), steps_needed * s["batch"], cards, rows_per_file=65536)
        res = common.run_ranks(_rank, world, (tmp, s, pipelines), threads=1)[0]
    med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in res.items()}
    header = f"{'stage (ms/step)':<18}" + "".join(f"{n:>13}" for n in pipelines)
    print(header)
    for k in STAGES:
        print(f"{k:<18}" + "".join(f"{med[n][k] * 1e3:>13.1f}" for n in pipelines))
    for label, fn in (("sum of stages", lambda m: sum(m[k] for k in STAGES)),
                      ("max of stages", lambda m: max(m[k] for k in STAGES)),
                      ("step (profiled)", lambda m: m["wall_profiled"]),
                      ("step (no profiler)", lambda m: m["wall"])):
        print(f"{label:<18}" + "".join(f"{fn(med[n]) * 1e3:>13.1f}" for n in pipelines))
    for n in pipelines:
        print(f"{n}: step / sum of stages = {med[n]['wall_profiled'] / sum(med[n][k] for k in STAGES):.3f}")
    ratio = med["sparse_dist"]["wall"] / med["plain"]["wall"]
    print(f"ratio sparse_dist step / plain loop step (< 1: the pipeline helps): {ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()
