"""Train several arches or configs on one prepared dataset, with the same budget and k seeds each, and write a
leaderboard: leaderboard.md and a self-contained leaderboard.html (tables and inline SVG validation curves).

  recsys-dist compare --data data/prepared --out runs/compare --arch dlrm --arch dcnv2 --seeds 3 train.epochs=5
  recsys-dist compare --data data/own --arch "dcnv2:{num_cross_layers: 2, dnn: [64, 1]}" \\
      --run-config configs/xdeepfm_criteo_kaggle.yaml --seeds 2 --ranks 2 data.batch_size=1024

Entries: --arch NAME[:ARGS] (the arch with its default arguments, or ARGS as a YAML mapping, on top of --config if
given) and --run-config FILE.yaml (that config as is); the overrides after them apply to every entry (the same
budget: epochs, batch size, learning rates...), then data.dir=--data. Each entry's resolved config is written to
OUT/LABEL/config.yaml and checked before anything trains; each seed k runs as its own process,
    recsys-dist train --config OUT/LABEL/config.yaml train.seed=k data.seed=k train.out_dir=OUT/LABEL/seed_k
(under torchrun with --ranks > 1), the exact command kept in OUT/LABEL/seed_k/command.txt and its output in
train.log. Finished runs (a valid result.json) are skipped, so an interrupted compare resumes where it stopped (an
interrupted run resumes from its checkpoints; a result.json that is not valid JSON is not finished: that run is
trained again); a changed config for an existing LABEL is refused.

Rows are ranked by the mean validation metric of the chosen checkpoints (train.early_stopping.metric), the test
metrics reported beside it: choose by validation, not by test. Exit status 1 if a run failed (the page says which).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from recsys_dist.cli.common import bounded, leave_launch
from recsys_dist.config import ConfigError, load_config, to_yaml
from recsys_dist.json_file import write_atomic


RANK0_ONLY = True  # under a multi-rank launch, rank 0 orchestrates (each run starts its own processes)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="the prepared dataset every run trains on (data.dir)")
    p.add_argument("--out", default="runs/compare", help="results folder: OUT/LABEL/seed_K/ (default runs/compare)")
    p.add_argument("--arch", action="append", default=[], metavar="NAME[:ARGS]",
                   help="an arch (repeat for several); ARGS a YAML mapping of its arguments, e.g. "
                        "'dcnv2:{num_cross_layers: 2}'")
    p.add_argument("--run-config", action="append", default=[], metavar="FILE.yaml",
                   help="a full train config as an entry (repeat for several)")
    p.add_argument("--seeds", type=bounded(int, "> 0"), default=3, help="seeds per entry: train.seed = data.seed = 0 .. K-1")
    p.add_argument("--ranks", type=bounded(int, "> 0"), default=1, help="ranks per run (torchrun) when > 1")
    p.add_argument("--jobs", type=bounded(int, "> 0"), default=1,
                   help="runs at once (default 1; > 1 shares the cores, so samples/s is no longer comparable)")


@dataclass
class Entry:
    label: str
    raw: Dict[str, Any]  # the config as a YAML mapping, before the shared overrides
    source: str  # what the user gave


@dataclass
class Run:
    entry: str
    seed: int
    folder: Path
    argv: List[str]  # what is executed
    shown: str  # the same command as a user types it


def _entries(args: argparse.Namespace) -> List[Entry]:
    base: Dict[str, Any] = {}
    if args.config:
        if not Path(args.config).is_file():
            raise ConfigError(f"config file not found: {args.config}")
        base = yaml.safe_load(Path(args.config).read_text()) or {}
    out: List[Entry] = []
    for item in args.arch:
        name, _, text = item.partition(":")
        try:
            arch_args = yaml.safe_load(text) if text else {}
        except yaml.YAMLError as e:
            raise ConfigError(f"--arch {item!r}: arguments are not YAML: {e}") from None
        if not isinstance(arch_args, dict):
            raise ConfigError(f"--arch {item!r}: expected NAME or NAME:{{key: value, ...}}")
        raw = json.loads(json.dumps(base))
        raw.setdefault("model", {}).update(arch=name.strip(), arch_args=arch_args)
        out.append(Entry(name.strip(), raw, item))
    for path in args.run_config:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"--run-config {path}: file not found")
        out.append(Entry(p.stem, yaml.safe_load(p.read_text()) or {}, path))
    if not out:
        raise ConfigError("nothing to compare: give --arch NAME and / or --run-config FILE.yaml (several)")
    seen: Dict[str, int] = {}
    for e in out:  # unique labels: dcnv2, dcnv2-2, ...
        seen[e.label] = seen.get(e.label, 0) + 1
        if seen[e.label] > 1:
            e.label = f"{e.label}-{seen[e.label]}"
    return out


def _resolve(entry: Entry, overrides: List[str], data: Optional[str], out: Path) -> str:
    """The entry's config with the shared overrides, checked (ConfigError names the entry), as YAML."""
    folder = out / entry.label
    tmp = out / f".{entry.label}.entry.yaml"
    tmp.write_text(yaml.safe_dump(entry.raw, sort_keys=False))
    try:
        cfg = load_config(tmp, overrides + ([f"data.dir={data}"] if data else [])
                          + [f"train.out_dir={folder}", "train.resume=auto"])
    except ConfigError as e:
        raise ConfigError(f"entry {entry.source!r}: {e}") from None
    finally:
        tmp.unlink()
    from recsys_dist.data.metadata import Metadata, MetadataError

    try:
        Metadata.load(cfg.data.dir)
    except MetadataError as e:
        raise ConfigError(f"entry {entry.source!r}: data.dir: {e}") from None
    return to_yaml(cfg)


