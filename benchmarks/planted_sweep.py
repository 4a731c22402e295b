"""A cheap sweep on the planted acceptance data (tests/planted.py): one process, the acceptance runs' arch
arguments and PLANTED_SETTINGS, each setting's test AUC and gap to the generator's AUC on the test rows.

    python benchmarks/planted_sweep.py --data /tmp/planted --run dlrm --run deepfm \
        --setting "" --setting "optim.embedding_l2=1e-5" --setting "optim.embedding_l2=1e-4 optim.sparse_lr=0.05"

`--run` names a run of the acceptance files' PLANTED_RUNS (e.g. dlrm, deepfm, deepfm+fusion, xdeepint; OptFusion's
soft / hard read the architecture.json of a `select` run listed before them in the same setting); a
setting is space-separated section.key=value overrides ("" = the defaults). --data DIR is made once (synth +
prepare, ~1 min) and reused. 1 process, not the acceptance's 2 ranks: the gaps agree to ~0.001. Results:
docs/arches.md, "Acceptance on planted data".
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def planted_runs():
    sys.path.insert(0, str(ROOT / "tests"))
    import planted

    runs = {}
    for suite in planted.SUITES:
        for r in importlib.import_module(suite).PLANTED_RUNS:
            runs.setdefault(r.name, r)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder for the planted data (made if missing, then reused)")
    ap.add_argument("--run", action="append", required=True, help="a run name of the acceptance files")
    ap.add_argument("--setting", action="append", default=None, help="overrides, space-separated ('' = defaults)")
    args = ap.parse_args()
    runs = planted_runs()
    unknown = [r for r in args.run if r not in runs]
    if unknown:
        sys.exit(f"--run: unknown {unknown}; expected one of {', '.join(runs)}")
    import planted

    data_dir = Path(args.data)
    meta = data_dir / "planted.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        data = planted.PlantedData(Path(info["dir"]), Path(info["raw"]), info["bayes_auc"], {})
    else:
        data = planted.make_planted(data_dir)
        meta.write_text(json.dumps({"dir": str(data.dir), "raw": str(data.raw), "bayes_auc": data.bayes_auc}))
    from recsys_dist.config import ConfigError
    from recsys_dist.train import train

    print(f"generator AUC {data.bayes_auc:.4f}; load {open('/proc/loadavg').read().split()[:3]}", flush=True)
    for setting in args.setting or [""]:
        with tempfile.TemporaryDirectory() as root:  # one per setting: a retrain reads that setting's selection
            for name in args.run:
                run = runs[name]
                t = time.perf_counter()
                arch_args, overrides = planted.resolve(run, Path(root))
                cfg = planted.planted_config(data, Path(root) / name, run.arch, arch_args,
                                             [*overrides, *setting.split()])
                try:
                    auc = train(cfg)["test"]["auc"]
                except ConfigError as e:  # e.g. Hard retrain of a selection that has not decided
                    print(f"{name:16s} {setting or 'defaults':50s} refused: {e}", flush=True)
                    continue
                print(f"{name:16s} {setting or 'defaults':50s} test AUC {auc:.4f} gap {data.bayes_auc - auc:+.4f} "
                      f"({time.perf_counter() - t:.0f} s, load {open('/proc/loadavg').read().split()[0]})", flush=True)


if __name__ == "__main__":
    main()
