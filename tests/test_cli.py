"""The command line: --help explains itself; config errors are caught before any work starts."""

import subprocess
import sys

import pytest

from recsys_dist.cli import COMMANDS, main
from recsys_dist.config import ConfigError, load_config


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "recsys_dist.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_help_lists_every_command():
    r = _cli("--help")
    assert r.returncode == 0
    for name in COMMANDS:
        assert name in r.stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "section.key=value" in out


def test_unknown_key_is_named_before_work(tmp_path):
    r = _cli("train", "train.no_such_key=1", f"train.out_dir={tmp_path / 'run'}")
    assert r.returncode == 2
    assert "train.no_such_key" in r.stderr
    assert not (tmp_path / "run").exists()  # nothing started


def test_bad_value_type_is_named(tmp_path):
    r = _cli("train", "data.batch_size=lots")
    assert r.returncode == 2
    assert "data.batch_size" in r.stderr and "lots" in r.stderr


def test_bad_choice_and_range(tmp_path):
    with pytest.raises(ConfigError, match="optim.sparse='adamw' is not one of"):
        load_config(None, ["optim.sparse=adamw"])
    with pytest.raises(ConfigError, match="data.batch_size=0 must be > 0"):
        load_config(None, ["data.batch_size=0"])
    with pytest.raises(ConfigError, match="sharding.plan='nope.json': file not found"):
        load_config(None, ["sharding.plan=nope.json"])


def test_unknown_arch_and_arch_args(tmp_path):
    with pytest.raises(ConfigError, match="unknown arch 'nope'"):
        load_config(None, ["model.arch=nope"])
    with pytest.raises(ConfigError, match="has no argument.*foo"):
        load_config(None, ["model.arch_args={foo: 1}"])


def test_config_file_errors_name_the_file(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("train:\n  epochs: [1, 2]\n")
    with pytest.raises(ConfigError, match=str(p)):
        load_config(p)
    p.write_text("train: {epochs: 1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_adam_on_cpu_is_refused_up_front():
    from recsys_dist.optim import fused_params

    cfg = load_config(None, ["optim.sparse=adam"])
    with pytest.raises(ConfigError, match="CUDA-only"):
        fused_params(cfg.optim, "cpu")
    assert fused_params(cfg.optim, "cuda")["optimizer"].name == "ADAM"


def test_presets_load():
    from pathlib import Path

    presets = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))
    assert presets
    for p in presets:
        load_config(p)
