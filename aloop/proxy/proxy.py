"""``Proxy``: the fitted surrogate of one target, as a botorch model on crystal features.

``fit_proxy`` featurizes a ``TrainingSet`` (without the cell's scale if ``cell_scale`` is
off), standardises features and targets, and fits the sparse variational GP of
``aloop.proxy.model`` by minibatch Adam on the ELBO.
``Proxy.posterior(batch)`` returns botorch's ``GPyTorchPosterior`` over the crystals in
target units, so every botorch acquisition function works on ``Proxy.model`` with
``Proxy.inputs(batch)``. ``Proxy.predict`` gives marginal means and standard deviations,
and central intervals from ``ResidualQuantiles``: the measured spread of validation rows'
standardised residuals (on Materials Project data heavier-tailed than a Gaussian).

Example:
    >>> proxy = fit_proxy(train, ProxySettings(epochs=5), seed=0)  # doctest: +SKIP
    >>> posterior = proxy.posterior(batch)  # doctest: +SKIP
    >>> posterior.mean.shape, posterior.variance.shape  # doctest: +SKIP
    (torch.Size([N, 1]), torch.Size([N, 1]))
    >>> proxy.save(Path("proxy")); Proxy.load(Path("proxy"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from statistics import NormalDist
from typing import Literal

import numpy as np
import torch
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.mlls import VariationalELBO
from tqdm.auto import tqdm

from aloop.config import ProxySettings, label_property
from aloop.data.training import TrainingSet
from aloop.hardware import torch_threads
from aloop.proxy.baseline import HULL_INPUTS, HullInput, HullMean, hull_input, hull_mean
from aloop.proxy.correction import MIN_LABELS, LabelCorrection, fit_correction
from aloop.proxy.model import MIN_NOISE, CrystalGP, CrystalGPModel, SourceStudentTLikelihood
from aloop.space.crystal import CrystalBatch
from aloop.space.features import SITE_FEATURES, feature_names, featurize

DTYPE = torch.float64
"""The model's precision (botorch's recommendation; float32 saved little time here, see benchmarks)."""
CHUNK = 4096
"""Crystals per posterior evaluation in ``predict``: bounds memory on large batches."""
WEIGHTS, META = "proxy.pt", "proxy.json"
MIN_VALIDATION = 10
"""Fewest validation rows (of a source) to recalibrate its noise on."""
NOISE_LR_FACTOR = 10.0
"""The noise variances learn this much faster than the rest: with the common rate they lag
the fit for hundreds of steps, and intervals come out too wide (measured in the tests)."""
MIN_QUANTILE_ROWS = 100
"""Fewest validation rows to fit ``ResidualQuantiles`` on; below, intervals stay Gaussian (the
empirical 90% quantile of n rows misses its coverage by about sqrt(0.09 / n), 0.03 at 100)."""
QUANTILE_LEVELS = tuple(round(0.01 * i, 2) for i in range(1, 100))
"""Central-interval levels at which ``ResidualQuantiles.from_residuals`` records the residuals' quantiles."""
FRACTION_PREFIX = "frac_"
"""The ``featurize`` columns of element fractions (``frac_<El>``): what the campaign's correction reads."""
CORRECTION = "correction"
"""The correction's name in the model's state dict (``CrystalGPModel.correction``)."""
BASELINE = "baseline"
"""The hull baseline's name in the model's state dict (``CrystalGPModel.baseline``)."""
HULL_INPUT = "hull_input"
"""The hull input's name in the model's state dict (``CrystalGPModel.hull_input``)."""
CONSTANT_FEATURE = 1e-5
"""A feature whose std over the training rows is below this share of ``max(1, |mean|)`` is constant there: its
spread is float32 rounding (a cubic set's ``a_rel``: std 4e-8), and dividing by it would turn the rounding of a new
crystal's feature into standard deviations. It is centred, not scaled."""
SCALE_FEATURES = ("volume_per_atom", "log_volume_per_atom", "packing_fraction")
"""The features of the cell's scale, which a proxy with ``cell_scale: false`` does not read."""


class ProxyError(ValueError):
    """A proxy cannot be used as asked (unknown source, unreadable files); the message says why."""


