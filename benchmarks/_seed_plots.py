"""Figures of the seed experiments: property distributions against Materials Project, training curves."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from aloop.gfn import TrainingHistory

STYLES = {  # label prefix -> (colour, filled histogram)
    "Crystal-GFN": ("tab:blue", True),
    "uniform": ("tab:orange", True),
    "MP held-out": ("k", False),
    "MP held-out, default-space": ("tab:green", False),
    "proxy on MP held-out": ("tab:gray", False),
}


def plot_distribution(values: Mapping[str, np.ndarray], *, xlabel: str, title: str,
                      target: float | None = None, clip: tuple[float, float] | None = None,
                      cap: bool = False) -> Figure:
    """Density histograms of several value sets on common bins; samplers filled, references as outlines.

    Args:
        values: label -> values; the label's start picks the style (``STYLES``).
        target: a value to mark (the band-gap target), or None.
        clip: (low, high) of the bins; values outside are piled on the edge bins.
        cap: cut the y axis at 1.5 times the samplers' highest bar (Materials Project's
            metals pile up at a band gap of 0 and would flatten everything else).
    """
    fig = Figure(figsize=(8, 4.8), layout="constrained")
    ax = fig.subplots()
    pooled = np.concatenate(list(values.values()))
    low, high = clip if clip is not None else (pooled.min(), pooled.max())
    edges = np.linspace(low, high, 61)
    highest = 0.0
    for label, v in values.items():
        colour, filled = next(style for prefix, style in sorted(STYLES.items(), key=lambda kv: -len(kv[0]))
                              if label.startswith(prefix))
        heights, _, _ = ax.hist(np.clip(v, low, high), bins=edges, density=True, color=colour,
                                label=f"{label} (n={len(v):,})",
                                **({"alpha": 0.45} if filled else {"histtype": "step", "lw": 1.8}))
        highest = max(highest, float(heights.max())) if filled else highest
    if cap:
        ax.set_ylim(0, 1.5 * highest)
        title += " (y axis cut)"
    if target is not None:
        ax.axvline(target, color="tab:red", ls="--", label=f"target {target:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def plot_training(histories: Mapping[str, TrainingHistory]) -> Figure:
    """Trajectory-balance loss, log Z and mean log reward of fresh samples per step, one line per run."""
    fig = Figure(figsize=(15, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    window = 20
    for label, history in histories.items():
        for ax, curve in zip(axes, (history.loss, history.log_z, history.mean_log_reward), strict=True):
            y = np.asarray(curve, dtype=float)
            smooth = np.convolve(y, np.ones(window) / window, mode="valid") if len(y) >= window else y
            ax.plot(np.arange(len(smooth)) + (len(y) - len(smooth)), smooth, label=label)
    for ax, name in zip(axes, ("TB loss (log scale)", "log Z", "mean log reward of fresh samples"), strict=True):
        ax.set_xlabel("training step")
        ax.set_ylabel(name)
    axes[0].set_yscale("log")
    axes[2].legend(fontsize=8)
    fig.suptitle(f"Crystal-GFN training ({window}-step moving averages)")
    return fig
