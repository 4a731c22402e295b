"""DLRM (Naumov et al. 2019): bottom MLP on dense features, pairwise dot interaction, top MLP.

    z0 = MLP_bottom(x_dense)                         [B, D]   (last bottom layer width = embedding dim D)
    Z  = [z0; e_1; ...; e_F]                         [B, F+1, D]
    p  = [z0, <Z_i, Z_j> for i < j]                  [B, D + (F+1)F/2]
    y  = MLP_top(p)   (no activation on the output)  [B]

The layers compute what TorchRec's `torchrec.models.dlrm` DenseArch / InteractionArch / OverArch compute (tests
check values and gradients against them), with the CPU-fast pieces: TorchRec's MLP through oneDNN
(recsys_dist.models.mlp) and a one-GEMM-backward dot interaction (recsys_dist.models.dot_interaction).
Under bf16 autocast (train.mixed_precision=bf16) the MLPs run in bf16; the interaction and the logit layer stay
fp32 (their rounding moved the test AUC most, for ~5% of the FLOPs; docs/benchmarks.md "Precision").

Args:
    inputs: ArchInputs (num_dense > 0 for the bottom MLP).
    bottom_mlp: widths of the bottom MLP; the last must equal the embedding dim D (default [512, 256, D]).
    top_mlp: widths of the top MLP; the last must be 1.
    mask_fusion: None, or MaskFusion options (recsys_dist.models.maskfusion) for the top MLP, which then fuses
        the fields [z0; e_1; ...; e_F] into each of its layers.

Example:
    >>> arch = DLRMArch(ArchInputs(13, ("C1", "C2"), 8), bottom_mlp=[16, 8], top_mlp=[16, 1])
    >>> arch(torch.rand(4, 13), torch.rand(4, 2, 8)).shape
    torch.Size([4])
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recsys_dist.models.arch import ArchInputs, DenseArch
from recsys_dist.models.dot_interaction import DotInteraction
from recsys_dist.models.maskfusion import MaskFusionDNN
from recsys_dist.models.mlp import MLP


class DLRMArch(DenseArch):
    # The dense optimizer when a config sets none (recsys_dist/arch_defaults.py). DLRM's paper and TorchRec's
    # example train with SGD / Adagrad on billions of Criteo rows; with Adagrad 0.01 on data nobody tuned for
    # (UCI Adult) DLRM stays below a logistic regression (test AUC 0.879 vs 0.900); Adam, the optimizer of the
    # DCN / xDeepFM / AutoInt papers, gives 0.910-0.911 at lr 1e-3 (their value) or 3e-3. 3e-3 because the
    # planted data's 1 epoch of ~100 steps needs it (1e-3: 0.728, 3e-3: 0.742, Bayes 0.754): docs/arches.md,
    # "Defaults on data nobody tuned for".
    OPTIM_DEFAULTS = {"dense": "adam", "dense_lr": 3e-3}

    def __init__(self, inputs: ArchInputs, bottom_mlp: Optional[Sequence[int]] = None,
                 top_mlp: Sequence[int] = (512, 512, 256, 1),
                 mask_fusion: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(inputs)
        D, F = inputs.embedding_dim, inputs.num_sparse
        bottom_mlp = [512, 256, D] if bottom_mlp is None else bottom_mlp  # the paper's 512-256-64, ending in D
        if inputs.num_dense <= 0:
            raise ValueError("dlrm needs dense features for its bottom MLP (dataset has num_dense = 0)")
        if not bottom_mlp or bottom_mlp[-1] != D:
            raise ValueError(f"dlrm: bottom_mlp must end with the embedding dim {D}, got {list(bottom_mlp)}")
        if len(top_mlp) < 2 or top_mlp[-1] != 1:
            raise ValueError(f"dlrm: top_mlp must have at least two widths and end with 1, got {list(top_mlp)}")
        self.bottom = MLP(inputs.num_dense, list(bottom_mlp), activation="relu")      # ReLU on every layer
        self.interaction = DotInteraction(num_sparse_features=F)
        top_in = D + (F + 1) * F // 2
        self.mask_fusion = mask_fusion is not None
        self.top = (MaskFusionDNN(top_in, list(top_mlp), F + 1, D, mask_fusion) if self.mask_fusion
                    else nn.Sequential(MLP(top_in, list(top_mlp[:-1]), activation="relu"),
                                       nn.Linear(top_mlp[-2], 1)))    # TorchRec's OverArch: no ReLU on the logit

    def forward(self, dense: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        z0 = self.bottom(dense)
        x = self.interaction(z0, embeddings)
        if self.mask_fusion:
            return self.top(x, torch.cat([z0.unsqueeze(1), embeddings], dim=1)).squeeze(-1)
        hidden, out = self.top
        return fp32_logit(hidden(x), out.weight, out.bias).squeeze(-1)


def fp32_logit(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The 1-wide output layer, in fp32 also under autocast: the logit the loss sees keeps fp32's precision."""
    with torch.autocast(h.device.type, enabled=False):
        return F.linear(h.float(), weight.float(), bias.float())


torch.fx.wrap("fp32_logit")  # a leaf in TorchRec's pipeline tracing
