"""Per-arch optimizer defaults (recsys_dist/arch_defaults.py): an arch's OPTIM_DEFAULTS reach the config when the
config sets no key of their group (dense optimizer, table optimizer, embedding L2), and never half-way."""

from __future__ import annotations

import pytest

from recsys_dist.arch_defaults import DENSE_KEYS, SPARSE_KEYS, arch_optim_defaults
from recsys_dist.config import OptimConfig, load_config, source_of
from recsys_dist.models.registry import ARCHES, arch_class

WITH_DEFAULTS = [a for a in ARCHES if arch_optim_defaults(a)]
WITH_DENSE_DEFAULTS = [a for a in WITH_DEFAULTS if set(DENSE_KEYS) & set(arch_optim_defaults(a))]
WITH_TABLE_DEFAULTS = [a for a in WITH_DEFAULTS if set(SPARSE_KEYS) & set(arch_optim_defaults(a))]


def test_some_arch_declares_defaults():
    """Guards against the hook being dropped silently: the arches whose optimizer defaults are set (docs/arches.md,
    "Defaults on data nobody tuned for")."""
    assert {"dlrm", "xdeepfm"} <= set(WITH_DENSE_DEFAULTS)
    assert "deepmr" in WITH_TABLE_DEFAULTS


@pytest.mark.parametrize("arch", WITH_DEFAULTS)
def test_arch_defaults_apply_when_nothing_is_set(arch, tmp_path):
    """Catches the arch's paper optimizer not reaching a config that sets none (the global Adagrad 0.01 instead),
    also when the file sets other optim keys."""
    expected = arch_optim_defaults(arch)
    cfg = load_config(None, [f"model.arch={arch}"])
    for key, value in expected.items():
        assert getattr(cfg.optim, key) == value
        assert source_of(cfg, f"optim.{key}") == f"the {arch} default"
    path = tmp_path / "c.yaml"
    path.write_text(f"model: {{arch: {arch}}}\noptim: {{warmup_steps: 10, beta2: 0.99}}\n")
    cfg = load_config(path)
    assert {k: getattr(cfg.optim, k) for k in expected} == expected
    assert (cfg.optim.warmup_steps, cfg.optim.beta2) == (10, 0.99)


def _assert_global_group(cfg, keys, given: str) -> None:
    """Every `optim.<key>` of `keys` is the global default, except the one `given` (section.key=value) sets."""
    key, value = given.split("=")
    base = OptimConfig()
    for k in keys:
        want = getattr(base, k) if f"optim.{k}" != key else type(getattr(base, k))(value)
        assert getattr(cfg.optim, k) == want, k


@pytest.mark.parametrize("arch", WITH_DENSE_DEFAULTS)
@pytest.mark.parametrize("given", ["optim.dense_lr=0.05", "optim.dense=sgd", "optim.dense_eps=1e-6"])
def test_a_given_dense_key_keeps_the_global_defaults(arch, given):
    """Catches a learning rate chosen for one optimizer paired with the arch's other one (e.g. the docs'
    `optim.dense_lr=0.05`, meant for Adagrad, given to Adam): any dense key set -> none of the arch's applies."""
    _assert_global_group(load_config(None, [f"model.arch={arch}", given]), DENSE_KEYS, given)


@pytest.mark.parametrize("arch", WITH_TABLE_DEFAULTS)
@pytest.mark.parametrize("given", ["optim.sparse_lr=0.02", "optim.sparse=adam", "optim.sparse_eps=1e-6"])
def test_a_given_table_key_keeps_the_global_table_defaults(arch, given):
    """Catches a table learning rate paired with the arch's other table optimizer or eps (e.g. a lazy Adam lr
    with row-wise Adagrad's eps 0.01), and the arch's dense defaults lost when only a table key is given."""
    cfg = load_config(None, [f"model.arch={arch}", given])
    _assert_global_group(cfg, SPARSE_KEYS, given)
    for k, v in arch_optim_defaults(arch).items():
        if k not in SPARSE_KEYS:
            assert getattr(cfg.optim, k) == v, k


def test_only_optimizer_keys_may_be_declared(monkeypatch):
    """Catches an arch default leaking into other optim keys (arch_lr, weight decay), which the group rule does not
    cover."""
    monkeypatch.setattr(arch_class("dlrm"), "OPTIM_DEFAULTS", {"arch_lr": 0.1}, raising=False)
    with pytest.raises(TypeError, match="OPTIM_DEFAULTS may set only dense, dense_lr, dense_eps, sparse, sparse_lr, "
                                        "sparse_eps, embedding_l2, not arch_lr"):
        load_config(None, ["model.arch=dlrm"])


def test_embedding_l2_default_is_its_own_group(monkeypatch):
    """An arch's embedding_l2 applies unless the config sets optim.embedding_l2 (0 turns it off), whatever dense
    key is given. Catches the regularization lost when a user only changes the dense learning rate, or kept when
    the user sets 0."""
    monkeypatch.setattr(arch_class("dlrm"), "OPTIM_DEFAULTS", {"dense": "adam", "embedding_l2": 0.2})
    assert load_config(None, ["model.arch=dlrm"]).optim.embedding_l2 == 0.2
    cfg = load_config(None, ["model.arch=dlrm", "optim.dense_lr=0.05"])
    assert (cfg.optim.embedding_l2, cfg.optim.dense) == (0.2, OptimConfig().dense)
    assert source_of(cfg, "optim.embedding_l2") == "the dlrm default"
    cfg = load_config(None, ["model.arch=dlrm", "optim.embedding_l2=0"])
    assert (cfg.optim.embedding_l2, cfg.optim.dense) == (0.0, "adam")
