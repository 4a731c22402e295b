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


def test_table_optimizers_one_spelling_on_both_devices():
    """optim.sparse=adam is a fused Adam on both devices (FBGEMM's on CUDA, recsys_dist.lazy_adam on CPU), with
    per-row bias correction and the config's betas; weight decay reaches FBGEMM's row-wise Adagrad (CUDA) as L2.
    Defect caught: Adam refused on CPU again, betas or weight decay dropped on the way to the kernels (FBGEMM's
    default weight_decay_mode ignores weight_decay)."""
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import WeightDecayMode
    from torchrec.distributed import embedding_lookup

    from recsys_dist.config import OptimConfig
    from recsys_dist.optim import fused_params

    cfg = load_config(None, ["optim.sparse=adam", "optim.beta1=0.8", "optim.beta2=0.99", "optim.weight_decay=0.1"])
    for device in ("cpu", "cuda"):
        p = fused_params(cfg.optim, device)
        assert (p["optimizer"].name, p["beta1"], p["beta2"], p["weight_decay"], p["use_rowwise_bias_correction"]) == \
            ("ADAM", 0.8, 0.99, 0.1, True)
    assert embedding_lookup.GroupedPooledEmbeddingsLookup._create_embedding_kernel.__module__ == \
        "recsys_dist.lazy_adam_kernel"
    p = fused_params(OptimConfig(weight_decay=0.1), "cuda")  # config refuses it on CPU (next tests)
    assert (p["optimizer"].name, p["weight_decay_mode"]) == ("EXACT_ROWWISE_ADAGRAD", WeightDecayMode.L2)


def test_fbgemm_cpu_rowwise_adagrad_ignores_weight_decay():
    """Why config refuses optim.weight_decay with rowwise_adagrad on CPU: FBGEMM's CPU kernel gives the same row
    with and without weight decay, in either weight-decay mode. If FBGEMM starts applying it, this fails and the
    refusal in config._check_table_optimizer can go."""
    import torch
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice,
        SplitTableBatchedEmbeddingBagsCodegen,
        WeightDecayMode,
    )

    rows = []
    for mode, wd in ((WeightDecayMode.NONE, 0.0), (WeightDecayMode.L2, 0.5), (WeightDecayMode.DECOUPLE, 0.5)):
        tbe = SplitTableBatchedEmbeddingBagsCodegen([(10, 4, EmbeddingLocation.HOST, ComputeDevice.CPU)],
                                                    optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD, learning_rate=0.1,
                                                    weight_decay=wd, weight_decay_mode=mode)
        with torch.no_grad():
            tbe.split_embedding_weights()[0].copy_(torch.arange(40.0).view(10, 4) / 40)
        (tbe(torch.tensor([1]), torch.tensor([0, 1])) * torch.tensor([[1.0, 2, 3, 4]])).sum().backward()
        rows.append(tbe.split_embedding_weights()[0][1].clone())
    assert not torch.equal(rows[0], torch.arange(4, 8.0) / 40)  # the row was updated
    assert torch.equal(rows[0], rows[1]) and torch.equal(rows[0], rows[2])


@pytest.mark.parametrize("overrides,message", [
    (["optim.sparse=adagrad", "optim.weight_decay=0.01"], "FBGEMM's fused adagrad has no weight decay"),
    (["optim.weight_decay=0.01"], "optim.sparse=rowwise_adagrad: FBGEMM's CPU kernel ignores it"),
    (["optim.sparse=sgd", "optim.weight_decay=0.01"], "FBGEMM's fused sgd has no weight decay"),
    (["optim.sparse=adam", "model.embedding_dtype=fp16"], "Adam on CPU keeps fp32 tables"),
    (["optim.sparse=adamw"], "optim.sparse='adamw' is not one of"),
    (["optim.beta2=1"], "optim.beta2=1.0 must be in [0, 1)"),
])
def test_table_optimizer_settings_no_kernel_applies_fail_before_work(tmp_path, overrides, message):
    """Exit 2 and one line naming the field, before any work. Defect caught: a table optimizer setting silently
    dropped (FBGEMM's element-wise Adagrad and SGD take no weight decay) or failing inside the job."""
    r = _cli("train", *overrides, f"train.out_dir={tmp_path / 'run'}")
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "run").exists()


