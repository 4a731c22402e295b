"""The torchx component checks the job while it builds the AppDef (recsys_dist/submit_check.py): a bad config
stops `torchx run` with one line and exit 2 before any rank starts; files are looked for only where the check
mode says (a submit host may not hold them)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prepared_fixtures import write_dataset

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIG = str(REPO / "configs/dlrm_synthetic.yaml")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("submit") / "data"
    write_dataset(root, {"train": 64, "val": 32, "test": 32})
    return root


@pytest.mark.parametrize("bad, message", [
    ("optim.sparse_eps=-1", "override 'optim.sparse_eps=-1': optim.sparse_eps=-1.0 must be > 0"),
    ("model.arch_args={bottom_mlp: [16, 4], top_mlp: [16, 1]}",
     "override 'model.arch_args={{bottom_mlp: [16, 4], top_mlp: [16, 1]}}': model 'dlrm' on data.dir='{data}' "
     "(3 tables of dim 16, 3 dense features): dlrm: bottom_mlp must end with the "
     "embedding dim 16, got [16, 4]"),
])
def test_torchx_run_refuses_a_bad_config_before_any_rank(data, tmp_path, bad, message):
    """Catches a component that builds the AppDef without checking the config (the job starts and every rank
    fails under torchrun's failure summary), one that checks the data-dependent part (the arch on the dataset's
    tables) only on the ranks, and a refusal that prints a traceback or exits 1 instead of one line and 2."""
    out = tmp_path / "run"
    cmd = [str(BIN / "torchx"), "run", "-s", "local_cwd", "launch/components.py:train", "-j", "1x2",
           "--max_retries", "0", "--config", CONFIG, "--", f"data.dir={data}", f"train.out_dir={out}", bad]
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONPATH=str(REPO))
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == [
        f"torchx component train: config error: {message.format(data=data)} (nothing submitted)"], r.stderr
    assert "local_cwd://" not in r.stdout + r.stderr and not out.exists()  # no app handle, no rank wrote a file


def test_component_looks_for_files_only_where_the_check_mode_says(data, monkeypatch):
    """Catches a component that refuses a job whose files live only on the cluster (auto: data.dir or a plan
    missing on this host), one that skips the data checks where the data is here, and --check all / config / none
    not doing what docs/launch.md says."""
    monkeypatch.chdir(REPO)
    sys.path.insert(0, str(REPO))
    from launch.components import train
    from recsys_dist.config import ConfigError

    ok = [f"data.dir={data}"]
    elsewhere = ["data.dir=/shared/prepared", "sharding.plan=/shared/plans/plan.json", "train.resume=/shared/ck"]
    bad_arch = ok + ["model.arch_args={bottom_mlp: [16, 4], top_mlp: [16, 1]}"]
    for check in ("auto", "config", "none"):
        train(*elsewhere, config=CONFIG, check=check)  # builds: the files may exist where the ranks run
    with pytest.raises(ConfigError, match=r"^override 'data.dir=/shared/prepared': .*metadata.json: not found"):
        train("data.dir=/shared/prepared", config=CONFIG, check="all")
    with pytest.raises(ConfigError, match=r"^override 'sharding.plan=.*': sharding.plan=.*: file not found"):
        train(*ok, "sharding.plan=/shared/plans/plan.json", config=CONFIG, check="all")
    for check in ("auto", "all"):  # the data is on this host: the arch is built on its tables
        with pytest.raises(ConfigError, match="bottom_mlp must end with the embedding dim 16"):
            train(*bad_arch, config=CONFIG, check=check)
    train(*bad_arch, config=CONFIG, check="config")
    for check in ("auto", "all", "config"):  # no file needed: always checked, for every world size of -j
        with pytest.raises(ConfigError, match="data.batch_size=6 is not divisible by the world size 4"):
            train(*ok, "data.batch_size=6", "data.eval_batch_size=12", config=CONFIG, j="1:2x2", check=check)
        with pytest.raises(ConfigError, match="optim.sparse_eps=-1.0 must be > 0"):
            train("optim.sparse_eps=-1", config=CONFIG, check=check)
    train("optim.sparse_eps=-1", config="/app/configs/in_the_image.yaml", check="none")
    with pytest.raises(ConfigError, match="config file not found on this host: /app/configs/in_the_image.yaml"):
        train(config="/app/configs/in_the_image.yaml")
