"""The README's command block, run as written on a fresh folder (only smaller: overrides appended), in order: each
command exits 0 and the next one finds what the previous one wrote. The block once trained a preset whose data
folder no command of it had written, and planned a Criteo preset's dataset that a fresh clone has not."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from test_cli_launch import _env, failure_text

REPO = Path(__file__).resolve().parents[1]
# Appended to the README's commands so that the chain takes seconds (the README's own sizes take minutes).
SMALLER = {"synth": ["synth.rows_per_day=3000"], "plan": ["--time-budget", "1"],
           "train": ["train.max_steps=6", "train.threads=1", "train.tensorboard=false"]}


def readme_commands() -> list:
    text = (REPO / "README.md").read_text()
    block = text[text.index("## Commands"):]
    block = block[block.index("```bash\n") + 8:]
    block = block[:block.index("```")]
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line and not line.startswith(".")]


def test_readme_command_block_runs_in_order_on_a_fresh_folder(tmp_path):
    """Catches a README command that fails on a fresh clone (a preset whose data no earlier command wrote, a
    renamed flag), or a chain whose commands write and read different folders."""
    (tmp_path / "configs").symlink_to(REPO / "configs")
    commands = readme_commands()
    assert len(commands) >= 5 and {c[0] for c in commands} == {"recsys-dist", "torchrun"}, commands
    for argv in commands:
        if argv[0] == "recsys-dist":
            cmd = [sys.executable, "-m", "recsys_dist.cli", *argv[1:]]
            name = argv[1]
        else:
            assert argv[0] == "torchrun" and argv[argv.index("-m") + 1] == "recsys_dist.cli"
            cmd = [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
            name = argv[argv.index("-m") + 2]
        cmd += SMALLER.get(name, [])
        r = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{' '.join(argv)}: exit {r.returncode}\n{failure_text(r)}"
    run = tmp_path / "runs" / "dlrm_synthetic"
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == 6 and result["world_size"] == 2
    evaluated = json.loads(r.stdout[r.stdout.index("{\n"):])
    assert abs(evaluated["auc"] - result["test"]["auc"]) < 1e-5, (evaluated, result["test"])  # 1 process vs 2 ranks
