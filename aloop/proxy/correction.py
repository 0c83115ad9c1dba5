"""The campaign's correction: an exact GP on how far the campaign's own labels sit from the shared model.

The shared SVGP (``aloop.proxy.model``) learns from tens of thousands of Materials Project
rows, nearly all relaxed phases near their hull. A crystal the loop proposes relaxes to a
label that sits higher, by an amount that depends on its chemistry: on campaign v3's Li-Mn-O
labels the proxy's error before each label followed minus its energy above the hull, round
after round (Li-Mn -0.4 to -0.6 eV/atom). Forty-eight labels among 17,000 rows barely move
the ELBO, and the next round's crystals land away from them in the extractor's space, so the
shared model kept that error and the generator kept proposing there.

``LabelCorrection`` is the discrepancy term of Kennedy and O'Hagan's two-level model with
rho = 1: label = shared prediction + delta(x) + noise, with delta an exact GP (botorch
``SingleTaskGP``) over the element fractions of the labelled chemistries, fitted on the
labels' residuals from the shared model at its reference source. Near labels it moves the
prediction onto them; elsewhere in the labelled chemistries it adds its constant mean (the
average offset of the proposed crystals) and its prior variance. A crystal with an element
no label has is outside what it learned and keeps the shared model's prediction (Materials
Project rows of other chemistries, e.g. in the round's held-out calibration). An exact GP
because the labels are few (tens to thousands) and must each count; the element fractions
because the offset is a chemistry's.

Example:
    >>> correction = fit_correction(inputs, residuals, columns=fraction_columns, offset=mean[fraction_columns],
    ...                             scale=std[fraction_columns])  # doctest: +SKIP
    >>> shift, variance, noise = correction.marginals(inputs)  # doctest: +SKIP
"""

from __future__ import annotations

import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from gpytorch.mlls import ExactMarginalLogLikelihood
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import nn

MIN_LABELS = 5
"""Fewest campaign labels to fit a correction on: below, the GP's hyperparameters are the prior's alone."""
OTHER_ELEMENTS = 1e-6
"""A crystal whose fractions of elements no label has sum to more than this is outside the correction."""


class LabelCorrection(nn.Module):
    """delta(x) read from the shared model's inputs: an exact GP over the element fractions ``columns[used]``
    (standardised columns, unstandardised with ``offset`` and ``scale``), in the shared model's standardised target
    units, and zero for crystals with any other element (a fraction in ``columns[~used]``).

    The training fractions and residuals are buffers, so a saved proxy rebuilds the same GP (``from_state``).
    """

    def __init__(self, columns: torch.Tensor, used: torch.Tensor, offset: torch.Tensor, scale: torch.Tensor,
                 train_x: torch.Tensor, train_y: torch.Tensor) -> None:
        super().__init__()
        for name, value in (("columns", columns), ("used", used), ("offset", offset), ("scale", scale),
                            ("train_x", train_x), ("train_y", train_y)):
            self.register_buffer(name, value)
        self.gp = SingleTaskGP(train_x, train_y.unsqueeze(-1), outcome_transform=Standardize(m=1))
        self._solved: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], prefix: str) -> LabelCorrection:
        """An unfitted correction shaped like the one saved under ``prefix`` in a state dict (load it after)."""
        return cls(*(state[f"{prefix}{name}"] for name in ("columns", "used", "offset", "scale", "train_x",
                                                            "train_y")))

    def read(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(..., D + K)`` shared-model inputs -> the ``(..., C)`` fractions delta reads, and ``(...,)`` whether
        the crystal lies in the labelled chemistries (no other element)."""
        fractions = x[..., self.columns] * self.scale + self.offset
        return fractions[..., self.used], fractions[..., ~self.used].sum(dim=-1) < OTHER_ELEMENTS

    def marginals(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(N,)`` mean, latent variance and observation-noise variance of delta at ``(N, D + K)`` inputs.

        The exact GP's predictive in closed form, ``m + k_*^T alpha`` and ``k_** - |L^-1 k_*|^2`` with the
        labels' Cholesky factor ``L`` and ``alpha`` computed once: the reward's path (10,000 crystals in one
        ``(N, n)`` product; gpytorch's batched posterior of ``(N, 1, C)`` points took 1.3 s).
        """
        fractions, inside = self.read(x)
        root, alpha = self._solved or self._solve()
        kernel = self.gp.covar_module
        cross = kernel(fractions, self.train_x).to_dense()  # (N, n)
        mean = self.gp.mean_module(fractions) + cross @ alpha
        reduced = torch.linalg.solve_triangular(root, cross.mT, upper=False)  # (n, N)
        variance = (kernel(fractions, diag=True) - reduced.pow(2).sum(dim=0)).clamp(min=0.0)
        transform = self.gp.outcome_transform
        gate = inside.to(x.dtype)
        return ((mean * transform.stdvs.reshape(()) + transform.means.reshape(())) * gate,
                variance * transform.stdvs.reshape(()) ** 2 * gate, self.noise * gate)

    @torch.no_grad()
    def _solve(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``L`` (Cholesky factor of the labels' kernel matrix plus noise) and ``alpha``, in the GP's standardised
        units; kept until the correction is trained again."""
        gp = self.gp
        matrix = gp.covar_module(self.train_x).to_dense() + gp.likelihood.noise.reshape(()) * torch.eye(
            len(self.train_x), dtype=self.train_x.dtype, device=self.train_x.device)
        root = psd_safe_cholesky(matrix)
        targets = (gp.train_targets - gp.mean_module(self.train_x)).unsqueeze(-1)
        self._solved = (root, torch.cholesky_solve(targets, root).squeeze(-1))
        return self._solved

    def train(self, mode: bool = True) -> LabelCorrection:
        """Switch mode; entering training drops the cached solve (the hyperparameters may change)."""
        if mode:
            self._solved = None
        return super().train(mode)

    def joint(self, x: torch.Tensor, *, observation_noise: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(..., q)`` mean and ``(..., q, q)`` covariance of delta at ``(..., q, D + K)`` inputs (with the labels'
        scatter if ``observation_noise``)."""
        fractions, inside = self.read(x)
        gate = inside.to(x.dtype)
        delta = self.gp.posterior(fractions).distribution
        covariance = delta.covariance_matrix + torch.diag_embed(gate * (self.noise if observation_noise else 0.0))
        return delta.mean * gate, covariance * gate.unsqueeze(-1) * gate.unsqueeze(-2)

    @property
    def noise(self) -> torch.Tensor:
        """The labels' scatter about delta (variance, the shared model's standardised units)."""
        return self.gp.likelihood.noise.reshape(()) * self.gp.outcome_transform.stdvs.reshape(()) ** 2


def fit_correction(x: torch.Tensor, residuals: torch.Tensor, *, columns: torch.Tensor, offset: torch.Tensor,
                   scale: torch.Tensor) -> LabelCorrection:
    """Fit delta on ``(N,)`` residuals (label - shared prediction, standardised) of ``(N, D + K)`` labelled inputs,
    over the fraction ``columns`` of the elements those inputs hold, by the exact marginal likelihood (botorch's
    priors and L-BFGS); returned in eval mode."""
    fractions = x[:, columns] * scale + offset
    used = fractions.gt(OTHER_ELEMENTS).any(dim=0)
    correction = LabelCorrection(columns, used, offset, scale, fractions[:, used], residuals)
    fit_gpytorch_mll(ExactMarginalLogLikelihood(correction.gp.likelihood, correction.gp))
    return correction.eval()
