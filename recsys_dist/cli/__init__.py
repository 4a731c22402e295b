"""`recsys-dist`: one subcommand per module in this package (synth, prepare, plan, train, evaluate, compare, demo).

Every subcommand takes `--config FILE.yaml` and `section.key=value` overrides (recsys_dist.config), and checks
the whole configuration before it starts any work. Commands parse the same under torchrun / torchx as in one
process: no option is a prefix of one of torchrun's (torchrun's parser abbreviates), and ours take no
abbreviations. Commands that are one process by nature (synth, prepare, plan, demo: RANK0_ONLY in their module)
do their work on rank 0 when launched on several ranks.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from typing import List, Optional

from recsys_dist.config import ConfigError

COMMANDS = {
    "synth": "Criteo-format TSV day files with a planted, learnable signal (and its Bayes AUC)",
    "prepare": "raw Criteo TSV / gz -> Parquet shards + metadata.json",
    "plan": "sharding plan + report for this or a hypothetical cluster",
    "train": "train (one process, or one rank of a torchrun / torchx job)",
    "evaluate": "AUC / logloss of a checkpoint on a data split",
    "compare": "train several arches / configs x seeds on one dataset -> a Markdown + HTML leaderboard",
    "demo": "the embedded default: synth -> prepare -> plan -> 2-rank training -> evaluate, on this machine",
}


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.yaml", help="a preset from configs/ or your own YAML")
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="override any config value, e.g. train.max_steps=100 model.embedding_dim=16")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys-dist", allow_abbrev=False,
        description="Distributed, embedding-heavy CTR training on TorchRec. "
        "Every command takes --config FILE.yaml plus section.key=value overrides.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in COMMANDS.items():
        module = importlib.import_module(f"recsys_dist.cli.{name}")
        p = sub.add_parser(name, help=summary, description=module.__doc__, allow_abbrev=False,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_config_arguments(p)
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _parser=p, _rank0_only=getattr(module, "RANK0_ONLY", False))
    return parser


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Like parse_args, but `section.key=value` overrides may also come after options (`--config X k=v --out Y
    k2=v2`), which argparse alone refuses."""
    args, rest = build_parser().parse_known_args(argv)
    unknown = [a for a in rest if a.startswith("-") or "=" not in a]
    if unknown:
        args._parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = list(args.overrides) + rest
    return args


def _drop_known_noise(record: logging.LogRecord) -> bool:
    # TorchRec logs this for every data-parallel table (they have no sharding spec by design).
    return not record.getMessage().startswith("Sharding spec not found")


def main(argv: Optional[List[str]] = None) -> int:
    if not os.environ.get("RECSYS_DIST_VERBOSE"):  # library deprecation chatter; RECSYS_DIST_VERBOSE=1 shows it
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        logging.getLogger().addFilter(_drop_known_noise)
    args = parse_args(argv)
    if args._rank0_only and int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("RANK", "0") != "0":
        return 0  # a one-process command under torchrun / torchx: rank 0 does the work
    try:
        return int(args._run(args) or 0)
    except ConfigError as e:
        print(f"recsys-dist {args.command}: config error: {e}", file=sys.stderr)
        return 2


def entry() -> None:
    """The process entry point (`recsys-dist`, `python -m recsys_dist.cli`): main(), then an exit that skips the
    interpreter's teardown of native libraries once every output is closed. That teardown aborted about 1 exit
    in 100 of a finished 2-rank `train` ("terminate called without an active exception", exit -6 / 134, after
    result.json and the printed result: 2 in ~250 torchrun runs here; the last CI failed on one). An error
    still exits through Python (traceback, exit 1)."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    dist = sys.modules.get("torch.distributed")  # loaded by every command that joins a process group
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    entry()
