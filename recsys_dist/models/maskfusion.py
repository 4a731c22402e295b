"""MaskFusion (Liao et al., Kuaishou): the field embeddings, masked per instance, fused into every DNN layer.

MaskFusion replaces the DNN tower of any arch (DLRM, DCN, DCNv2, IPNN, DeepFM, xDeepFM, AutoInt+): the tower keeps
its input x and widths, and each layer t additionally sees the n x d field embeddings E (eq. 1-2, 5):

    h_t     = ReLU(W_t h^_{t-1} + b_t)                                   (eq. 1; the last layer has no ReLU)
    h^_t    = Concate([m_t E, h_t])                                      (eq. 2 with the mask of eq. 5)
    alpha_t = MLP_{phi_t}(E)                   one mask generator per DNN layer, t = 1..l     (eq. 3)
    m_{t,j} = exp(alpha_{t,j}) / sum_{t'=1..l} exp(alpha_{t',j})   softmax over the l layers  (eq. 4)
    IN(e_j) = gamma (e_j - mu_j) / sqrt(sigma_j^2 + eps) + beta,  gamma = 1, beta = 0 fixed   (eq. 6)

Here E is fused into the input of each of the l layers (h^_0 = [m_1 E, x]), so l masks select among all l
layers, as in the paper's Figure 9. The fused E is instance-normalized per field (eq. 6); the mask generators
read the raw E (eq. 3).

Variants (the ablation rows of the paper's Tables 2 and 7), chosen by `variant`:
    fusion  Fusion layer only: m_t = 1.
    fwm     Feature-wise Mask: one learned beta in R^{l x n} shared by all instances, softmax over l (eq. 4).
    fwmf    Adaptive FwMF: generator t outputs alpha_t in R^n (one value per field).
    dwmf    Adaptive DwMF: generator t outputs alpha_t in R^{n*d} (one value per field and dimension).

In a config: `model.arch_args.mask_fusion: {variant: dwmf, generator: [512, 256]}` on any arch above.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from recsys_dist.models.mlp import MLP

VARIANTS = ("fusion", "fwm", "fwmf", "dwmf")


@dataclass(frozen=True)
class MaskFusionOptions:
    """The `mask_fusion` arch argument, checked.

    variant: fusion | fwm | fwmf | dwmf; generator: hidden widths of each mask generator MLP (Appendix A:
    [512, 256]); instance_norm: eq. 6 on the fused embeddings; eps: eq. 6's epsilon.
    """

    variant: str = "dwmf"
    generator: Tuple[int, ...] = (512, 256)
    instance_norm: bool = True
    eps: float = 1e-5

    @staticmethod
    def parse(args: Mapping[str, Any] | "MaskFusionOptions", where: str = "mask_fusion") -> "MaskFusionOptions":
        if isinstance(args, MaskFusionOptions):
            return args
        if not isinstance(args, Mapping):
            raise ValueError(f"{where}: expected a mapping like {{variant: dwmf, generator: [512, 256]}}, "
                             f"got {args!r}")
        known = {"variant", "generator", "instance_norm", "eps"}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; it takes {', '.join(sorted(known))}")
        opts = MaskFusionOptions(
            variant=str(args.get("variant", "dwmf")),
            generator=tuple(args.get("generator", (512, 256))),
            instance_norm=bool(args.get("instance_norm", True)),
            eps=float(args.get("eps", 1e-5)),
        )
        if opts.variant not in VARIANTS:
            raise ValueError(f"{where}.variant={opts.variant!r} is not one of {', '.join(VARIANTS)}")
        if any((not isinstance(w, int)) or w <= 0 for w in opts.generator):
            raise ValueError(f"{where}.generator={list(opts.generator)}: expected positive integer widths")
        if opts.eps <= 0:
            raise ValueError(f"{where}.eps={opts.eps} must be > 0")
        return opts


class FieldInstanceNorm(nn.Module):
    """MaskFusion eq. 6: each field embedding of each instance normalized over its d dims, gamma=1, beta=0 fixed.

    Args:
        eps: added to the variance.
    Shapes: [B, n, d] -> [B, n, d]; no parameters.

    Example:
        >>> y = FieldInstanceNorm()(torch.randn(4, 3, 8))
        >>> bool(y.mean(-1).abs().max() < 1e-5)
        True
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        # instance norm with one "channel" per field = normalizing the last dim of [B, n, d]
        return nn.functional.layer_norm(fields, fields.shape[-1:], eps=self.eps)


