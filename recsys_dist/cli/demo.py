"""The embedded default, end to end on this machine, in about a minute on 2 cores:

  1. synth     Criteo-format day files with a planted signal (and the generator's own AUC)
  2. prepare   -> Parquet shards + metadata.json
  3. plan      the sharding plan for --ranks N CPU ranks (default 2), with text / JSON / HTML reports
  4. train     DLRM on N gloo ranks under torchrun, on exactly that plan (TrainPipelineSparseDist)
  5. evaluate  the N-rank checkpoint, loaded into 1 process (resharded when N > 1), on the test split

It prints the test AUC beside the generator's AUC. Defaults: recsys_dist/presets/demo.yaml; change anything with
--config or section.key=value overrides (e.g. synth.rows_per_day=20000 train.epochs=1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from recsys_dist.cli.common import bounded, config_from_args, leave_launch
from recsys_dist.config import to_yaml

RANK0_ONLY = True  # under a multi-rank launch, rank 0 runs the demo (which starts its own torchrun)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ranks", dest="nproc", type=bounded(int, "> 0"), default=2, help="training ranks (torchrun processes), default 2")
    p.add_argument("--nproc", dest="nproc", type=bounded(int, "> 0"), help=argparse.SUPPRESS)  # old spelling; torchrun's prefix
    p.add_argument("--workdir", default="runs/demo", help="where the resolved demo config is written")


def _ranks(n: int) -> str:
    return f"{n} rank" + ("" if n == 1 else "s")


def _step(n: int, title: str) -> float:
    print(f"\n[demo {n}/5] {title}", flush=True)
    return time.perf_counter()


def run(args: argparse.Namespace) -> int:
    leave_launch()  # the demo's own torchrun and its evaluate step must not join an outer launch's group
    if args.config is None:
        args.config = str(resources.files("recsys_dist") / "presets" / "demo.yaml")
    cfg = config_from_args(args)
    cfg.plan.world_size = args.nproc
    cfg.plan.local_world_size = args.nproc
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    plan_path = Path(cfg.plan.out or work / "plan" / "plan.json")
    cfg.plan.out = str(plan_path)
    resolved = work / "demo_config.yaml"
    resolved.write_text(to_yaml(cfg))
    t0 = time.perf_counter()

    t = _step(1, f"synth -> {cfg.synth.out_dir}")
    from recsys_dist.data.synth import synthesize

    report = synthesize(cfg.synth)
    # The day split tests on the last day: compare with the generator's AUC on that day.
    files = report["files"]
    bayes = list(files.values())[-1]["bayes_auc"] if len(files) > 1 else report["bayes_auc"]
    print(f"  generator (Bayes) AUC {report['bayes_auc']:.4f} overall, {bayes:.4f} on the test data  "
          f"[{time.perf_counter() - t:.1f}s]")

    t = _step(2, f"prepare -> {cfg.prepare.out_dir}")
    from recsys_dist.data.criteo_prepare import prepare_criteo

    md = prepare_criteo(cfg.prepare)
    print("  rows: " + ", ".join(f"{k} {v.rows:,}" for k, v in md.splits.items())
          + f"; bad rows {md.bad_rows.get('count', 0)}  [{time.perf_counter() - t:.1f}s]")

    ranks = _ranks(args.nproc)
    t = _step(3, f"plan for {ranks} (CPU) -> {plan_path}")
    from recsys_dist.cli import main as cli_main

    rc = cli_main(["plan", "--config", str(resolved)])
    if rc:
        return rc
    print(f"  [{time.perf_counter() - t:.1f}s]")

    t = _step(4, f"train on {ranks} (torchrun) -> {cfg.train.out_dir}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
           "-m", "recsys_dist.cli", "train", "--config", str(resolved), f"sharding.plan={plan_path}"]
    print("  $ " + " ".join(cmd[2:]), flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    rc = subprocess.call(cmd, env=env)
    if rc:
        print(f"demo: training failed (exit {rc})", file=sys.stderr)
        return rc
    result = json.loads((Path(cfg.train.out_dir) / "result.json").read_text())
    print(f"  [{time.perf_counter() - t:.1f}s]")

    t = _step(5, "evaluate the checkpoint in 1 process" + (f" (resharded from the {args.nproc}-rank plan)"
                                                           if args.nproc > 1 else ""))
    from recsys_dist.evaluate import evaluate

    from recsys_dist.early_stopping import default_checkpoint

    ev = evaluate(cfg, default_checkpoint(cfg.train.out_dir), "test")  # the one train tested (the best)
    print(f"  [{time.perf_counter() - t:.1f}s]")

    print("\n=== recsys-dist demo ===")
    print(f"{f'test AUC ({args.nproc}-rank training)':<30} {result['test']['auc']:.4f}   logloss {result['test']['logloss']:.4f}")
    print(f"test AUC (evaluate, 1 process) {ev['auc']:.4f}   logloss {ev['logloss']:.4f}")
    print(f"generator (Bayes) AUC          {bayes:.4f}   gap {bayes - ev['auc']:+.4f}")
    print(f"train samples/s {result['samples_per_s']:,.0f} on {ranks}; "
          f"total {time.perf_counter() - t0:.0f}s; run folder {cfg.train.out_dir}")
    return 0
