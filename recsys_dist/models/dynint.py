"""DynInt (Yan & Li, "DynInt: Dynamic Interaction Modeling for Large-scale CTR Prediction", DLP-KDD 2022).

DynInt makes xDeepInt's PIN layers (recsys_dist.models.pin, eq. 3) instance-aware. One arch, three modes:

- "da"  Dynamic Activation (eq. 4): each layer's interaction is gated by an instance-aware vector
        X_l = (X_{l-1} o (W_{l-1} . X_0)) o G_l^(i) + X_{l-1},   G_l^(i) = 2 * sigmoid(DNN(sg(X_0)))
- "dgp" Dynamic Generated Parameters (eq. 5, 7-8): W_{l-1}^(i) = U_{l-1} Sigma_{l-1}^(i) V_{l-1}^T, U, V in R^{F x K}
        static, the K diagonal entries of Sigma^(i) from DNN(sg(X_0)); computed as U (sigma^(i) o (V^T X_0)).
- "dwp" Dynamic Weighted Parameters (eq. 6, 9-10): W_{l-1} replaced by G_{l-1}^(i) o W_{l-1} with
        G^(i) = sum_p (u_p^(i) v_p^(i)T + 1/K), K pairs u_p, v_p in R^F from DNN(sg(X_0)); computed as
        W X_0 + sum_p u_p o (W (v_p o X_0)) (row / column broadcasting), never as a B x F x F tensor.

Every DNN is a two-layer DNN with reduction ratio r over the gradient-blocked field map sg(X_0) (flattened,
F*D inputs, F*D / r hidden units, ReLU). Orthogonal regularization (eq. 11 for DGP, eq. 12 for DWP): the l1
norm of the pairwise cosine similarities of the K u-vectors and of the K v-vectors, summed over layers
(and, for DWP, over instances), weighted by lambda. The paper's loss is a sum over the N instances; the
trainer's BCE is a mean, so both terms are divided by N here: DGP's penalty (one per layer, instance-free) is
lambda * sum_l sum_{p>q} |cos(u_p, u_q)| + |cos(v_p, v_q)|, DWP's is that averaged over the batch.

Choices the paper leaves open, made here: DA's gate is one value per row of the (sub-space) map, broadcast over
its columns; DGP's sigma uses the same 2 * sigmoid activation (positive singular values, ~1 at init, which also
makes eq. 11 independent of sigma); for DWP "add 1/K to the output of the DNN modelling the K pairs" is read as
adding 1/K to each rank-1 term u_p v_p^T, so that G^(i) = 1 + sum_p u_p v_p^T starts near 1 as the paper asks
(adding 1/K to u_p and v_p themselves would start G near 1/K). The generators' last bias starts at zero.
With subspace crossing every F above is h*F rows of D/h columns (see recsys_dist.models.pin).

Example:
    >>> arch = DynIntArch(ArchInputs(0, ("C1", "C2", "C3"), 8), mode="dwp", num_layers=2, rank=2,
    ...                   num_subspaces=2, ortho_lambda=1e-3)
    >>> arch(torch.zeros(4, 0), torch.rand(4, 3, 8)).shape
    torch.Size([4])
    >>> arch.regularization_loss().shape
    torch.Size([])
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

from recsys_dist.models.arch import ArchInputs
from recsys_dist.models.dwp_kernel import dwp_layer, pairwise_abs_cosine
from recsys_dist.models.pin import PINArch, PINLayer

MODES = ("da", "dgp", "dwp")


class Generator(nn.Module):
    """The two-layer DNN with reduction ratio r over sg(X_0): [B, R, C] -> [B, out] (pre-activation).

    Args:
        in_features: F*D, the flattened field map size.
        out_features: what to generate (R gates, K singular values, or 2*K*R pair entries).
        reduction_ratio: r, hidden units = max(1, in_features // r).
    """

    def __init__(self, in_features: int, out_features: int, reduction_ratio: int) -> None:
        super().__init__()
        hidden = max(1, in_features // reduction_ratio)
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features))
        nn.init.zeros_(self.net[2].bias)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        return self.net(x0.detach().flatten(1))  # stop-gradient: X_0 gets no gradient from here


class DynamicActivationLayer(PINLayer):
    r"""DynInt-DA layer (eq. 4): X_l = (X_{l-1} o (W_{l-1} . X_0)) o G_l^(i) + X_{l-1}.

    G_l^(i) = 2 * sigmoid(DNN(sg(X_0))) in R^R, one gate per row, broadcast over the C columns (~1 at init).

    Args:
        num_rows: R (F, or h*F with subspace crossing).
        context_size: F*D, the flattened X_0 the gate DNN reads.
        reduction_ratio: r of the gate DNN.

    Call:
        x [B, R, C], x0 [B, R, C] -> [B, R, C]; the last gates are kept in `last_generated` [B, R].

    Example:
        >>> layer = DynamicActivationLayer(3, 12, reduction_ratio=2)
        >>> x0 = torch.rand(2, 3, 4)
        >>> layer(x0, x0).shape
        torch.Size([2, 3, 4])
    """

    def __init__(self, num_rows: int, context_size: int, reduction_ratio: int) -> None:
        super().__init__(num_rows)
        self.gate = Generator(context_size, num_rows, reduction_ratio)
        self.last_generated: Optional[torch.Tensor] = None
        self.last_penalty: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        g = 2.0 * torch.sigmoid(self.gate(x0))
        self.last_generated = g
        return x * torch.matmul(self.weight, x0) * g.unsqueeze(-1) + x


class DynamicGeneratedLayer(nn.Module):
    r"""DynInt-DGP layer (eq. 5, 7-8): X_l = X_{l-1} o (U_{l-1} Sigma_{l-1}^(i) V_{l-1}^T . X_0) + X_{l-1}.

    Computed right to left as U (sigma^(i) o (V^T X_0)): the largest tensors are [B, K, C] and [B, R, C], never
    [B, R, R]. sigma^(i) = 2 * sigmoid(DNN(sg(X_0))) in R^K. U, V start with orthonormal columns.
    `last_penalty` is eq. 11's layer term sum_{p>q} |cos(u_p, u_q)| + |cos(v_p, v_q)| (instance-free).

    Args:
        num_rows: R.
        context_size: F*D.
        rank: K, the kernel size (the paper tunes 16..128).
        reduction_ratio: r of the sigma DNN.

    Call:
        x [B, R, C], x0 [B, R, C] -> [B, R, C]; the last sigma is kept in `last_generated` [B, K].

    Example:
        >>> layer = DynamicGeneratedLayer(3, 12, rank=2, reduction_ratio=2)
        >>> x0 = torch.rand(2, 3, 4)
        >>> layer(x0, x0).shape
        torch.Size([2, 3, 4])
    """

    def __init__(self, num_rows: int, context_size: int, rank: int, reduction_ratio: int) -> None:
        super().__init__()
        self.U = nn.Parameter(torch.empty(num_rows, rank))
        self.V = nn.Parameter(torch.empty(num_rows, rank))
        nn.init.orthogonal_(self.U)
        nn.init.orthogonal_(self.V)
        self.sigma = Generator(context_size, rank, reduction_ratio)
        self.last_generated: Optional[torch.Tensor] = None
        self.last_penalty: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        s = 2.0 * torch.sigmoid(self.sigma(x0))  # [B, K]
        self.last_generated = s
        self.last_penalty = pairwise_abs_cosine(self.U.t()) + pairwise_abs_cosine(self.V.t())
        vx = torch.matmul(self.V.t(), x0)  # [B, K, C]
        wx = torch.matmul(self.U, s.unsqueeze(-1) * vx)  # [B, R, C]
        return x * wx + x


class DynamicWeightedLayer(PINLayer):
    r"""DynInt-DWP layer (eq. 6, 9-10): X_l = X_{l-1} o ((G_{l-1}^(i) o W_{l-1}) . X_0) + X_{l-1}.

    G^(i) = sum_p (u_p v_p^T + 1/K) with the K pairs (u_p, v_p) in R^R from DNN(sg(X_0)), so
    (G^(i) o W) X_0 = W X_0 + sum_p diag(u_p) W diag(v_p) X_0 = W X_0 + sum_p u_p o (W (v_p o X_0)):
    never a [B, R, R] tensor; the K + 1 products go through one GEMM per chunk of instances
    (recsys_dist.models.dwp_kernel, with the penalty below).
    `last_penalty` [B] is eq. 12's per-instance layer term sum_{p>q} |cos(u_p, u_q)| + |cos(v_p, v_q)|.

    Args:
        num_rows: R.
        context_size: F*D.
        rank: K, the latent rank of G (the paper searches 1..4).
        reduction_ratio: r of the pair DNN.

    Call:
        x [B, R, C], x0 [B, R, C] -> [B, R, C]; the last pairs are kept in `last_generated` ([B, K, R] twice).

    Example:
        >>> layer = DynamicWeightedLayer(3, 12, rank=2, reduction_ratio=2)
        >>> x0 = torch.rand(2, 3, 4)
        >>> layer(x0, x0).shape
        torch.Size([2, 3, 4])
    """

    def __init__(self, num_rows: int, context_size: int, rank: int, reduction_ratio: int) -> None:
        super().__init__(num_rows)
        self.rank = rank
        self.pairs = Generator(context_size, 2 * rank * num_rows, reduction_ratio)
        self.last_generated: Optional[tuple] = None
        self.last_penalty: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        B, R, _ = x0.shape
        pairs = self.pairs(x0).view(B, 2, self.rank, R)  # u_p = pairs[:, 0, p], v_p = pairs[:, 1, p]
        self.last_generated = pairs.unbind(1)
        # W X_0 + sum_p u_p o (W (v_p o X_0)) and eq. 12's per-instance term, fused (recsys_dist/models/dwp_kernel.py)
        weighted, self.last_penalty = dwp_layer(pairs, x0, self.weight)
        return x * weighted + x


class DynIntArch(PINArch):
    """DynInt: L dynamic PIN layers (mode da | dgp | dwp) + subspace crossing + the eq. 2 output layer.

    Args:
        inputs: ArchInputs (num_dense raw numeric features become extra fields; 0 with bucketized numerics).
        mode: "da" (eq. 4), "dgp" (eq. 7-8) or "dwp" (eq. 9-10).
        num_layers: L (paper: 1..4, 3-4 best on Criteo).
        num_subspaces: h, a divisor of D (paper: h = 16 with D = 16 on Criteo).
        reduction_ratio: r of the two-layer DNNs (paper: 2..16).
        rank: K, DGP's kernel size (paper: 16..128) or DWP's latent rank (paper: 1..4); unused by DA.
        ortho_lambda: lambda of eq. 11 / 12; `regularization_loss()` returns the weighted penalty of the last
            forward (None for DA or lambda = 0).

    Example:
        >>> arch = DynIntArch(ArchInputs(13, ("C1", "C2"), 16), mode="dgp", rank=8, num_subspaces=4)
        >>> arch(torch.rand(4, 13), torch.rand(4, 2, 16)).shape
        torch.Size([4])
    """

    def __init__(self, inputs: ArchInputs, mode: str = "dwp", num_layers: int = 3, num_subspaces: int = 1,
                 reduction_ratio: int = 4, rank: int = 4, ortho_lambda: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError(f"dynint: mode must be one of {', '.join(MODES)}, got {mode!r}")
        if num_layers < 0:
            raise ValueError(f"dynint: num_layers must be >= 0, got {num_layers}")
        if reduction_ratio < 1:
            raise ValueError(f"dynint: reduction_ratio must be >= 1, got {reduction_ratio}")
        if rank < 1:
            raise ValueError(f"dynint: rank must be >= 1, got {rank}")
        if ortho_lambda < 0:
            raise ValueError(f"dynint: ortho_lambda must be >= 0, got {ortho_lambda}")

        def build(rows: int, context: int) -> List[nn.Module]:
            if mode == "da":
                return [DynamicActivationLayer(rows, context, reduction_ratio) for _ in range(num_layers)]
            if mode == "dgp":
                return [DynamicGeneratedLayer(rows, context, rank, reduction_ratio) for _ in range(num_layers)]
            return [DynamicWeightedLayer(rows, context, rank, reduction_ratio) for _ in range(num_layers)]

        super().__init__(inputs, num_subspaces, build)
        self.mode = mode
        self.ortho_lambda = float(ortho_lambda)

    def orthogonal_penalty(self) -> Optional[torch.Tensor]:
        """Unweighted eq. 11 / 12 penalty of the last forward (batch mean for DWP); None for DA / no forward."""
        terms = [layer.last_penalty for layer in self.layers if layer.last_penalty is not None]
        if not terms:
            return None
        return torch.stack([t.mean() for t in terms]).sum()

    def regularization_loss(self) -> Optional[torch.Tensor]:
        if self.ortho_lambda == 0.0:
            return None
        penalty = self.orthogonal_penalty()
        return None if penalty is None else self.ortho_lambda * penalty