class MaskController(nn.Module):
    """MaskFusion eq. 3-4: l masks for n fields (x d dims), softmax-normalized across the l layers.

    Args:
        variant: fwm (one learned beta [l, n] for every instance), fwmf (alpha_t in R^n from MLP_{phi_t}(E)),
            dwmf (alpha_t in R^{n*d}).
        num_layers: l, the number of DNN layers.
        num_fields, embedding_dim: n and d.
        generator: hidden widths of each MLP_{phi_t}; its output layer (n or n*d) is linear.
    Shapes: forward(E [B, n, d]) -> masks [B or 1, l, n, 1 or d], summing to 1 over dim 1.

    Example:
        >>> mc = MaskController("dwmf", num_layers=3, num_fields=4, embedding_dim=2, generator=[8])
        >>> mc(torch.randn(5, 4, 2)).shape
        torch.Size([5, 3, 4, 2])
    """

    def __init__(self, variant: str, num_layers: int, num_fields: int, embedding_dim: int,
                 generator: Sequence[int] = (512, 256)) -> None:
        super().__init__()
        if variant not in ("fwm", "fwmf", "dwmf"):
            raise ValueError(f"MaskController: variant {variant!r} has no masks (fwm | fwmf | dwmf)")
        self.variant, self.l, self.n, self.d = variant, num_layers, num_fields, embedding_dim
        if variant == "fwm":
            # zeros: every layer starts with the same weight 1/l, then beta is learned (Table 2, "FwM")
            self.beta = nn.Parameter(torch.zeros(num_layers, num_fields))
            self.generators = None
        else:
            out = num_fields if variant == "fwmf" else num_fields * embedding_dim
            self.generators = nn.ModuleList(
                nn.Sequential(MLP(num_fields * embedding_dim, list(generator)), nn.Linear(generator[-1], out))
                if generator else nn.Linear(num_fields * embedding_dim, out)
                for _ in range(num_layers)
            )

    def logits(self, fields: torch.Tensor) -> torch.Tensor:
        """alpha [B or 1, l, n, 1 or d] before the softmax of eq. 4."""
        if self.generators is None:
            return self.beta.view(1, self.l, self.n, 1)
        flat = fields.flatten(1)
        last = 1 if self.variant == "fwmf" else self.d
        return torch.stack([g(flat) for g in self.generators], dim=1).view(-1, self.l, self.n, last)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(fields), dim=1)  # eq. 4: over the l layers, per field (and dim)


