"""TorchRec's MLP, run through `recsys_dist.models.onednn_linear.linear`.

    h_t = act(W_t h_{t-1} + b_t),  t = 1..l   (act = ReLU, or identity on the last layer if activation_on_last=False)

Same constructor, parameters and state-dict names as `torchrec.modules.mlp.MLP` (it is a subclass), so weights
move between the two freely; only the forward differs: ReLU / identity layers go through the oneDNN path on CPU
fp32 (fused ReLU, faster GEMMs), any other activation runs TorchRec's Perceptron unchanged.

Example:
    >>> MLP(6, [8, 1], activation="relu", activation_on_last=False)(torch.randn(2, 6)).shape
    torch.Size([2, 1])
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.mlp import MLP as TorchRecMLP

from recsys_dist.models.onednn_linear import linear

torch.fx.wrap("linear")  # a leaf in TorchRec's pipeline tracing: its branches look at tensor attributes


class MLP(TorchRecMLP):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = input
        for layer in self._mlp:
            act = layer._activation_fn
            if act is torch.relu or isinstance(act, (nn.ReLU, nn.Identity)):
                x = linear(x, layer._linear.weight, layer._linear.bias, relu=not isinstance(act, nn.Identity))
            else:
                x = layer(x)
        return x