@dataclass(frozen=True)
class ResidualQuantiles:
    """How wide central predictive intervals are, in standard deviations: level q -> ``mean +- width(q) * std``.

    ``widths[i]`` is the ``levels[i]`` quantile of ``|y - mean| / std`` on validation rows: a
    monotone map from level to half-width that replaces the Gaussian's ``Phi^-1((1 + q) / 2)``.
    Formation-energy residuals are heavy-tailed (Gaussian intervals cover 0.67 at 50% and
    0.93 at 90%) and band-gap residuals a spike of metals plus a broad part, which a
    Student-t does not fit (benchmarks/results/proxy_fit-no-hull.md). Between levels the width is
    interpolated linearly; outside them it follows the Gaussian's, scaled to meet the
    nearest recorded width. Without levels it is the Gaussian (proxies saved before).

    Example:
        >>> round(ResidualQuantiles().width(0.9), 3)  # Gaussian
        1.645
        >>> round(ResidualQuantiles(levels=(0.5, 0.9), widths=(0.4, 1.3)).width(0.7), 3)
        0.85
    """

    levels: tuple[float, ...] = ()
    widths: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(map(float, self.levels)))  # lists from JSON: kept hashable
        object.__setattr__(self, "widths", tuple(map(float, self.widths)))
        levels, widths = np.asarray(self.levels, dtype=float), np.asarray(self.widths, dtype=float)
        if (len(levels) != len(widths) or ((levels <= 0) | (levels >= 1)).any() or (np.diff(levels) <= 0).any()
                or (widths < 0).any() or (np.diff(widths) < 0).any()):
            raise ValueError(f"ResidualQuantiles needs increasing levels in (0, 1) and as many nondecreasing widths >= 0, "
                             f"got levels={self.levels} widths={self.widths}")

    @classmethod
    def from_residuals(cls, z: torch.Tensor) -> ResidualQuantiles:
        """The quantiles of ``|z|`` at ``QUANTILE_LEVELS``, ``z`` the ``(N,)`` standardised residuals; Gaussian if
        ``N < MIN_QUANTILE_ROWS``."""
        if len(z) < MIN_QUANTILE_ROWS:
            return GAUSSIAN
        widths = torch.quantile(z.detach().abs().double(), torch.tensor(QUANTILE_LEVELS, dtype=torch.float64))
        return cls(levels=QUANTILE_LEVELS, widths=tuple(widths.tolist()))

    @property
    def gaussian(self) -> bool:
        """Whether these are the Gaussian's intervals (nothing recalibrated)."""
        return not self.levels

    def width(self, level: float) -> float:
        """Half-width of the central ``level`` interval, in standard deviations; ``ValueError`` outside (0, 1)."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"interval level={level!r} is not in (0, 1)")
        gaussian = NormalDist().inv_cdf(0.5 + level / 2.0)
        if self.gaussian:
            return gaussian
        edge = 0 if level < self.levels[0] else -1 if level > self.levels[-1] else None
        if edge is None:
            return float(np.interp(level, self.levels, self.widths))
        return gaussian * self.widths[edge] / NormalDist().inv_cdf(0.5 + self.levels[edge] / 2.0)

    def as_dict(self) -> dict[str, list[float]]:
        """Levels and widths as lists, for ``proxy.json``; ``ResidualQuantiles(**d)`` reads them back."""
        return {"levels": list(self.levels), "widths": list(self.widths)}


GAUSSIAN = ResidualQuantiles()
"""Gaussian intervals: no quantiles fitted (too few validation rows, or a proxy saved before they were)."""


@dataclass(frozen=True)
class Prediction:
    """Marginal predictions of ``N`` crystals: ``mean`` and ``std``, each ``(N,)``, in target units.

    ``std`` is the predictive standard deviation (what UCB adds); central intervals come from
    ``quantiles`` (``interval``), which need not be the Gaussian's.
    """

    mean: torch.Tensor
    std: torch.Tensor
    quantiles: ResidualQuantiles = GAUSSIAN

    def interval(self, level: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(low, high)``, each ``(N,)``: the central ``level`` interval of each crystal, e.g. 0.9."""
        half = self.quantiles.width(level) * self.std
        return self.mean - half, self.mean + half


