"""xDeepFM (Lian et al. 2018): linear part + Compressed Interaction Network (CIN) + DNN.

    X^0 = [e_dense; e_1; ...; e_F]                                                  [B, m, D]
    X^k_{h,*} = sum_{i=1..H_{k-1}} sum_{j=1..m} W^{k,h}_{ij} (X^{k-1}_{i,*} o X^0_{j,*})   (xDeepFM eq. 6)
    p^k_h = sum_{d=1..D} X^k_{h,d}                      sum pooling                        (xDeepFM eq. 7)
    logit = <w, x> + w_cin^T [p^1, ..., p^T] + DNN(X^0) + b                      (xDeepFM Sec. 3.3)

With split_half (the authors' code), each layer but the last sends half of its H_k maps to the output p^k and
half to the next layer. <w, x> is DeepFM's `FirstOrder` (a linear function of each field's embedding).

Args:
    inputs: ArchInputs (num_dense may be 0).
    cin_layers: H_1..H_T, the feature maps per CIN layer (even when split_half).
    split_half: see above.
    dnn: DNN widths ending with 1; dense_mlp: hidden widths of the numeric-feature MLP.
    mask_fusion: None, or MaskFusion options for the DNN tower.

Example:
    >>> arch = XDeepFMArch(ArchInputs(13, ("C1", "C2"), 8), cin_layers=[4, 4], dnn=[16, 1], dense_mlp=[16])
    >>> arch(torch.rand(4, 13), torch.rand(4, 2, 8)).shape
    torch.Size([4])
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from recsys_dist.models.arch import ArchInputs, DenseArch
from recsys_dist.models import cin_kernel
from recsys_dist.models.deepfm import FirstOrder
from recsys_dist.models.dnn import NumericMLPField, build_dnn


class CIN(nn.Module):
    """Compressed Interaction Network (xDeepFM eq. 6-7): [B, m, D] -> pooled maps p^+ [B, sum of output maps].

    Args:
        num_fields: m; layers: H_1..H_T; split_half: half of each non-last layer's maps go to the output.
    `self.weights[k]` is W^{k+1} with shape [H_{k+1}, H_k, m] (H_0 = m). Each layer is `cin_kernel.cin_layer`:
    chunked GEMMs that never hold the [B, H_k, m, D] outer products (xDeepFM's cost is its 2 D H_{k+1} H_k m
    FLOPs per sample and layer, forward).

    Example:
        >>> cin = CIN(3, [4, 2])
        >>> cin(torch.randn(5, 3, 8)).shape   # 4/2 + 2 pooled maps
        torch.Size([5, 4])
    """

    def __init__(self, num_fields: int, layers: Sequence[int], split_half: bool = True) -> None:
        super().__init__()
        if not layers or any((not isinstance(h, int)) or h <= 0 for h in layers):
            raise ValueError(f"xdeepfm: cin_layers must be positive integers, got {list(layers)}")
        if split_half and any(h % 2 for h in layers[:-1]):
            raise ValueError(f"xdeepfm: with split_half, cin_layers (but the last) must be even, got {list(layers)}")
        self.split_half = split_half
        self.weights = nn.ParameterList()
        self.output_dim = 0
        prev = num_fields
        for k, h in enumerate(layers):
            w = torch.empty(h, prev, num_fields)
            nn.init.xavier_uniform_(w.view(h, prev * num_fields))
            self.weights.append(nn.Parameter(w))
            keep = h // 2 if split_half and k < len(layers) - 1 else h
            self.output_dim += keep
            prev = h - keep if split_half and k < len(layers) - 1 else h

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        pooled = []
        x0 = x0.transpose(1, 2).contiguous()  # [B, D, m]: the maps are kept as [B, D, H] (cin_kernel's layout)
        xk = x0
        last = len(self.weights) - 1
        for k, w in enumerate(self.weights):
            xk = cin_kernel.cin_layer(xk, x0, w)  # eq. 6 (module attribute: fx.wrap patches it there), [B, D, H_k]
            if self.split_half and k < last:
                half = xk.shape[2] // 2
                out, xk = xk[:, :, :half], xk[:, :, half:].contiguous()
            else:
                out = xk
            pooled.append(out.sum(dim=1))  # eq. 7
        return torch.cat(pooled, dim=1)

    def forward_einsum(self, x0: torch.Tensor) -> torch.Tensor:
        """forward as eq. 6 reads: one einsum over the [B, H, m, D] outer products (slow, memory-hungry); the
        reference the chunked kernel is tested and benchmarked against."""
        pooled, xk, last = [], x0, len(self.weights) - 1
        for k, w in enumerate(self.weights):
            xk = torch.einsum("bid,bjd,hij->bhd", xk, x0, w)
            if self.split_half and k < last:
                out, xk = xk[:, : xk.shape[1] // 2], xk[:, xk.shape[1] // 2:]
            else:
                out = xk
            pooled.append(out.sum(dim=2))
        return torch.cat(pooled, dim=1)


class XDeepFMArch(DenseArch):
    # The dense optimizer when a config sets none (recsys_dist/arch_defaults.py): Adam, the xDeepFM paper's
    # (lr 1e-3), at 3e-3 like DLRM / DeepFM / xDeepInt / DeepMR. With the global Adagrad 0.01 its
    # planted gap (1 process) was 0.0148, with Adam 3e-3 0.0125 (6e-3: 0.0117); UCI Adult: docs/arches.md,
    # "Optimizer defaults, measured on both".
    OPTIM_DEFAULTS = {"dense": "adam", "dense_lr": 3e-3}

    def __init__(self, inputs: ArchInputs, cin_layers: Sequence[int] = (200, 200, 200), split_half: bool = True,
                 dnn: Sequence[int] = (512, 256, 1), dense_mlp: Sequence[int] = (512, 256, 64),
                 mask_fusion: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(inputs)
        self.fields = NumericMLPField(inputs, dense_mlp)
        n, d = self.fields.num_fields, inputs.embedding_dim
        self.first_order = FirstOrder(inputs.num_dense, inputs.num_sparse, d)
        self.cin = CIN(n, list(cin_layers), split_half)
        self.cin_logit = nn.Linear(self.cin.output_dim, 1, bias=False)
        self.dnn = build_dnn(n * d, dnn, n, d, mask_fusion, arch="xdeepfm")

    def forward(self, dense: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        fields = self.fields(dense, embeddings)
        y = self.first_order(dense, embeddings) + self.cin_logit(self.cin(fields)) + self.dnn(fields.flatten(1), fields)
        return y.squeeze(-1)
