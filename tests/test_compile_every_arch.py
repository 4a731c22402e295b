"""train.compile for every arch: each registered arch (with the planted acceptance's arguments: MaskFusion's
variants, DynInt's three modes, OptFusion's search, OptInter's factorized model and its search over cross tables)
traces whole under Dynamo + AOTAutograd and gives eager's logits and gradients. The `aot_eager` backend runs the
traced graphs with ATen's kernels, so this checks what compiling can break (graph capture, functionalization of
in-place ops, custom autograd Functions, fx-wrapped leaves) in seconds; Inductor's code generation is checked
end to end through the CLI for DLRM and xDeepFM in tests/test_compile.py (minutes each on 2 cores)."""

from __future__ import annotations

import importlib

import pytest
import torch

from planted import SUITES, Exported
from recsys_dist.models.arch import ArchInputs
from recsys_dist.models.registry import ARCHES, build_arch

BASE = ("C1", "C2", "C3", "C4")
CROSSES = ("C1xC2", "C1xC3", "C1xC4", "C2xC3", "C2xC4", "C3xC4")


def _cases():
    cases = {}
    for suite in SUITES:
        for run in importlib.import_module(suite).PLANTED_RUNS:
            if not any(isinstance(v, Exported) for v in run.arch_args.values()):  # retrains: their search is here
                dim = next((int(o.split("=")[1]) for o in run.overrides
                            if isinstance(o, str) and o.startswith("model.embedding_dim=")), 16)  # PLANTED_SETTINGS'
                cases.setdefault(f"{run.arch}:{run.name}", (run.arch, dict(run.arch_args), dim))
    return cases


CASES = _cases()


def test_every_registered_arch_is_covered():
    """Catches an arch added to the registry (and to the planted acceptance) but not checked under compile."""
    assert {arch for arch, _, _ in CASES.values()} == set(ARCHES)


def _step(call, arch, dense, emb, seed):
    """call(dense, emb) -> logits, with a BCE loss (+ the arch's regularization) backward: (logits, the
    embeddings' gradient, the parameters' gradients)."""
    torch.manual_seed(seed)  # search stages sample (Gumbel noise), dropout: the same draws on both sides
    arch.zero_grad(set_to_none=True)
    d, e = dense.clone().requires_grad_(), emb.clone().requires_grad_()
    logits = call(d, e)
    labels = torch.rand(logits.shape, generator=torch.Generator().manual_seed(1))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    reg = arch.regularization_loss()
    (loss + reg if reg is not None else loss).backward()
    grads = {n: p.grad.clone() for n, p in arch.named_parameters() if p.grad is not None}
    return logits.detach(), e.grad, grads


@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_arch_gives_eager_logits_and_gradients(case):
    """Defect caught: an arch that does not trace (an untraceable op, a graph break inside a custom autograd
    Function) or whose traced graph computes something else (an in-place op lost in functionalization, a
    Python-side branch frozen at trace time): compile would fail or train a different model."""
    name, args, dim = CASES[case]
    features = BASE + (CROSSES if args.get("methods") == "search" else ())  # OptInter's search: cross tables
    torch.manual_seed(0)
    arch = build_arch(name, ArchInputs(num_dense=3, feature_names=features, embedding_dim=dim), args).train()
    dense, emb = torch.rand(16, 3), torch.randn(16, len(features), dim)
    want = _step(arch, arch, dense, emb, seed=5)
    got = _step(torch.compile(arch.forward, backend="aot_eager", dynamic=False), arch, dense, emb, seed=5)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6, msg=lambda m: f"{case} logits: {m}")
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-6, msg=lambda m: f"{case} input grad: {m}")
    assert got[2].keys() == want[2].keys(), case
    for n in want[2]:
        torch.testing.assert_close(got[2][n], want[2][n], rtol=1e-5, atol=1e-6, msg=lambda m: f"{case} {n}: {m}")
