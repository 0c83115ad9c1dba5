"""The proxy's Gaussian process: a sparse variational GP (gpytorch) on crystal features, wrapped for botorch.

Inputs are ``(..., D + K)``: D standardised crystal features (``aloop.space.features``)
then a one-hot of the label source (K sources). The kernel is

    k(x, x') = s^2 * Matern52([g(f), e], [g(f'), e'])

with ``g`` an optional small MLP (a learned feature extractor, "deep kernel learning";
identity when ``hidden_dims`` is empty), ``f`` the features and ``e`` the source one-hot,
so the fidelity is an input whose ARD lengthscale learns how alike the sources are.
Each source also has its own observation noise (``SourceNoiseLikelihood``): Materials
Project DFT and the CHGNet oracle are different measurements. Inference is the SVGP of
Hensman et al. (2013) with ``M`` learned inducing points, so it scales to 10^5 crystals.

``CrystalGPModel`` is the botorch model: its posterior is in target units (a ``Standardize``
outcome transform), adds each point's source noise when ``observation_noise=True`` (the
source is read from the input's one-hot), and evaluates ``q = 1`` batches, the shape of
analytic acquisition functions, as one flat batch of marginals instead of one variational
solve per point (gpytorch would otherwise build ``(b, M+1, M+1)`` kernels).

Example:
    >>> gp = CrystalGP(torch.randn(64, 12, dtype=torch.float64), n_sources=2, hidden_dims=(32,), latent_dim=4)
    >>> model = CrystalGPModel(gp).to(torch.float64)
    >>> _ = model.outcome_transform(torch.randn(20, 1, dtype=torch.float64))  # fit the target standardisation
    >>> model.posterior(torch.randn(5, 1, 12, dtype=torch.float64)).mean.shape
    torch.Size([5, 1, 1])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from botorch.acquisition.objective import PosteriorTransform
from botorch.models.approximate_gp import ApproximateGPyTorchModel
from botorch.models.transforms.outcome import Standardize
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.constraints import GreaterThan
from gpytorch.distributions import MultivariateNormal
from gpytorch.kernels import MaternKernel, RBFKernel, ScaleKernel
from gpytorch.likelihoods.gaussian_likelihood import _GaussianLikelihoodBase
from gpytorch.likelihoods.noise_models import Noise
from gpytorch.means import ConstantMean
from gpytorch.models import ApproximateGP
from gpytorch.variational import CholeskyVariationalDistribution, VariationalStrategy
from linear_operator.operators import DiagLinearOperator
from torch import nn

MIN_NOISE = 1e-4
"""Smallest noise variance, in standardised target units."""
INITIAL_NOISE = 0.05
"""Starting noise variance (standardised units): a fifth of the target's spread, nearer the fit than 0.69."""


class SourceNoise(Noise):
    """Observation noise variance per label source: ``(K,)``, indexed by the ``source`` keyword."""

    def __init__(self, n_sources: int) -> None:
        super().__init__()
        self.register_parameter("raw_noise", nn.Parameter(torch.zeros(n_sources)))
        self.register_constraint("raw_noise", GreaterThan(MIN_NOISE))
        self.initialize(raw_noise=self.raw_noise_constraint.inverse_transform(torch.full((n_sources,), INITIAL_NOISE)))

    @property
    def noise(self) -> torch.Tensor:
        """``(K,)`` noise variances."""
        return self.raw_noise_constraint.transform(self.raw_noise)

    def forward(self, *params: Any, shape: torch.Size | None = None, source: torch.Tensor | None = None,
                **kwargs: Any) -> DiagLinearOperator:
        if source is None:
            raise ValueError("SourceNoise needs source=(N,) long: the label source of each point")
        return DiagLinearOperator(self.noise[source])


