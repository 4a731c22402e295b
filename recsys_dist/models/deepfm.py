"""DeepFM (Guo et al. 2017, "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction").

    logit = y_FM + y_DNN                                                 (DeepFM eq. 1, before the sigmoid)
    y_FM  = <w, x> + sum_{i<j} <V_i, V_j> x_i x_j                        (DeepFM eq. 2)
          = first_order + 1/2 sum_f [ (sum_i e_if)^2 - sum_i e_if^2 ]   (Rendle 2010, Lemma 3.1)
    y_DNN = DNN([e_dense, e_1, ..., e_F])                                (DeepFM eq. 3-4)

The FM and the DNN share the field embeddings e_i = V_i x_i (the numeric features form one more field, as in
MaskFusion's Appendix A). <w, x> has no per-id scalar tables in this project's [B, F, D] interface: it is
w_0 + <w_dense, x_dense> + sum_i <u_i, e_i>, a linear function of each field's embedding (`FirstOrder`).
TorchRec's `FactorizationMachine` is not used: it sums over all F*D scalars as if each were its own field,
which is not eq. 2 for D > 1.

Args:
    inputs: ArchInputs (num_dense may be 0).
    dnn: DNN widths ending with 1; dense_mlp: hidden widths of the numeric-feature MLP.
    mask_fusion: None, or MaskFusion options for the DNN tower.

Example:
    >>> arch = DeepFMArch(ArchInputs(13, ("C1", "C2"), 8), dnn=[16, 1], dense_mlp=[16])
    >>> arch(torch.rand(4, 13), torch.rand(4, 2, 8)).shape
    torch.Size([4])
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from recsys_dist.models.arch import ArchInputs, DenseArch
from recsys_dist.models.dnn import NumericMLPField, build_dnn


class FMSecondOrder(nn.Module):
    """sum_{i<j} <e_i, e_j> = 1/2 sum_f [(sum_i e_if)^2 - sum_i e_if^2] (Rendle 2010, Lemma 3.1).

    Shapes: [B, n, d] -> [B, 1].

    Example:
        >>> FMSecondOrder()(torch.ones(1, 3, 2))   # 3 pairs x <1, 1> = 3 x 2
        tensor([[6.]])
    """

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        square_of_sum = fields.sum(dim=1).pow(2)  # [B, d]
        sum_of_square = fields.pow(2).sum(dim=1)  # [B, d]
        return 0.5 * (square_of_sum - sum_of_square).sum(dim=1, keepdim=True)


class FirstOrder(nn.Module):
    """The FM's <w, x>: w_0 + <w_dense, x_dense> + sum_i <u_i, e_i> (u_i in R^d per sparse field).

    Args:
        num_dense: numeric features (0: no dense term); num_fields, embedding_dim: of the sparse fields.
    Shapes: forward(dense [B, num_dense], embeddings [B, F, d]) -> [B, 1].

    Example:
        >>> FirstOrder(13, 2, 8)(torch.rand(4, 13), torch.rand(4, 2, 8)).shape
        torch.Size([4, 1])
    """

    def __init__(self, num_dense: int, num_fields: int, embedding_dim: int) -> None:
        super().__init__()
        self.sparse = nn.Linear(num_fields * embedding_dim, 1)  # its bias is w_0
        self.dense = nn.Linear(num_dense, 1, bias=False) if num_dense > 0 else None

    def forward(self, dense: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        y = self.sparse(embeddings.flatten(1))
        return y if self.dense is None else y + self.dense(dense)


class DeepFMArch(DenseArch):
    # The dense optimizer when a config sets none (recsys_dist/arch_defaults.py): Adam, the DeepFM paper's
    # (Sec. 3.1, no learning rate given). With the global Adagrad 0.01 DeepFM trailed the other arches on UCI
    # Adult (test AUC 0.899; Adam 1e-3 / 3e-3: 0.909 / 0.908); 3e-3 because the planted data's 1 epoch of ~100
    # steps needs it (1e-3: 0.718, 3e-3: 0.734, Bayes 0.754): docs/arches.md, "Defaults on data nobody tuned for".
    # embedding_l2 0.2 (recsys_dist/embedding_l2.py): the FM sums pass every looked-up row to the logit unweighted,
    # so rare ids of signal-free fields are memorized; on the planted data (1 process) 0.1-0.5 take DeepFM's gap
    # 0.023 -> 0.015 (0.2: 0.0151), DeepFM + Fusion 0.029 -> 0.019; it hurts DLRM, DCN-style arches and xDeepInt.
    OPTIM_DEFAULTS = {"dense": "adam", "dense_lr": 3e-3, "embedding_l2": 0.2}

    def __init__(self, inputs: ArchInputs, dnn: Sequence[int] = (512, 256, 1),
                 dense_mlp: Sequence[int] = (512, 256, 64), mask_fusion: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(inputs)
        self.fields = NumericMLPField(inputs, dense_mlp)
        n, d = self.fields.num_fields, inputs.embedding_dim
        self.first_order = FirstOrder(inputs.num_dense, inputs.num_sparse, d)
        self.fm = FMSecondOrder()
        self.dnn = build_dnn(n * d, dnn, n, d, mask_fusion, arch="deepfm")

    def forward(self, dense: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        fields = self.fields(dense, embeddings)
        y = self.first_order(dense, embeddings) + self.fm(fields) + self.dnn(fields.flatten(1), fields)
        return y.squeeze(-1)