def _command(config: Path, seed: int, folder: Path, nproc: int) -> Run:
    tail = ["train", "--config", str(config), f"train.seed={seed}", f"data.seed={seed}", f"train.out_dir={folder}"]
    if nproc > 1:
        head = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "recsys_dist.cli"]
        shown = ["torchrun", "--standalone", f"--nproc_per_node={nproc}", "-m", "recsys_dist.cli"]
    else:
        head, shown = ["-m", "recsys_dist.cli"], ["recsys-dist"]
    return Run(config.parent.name, seed, folder, [sys.executable, *head, *tail], shlex.join(shown + tail))


def _prepare_runs(args: argparse.Namespace, out: Path) -> List[Run]:
    runs: List[Run] = []
    out.mkdir(parents=True, exist_ok=True)
    resolved = {e.label: (e, _resolve(e, list(args.overrides), args.data, out)) for e in _entries(args)}
    for label, (entry, text) in resolved.items():  # every config checked before any run starts
        path = out / label / "config.yaml"
        if path.is_file() and path.read_text() != text:
            old, new = yaml.safe_load(path.read_text()), yaml.safe_load(text)
            diff = [f"{s}.{k}" for s in new for k in new[s] if (old.get(s) or {}).get(k) != new[s][k]]
            raise ConfigError(f"{path}: the runs of {label!r} there were made with another config (differs in "
                              f"{', '.join(diff[:6]) or 'layout'}); use another --out, or remove {out / label}")
    for label, (entry, text) in resolved.items():
        path = out / label / "config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)  # a resume compares it with the new config
        (out / label / "entry.txt").write_text(entry.source + "\n")
        runs += [_command(path, k, out / label / f"seed_{k}", args.ranks) for k in range(args.seeds)]
    return runs


def _execute(runs: List[Run], jobs: int) -> Dict[str, int]:
    """Runs the unfinished ones (`jobs` at a time); returns {folder: exit status} of those it ran."""
    from recsys_dist.leaderboard import read_result

    todo = []
    for r in runs:
        why = read_result(r.folder)[1]
        if not why:
            print(f"  done  {r.entry} seed {r.seed}  ({r.folder}/result.json)")
            continue
        todo.append(r)
        if (r.folder / "result.json").is_file():  # not a finished run's: train again (resuming its checkpoint)
            print(f"  redo  {r.entry} seed {r.seed}: {why}: running it again", flush=True)
    status: Dict[str, int] = {}
    live: List[tuple] = []
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")) if jobs > 1 else None
    while todo or live:
        while todo and len(live) < jobs:
            r = todo.pop(0)
            r.folder.mkdir(parents=True, exist_ok=True)
            (r.folder / "command.txt").write_text(r.shown + "\n")
            print(f"  run   {r.entry} seed {r.seed}: {r.shown}", flush=True)
            log = (r.folder / "train.log").open("a")
            live.append((r, subprocess.Popen(r.argv, stdout=log, stderr=subprocess.STDOUT, env=env), log,
                         time.perf_counter()))
        time.sleep(0.2)
        for item in list(live):
            r, proc, log, t = item
            if proc.poll() is None:
                continue
            log.close()
            live.remove(item)
            status[str(r.folder)] = proc.returncode
            what = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see {r.folder}/train.log)"
            print(f"  {what}  {r.entry} seed {r.seed}  [{time.perf_counter() - t:.0f}s]", flush=True)
            if proc.returncode:
                print(_log_tail(r.folder / "train.log"), flush=True)
    return status


def _log_tail(log: Path, lines: int = 25) -> str:
    """The last lines of a failed run's log, indented: the cause is shown where the failure is reported."""
    try:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError as e:
        return f"    (cannot read {log}: {e})"
    return "\n".join(f"    | {line}" for line in tail)


def run(args: argparse.Namespace) -> int:
    if args.seeds < 1 or args.ranks < 1 or args.jobs < 1:
        raise ConfigError("--seeds, --ranks and --jobs must be >= 1")
    leave_launch()  # under torchrun / torchx (rank 0 orchestrates): each run is a job of its own
    out = Path(args.out)
    runs = _prepare_runs(args, out)
    print(f"compare: {len(runs)} runs ({len({r.entry for r in runs})} entries x {args.seeds} seeds) in {out}")
    status = _execute(runs, args.jobs)
    from recsys_dist.leaderboard import read_result, write_leaderboard

    md, html = write_leaderboard(out, [(r.entry, r.seed, r.folder, r.shown) for r in runs])
    print(md.read_text())
    print(f"wrote {md} and {html}")
    return 1 if any(status.values()) or any(read_result(r.folder)[0] is None for r in runs) else 0