class SourceNoiseLikelihood(_GaussianLikelihoodBase):
    """Gaussian likelihood with one learned noise variance per label source; call with ``source=``."""

    def __init__(self, n_sources: int) -> None:
        super().__init__(noise_covar=SourceNoise(n_sources))

    @property
    def noise(self) -> torch.Tensor:
        return self.noise_covar.noise


class CrystalGP(ApproximateGP):
    """SVGP on ``[g(features), source one-hot]`` (see the module docstring).

    Args:
        inducing_points: ``(M, D + K)`` initial inducing inputs (learned).
        n_sources: K, the width of the trailing source one-hot.
        hidden_dims: widths of the feature extractor's hidden layers; empty for none.
        latent_dim: output width of the feature extractor (ignored without one).
        kernel: ``matern52`` or ``rbf``.
    """

    def __init__(self, inducing_points: torch.Tensor, *, n_sources: int, hidden_dims: Sequence[int] = (),
                 latent_dim: int = 16, kernel: str = "matern52") -> None:
        distribution = CholeskyVariationalDistribution(inducing_points.shape[0])
        strategy = VariationalStrategy(self, inducing_points, distribution, learn_inducing_locations=True)
        super().__init__(strategy)
        self.n_sources = n_sources
        n_features = inducing_points.shape[1] - n_sources
        self.extractor = _mlp(n_features, hidden_dims, latent_dim) if hidden_dims else nn.Identity()
        width = (latent_dim if hidden_dims else n_features) + n_sources
        base = (MaternKernel(nu=2.5, ard_num_dims=width) if kernel == "matern52"
                else RBFKernel(ard_num_dims=width))
        self.mean_module = ConstantMean()
        self.covar_module = ScaleKernel(base)

    def forward(self, x: torch.Tensor) -> MultivariateNormal:
        """``(..., N, D + K)`` inputs -> prior over the N latent values."""
        z = torch.cat([self.extractor(x[..., : -self.n_sources]), x[..., -self.n_sources:]], dim=-1)
        return MultivariateNormal(self.mean_module(z), self.covar_module(z))


def _mlp(n_in: int, hidden_dims: Sequence[int], n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden_dims:
        layers += [nn.Linear(n_in, width), nn.SiLU()]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class CrystalGPModel(ApproximateGPyTorchModel):
    """The botorch model of a ``CrystalGP`` with per-source noise and a standardised target (see module docstring)."""

    def __init__(self, gp: CrystalGP) -> None:
        super().__init__(gp, SourceNoiseLikelihood(gp.n_sources), num_outputs=1)
        self.outcome_transform = Standardize(m=1)

    def source_of(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., D + K)`` inputs -> ``(...,)`` long source column, read from the trailing one-hot."""
        return x[..., -self.model.n_sources:].argmax(dim=-1)

    def posterior(self, X: torch.Tensor, output_indices: list[int] | None = None,  # noqa: N803 - botorch's name
                  observation_noise: bool = False,
                  posterior_transform: PosteriorTransform | None = None) -> GPyTorchPosterior:
        """Posterior at ``X`` of shape ``(b..., q, D + K)``: mean and variance ``(b..., q, 1)``, target units."""
        if output_indices is not None:
            raise NotImplementedError("CrystalGPModel has a single output")
        self.eval()
        if X.shape[-2] == 1:  # q = 1: the marginals of all points at once, one variational solve
            flat = X.reshape(-1, X.shape[-1])
            latent = self.model(flat)
            variance = latent.variance
            if observation_noise:
                variance = variance + self.likelihood.noise[self.source_of(flat)]
            distribution = MultivariateNormal(latent.mean.reshape(X.shape[:-1]),
                                              DiagLinearOperator(variance.reshape(X.shape[:-1])))
        else:
            distribution = self.model(X)
            if observation_noise:
                distribution = self.likelihood(distribution, source=self.source_of(X))
        posterior = self.outcome_transform.untransform_posterior(GPyTorchPosterior(distribution), X=X)
        return posterior if posterior_transform is None else posterior_transform(posterior, X=X)