def test_presets_load():
    from pathlib import Path

    presets = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))
    assert presets
    for p in presets:
        load_config(p)


# -- the same command line under torchrun / torchx as in one process --------------------------------------------
def _visible_options():
    import argparse

    from recsys_dist.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.help != argparse.SUPPRESS:
                for opt in action.option_strings:
                    yield name, opt


def test_every_option_passes_torchruns_parser():
    """Defect caught: an option that torchrun's parser (which abbreviates) takes for one of its own, e.g.
    `evaluate --run` ("ambiguous option: --run could match --run-path") or `demo --nproc`."""
    import argparse

    from torch.distributed.run import get_args_parser

    torchrun = get_args_parser()
    torchrun.exit_on_error = False
    options = list(_visible_options())
    assert ("evaluate", "--run-dir") in options and len(options) > 40
    for command, opt in options:
        for tail in ([opt, "x"], [f"{opt}=x"]):
            argv = ["--standalone", "--nproc-per-node", "2", "-m", "recsys_dist.cli", command, *tail]
            try:
                parsed = torchrun.parse_args(argv)
            except (argparse.ArgumentError, SystemExit) as e:
                pytest.fail(f"torchrun ... {command} {' '.join(tail)}: torchrun refuses it: {e}")
            assert parsed.training_script_args == [command, *tail], (command, tail)


def test_old_spellings_still_work_in_one_process():
    """Defect caught: renaming evaluate --run / demo --nproc for torchrun broke the old one-process spelling."""
    from recsys_dist.cli import parse_args

    assert parse_args(["evaluate", "--run", "runs/x"]).run == "runs/x"
    assert parse_args(["evaluate", "--run-dir", "runs/x"]).run == "runs/x"
    assert parse_args(["demo", "--nproc", "3"]).nproc == 3 and parse_args(["demo", "--ranks", "3"]).nproc == 3


def test_abbreviations_are_refused(capsys):
    """Defect caught: an abbreviation (train --max 3) that works in one process but not under torchrun, whose
    parser reads it as ambiguous among --max-restarts, --master-addr, ..."""
    from recsys_dist.cli import parse_args

    with pytest.raises(SystemExit) as e:
        parse_args(["train", "--max", "3"])
    assert e.value.code == 2 and "unrecognized arguments: --max" in capsys.readouterr().err


def test_overrides_may_follow_options():
    """Defect caught: `train k=v --config X k2=v2` refused (argparse ends a nargs='*' positional at an option)."""
    from recsys_dist.cli import parse_args

    args = parse_args(["train", "train.max_steps=3", "--config", "configs/dlrm_synthetic.yaml", "data.seed=4",
                       "--out", "o", "train.seed=5"])
    assert args.overrides == ["train.max_steps=3", "data.seed=4", "train.seed=5"] and args.out == "o"


# -- every numeric option range-checked, the message naming where the value was set ------------------------------
def _field_types():
    """'section.key' (or 'section.sub.key') -> its type hint, for every field of every config section."""
    import dataclasses
    import typing

    from recsys_dist.config import JobConfig

    out = {}

    def walk(cls, prefix):
        for name, hint in typing.get_type_hints(cls).items():
            if dataclasses.is_dataclass(hint):
                walk(hint, f"{prefix}{name}.")
            else:
                out[f"{prefix}{name}"] = hint

    walk(JobConfig, "")
    return out


def _numeric(hint) -> bool:
    import typing

    return hint in (int, float) or any(_numeric(a) for a in typing.get_args(hint))


def _out_of_range(spec: str):
    if spec.startswith(">="):
        return float(spec[2:]) - 1
    if spec.startswith(">"):
        return float(spec[1:])
    lo, hi = (float(x) for x in spec[1:-1].split(","))
    return lo if spec[0] == "(" else (hi if spec[-1] == ")" else hi + 1)


