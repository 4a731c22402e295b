"""The benchmarks must not rot: the roofline's FLOP count against the hand count, the breakdown's interval
arithmetic, and one benchmark's --small path end to end (benchmarks/ is not part of the package)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from recsys_dist.malloc import _glibc

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))


def test_roofline_flops_equal_the_hand_count():
    """DLRM fwd + bwd: every Linear 3x its forward (input grad + weight grad) except the first bottom layer
    (the dense input needs no grad), the interaction bmm 3x (both operands get grads)."""
    import bench_roofline

    s = dict(dim=8, bottom=[16, 8], top=[32, 16, 1])
    B, F, D = 4, 26, 8

    def lin(dims):
        return sum(2 * B * i * o for i, o in zip(dims[:-1], dims[1:]))

    bottom, top = [13] + s["bottom"], [D + (F + 1) * F // 2] + s["top"]
    expected = 3 * lin(bottom) - 2 * B * 13 * 16 + 3 * lin(top) + 3 * (2 * B * (F + 1) * (F + 1) * D)
    assert bench_roofline.count_flops(s, B) == expected


def test_breakdown_interval_arithmetic():
    from bench_pipeline_breakdown import _intersect_len, _length, _union

    u = _union([(0, 4), (2, 6), (8, 9)])
    assert u == [(0, 6), (8, 9)]
    assert _length(u) == 7
    assert _intersect_len(u, [(5, 8.5)]) == 1.5


def test_input_pipeline_small_runs_and_prints_its_ratio():
    p = subprocess.run([sys.executable, str(BENCH / "bench_input_pipeline.py"), "--small"], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("ratio reader batches/s on one core / train steps/s")
    assert float(last.rsplit(":", 1)[1]) > 0


def test_dense_arch_small_runs_checks_equal_logits_and_prints_its_ratio():
    p = subprocess.run([sys.executable, str(BENCH / "bench_dense_arch.py"), "--small", "--rounds", "1", "--steps", "1"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "max |logit difference| ours vs reference" in p.stdout
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("ratio reference / ours dense step time")
    assert float(last.rsplit(":", 1)[1]) > 0


def test_arches_small_prints_a_row_per_case_with_every_column():
    """bench_arches.py --small: DLRM, xDeepFM and an OptInter retrain (an exported search architecture, cross ids
    made at batch time) each give samples/s, FLOPs, roofline ratio, peak memory and input / step; and each case
    ran with the allocator tuned as `train` runs (dist_env.setup_compute): without it every row says False."""
    p = subprocess.run([sys.executable, str(BENCH / "bench_arches.py"), "--small"], capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    if _glibc() is not None:
        tuned = [x for x in p.stdout.splitlines() if "malloc tuned: " in x]
        assert len(tuned) == 3 and all("malloc tuned: True" in x for x in tuned), p.stdout
    rows = [x for x in p.stdout.splitlines() if x.startswith("| ") and not x.startswith("| case")]
    assert [r.split(" | ")[0][2:] for r in rows] == ["dlrm", "xdeepfm", "optinter retrain"]
    for r in rows:
        cells = [c.strip().split(" ")[0].replace(",", "") for c in r.strip("|").split("|")[3:]]
        assert all(float(c) > 0 for c in cells), r
    assert "351 x 20" in rows[2]  # 26 fields + the retrain's memorized crosses
    assert p.stdout.strip().splitlines()[-1].startswith("worst step / roofline:")


def test_cin_small_checks_equal_values_and_prints_its_ratio():
    p = subprocess.run([sys.executable, str(BENCH / "bench_cin.py"), "--small", "--rounds", "1", "--reps", "1"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    gap = float(p.stdout.split("max |difference| chunked vs einsum ")[1].split()[0])
    assert gap < 1e-4
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("ratio einsum / chunked CIN step time") and float(last.rsplit(":", 1)[1]) > 0


def test_dwp_kernel_small_prints_its_ratio():
    """Catches bench_dwp_kernel.py breaking (the preset's arch_args, the layer swap, the ratio line)."""
    p = subprocess.run([sys.executable, str(BENCH / "bench_dwp_kernel.py"), "--batch", "32", "--rounds", "1",
                        "--steps", "1"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("ratio autograd / fused CPU seconds per step")
    assert float(last.split("median ")[1].split()[0]) > 0


def test_linear_choice_small_prints_the_choice_and_a_step_ratio():
    """Catches bench_linear_choice.py breaking (the per-shape lines, the rule's tally, the DCN step ratio)."""
    p = subprocess.run([sys.executable, str(BENCH / "bench_linear_choice.py"), "--small"], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "rule picks the faster path for" in p.stdout and "rule picks MKL" in p.stdout
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("dcn (batch 128): rule") and float(last.split("ratio oneDNN / rule ")[1].split()[0]) > 0


def test_table_optimizers_small_prints_a_ratio_per_optimizer():
    """bench_table_optimizers --small (1M vs 100k rows, one round) runs each optimizer and prints its ratio; the
    dense alternative's cost follows the table size (ratio well above 1 even at 1M rows)."""
    import re

    p = subprocess.run([sys.executable, str(BENCH / "bench_table_optimizers.py"), "--small"], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    ratios = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+) .* ratio\s+([\d.]+)", p.stdout, re.M)}
    assert set(ratios) == {"lazy_adam", "fbgemm_rowwise", "dense_adam"}, p.stdout
    assert ratios["dense_adam"] > 3, p.stdout


class _Wrap(torch.nn.Module):
    def __init__(self, fn, module=None):
        super().__init__()
        self.fn, self.inner = fn, module

    def forward(self, dense, emb):
        return self.fn(emb)


def test_arches_flops_count_the_cin_weight_gradient_and_cpu_fused_attention():
    """FlopCounterMode has no formula for the in-place addmm_ (the CIN kernel's weight gradient) nor for the CPU
    fused attention: without bench_arches' own formulas xDeepFM's FLOPs were 2/3 of the truth and DeepMR's attention
    counted 0, which inflated their step / roofline ratios."""
    import bench_arches
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    from recsys_dist.models.xdeepfm import CIN

    B, m, D, layers = 3, 4, 5, [6, 4]
    cin = CIN(m, layers, split_half=False)
    counted = bench_arches.count_flops(_Wrap(lambda e: cin(e).sum(1), cin), torch.zeros(B, 0),
                                       torch.randn(B, m, D, requires_grad=True))
    gemm = sum(2 * B * D * h * h_prev * m for h_prev, h in zip([m] + layers, layers))  # forward mm per layer
    bmm = sum(4 * B * D * h_prev * m for h_prev in [m] + layers[:-1])  # backward's two bmms per layer
    assert counted == 3 * gemm + bmm  # forward + weight gradient (addmm_) + input gradient, and the bmms

    H, N, d = 2, 7, 4
    shape = (B, H, N, d)
    attend = _Wrap(lambda e: torch.nn.functional.scaled_dot_product_attention(
        *e.view(B, 3, H, N, d).unbind(1)).sum((1, 2, 3)))
    counted = bench_arches.count_flops(attend, torch.zeros(B, 0), torch.randn(B, 3 * H * N * d, requires_grad=True))
    assert counted == sdpa_flop_count(shape, shape, shape) + sdpa_backward_flop_count(shape, shape, shape, shape)


def test_arches_flops_count_deepmr_as_the_papers_model():
    """DeepMR runs cheaper ops for the same math (attention at input width, FFN's second layer on summed rows);
    the roofline's FLOPs stay the paper model's (hand count below) and the executed ones are fewer. Defect caught:
    count_flops counting the executed ops, which would shrink DeepMR's FLOPs and so flatter its step / roofline."""
    import bench_arches
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    from recsys_dist.models.arch import ArchInputs
    from recsys_dist.models.deepmr import DeepMRArch

    B, N, D, W, H = 3, 5, 4, 16, 2
    arch = DeepMRArch(ArchInputs(0, tuple(f"C{i}" for i in range(N)), D), width=W, num_heads=H, num_dnn_layers=0)
    emb = torch.randn(B, N, D, requires_grad=True)
    paper = bench_arches.count_flops(arch, torch.zeros(B, 0), emb)
    executed = bench_arches.count_flops(arch, torch.zeros(B, 0), emb, paper_model=False)
    rows = B * N
    linear = 2 * rows * D * W + 2 * rows * D * 3 * W + 2 * rows * D * W + 2 * 2 * rows * W * W  # DNN, QKV, res, FFN
    head = (B, H, N, W // H)
    assert paper == 3 * linear + sdpa_flop_count(head, head, head) + sdpa_backward_flop_count(head, head, head, head)
    assert executed < paper


def _run_with_differences(script: str, *args: str):
    """Runs a benchmark that prints "settings: ... max |difference| output X, gradients (...) Y": (the process,
    that line, X, Y)."""
    p = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    settings = next(x for x in p.stdout.splitlines() if x.startswith("settings:"))
    return p, settings, float(settings.split("output ")[1].split(",")[0]), float(settings.rsplit(" ", 1)[1])


def test_fusion_ops_small_checks_equal_values_and_prints_its_ratio():
    """bench_fusion_ops.py: OptFusion's per-input fusion against the former stacked formulas; the outputs and
    gradients must agree (a wrong per-input formula shows as a large difference) and the ratio line prints."""
    p, settings, out_diff, grad_diff = _run_with_differences("bench_fusion_ops.py", "--batch", "64", "--dim", "40",
                                                             "--rounds", "2")
    assert out_diff < 1e-5 and grad_diff < 1e-4, settings
    assert float(p.stdout.strip().splitlines()[-1].rsplit(":", 1)[1]) > 0


def test_arch_memory_lists_each_case_allocations():
    """bench_arch_memory.py --only dcn: one row with the step's peak, the largest allocation and the op that made
    it (a profiler walk that finds no allocation would print 0 allocations; seen failing with the walk not
    descending into child events: 0 allocations)."""
    p = subprocess.run([sys.executable, str(BENCH / "bench_arch_memory.py"), "--only", "dcn"], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    line = next(x for x in p.stdout.splitlines() if x.startswith("dcn: batch 128"))
    assert int(line.split(" allocations")[0].rsplit(" ", 1)[1]) > 50, line
    assert "aten::" in line and "0 over 32 MiB" in line, line


def test_deepmr_attention_small_checks_equal_values_and_prints_its_ratio():
    """bench_deepmr_attention.py: DeepMR's cheaper ops against the paper's; outputs and gradients must agree (a wrong
    rewrite shows as a large difference) and the ratio line prints for each chunk size."""
    p, settings, out_diff, grad_diff = _run_with_differences("bench_deepmr_attention.py", "--batch", "64",
                                                             "--rounds", "2", "--chunk-mib", "0.5,4")
    assert out_diff < 1e-4 and grad_diff < 1e-4, settings
    ratios = [x for x in p.stdout.splitlines() if x.startswith("ratio paper ops / cheaper ops")]
    assert len(ratios) == 2 and all(float(x.rsplit(":", 1)[1]) > 0 for x in ratios), p.stdout


def test_score_chunks_prints_equal_aucs_and_its_ratio(tmp_path):
    """bench_score_chunks.py on a tiny prepared dataset (eval batch 64, training batch 16: 4 chunks a batch):
    both ways give the same val AUC, and the ratio line is printed (a chunk size of 0, i.e. the model never
    chunking, would print one case only; seen failing with the chunks reversed: AUC 0.501 vs 0.553)."""
    from prepared_fixtures import write_dataset

    write_dataset(tmp_path / "data", {"train": 256, "val": 200, "test": 64})
    p = subprocess.run([sys.executable, str(BENCH / "bench_score_chunks.py"), "--data", str(tmp_path / "data"),
                        "--rounds", "2", "data.batch_size=16", "data.eval_batch_size=64", "model.embedding_dim=4",
                        "model.arch_args={bottom_mlp: [8, 4], top_mlp: [8, 1]}"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rounds = [x for x in p.stdout.splitlines() if x.startswith("round ")]
    assert sum("chunks of 16" in x for x in rounds) == 2 and sum("whole batch" in x for x in rounds) == 2, rounds
    assert len({x.rsplit("val AUC ", 1)[1].split()[0] for x in rounds}) == 1, rounds
    assert float(p.stdout.strip().splitlines()[-1].rsplit(":", 1)[1]) > 0
