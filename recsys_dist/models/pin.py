"""PIN / xDeepInt (Yan & Li 2020; restated in DynInt, Yan & Li, DLP-KDD 2022, Sec. 3 and 3.1).

A Polynomial Interaction Network layer with residual connection (DynInt eq. 3):

    X_l = X_{l-1} o (W_{l-1} . X_0) + X_{l-1}            X_l, X_0 in R^{F x D},  W_{l-1} in R^{F x F}

where o is the Hadamard product and X_0 = [x_0; ...; x_{F-1}] the field embedding map (eq. 1). L layers give
polynomial interactions of degree up to L + 1 with no activation. The output layer is a dense layer over the
field dimension (eq. 2):

    y_hat = sigmoid((W_out X_L + b_out 1^T) 1)           W_out in R^{1 x F},  b_out in R

Subspace crossing (xDeepInt): the D columns are split into h sub-spaces of D / h columns, which are stacked as
extra rows, so the map the layers see is X_0' in R^{(h F) x (D / h)} and W in R^{hF x hF}. h = 1 is purely
vector-wise (a field interacts as a whole vector, one weight per field pair); h = D is purely bit-wise (each
embedding coordinate is its own row, as in DCN-v2). The layers' output is merged back to F x D before eq. 2.
Numeric features enter either as bucketized categorical fields (prepare.dense = bucketize, num_dense = 0, as the
paper does) or raw, each projected to one extra field x_j v_j (recsys_dist.models.numeric_fields).

`PINArch` is the shared frame (fields -> sub-spaces -> layers -> eq. 2); `XDeepIntArch` fills it with static
`PINLayer`s and DynInt (recsys_dist.models.dynint) with instance-aware ones.

Example:
    >>> arch = XDeepIntArch(ArchInputs(0, ("C1", "C2", "C3"), 8), num_layers=2, num_subspaces=4)
    >>> arch(torch.zeros(4, 0), torch.rand(4, 3, 8)).shape
    torch.Size([4])
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from recsys_dist.models.arch import ArchInputs, DenseArch
from recsys_dist.models.numeric_fields import NumericFields


def split_subspaces(x: torch.Tensor, h: int) -> torch.Tensor:
    """[B, F, D] -> [B, h*F, D/h]: sub-space s of field f becomes row s*F + f (xDeepInt's split + concat)."""
    B, F, D = x.shape
    return x.reshape(B, F, h, D // h).transpose(1, 2).reshape(B, h * F, D // h)


def merge_subspaces(x: torch.Tensor, h: int) -> torch.Tensor:
    """Inverse of `split_subspaces`: [B, h*F, D/h] -> [B, F, D]."""
    B, R, C = x.shape
    return x.reshape(B, h, R // h, C).transpose(1, 2).reshape(B, R // h, h * C)


class PINLayer(nn.Module):
    r"""One static PIN layer with residual (DynInt eq. 3): X_l = X_{l-1} o (W_{l-1} . X_0) + X_{l-1}.

    Args:
        num_rows: R, rows of the (sub-space) field map: F, or h*F with subspace crossing.

    Call:
        x [B, R, C] (X_{l-1}), x0 [B, R, C] (X_0) -> [B, R, C]

    Example:
        >>> layer = PINLayer(3)
        >>> x0 = torch.rand(2, 3, 4)
        >>> layer(x0, x0).shape
        torch.Size([2, 3, 4])
    """

    def __init__(self, num_rows: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_rows, num_rows))
        bound = 1.0 / math.sqrt(num_rows)  # nn.Linear's default range for fan_in = R
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return x * torch.matmul(self.weight, x0) + x


class PINArch(DenseArch):
    """The PIN frame shared by xDeepInt and DynInt: field map -> sub-spaces -> `layers` -> output layer (eq. 2).

    Args:
        inputs: ArchInputs; F = num_dense + num_sparse fields of dim D.
        num_subspaces: h, must divide D (1 = vector-wise ... D = bit-wise).
        build_layers: (R = h*F rows, context size F*D) -> the layers, each called as layer(X_{l-1}, X_0).
    """

    def __init__(self, inputs: ArchInputs, num_subspaces: int,
                 build_layers: Callable[[int, int], Sequence[nn.Module]]) -> None:
        super().__init__(inputs)
        D = inputs.embedding_dim
        if not isinstance(num_subspaces, int) or num_subspaces < 1 or D % num_subspaces != 0:
            raise ValueError(f"num_subspaces must be a positive divisor of the embedding dim {D}, got {num_subspaces}")
        self.fields = NumericFields(inputs.num_dense, D)
        self.num_fields = self.fields.num_fields(inputs.num_sparse)
        if self.num_fields == 0:
            raise ValueError("PIN needs at least one field (dense or sparse)")
        self.num_subspaces = num_subspaces
        self.num_rows = num_subspaces * self.num_fields
        self.layers = nn.ModuleList(build_layers(self.num_rows, self.num_fields * D))
        self.out_weight = nn.Parameter(torch.empty(self.num_fields))  # W_out in R^{1 x F}
        nn.init.uniform_(self.out_weight, -1.0 / math.sqrt(self.num_fields), 1.0 / math.sqrt(self.num_fields))
        self.out_bias = nn.Parameter(torch.zeros(()))  # b_out

    def field_map(self, dense: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """X_0 with subspace crossing: [B, h*F, D/h]."""
        return split_subspaces(self.fields(dense, embeddings), self.num_subspaces)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 2 without the sigmoid, on the merged map [B, F, D]: (W_out X + b 1^T) 1 -> [B]."""
        return torch.einsum("bfd,f->b", x, self.out_weight) + self.out_bias * x.shape[-1]

    def forward(self, dense: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        x0 = self.field_map(dense, embeddings)
        x = x0
        for layer in self.layers:
            x = layer(x, x0)
        return self.output(merge_subspaces(x, self.num_subspaces))


class XDeepIntArch(PINArch):
    """xDeepInt: L static PIN layers (eq. 3) with subspace crossing and the eq. 2 output layer.

    Args:
        inputs: ArchInputs (num_dense raw numeric features become extra fields; 0 with bucketized numerics).
        num_layers: L, the PIN depth (interaction degree up to L + 1); the paper searches 1..4.
        num_subspaces: h, a divisor of D; the paper uses h = 16 with D = 16 on Criteo (bit-wise).

    Example:
        >>> arch = XDeepIntArch(ArchInputs(13, ("C1", "C2"), 16), num_layers=3, num_subspaces=16)
        >>> arch(torch.rand(4, 13), torch.rand(4, 2, 16)).shape
        torch.Size([4])
    """
    # The dense optimizer when a config sets none (recsys_dist/arch_defaults.py): Adam, as the xDeepInt / DynInt
    # papers train the dense part (the preset's Adam 1e-3), at 3e-3 like DLRM / DeepFM. With the global Adagrad
    # 0.01, xDeepInt was the last arch on UCI Adult (test AUC 0.896; Adam 3e-3: 0.911): docs/arches.md,
    # "Defaults on data nobody tuned for".
    OPTIM_DEFAULTS = {"dense": "adam", "dense_lr": 3e-3}


    def __init__(self, inputs: ArchInputs, num_layers: int = 3, num_subspaces: int = 1) -> None:
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        super().__init__(inputs, num_subspaces, lambda rows, _ctx: [PINLayer(rows) for _ in range(num_layers)])
