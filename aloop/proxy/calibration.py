"""How good and how honest the proxy is on held-out labels: errors, likelihood, interval coverage.

Each held-out label is predicted at its own source, observation noise included. Metrics:
MAE and RMSE of the mean, mean negative log density of the Gaussian ``N(mean, std^2)``
(NLL), the share of labels inside the central 50% and 90% intervals (nominal: 0.5 and
0.9; half-width ``ResidualQuantiles.width(level) * std``, the proxy's calibrated
quantiles, Gaussian when none were fitted), and the Spearman rank correlation between
|error| and predicted standard deviation (does the proxy know where it is wrong?).

Example:
    >>> result = calibration_metrics(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0]))
    >>> result.mae, result.coverage_90
    (0.5, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.stats import spearmanr

from aloop.data.training import TrainingSet
from aloop.proxy.proxy import GAUSSIAN, Proxy, ResidualQuantiles

UNITS = {"formation_energy_per_atom": "eV/atom", "band_gap": "eV"}
METRICS = ("n", "mae", "rmse", "nll", "coverage_50", "coverage_90", "spearman_err_std")


@dataclass(frozen=True, eq=False)
class Calibration:
    """Held-out metrics and the arrays behind them.

    Attributes:
        n: number of held-out labels.
        mae, rmse: of the predictive mean (target units).
        nll: mean Gaussian negative log predictive density (nats).
        coverage_50, coverage_90: share of labels inside the central 50% / 90% intervals.
        spearman_err_std: Spearman correlation of |error| and predicted std (NaN if undefined).
        observed, mean, std: ``(n,)`` float64 labels, predictive means and standard deviations.
        target: the property, for labels and units in plots.
        quantiles: the interval widths the coverages were measured with (Gaussian by default).
    """

    n: int
    mae: float
    rmse: float
    nll: float
    coverage_50: float
    coverage_90: float
    spearman_err_std: float
    observed: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    target: str = ""
    quantiles: ResidualQuantiles = GAUSSIAN

    def as_dict(self) -> dict[str, float | int]:
        """The metrics (``METRICS``) as plain numbers, for JSON and MLflow."""
        return {name: getattr(self, name) for name in METRICS}

    def coverage(self, level: float) -> float:
        """Share of labels inside their central ``level`` interval, ``mean +- quantiles.width(level) * std``."""
        return _coverage(self.mean - self.observed, self.std, self.quantiles, level)


def _coverage(error: np.ndarray, std: np.ndarray, quantiles: ResidualQuantiles, level: float) -> float:
    return float(np.mean(np.abs(error) <= quantiles.width(level) * std))


def calibration_metrics(observed: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, *,
                        quantiles: ResidualQuantiles = GAUSSIAN, target: str = "") -> Calibration:
    """Metrics of predictions ``(mean, std)`` of ``observed``, all ``(n,)``, with intervals from ``quantiles``.

    Raises:
        ValueError: no labels.
    """
    y, mu = observed.double().cpu().numpy(), mean.double().cpu().numpy()
    sigma = std.double().cpu().numpy().clip(min=1e-12)
    if len(y) == 0:
        raise ValueError("calibration needs at least one held-out label")
    error = mu - y
    nll = 0.5 * np.log(2 * math.pi * sigma**2) + error**2 / (2 * sigma**2)
    rank = spearmanr(np.abs(error), sigma).statistic if len(y) > 1 and np.ptp(sigma) > 0 else math.nan
    return Calibration(n=len(y), mae=float(np.abs(error).mean()), rmse=float(np.sqrt((error**2).mean())),
                       nll=float(nll.mean()), coverage_50=_coverage(error, sigma, quantiles, 0.5),
                       coverage_90=_coverage(error, sigma, quantiles, 0.9),
                       spearman_err_std=float(rank), observed=y, mean=mu, std=sigma, target=target,
                       quantiles=quantiles)


def calibration(proxy: Proxy, heldout: TrainingSet) -> Calibration:
    """The proxy's metrics on ``heldout``, each label predicted at its own source (noise included).

    Raises:
        ProxyError: a held-out source the proxy never saw.
        ValueError: ``heldout`` is empty or of another target.
    """
    if heldout.target != proxy.target:
        raise ValueError(f"held-out target {heldout.target!r} differs from the proxy's {proxy.target!r}")
    prediction = proxy.predict(heldout.crystals, source=proxy.source_index(heldout.row_sources()))
    return calibration_metrics(heldout.values, prediction.mean, prediction.std, quantiles=prediction.quantiles,
                               target=heldout.target)


def plot_calibration(result: Calibration, *, title: str = "") -> Figure:
    """Parity plot with 1-sigma error bars, and the calibration curve (observed vs nominal coverage).

    With calibrated quantiles the curve of plain Gaussian intervals on the same means and
    standard deviations is drawn too, dashed.
    """
    figure = Figure(figsize=(10, 4.6), layout="constrained")
    parity, curve = figure.subplots(1, 2)
    target, unit = result.target or "value", UNITS.get(result.target, "")
    parity.errorbar(result.observed, result.mean, yerr=result.std, fmt="o", ms=2.5, alpha=0.35, elinewidth=0.6,
                    color="tab:blue")
    low = float(min(result.observed.min(), result.mean.min()))
    high = float(max(result.observed.max(), result.mean.max()))
    parity.plot([low, high], [low, high], color="black", lw=1)
    parity.set(xlabel=f"observed {target} ({unit})", ylabel=f"predicted ({unit}), bars: 1 std",
               title=f"parity: MAE {result.mae:.3f}, RMSE {result.rmse:.3f} {unit}, n={result.n}")
    levels = np.linspace(0.05, 0.95, 19)
    curve.plot(levels, [result.coverage(q) for q in levels], "o-", color="tab:orange", label="proxy")
    if not result.quantiles.gaussian:
        gaussian = replace(result, quantiles=GAUSSIAN)
        curve.plot(levels, [gaussian.coverage(q) for q in levels], "--", color="tab:gray", label="Gaussian intervals")
    curve.plot([0, 1], [0, 1], color="black", lw=1, label="ideal")
    curve.set(xlabel="nominal coverage of the central interval", ylabel="observed coverage", xlim=(0, 1), ylim=(0, 1),
              title=f"calibration: 50% -> {result.coverage_50:.2f}, 90% -> {result.coverage_90:.2f}, "
                    f"NLL {result.nll:.2f}")
    curve.legend(loc="upper left")
    if title:
        figure.suptitle(title)
    return figure