def test_every_numeric_field_has_a_range():
    """Defect caught: a numeric option without a range (optim.sparse_eps=-1 trained silently). A new numeric
    field fails here until it has an entry in recsys_dist.config.RANGES."""
    from recsys_dist.config import RANGES

    fields = {key for key, hint in _field_types().items() if _numeric(hint)}
    assert {"optim.sparse_eps", "data.batch_size", "train.max_steps", "synth.vocab_sizes"} <= fields
    missing = sorted(fields - set(RANGES))
    assert not missing, f"numeric config fields without a range in config.RANGES: {missing}"
    assert not set(RANGES) - fields, "RANGES names fields that do not exist"


@pytest.mark.parametrize("key", sorted(__import__("recsys_dist.config").config.RANGES))
def test_out_of_range_value_is_refused_naming_the_override(key):
    """Defect caught: a range that is not enforced, or an error blamed on a file the value did not come from."""
    from recsys_dist.config import RANGES

    hint = str(_field_types()[key])
    bad = _out_of_range(RANGES[key])
    value = str(int(bad) if "int" in hint else bad)
    value = f"[{value}]" if "List" in hint else value
    with pytest.raises(ConfigError) as e:
        load_config("configs/dlrm_synthetic.yaml", [f"{key}={value}"])
    assert str(e.value).startswith(f"override '{key}={value}': {key}") and "must be" in str(e.value), e.value


def test_message_names_the_file_or_the_override(tmp_path):
    """Defect caught: a bad value given on the command line blamed on the YAML file (or the other way round)."""
    p = tmp_path / "x.yaml"
    p.write_text("optim:\n  sparse_eps: -1\n  dense_lr: 0.1\n")
    with pytest.raises(ConfigError, match=rf"^{p}: optim.sparse_eps=-1.0 must be > 0"):
        load_config(p)
    assert load_config(p, ["optim.sparse_eps=0.5"]).optim.sparse_eps == 0.5  # the override replaces the bad value
    with pytest.raises(ConfigError, match=r"^override 'optim.dense_lr=0': optim.dense_lr=0.0 must be > 0"):
        load_config(p, ["optim.sparse_eps=0.5", "optim.dense_lr=0"])
    with pytest.raises(ConfigError, match=r"^override 'synth.vocab_sizes=\[5,0\]': synth.vocab_sizes\[1\]=0"):
        load_config(None, ["synth.vocab_sizes=[5,0]"])
    p.write_text("model:\n  arch_args: {bottom_mlp: [8, 4], nope: 1}\n")
    with pytest.raises(ConfigError, match=rf"^{p}: model: arch 'dlrm' has no argument.*nope"):
        load_config(p)


# -- data- and file-dependent errors: exit 2 and one message, before any process group or model ------------------
@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from prepared_fixtures import write_dataset

    root = tmp_path_factory.mktemp("cli_data")
    write_dataset(root, {"train": 64, "val": 32, "test": 32})
    return root


def _refused(capsys, *argv) -> str:
    """Runs the CLI in this process; asserts exit 2, no process group started, and returns the message."""
    import torch.distributed as dist

    assert main(list(map(str, argv))) == 2
    assert not dist.is_initialized()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_missing_data_dir_is_refused_before_work(tmp_path, capsys):
    """Defect caught: a missing data.dir found only after the process group and model were set up (a traceback
    on every rank)."""
    err = _refused(capsys, "train", "--data", tmp_path / "nope", "train.out_dir=" + str(tmp_path / "run"))
    assert f"override 'data.dir={tmp_path / 'nope'}': data.dir=" in err and "metadata.json: not found" in err
    assert not (tmp_path / "run").exists()


def test_arch_that_does_not_fit_the_data_is_refused(small_data, capsys):
    """Defect caught: arch arguments checked only when each rank builds the model (dlrm: bottom_mlp must end
    with the embedding dim)."""
    err = _refused(capsys, "train", "--data", small_data, "model.embedding_dim=16",
                   "model.arch_args={bottom_mlp: [32, 8]}")
    assert "override 'model.arch_args={bottom_mlp: [32, 8]}': model 'dlrm'" in err
    assert "bottom_mlp must end with the embedding dim 16, got [32, 8]" in err


