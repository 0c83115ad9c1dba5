"""The proxy's Gaussian process: a sparse variational GP (gpytorch) on crystal features, wrapped for botorch.

Inputs are ``(..., D + K)``: D standardised crystal features (``aloop.space.features``)
then a one-hot of the label source (K sources). The kernel is

    k(x, x') = s^2 * Matern52(g(f), g(f')) + t^2 * Matern52([g(f), e], [g(f'), e'])

(``s^2`` with a log-normal prior around 1, ``t^2`` around ``SOURCE_SCALE``) with ``g`` an
optional small MLP (a learned feature extractor, "deep kernel learning"; identity when
``hidden_dims`` is empty), ``f`` the features and ``e`` the source one-hot: every source
measures one shared function plus a smaller one of its own, whose ARD lengthscale on ``e``
learns how alike the sources are. The shared term is what lets an oracle's few labels move
the prediction at the reference source (Materials Project's, the most rows): with the
source only inside one Matern term, the fit learned the sources nearly independent
(one-hot lengthscale 0.5) and a campaign's CHGNet labels never changed its predictions.
Proxies saved before the shared term (``shared_kernel: false``) load with their one term.
Each source also has its own observation noise (``SourceNoiseLikelihood``): Materials
Project DFT and the CHGNet oracle are different measurements. The fit itself may read the
labels through ``SourceStudentTLikelihood`` (``proxy.likelihood: student_t``, the default):
the same per-source scales with heavy tails, so a few labels far off their trend pull it
less; predictions stay Gaussian. Inference is the SVGP of
Hensman et al. (2013) with ``M`` learned inducing points, so it scales to 10^5 crystals.

``CrystalGPModel`` is the botorch model: its posterior is in target units (a ``Standardize``
outcome transform), adds each point's source noise when ``observation_noise=True`` (the
source is read from the input's one-hot), and evaluates ``q = 1`` batches, the shape of
analytic acquisition functions, as one flat batch of marginals (``CrystalGPModel.marginals``)
instead of one variational solve per point (gpytorch would build ``(b, M+1, M+1)`` kernels).
Its latent covariance is multiplied by ``variance_scale``, recalibrated after the fit. Once the
campaign has labels of its own, ``correction`` (``aloop.proxy.correction``) adds how far they sit
from this model: its mean, its variance and, with ``observation_noise``, their scatter.

Example:
    >>> gp = CrystalGP(torch.randn(64, 12, dtype=torch.float64), n_sources=2, hidden_dims=(32,), latent_dim=4)
    >>> model = CrystalGPModel(gp).to(torch.float64)
    >>> _ = model.outcome_transform(torch.randn(20, 1, dtype=torch.float64))  # fit the target standardisation
    >>> model.posterior(torch.randn(5, 1, 12, dtype=torch.float64)).mean.shape
    torch.Size([5, 1, 1])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
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
from gpytorch.likelihoods.likelihood import _OneDimensionalLikelihood
from gpytorch.likelihoods.noise_models import Noise
from gpytorch.means import ConstantMean
from gpytorch.models import ApproximateGP
from gpytorch.priors import LogNormalPrior
from gpytorch.variational import CholeskyVariationalDistribution, VariationalStrategy
from linear_operator.operators import DiagLinearOperator
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import nn
from torch.distributions import StudentT

from aloop.proxy.baseline import HullInput, HullMean
from aloop.proxy.correction import LabelCorrection

SOURCE_SCALE = 0.1
"""Prior centre of the per-source term's output scale (standardised units), a tenth of the shared term's:
Materials Project's legacy energies and CHGNet's differ by a few tenths of an eV/atom on a spread of about 1."""
MIN_NOISE = 1e-4
"""Smallest noise variance, in standardised target units."""
OUTPUTSCALE_PRIOR_SCALE = 0.5
"""Log-normal prior on the kernel's output scale, centred on 1 (standardised units): with few rows the
amplitude stays near the target's scale (at least ``ProxySettings.prior_std``) instead of shrinking to
their spread; the ELBO divides it by the row count, so large fits are not held back. Scale 0.5 gave the
best-calibrated first round of the campaign benchmark (0.1 to 1.0 tried)."""
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


class SourceStudentTLikelihood(_OneDimensionalLikelihood):
    """Student-t observations for the ELBO fit: each source's scale is a Gaussian likelihood's noise (shared
    parameters, so the fit moves that likelihood's noise), with one learned degrees of freedom above 2."""

    def __init__(self, noise: SourceNoise, df: float = 4.0) -> None:
        super().__init__()
        self.noise_covar = noise
        self.register_parameter("raw_df", nn.Parameter(torch.zeros(())))
        self.register_constraint("raw_df", GreaterThan(2.0))
        self.initialize(raw_df=self.raw_df_constraint.inverse_transform(torch.tensor(df)))

    @property
    def df(self) -> torch.Tensor:
        return self.raw_df_constraint.transform(self.raw_df)

    def forward(self, function_samples: torch.Tensor, *params: Any, source: torch.Tensor | None = None,
                **kwargs: Any) -> StudentT:
        if source is None:
            raise ValueError("SourceStudentTLikelihood needs source=(N,) long: the label source of each point")
        return StudentT(self.df, function_samples, self.noise_covar.noise[source].sqrt())

    def variance(self) -> torch.Tensor:
        """``(K,)`` observation variance per source, ``scale^2 * df / (df - 2)``: the Gaussian noise it matches."""
        return self.noise_covar.noise * self.df / (self.df - 2.0)


class CrystalGP(ApproximateGP):
    """SVGP on ``[g(features), source one-hot]`` (see the module docstring).

    Args:
        inducing_points: ``(M, D + K)`` initial inducing inputs (learned).
        n_sources: K, the width of the trailing source one-hot.
        hidden_dims: widths of the feature extractor's hidden layers; empty for none.
        latent_dim: output width of the feature extractor (ignored without one).
        kernel: ``matern52`` or ``rbf``.
        shared_kernel: add the term shared by all sources (see the module docstring); ``False`` only for
            proxies saved before it.
    """

    def __init__(self, inducing_points: torch.Tensor, *, n_sources: int, hidden_dims: Sequence[int] = (),
                 latent_dim: int = 16, kernel: str = "matern52", shared_kernel: bool = True) -> None:
        distribution = CholeskyVariationalDistribution(inducing_points.shape[0])
        strategy = VariationalStrategy(self, inducing_points, distribution, learn_inducing_locations=True)
        super().__init__(strategy)
        self.n_sources = n_sources
        self.hidden_dims = tuple(hidden_dims)
        n_features = inducing_points.shape[1] - n_sources
        self.extractor = _mlp(n_features, hidden_dims, latent_dim) if hidden_dims else nn.Identity()
        self.shared_kernel = shared_kernel
        features = latent_dim if hidden_dims else n_features
        self.mean_module = ConstantMean()
        per_source = _scaled(_base(kernel, features + n_sources), scale=SOURCE_SCALE if shared_kernel else 1.0)
        self.covar_module = (_scaled(_base(kernel, features, active_dims=tuple(range(features))), scale=1.0)
                             + per_source) if shared_kernel else per_source

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., N, D + K)`` inputs -> ``(..., N, latent + K)`` kernel inputs ``[g(features), source one-hot]``."""
        return torch.cat([self.extractor(x[..., : -self.n_sources]), x[..., -self.n_sources:]], dim=-1)

    def forward(self, x: torch.Tensor) -> MultivariateNormal:
        """``(..., N, D + K)`` inputs -> prior over the N latent values."""
        z = self.embed(x)
        return MultivariateNormal(self.mean_module(z), self.covar_module(z))


def _base(kernel: str, dims: int, *, active_dims: tuple[int, ...] | None = None) -> MaternKernel | RBFKernel:
    if kernel == "matern52":
        return MaternKernel(nu=2.5, ard_num_dims=dims, active_dims=active_dims)
    return RBFKernel(ard_num_dims=dims, active_dims=active_dims)


def _scaled(base: MaternKernel | RBFKernel, *, scale: float) -> ScaleKernel:
    """``base`` times an output scale starting at ``scale``, with a log-normal prior around it."""
    scaled = ScaleKernel(base, outputscale_prior=LogNormalPrior(math.log(scale), OUTPUTSCALE_PRIOR_SCALE))
    scaled.outputscale = scale
    return scaled


def _mlp(n_in: int, hidden_dims: Sequence[int], n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden_dims:
        layers += [nn.Linear(n_in, width), nn.SiLU()]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class _Predictive:
    """What the marginals of a fixed SVGP need, computed once per evaluation phase (``CrystalGPModel.marginals``)."""

    inducing: torch.Tensor  # (M, latent + K): embedded inducing points
    weights: torch.Tensor  # (M,): L^-T m
    update: torch.Tensor  # (M, M): L^-T (S - I) L^-1


class CrystalGPModel(ApproximateGPyTorchModel):
    """The botorch model of a ``CrystalGP`` with per-source noise and a standardised target (see module docstring).

    ``variance_scale`` multiplies the latent posterior covariance: 1 after the ELBO fit,
    recalibrated on held-out rows by ``aloop.proxy.proxy`` (the learned feature extractor
    makes the SVGP's own variance far too small; measured in ``benchmarks/proxy_fit.py``).
    """

    def __init__(self, gp: CrystalGP) -> None:
        super().__init__(gp, SourceNoiseLikelihood(gp.n_sources), num_outputs=1)
        self.outcome_transform = Standardize(m=1)
        self.register_buffer("variance_scale", torch.ones(()))
        self.correction: LabelCorrection | None = None
        self.baseline: HullMean | None = None
        self.hull_input: HullInput | None = None  # kept with the weights; ``Proxy.inputs`` reads it
        self._predictive: _Predictive | None = None

    def standardise(self, values: torch.Tensor, *, min_std: float) -> torch.Tensor:
        """Fit the target standardisation on ``(N,)`` training values, its scale at least ``min_std``; standardise them.

        botorch's ``Standardize(min_stdv=...)`` replaces a small scale by 1, not by the floor,
        so the floor is applied to the fitted buffers here (``stdvs`` and its square).
        """
        transform = self.outcome_transform
        transform.train()
        transform(values.unsqueeze(-1))
        transform.eval()
        transform.stdvs = transform.stdvs.clamp(min=min_std)
        transform._stdvs_sq = transform.stdvs.pow(2)
        return transform(values.unsqueeze(-1))[0].squeeze(-1)

    def train(self, mode: bool = True) -> CrystalGPModel:
        """Switch mode; entering or leaving training drops the cached predictive terms."""
        if mode or self.training:
            self._predictive = None
        return super().train(mode)

    def marginals(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and variance, ``(N,)`` each, at ``(N, D + K)`` inputs; standardised units, unscaled.

        gpytorch's whitened SVGP predictive in closed form: with ``K_zz = L L^T``, variational
        mean ``m`` and covariance ``S``, mean ``mu(x) + K_xz L^-T m`` and variance
        ``k(x, x) + jitter + diag(K_xz L^-T (S - I) L^-1 K_zx)``. The inducing terms are
        computed once per evaluation phase, so a call costs one ``(N, M) x (M, M)`` product
        (the reward path; gpytorch re-embeds the inducing points and solves each time).
        Equal to ``self.model(x)``'s marginals (tested); only valid in eval mode.
        """
        predictive = self._predictive or self._predictive_terms()
        z = self.model.embed(x)
        cross = self.model.covar_module(z, predictive.inducing).to_dense()  # (N, M)
        mean = self.model.mean_module(z) + cross @ predictive.weights
        prior = self.model.covar_module(z, diag=True) + self.model.variational_strategy.jitter_val
        return mean, prior + ((cross @ predictive.update) * cross).sum(dim=-1)

    @torch.no_grad()
    def _predictive_terms(self) -> _Predictive:
        strategy = self.model.variational_strategy
        if not bool(strategy.updated_strategy):  # gpytorch whitens the variational parameters on its first call
            self.model(strategy.inducing_points[:1])
        inducing = self.model.embed(strategy.inducing_points)
        kzz = self.model.covar_module(inducing).add_jitter(strategy.jitter_val).to_dense()
        root = psd_safe_cholesky(kzz)
        variational = strategy.variational_distribution
        identity = torch.eye(len(kzz), dtype=kzz.dtype, device=kzz.device)
        root_inv_t = torch.linalg.solve_triangular(root, identity, upper=False).mT  # L^-T
        middle = variational.covariance_matrix - identity
        self._predictive = _Predictive(inducing=inducing, weights=root_inv_t @ variational.mean,
                                       update=root_inv_t @ middle @ root_inv_t.mT)
        return self._predictive

    def baseline_mean(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,)`` the prior mean ``baseline`` at ``(N, D + K)`` inputs, in the standardised target units."""
        assert self.baseline is not None
        return self.baseline(x, self.source_of(x)) / self.outcome_transform.stdvs.reshape(())

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
        if X.shape[-2] == 1:  # q = 1: the marginals of all points at once
            flat = X.reshape(-1, X.shape[-1])
            mean, variance = self.marginals(flat)
            variance = self.variance_scale * variance
            if observation_noise:
                variance = variance + self.likelihood.noise[self.source_of(flat)]
            if self.correction is not None:
                shift, spread, noise = self.correction.marginals(flat)
                mean, variance = mean + shift, variance + spread + (noise if observation_noise else 0.0)
            if self.baseline is not None:
                mean = mean + self.baseline_mean(flat)
            shape = X.shape[:-1]
            distribution = MultivariateNormal(mean.reshape(shape), DiagLinearOperator(variance.reshape(shape)))
        else:
            latent = self.model(X)
            distribution = MultivariateNormal(latent.mean, latent.lazy_covariance_matrix * self.variance_scale)
            if observation_noise:
                distribution = self.likelihood(distribution, source=self.source_of(X))
            if self.correction is not None:
                shift, spread = self.correction.joint(X, observation_noise=observation_noise)
                distribution = MultivariateNormal(distribution.mean + shift, distribution.lazy_covariance_matrix + spread)
            if self.baseline is not None:
                shift = self.baseline_mean(X.reshape(-1, X.shape[-1])).reshape(X.shape[:-1])
                distribution = MultivariateNormal(distribution.mean + shift, distribution.lazy_covariance_matrix)
        posterior = self.outcome_transform.untransform_posterior(GPyTorchPosterior(distribution), X=X)
        return posterior if posterior_transform is None else posterior_transform(posterior, X=X)
