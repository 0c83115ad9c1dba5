"""Figures of a round a reviewer would rather look at than read (matplotlib, Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def plot_predicted_distribution(predicted: np.ndarray, training: np.ndarray, *, target: str,
                                selected: np.ndarray | None = None) -> Figure:
    """Histogram of the proxy's predictions for the samples against the training labels."""
    fig, ax = plt.subplots(figsize=(6, 4))
    values = [v for v in (predicted, training) if len(v)]
    bins = _bins(np.concatenate(values)) if values else 10
    ax.hist(training, bins=bins, density=True, alpha=0.5, label=f"training data (n={len(training)})")
    ax.hist(predicted, bins=bins, density=True, alpha=0.5, label=f"generated, predicted (n={len(predicted)})")
    if selected is not None and len(selected):
        for value in selected:
            ax.axvline(value, color="k", lw=0.5, alpha=0.4)
        ax.plot([], [], color="k", lw=0.5, label=f"selected batch (n={len(selected)})")
    ax.set_xlabel(target)
    ax.set_ylabel("density")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_reward_histogram(log_reward: np.ndarray) -> Figure:
    """Histogram of the GFlowNet log rewards of the samples."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(log_reward, bins=_bins(log_reward))
    ax.set_xlabel("log reward")
    ax.set_ylabel("samples")
    ax.set_yscale("log")
    fig.tight_layout()
    return fig


def plot_training_curves(loss: list[float], log_z: list[float]) -> Figure:
    """Trajectory-balance loss and log Z per training step."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(loss)
    left.set_yscale("log")
    left.set_xlabel("step")
    left.set_ylabel("TB loss")
    right.plot(log_z)
    right.set_xlabel("step")
    right.set_ylabel("log Z")
    fig.tight_layout()
    return fig


def _bins(values: np.ndarray, n: int = 40) -> np.ndarray:
    """``n`` bin edges over the finite values; one unit around them when their spread is below float precision
    (all log rewards at the floor, a proxy predicting one value), where numpy cannot make ``n`` bins."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return np.linspace(-0.5, 0.5, n + 1)
    low, high = float(finite.min()), float(finite.max())
    if high - low <= 1e-9 * max(1.0, abs(low), abs(high)):
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, n + 1)