def test_dlrm_default_bottom_mlp_follows_the_embedding_dim(small_data):
    """Defect caught: dlrm's default bottom MLP fixed at [512, 256, 64], so model.embedding_dim=16 alone failed."""
    from recsys_dist.data.metadata import Metadata
    from recsys_dist.preflight import check_job
    from recsys_dist.job import features_for
    from recsys_dist.models.model import build_model

    cfg = load_config(None, [f"data.dir={small_data}", "model.embedding_dim=16"])
    check_job(cfg, 1, ["train"])
    md = Metadata.load(small_data)
    model = build_model(features_for(cfg, md).tables, md.num_dense, "dlrm", {}, dense_device="meta")
    assert [m.out_features for m in model.dense_arch.bottom.modules() if hasattr(m, "out_features")][-1] == 16


def test_plan_file_for_other_world_size_or_tables_is_refused(small_data, tmp_path, capsys):
    """Defect caught: a plan file made for another world size or other tables found after the model was built
    (or not at all)."""
    plan = tmp_path / "plan.json"
    model = ["model.embedding_dim=8", "model.arch_args={bottom_mlp: [8], top_mlp: [8, 1]}"]
    assert main(["plan", "--world-size", "2", "--device", "cpu", "--out", str(plan), f"data.dir={small_data}",
                 *model]) == 0
    capsys.readouterr()
    err = _refused(capsys, "train", "--data", small_data, "--plan", plan, *model)
    assert f"override 'sharding.plan={plan}': sharding.plan: {plan}: plan made for world size 2, this job has 1" in err
    from recsys_dist.preflight import check_job

    cfg = load_config(None, [f"data.dir={small_data}", f"sharding.plan={plan}", "model.embedding_dim=4",
                             "model.arch_args={bottom_mlp: [4], top_mlp: [8, 1]}"])
    with pytest.raises(ConfigError, match=r"plan made for other tables \(different sizes: t_s0.dim: plan 8"):
        check_job(cfg, 2, ["train"], plan=cfg.sharding.plan)


def test_every_numeric_option_is_range_checked_naming_the_option(capsys):
    """Defect caught: a numeric command-line option without a range (plan --embedding-dim -4, demo --ranks 0
    went through), or its error not naming the option the user typed."""
    import argparse

    from recsys_dist.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    seen = 0
    for command, p in sub.choices.items():
        for action in p._actions:
            kind = getattr(action.type, "__name__", None)
            if kind not in ("int", "float"):
                continue
            spec = getattr(action.type, "spec", None)
            assert spec is not None, f"{command} {action.option_strings[0]}: numeric option without a range"
            bad = _out_of_range(spec)
            with pytest.raises(SystemExit) as e:
                main([command, action.option_strings[0], str(int(bad) if kind == "int" else bad)])
            assert e.value.code == 2
            assert f"argument {'/'.join(action.option_strings)}: " in capsys.readouterr().err
            seen += 1
    assert seen >= 15


def test_tables_larger_than_this_machine_are_refused_before_work(tmp_path, capsys):
    """Defect caught: a CPU job whose tables cannot fit the machine (OptInter's 325 cross tables at
    data.cross_table_rows=10M: 77 GiB on 23.5) started, built its process group and failed allocating them with a
    traceback; now exit 2 naming the need, the machine's memory and the key to lower. The same data with a row cap
    passes the check (seen failing without it: the test process was OOM-killed building the tables)."""
    from prepared_fixtures import write_dataset

    from recsys_dist.preflight import host_memory_bytes

    rows = host_memory_bytes() // (4 * 4) + 1  # one table of dim 4 whose fp32 weights alone exceed the machine
    write_dataset(tmp_path / "data", {"train": 64, "val": 32, "test": 32}, vocab=(7, 11, rows))
    err = _refused(capsys, "train", "--data", tmp_path / "data", "train.out_dir=" + str(tmp_path / "run"),
                   "model.embedding_dim=4", "model.arch_args={bottom_mlp: [8, 4], top_mlp: [8, 1]}")
    assert f"the largest t_s2: {rows:,} rows) but it has " in err and "lower model.max_rows_per_table" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    from recsys_dist.config import load_config
    from recsys_dist.preflight import check_job

    cfg = load_config(None, [f"data.dir={tmp_path / 'data'}", "model.embedding_dim=4", "model.max_rows_per_table=1000",
                             "model.arch_args={bottom_mlp: [8, 4], top_mlp: [8, 1]}"])
    check_job(cfg, 1, splits=["train"], here=True)  # capped: fits