class MaskFusionDNN(nn.Module):
    """A DNN tower with MaskFusion (eq. 1-6): every layer's input is [m_t * IN(E), h_{t-1}].

    Args:
        in_features: width of the tower's own input x.
        layers: widths of the DNN layers, e.g. [512, 256, 1]; ReLU on all but the last.
        num_fields, embedding_dim: n and d of the fused embeddings E.
        options: MaskFusionOptions or its mapping form, e.g. {"variant": "fwmf", "generator": [512, 256]}.
    Shapes: forward(x [B, in_features], fields [B, n, d]) -> [B, layers[-1]].

    Example:
        >>> dnn = MaskFusionDNN(10, [16, 1], num_fields=3, embedding_dim=4, options={"generator": [8]})
        >>> dnn(torch.randn(2, 10), torch.randn(2, 3, 4)).shape
        torch.Size([2, 1])
    """

    def __init__(self, in_features: int, layers: Sequence[int], num_fields: int, embedding_dim: int,
                 options: Mapping[str, Any] | MaskFusionOptions) -> None:
        super().__init__()
        self.options = MaskFusionOptions.parse(options)
        if not layers:
            raise ValueError("mask_fusion: the DNN tower needs at least one layer")
        if self.options.instance_norm and embedding_dim < 2:
            raise ValueError(f"mask_fusion: instance norm (eq. 6) needs embedding_dim >= 2, got {embedding_dim}")
        fused = num_fields * embedding_dim
        widths = [in_features] + list(layers)
        self.linears = nn.ModuleList(nn.Linear(fused + widths[t], widths[t + 1]) for t in range(len(layers)))
        self.norm = FieldInstanceNorm(self.options.eps) if self.options.instance_norm else nn.Identity()
        self.controller: Optional[MaskController] = (
            None if self.options.variant == "fusion"
            else MaskController(self.options.variant, len(layers), num_fields, embedding_dim, self.options.generator)
        )

    def masks(self, fields: torch.Tensor) -> Optional[torch.Tensor]:
        """[B or 1, l, n, 1 or d] masks (eq. 4), or None for the Fusion-only variant."""
        return None if self.controller is None else self.controller(fields)

    def forward(self, x: torch.Tensor, fields: torch.Tensor) -> torch.Tensor:
        e = self.norm(fields)  # eq. 6
        masks = self.masks(fields)  # eq. 3-4
        h = x
        last = len(self.linears) - 1
        for t, linear in enumerate(self.linears):
            fused = e if masks is None else masks[:, t] * e  # eq. 5: m_t E, feature-wise (or dim-wise)
            h = linear(torch.cat([fused.flatten(1), h], dim=1))  # eq. 2 -> eq. 1
            if t < last:
                h = torch.relu(h)
        return h


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def extra_parameters(arch: str, inputs: Any, arch_args: Mapping[str, Any], mask_fusion: Mapping[str, Any],
                     embedding_rows: int) -> Dict[str, float]:
    """Parameters MaskFusion adds to `arch`, counted from the built models (embedding tables included).

    Args:
        arch: a registered arch name; arch_args: its baseline arguments (without mask_fusion).
        inputs: ArchInputs; mask_fusion: the MaskFusion options to compare with.
        embedding_rows: total rows of all tables (each of inputs.embedding_dim), e.g. sum(KAGGLE_ROWS).
    Returns: {"embedding", "base_dense", "maskfusion_dense", "extra", "extra_fraction"} where extra_fraction is
        extra / (embedding + base_dense), the quantity the paper's Table 3 reports (~0.1-0.2%).
    """
    from recsys_dist.models.registry import build_arch  # late: the registry imports every arch

    base = count_parameters(build_arch(arch, inputs, dict(arch_args)))
    fused = count_parameters(build_arch(arch, inputs, {**dict(arch_args), "mask_fusion": dict(mask_fusion)}))
    embedding = embedding_rows * inputs.embedding_dim
    return {"embedding": embedding, "base_dense": base, "maskfusion_dense": fused, "extra": fused - base,
            "extra_fraction": (fused - base) / (embedding + base)}



def criteo_report(dataset: str = "kaggle", embedding_dim: int = 16) -> str:
    """A markdown table of `extra_parameters` for the seven arches with their Criteo presets (configs/)."""
    from recsys_dist.config import load_config  # late: config imports the registry
    from recsys_dist.data.criteo_schema import CATEGORICAL_NAMES, KAGGLE_ROWS, NUM_DENSE, TERABYTE_MLPERF_ROWS
    from recsys_dist.models.arch import ArchInputs

    rows = sum(KAGGLE_ROWS if dataset == "kaggle" else TERABYTE_MLPERF_ROWS)
    inputs = ArchInputs(NUM_DENSE, CATEGORICAL_NAMES, embedding_dim)
    lines = ["| arch | variant | base params (M) | MaskFusion adds | % of model |", "|---|---|---|---|---|"]
    for arch in ("dlrm", "dcn", "dcnv2", "ipnn", "deepfm", "xdeepfm", "autoint"):
        if arch == "dlrm":  # the MaskFusion preset: DLRM with Appendix A's widths
            cfg = load_config(f"configs/maskfusion_criteo_{dataset}.yaml")
        else:
            cfg = load_config(f"configs/{arch}_criteo_{dataset}.yaml")
        args = {k: v for k, v in cfg.model.arch_args.items() if k != "mask_fusion"}
        for variant in ("fwmf", "dwmf"):
            r = extra_parameters(arch, inputs, args, {"variant": variant, "generator": [512, 256]}, rows)
            lines.append(f"| {arch} | {variant} | {(r['embedding'] + r['base_dense']) / 1e6:.2f} | "
                         f"{r['extra'] / 1e6:.3f} M | {100 * r['extra_fraction']:.3f}% |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m recsys_dist.models.maskfusion [kaggle|terabyte]
    import sys

    print(criteo_report(sys.argv[1] if len(sys.argv) > 1 else "kaggle"))