@dataclass(frozen=True, eq=False)
class Proxy:
    """A fitted proxy of ``target``.

    Attributes:
        model: the botorch model on proxy inputs ``(..., D + K)`` (see ``inputs``), in target units.
        target: the property predicted, e.g. ``formation_energy_per_atom`` (eV/atom).
        sources: label sources seen in training, the K one-hot columns of the inputs.
        reference_source: the source predicted when no ``fidelity`` is given.
        feature_mean, feature_std: ``(D,)`` feature standardisation.
        settings: the settings it was fitted with.
        features: the D ``featurize`` columns it reads, by name (``proxy_feature_names``): a proxy keeps
            reading its own columns when the featurizer gains new ones.
        quantiles: widths of its central intervals, fitted on validation rows (Gaussian: none).
    """

    model: CrystalGPModel
    target: str
    sources: tuple[str, ...]
    reference_source: str
    feature_mean: torch.Tensor
    feature_std: torch.Tensor
    settings: ProxySettings
    features: tuple[str, ...]
    quantiles: ResidualQuantiles = GAUSSIAN

    def source_index(self, names: Sequence[str]) -> torch.Tensor:
        """``(N,)`` long column of each source name; ``ProxyError`` for a source the proxy never saw."""
        unknown = sorted(set(names) - set(self.sources))
        if unknown:
            raise ProxyError(f"label sources {unknown} are unknown to this proxy; it was trained on {list(self.sources)}")
        return torch.tensor([self.sources.index(n) for n in names], dtype=torch.long)

    def inputs(self, batch: CrystalBatch, *, fidelity: str | None = None,
               source: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, D + K)`` model inputs on CPU, where the model is: standardised features (with the hull's two,
        ``proxy.hull_input``) and the source one-hot.

        Args:
            batch: the crystals, on any device (a GFlowNet may sample on a GPU).
            fidelity: the source to predict for every crystal (default ``reference_source``).
            source: ``(N,)`` long per-crystal source columns instead of ``fidelity``.
        """
        features = proxy_features(batch, self.features)
        if source is None:
            source = self.source_index([fidelity or self.reference_source]).expand(len(batch))
        one_hot = torch.nn.functional.one_hot(source.cpu(), len(self.sources)).to(DTYPE)
        inputs = [(features - self.feature_mean) / self.feature_std, one_hot]
        if self.model.hull_input is not None:
            inputs.insert(1, self.model.hull_input(features[:, _fraction_columns(self.features)]))
        return torch.cat(inputs, dim=1)

    def posterior(self, batch: CrystalBatch, *, fidelity: str | None = None,
                  observation_noise: bool = False) -> GPyTorchPosterior:
        """The joint posterior over the crystals: ``mean``/``variance`` of shape ``(N, 1)``, target units.

        With ``observation_noise``, the variance includes the noise of ``fidelity``'s labels,
        i.e. it predicts a new measurement rather than the latent value. For marginals of
        many crystals use ``predict`` (the joint covariance is ``N x N``).
        """
        return self.model.posterior(self.inputs(batch, fidelity=fidelity), observation_noise=observation_noise)

    def predict(self, batch: CrystalBatch, *, source: torch.Tensor | None = None,
                observation_noise: bool = True) -> Prediction:
        """Marginal mean and standard deviation of each crystal, in chunks, with the proxy's interval quantiles.

        Args:
            source: ``(N,)`` long per-crystal source columns (default: ``reference_source``).
            observation_noise: include each crystal's source noise.
        """
        if source is None:
            source = self.source_index([self.reference_source]).expand(len(batch))
        means, stds = [], []
        with torch.no_grad():
            for start in range(0, len(batch), CHUNK):
                rows = slice(start, start + CHUNK)
                x = self.inputs(batch[rows], source=source[rows]).unsqueeze(-2)  # (n, 1, D + K): marginals only
                post = self.model.posterior(x, observation_noise=observation_noise)
                means.append(post.mean.reshape(-1))
                stds.append(post.variance.reshape(-1).clamp(min=0).sqrt())
        return Prediction(torch.cat(means), torch.cat(stds), self.quantiles)

    @property
    def hidden_dims(self) -> list[int]:
        """Hidden widths of the feature extractor the proxy was fitted with ([]: none, too few rows)."""
        return list(self.model.model.hidden_dims)

    @property
    def correction(self) -> tuple[int, float] | None:
        """``(labels, their mean offset in target units)`` of the campaign's correction; ``None`` without one."""
        correction = self.model.correction
        if correction is None:
            return None
        return len(correction.train_y), float(correction.train_y.mean() * self.model.outcome_transform.stdvs.squeeze())

    @property
    def noise_std(self) -> dict[str, float]:
        """Learned observation noise (standard deviation, target units) of each source."""
        scale = float(self.model.outcome_transform.stdvs.squeeze())
        noise = self.model.likelihood.noise.detach().sqrt() * scale
        return dict(zip(self.sources, noise.tolist(), strict=True))

    def save(self, directory: Path) -> None:
        """Write ``proxy.pt`` (weights) and ``proxy.json`` (everything else) into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), directory / WEIGHTS)
        meta = {"target": self.target, "sources": list(self.sources), "reference_source": self.reference_source,
                "feature_mean": self.feature_mean.tolist(), "feature_std": self.feature_std.tolist(),
                "inducing_points": int(self.model.model.variational_strategy.inducing_points.shape[0]),
                "hidden_dims": self.hidden_dims, "quantiles": self.quantiles.as_dict(),
                "features": list(self.features), "settings": self.settings.model_dump(mode="json"),
                "shared_kernel": self.model.model.shared_kernel}
        (directory / META).write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: Path) -> Proxy:
        """The proxy saved by ``save`` in ``directory``; ``ProxyError`` if it is not one, or if it reads
        feature columns the featurizer no longer gives (it must be refitted).

        A proxy saved before the column names were recorded read the columns before ``SITE_FEATURES``
        (without ``SCALE_FEATURES`` if it was fitted without the cell's scale), and still does.
        """
        try:
            meta = json.loads((directory / META).read_text())
            state = torch.load(directory / WEIGHTS, weights_only=True)
            settings = ProxySettings.model_validate({"cell_scale": True, "baseline": "none", "hull_input": False,
                                                     "hull_dropout": 0.0, "hull_dropout_mode": "replace",
                                                     **meta["settings"]})  # saved before the keys
            features = _saved_features(meta, settings, directory)
            n_inputs = len(meta["feature_mean"]) + len(meta["sources"]) + HULL_INPUTS * (f"{HULL_INPUT}.mean" in state)
            hidden_dims = meta.get("hidden_dims", settings.hidden_dims)  # saved before the key: always the settings'
            model = _build(torch.zeros(meta["inducing_points"], n_inputs, dtype=DTYPE), len(meta["sources"]), settings,
                           hidden_dims, shared_kernel=meta.get("shared_kernel", False))  # saved before: one term
            if f"{CORRECTION}.train_y" in state:
                model.correction = LabelCorrection.from_state(state, f"{CORRECTION}.")
            if f"{BASELINE}.energies" in state:
                model.baseline = HullMean.from_state(_fraction_elements(features), state, f"{BASELINE}.")
            if f"{HULL_INPUT}.mean" in state:
                model.hull_input = HullInput.from_state(_fraction_elements(features), state, f"{HULL_INPUT}.")
            model.load_state_dict(state, keep_transforms=False)  # botorch would re-fit transforms from training targets a variational model does not keep
            quantiles = ResidualQuantiles(**meta.get("quantiles", {}))  # saved before they were fitted: Gaussian
        except ProxyError:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            raise ProxyError(f"{directory}: not a saved proxy ({type(err).__name__}: {err})") from None
        model.eval()
        return cls(model=model, target=meta["target"], sources=tuple(meta["sources"]),
                   reference_source=meta["reference_source"],
                   feature_mean=torch.tensor(meta["feature_mean"], dtype=DTYPE),
                   feature_std=torch.tensor(meta["feature_std"], dtype=DTYPE), settings=settings, features=features,
                   quantiles=quantiles)


def _saved_features(meta: dict, settings: ProxySettings, directory: Path) -> tuple[str, ...]:
    """The feature columns a saved proxy reads (``meta["features"]``; before they were recorded, the columns
    before ``SITE_FEATURES``); ``ProxyError`` saying to refit when the featurizer no longer gives them."""
    features = tuple(meta.get("features") or (name for name in proxy_feature_names(settings.cell_scale)
                                              if name not in SITE_FEATURES))
    unknown = [name for name in features if name not in feature_names()]
    if unknown or len(features) != len(meta["feature_mean"]):
        raise ProxyError(f"{directory}: this proxy was fitted on {len(meta['feature_mean'])} features that the "
                         f"featurizer no longer gives ({', '.join(unknown[:5]) or 'an older column set'}); "
                         "refit it (`aloop proxy fit`, or a new round)")
    return features


def proxy_feature_names(cell_scale: bool) -> tuple[str, ...]:
    """The ``featurize`` columns a proxy fitted now reads: every one, or all but ``SCALE_FEATURES``
    without ``cell_scale``."""
    return tuple(name for name in feature_names() if cell_scale or name not in SCALE_FEATURES)


def proxy_features(batch: CrystalBatch, names: Sequence[str]) -> torch.Tensor:
    """``(N, len(names))`` the ``featurize`` columns ``names``, in that order, on CPU in ``DTYPE``."""
    return featurize(batch.to("cpu")).to(DTYPE)[:, _columns(tuple(names))]


@cache
def _columns(names: tuple[str, ...]) -> torch.Tensor:
    """``(len(names),)`` long: the index of each name in ``feature_names()``."""
    index = {name: i for i, name in enumerate(feature_names())}
    return torch.tensor([index[name] for name in names], dtype=torch.long)


def validation_rows(crystals: CrystalBatch, n: int, *, by_system: bool, generator: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fit rows, validation rows)``: ``n`` validation rows, the rest (in random order) fitted.

    ``by_system``: whole chemical systems (the set of elements present), in random order, each
    kept out if it fits in what is left of ``n``, then random rows up to ``n``: validation on
    chemistries the fit never saw, while a system of more than ``n`` rows (a small space's own
    entries and labels) is never kept out whole. Otherwise ``n`` random rows.
    """
    order = torch.randperm(len(crystals), generator=generator)
    if not by_system:
        return order[n:], order[:n]
    _, system = torch.unique(crystals.counts.cpu() > 0, dim=0, return_inverse=True)  # (N,) chemical system of each row
    sizes = torch.bincount(system).tolist()
    held, total = [], 0
    for index in torch.randperm(len(sizes), generator=generator).tolist():
        if total + sizes[index] <= n:
            held.append(index)
            total += sizes[index]
    out = torch.isin(system, torch.tensor(held, dtype=torch.long))
    out[order[~out[order]][: n - total]] = True
    return order[~out[order]], order[out[order]]


def _build(inducing: torch.Tensor, n_sources: int, settings: ProxySettings,
           hidden_dims: Sequence[int], *, shared_kernel: bool = True) -> CrystalGPModel:
    gp = CrystalGP(inducing, n_sources=n_sources, hidden_dims=hidden_dims, latent_dim=settings.latent_dim,
                   kernel=settings.kernel, shared_kernel=shared_kernel)
    return CrystalGPModel(gp).to(DTYPE)


def fit_proxy(train: TrainingSet, settings: ProxySettings, *, seed: int, progress: bool = False) -> Proxy:
    """Fit a proxy of ``train.target`` on ``train`` (CPU; about 1-2 min for 30k crystals, one thread).

    A ``settings.validation_fraction`` of the rows (whole chemical systems by default,
    ``validation_rows``) is kept out of the ELBO fit and used to recalibrate the posterior's
    variance scale and each source's noise (``recalibrate``), then the widths of the central
    intervals (``ResidualQuantiles``). With ``settings.space_share`` the rows inside the space
    (``train.inside``) fill that share of every minibatch (``row_weights``).
    With ``settings.correction`` and campaign labels among the rows (``train.campaign_label``), the
    campaign's correction is fitted last, on their residuals (``label_correction``).
    With ``settings.baseline`` and ``settings.hull_input`` it reads the hull of its rows
    (``aloop.proxy.baseline``). With fewer than ``settings.extractor_min_rows`` rows the kernel
    reads the features without the learned extractor, and without the hull (the extractor is what
    learns where the hull says something: fitted on the 5 Materials Project entries of the campaign's
    space it predicted campaign v3's first-round labels 1.5-1.9 eV/atom too low), and the target is
    standardised by at least ``settings.prior_std``: what keeps a proxy of a few labels uncertain
    about crystals unlike them.

    Raises:
        ProxyError: ``train`` is empty, or ``settings.reference_source`` is not among its sources.
    """
    if len(train) == 0:
        raise ProxyError("cannot fit a proxy on an empty training set")
    if train.target != label_property(settings.target):
        raise ProxyError(f"training set target {train.target!r} differs from proxy.target={settings.target!r} "
                         f"(which learns {label_property(settings.target)})")
    if settings.baseline == "hull" and train.target != "formation_energy_per_atom":
        raise ProxyError(f"proxy.baseline=hull is a formation-energy hull; the target is {train.target!r}")
    if settings.hull_input and train.target != "formation_energy_per_atom":
        raise ProxyError(f"proxy.hull_input reads a formation-energy hull; the target is {train.target!r}")
    sources = train.source_names
    reference = settings.reference_source or Counter(train.row_sources()).most_common(1)[0][0]
    if reference not in sources:
        raise ProxyError(f"proxy.reference_source={reference!r} is not among the training sources {list(sources)}")
    with torch_threads(settings.threads):
        torch.manual_seed(seed)
        names = proxy_feature_names(settings.cell_scale)
        features = proxy_features(train.crystals, names)
        mean, std = features.mean(dim=0), features.std(dim=0)
        std = torch.where(std > CONSTANT_FEATURE * mean.abs().clamp_min(1.0), std, torch.ones_like(std))
        source = torch.tensor([sources.index(s) if s in sources else -1 for s in train.sources])[train.source]
        columns = _fraction_columns(names)
        reads_hull = len(train) >= settings.extractor_min_rows  # the extractor learns where the hull says something
        hull = None
        fitted = read = torch.zeros(len(train), 0, dtype=DTYPE)  # the hull inputs of the fit, and as predicted
        cold = torch.zeros(len(train), dtype=torch.bool)  # rows that read the hull as unknown (hull_dropout)
        if settings.hull_input and reads_hull:
            cold = torch.rand(len(train), generator=torch.Generator().manual_seed(seed)) < settings.hull_dropout
            hull, fitted, read = hull_input(features[:, columns], train.values, source, sources.index(reference),
                                            elements=_fraction_elements(names), cold=cold)
        one_hot = torch.nn.functional.one_hot(source, len(sources)).to(DTYPE)
        baseline, below = None, torch.zeros(len(train), dtype=torch.float64)
        if settings.baseline == "hull" and reads_hull:
            baseline, below = hull_mean(features[:, columns], train.values, source, elements=_fraction_elements(names),
                                        columns=columns, offset=mean[columns], scale=std[columns])
        row, as_cold = fit_set(cold, settings.hull_dropout_mode)
        standard = (features - mean) / std
        x = torch.cat([standard[row], torch.where(as_cold[:, None], fitted[row], read[row]),
                       one_hot[row]], dim=1)
        generator = torch.Generator().manual_seed(seed)
        n_val = int(settings.validation_fraction * len(train))
        n_val = n_val if n_val >= MIN_VALIDATION else 0
        copied = row[len(train):]  # each copy's training row: it goes where that row goes
        fit_rows, val_rows = (torch.cat([rows, len(train) + torch.nonzero(torch.isin(copied, rows)).squeeze(1)])
                              for rows in validation_rows(train.crystals, n_val, generator=generator,
                                                          by_system=settings.validation_split == "chemical_system"))
        hidden_dims = settings.hidden_dims if len(train) >= settings.extractor_min_rows else []
        model = _build(x[fit_rows[: settings.inducing_points]].clone(), len(sources), settings, hidden_dims)
        model.hull_input = hull
        y = model.standardise((train.values[row] - below[row].masked_fill(as_cold, 0.0)).to(DTYPE),
                              min_std=settings.prior_std)
        source_of_row = source[row]
        _optimise(model, x[fit_rows], y[fit_rows], source_of_row[fit_rows], settings, generator=generator,
                  progress=progress, weights=row_weights(train.inside[row][fit_rows], settings.space_share))
        model.eval()
        quantiles = GAUSSIAN
        if n_val:
            recalibrate(model, x[val_rows], y[val_rows], source_of_row[val_rows])
            quantiles = ResidualQuantiles.from_residuals(standardised_residuals(model, x[val_rows], y[val_rows],
                                                                                source_of_row[val_rows]))
        model.baseline = baseline
        if settings.correction:
            model.correction = label_correction(model, torch.cat([standard, read, one_hot], dim=1),
                                                train.values, train.campaign_label, columns=columns,
                                                offset=mean[columns], scale=std[columns],
                                                reference=sources.index(reference))
    return Proxy(model=model, target=train.target, sources=sources, reference_source=reference,
                 feature_mean=mean, feature_std=std, settings=settings, features=names, quantiles=quantiles)


def fit_set(cold: torch.Tensor, mode: Literal["copy", "replace"]) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows the fit reads, ``(M,)`` indices into the training rows (the first N: each row once, in order), and
    ``(M,)`` bool whether each reads the hull as unknown, from the ``(N,)`` bool ``cold`` rows (``proxy.hull_dropout``):
    with ``copy`` every row reads the hull and each cold row is read once more without it, after them; with
    ``replace`` the cold rows are read only without it."""
    rows = torch.arange(len(cold))
    if mode == "replace":
        return rows, cold
    copies = torch.nonzero(cold).squeeze(1)
    return torch.cat([rows, copies]), torch.cat([torch.zeros_like(cold), torch.ones_like(copies, dtype=torch.bool)])


def label_correction(model: CrystalGPModel, x: torch.Tensor, values: torch.Tensor, labelled: torch.Tensor, *,
                     columns: torch.Tensor, offset: torch.Tensor, scale: torch.Tensor, reference: int
                     ) -> LabelCorrection | None:
    """The campaign's correction (``aloop.proxy.correction``): delta fitted on the ``labelled`` rows' residuals from
    the model's prediction at the ``reference`` source (its baseline included), over the fractions of the elements
    those rows hold (the rest of the fraction ``columns`` say which crystals lie outside it).

    ``None`` with fewer than ``MIN_LABELS`` labels, or when every row is a label (the model fitted them alone).

    Args:
        x, values: ``(N, D + K)`` inputs and ``(N,)`` labels (target units) of the training rows.
        columns, offset, scale: the inputs' fraction columns and their standardisation.
    """
    if int(labelled.sum()) < MIN_LABELS or bool(labelled.all()):
        return None
    inputs = x[labelled].clone()
    n_sources = model.model.n_sources
    inputs[:, -n_sources:] = torch.nn.functional.one_hot(torch.tensor(reference), n_sources).to(inputs.dtype)
    with torch.no_grad():
        shared, _ = model.marginals(inputs)
        if model.baseline is not None:
            shared = shared + model.baseline_mean(inputs)
        y = model.outcome_transform(values[labelled].to(inputs.dtype).unsqueeze(-1))[0].squeeze(-1)
    return fit_correction(inputs, y - shared, columns=columns, offset=offset, scale=scale)


@cache
def _fraction_columns(names: tuple[str, ...]) -> torch.Tensor:
    """``(E,)`` long: the positions of the ``frac_<El>`` columns among feature ``names``."""
    return torch.tensor([i for i, name in enumerate(names) if name.startswith(FRACTION_PREFIX)])


def _fraction_elements(names: Sequence[str]) -> list[str]:
    """The elements of the ``frac_<El>`` columns among feature ``names``, in their order."""
    return [name.removeprefix(FRACTION_PREFIX) for name in names if name.startswith(FRACTION_PREFIX)]


def standardised_residuals(model: CrystalGPModel, x: torch.Tensor, y: torch.Tensor,
                           source: torch.Tensor) -> torch.Tensor:
    """``(N,)`` residuals ``(y - mean) / std`` of the model's noisy predictive; arguments as in ``recalibrate``."""
    with torch.no_grad():
        mean, variance = model.marginals(x)
        total = model.variance_scale * variance + model.likelihood.noise[source]
    return (y - mean) / total.sqrt()


def recalibrate(model: CrystalGPModel, x: torch.Tensor, y: torch.Tensor, source: torch.Tensor) -> None:
    """Set ``variance_scale`` and each source's noise to minimise the validation rows' Gaussian NLL.

    The predictive variance of a row is ``scale * latent variance + noise[source]``. The
    ELBO's noise tracks the training residuals, which the feature extractor shrinks as it
    fits, and the extractor packs crystals together so the latent variance comes out one to
    two orders of magnitude too small; rows the fit never saw measure the error of new
    crystals. The scale is at least 1: it only widens the GP's own uncertainty, which
    drives exploration, never removes it on the word of a few hundred rows. Sources with
    fewer than ``MIN_VALIDATION`` rows keep their ELBO noise (and are left out of the fit);
    with none, nothing changes. L-BFGS on log(scale - 1) and log(noise - MIN_NOISE).

    Args:
        model: a fitted model in eval mode; changed in place.
        x: ``(N, d)`` validation inputs, as ``Proxy.inputs`` builds them.
        y: ``(N,)`` standardised targets of those rows.
        source: ``(N,)`` long, each row's index into the model's sources.
    """
    counted = [s for s in range(len(model.likelihood.noise)) if int((source == s).sum()) >= MIN_VALIDATION]
    if not counted:
        return
    rows = torch.isin(source, torch.tensor(counted))
    with torch.no_grad():
        mean, variance = model.marginals(x[rows])
    residual2, column = (mean - y[rows]) ** 2, source[rows]
    noise = model.likelihood.noise.detach().clone()
    log_excess = torch.zeros((), dtype=x.dtype, requires_grad=True)  # scale 2 to start
    log_noise = (noise - MIN_NOISE).clamp(min=MIN_NOISE).log().requires_grad_(True)
    optimizer = torch.optim.LBFGS([log_excess, log_noise], max_iter=200, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        optimizer.zero_grad()
        total = (1.0 + log_excess.exp()) * variance + MIN_NOISE + log_noise.exp()[column]
        loss = (total.log() + residual2 / total).mean()
        loss.backward()
        return loss

    optimizer.step(nll)
    with torch.no_grad():
        noise[counted] = MIN_NOISE + log_noise.exp()[counted]
        model.variance_scale.fill_(1.0 + log_excess.exp())
        constraint = model.likelihood.noise_covar.raw_noise_constraint
        model.likelihood.noise_covar.initialize(raw_noise=constraint.inverse_transform(noise.clamp(min=2 * MIN_NOISE)))


def row_weights(inside: torch.Tensor, share: float) -> torch.Tensor | None:
    """``(N,)`` probabilities of drawing each row into a minibatch, the ``inside`` rows ``share`` of them in all;
    ``None`` (every row alike, one permutation per epoch) when ``share`` is 0 or all rows lie on one side."""
    n_inside = int(inside.sum())
    if share == 0.0 or n_inside in (0, len(inside)):
        return None
    return torch.where(inside, share / n_inside, (1.0 - share) / (len(inside) - n_inside)).to(DTYPE)


def _optimise(model: CrystalGPModel, x: torch.Tensor, y: torch.Tensor, source: torch.Tensor,
              settings: ProxySettings, *, generator: torch.Generator, progress: bool,
              weights: torch.Tensor | None = None) -> None:
    """Minibatch Adam on the negative ELBO for ``epochs`` (at least ``min_steps`` steps), cosine-annealed.

    With ``settings.likelihood == "student_t"`` the ELBO reads the labels through a Student-t of each source's
    scale (``SourceStudentTLikelihood``); the model's Gaussian noise is then set to that t's variance.

    With ``weights`` (``row_weights``) the minibatch rows are drawn with replacement by those
    probabilities: in expectation the ELBO with each row's likelihood weighted ``N * weight``.
    """
    model.train()
    robust = SourceStudentTLikelihood(model.likelihood.noise_covar) if settings.likelihood == "student_t" else None
    elbo = VariationalELBO(robust or model.likelihood, model.model, num_data=len(y))
    noise = list((robust or model.likelihood).parameters())
    others = [p for p in model.parameters() if all(p is not q for q in noise)]
    optimizer = torch.optim.Adam([{"params": others}, {"params": noise, "lr": NOISE_LR_FACTOR * settings.lr}],
                                 lr=settings.lr)
    steps = max(settings.epochs * math.ceil(len(y) / settings.batch_size), settings.min_steps)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    done = 0  # counted here: a disabled tqdm bar does not count its updates
    with tqdm(total=steps, desc=f"fitting proxy ({len(y):,} crystals)", disable=not progress) as bar:
        while done < steps:
            order = (torch.randperm(len(y), generator=generator) if weights is None
                     else torch.multinomial(weights, len(y), replacement=True, generator=generator))
            for rows in order.split(settings.batch_size):
                optimizer.zero_grad()
                loss = -elbo(model.model(x[rows]), y[rows], source=source[rows])
                loss.backward()
                optimizer.step()
                schedule.step()
                done += 1
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                if done >= steps:
                    break
    if robust is not None:  # the Gaussian noise of predictions: the fitted t's variance
        with torch.no_grad():
            constraint = model.likelihood.noise_covar.raw_noise_constraint
            model.likelihood.noise_covar.initialize(raw_noise=constraint.inverse_transform(robust.variance()))
