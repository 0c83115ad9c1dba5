"""Restricted sampling: does a batch of crystals keep a config's space restrictions, and how it looks.

The check reads the restrictions straight from the ``space`` settings (elements and atom
limits, lattice systems, lattice ranges) and tests the numbers of each crystal against
them; it does not use the generator's feasibility tables, so it can catch a generator
that leaks out of the space it was built on.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from aloop.config import CRYSTAL_LATTICE_SYSTEMS, SpaceSettings
from aloop.space import CRYSTAL_SYSTEMS, CrystalBatch, space_group_table

TOLERANCE = 1e-6
"""Slack on lattice bounds (Angstrom, degrees): float32 cells land on a bound exactly."""


def restriction_checks(batch: CrystalBatch, settings: SpaceSettings) -> dict[str, torch.Tensor]:
    """``(N,)`` bool per restriction of ``settings``: each crystal keeps it.

    Keys: ``elements`` (only the listed ones), ``atoms_per_element``, ``atoms``,
    ``n_elements`` (between ``min_elements`` and ``max_elements``), ``lattice_system``
    (of the space group, when restricted), ``lengths`` and ``angles`` (within the ranges).
    """
    counts = batch.counts.cpu().long()
    foreign = [i for i, el in enumerate(batch.elements) if el not in settings.elements]
    n_elements = (counts > 0).sum(dim=1)
    lattice = batch.lattice.cpu().double()
    lengths, angles = settings.lattice.length, settings.lattice.angle
    checks = {
        "elements": (counts[:, foreign] == 0).all(dim=1),
        "atoms_per_element": (counts <= settings.max_atoms_per_element).all(dim=1),
        "atoms": counts.sum(dim=1) <= settings.max_atoms,
        "n_elements": (n_elements >= settings.min_elements) & (n_elements <= settings.max_elements),
        "lengths": ((lattice[:, :3] >= lengths.min - TOLERANCE) & (lattice[:, :3] <= lengths.max + TOLERANCE)).all(1),
        "angles": ((lattice[:, 3:] >= angles.min - TOLERANCE) & (lattice[:, 3:] <= angles.max + TOLERANCE)).all(1),
    }
    if settings.lattice_systems is not None:
        allowed = torch.tensor([CRYSTAL_LATTICE_SYSTEMS.index(s) for s in settings.lattice_systems])
        checks["lattice_system"] = torch.isin(space_group_table().lattice_system[batch.space_group.cpu()], allowed)
    return checks


def satisfied_share(batch: CrystalBatch, settings: SpaceSettings) -> float:
    """Share of the crystals that keep every restriction of ``settings``."""
    return float(torch.stack(list(restriction_checks(batch, settings).values())).all(dim=0).float().mean())


def plot_restricted(name: str, settings: SpaceSettings, trained: CrystalBatch, uniform: CrystalBatch,
                    predicted: dict[str, np.ndarray]) -> Figure:
    """Six panels: elements, atoms per element, crystal systems, lengths, angles, predicted formation energy.

    The space's bounds are drawn as dashed lines; ``predicted`` maps a label (trained,
    uniform, Materials Project) to formation energies (eV/atom) for the last panel.
    """
    fig = Figure(figsize=(16, 8.5), layout="constrained")
    axes = fig.subplots(2, 3)
    samplers = {"trained": trained, "uniform (untrained)": uniform}
    width = 0.4
    ax = axes[0, 0]
    elements = trained.elements
    for k, (label, batch) in enumerate(samplers.items()):
        share = (batch.counts.cpu() > 0).float().mean(dim=0).numpy()
        ax.bar(np.arange(len(elements)) + (k - 0.5) * width, share, width=width, label=label)
    ax.set_xticks(range(len(elements)), elements, rotation=90 if len(elements) > 6 else 0)
    ax.set_ylabel("share of crystals containing it")
    listed = ", ".join(settings.elements) if len(settings.elements) <= 4 else f"{len(settings.elements)} elements"
    ax.set_title(f"elements (space: {listed})")
    ax.legend()
    ax = axes[0, 1]
    top = max(settings.max_atoms_per_element, int(trained.counts.max()), int(uniform.counts.max()))
    bins = np.arange(0.5, top + 1.5)
    for label, batch in samplers.items():
        counts = batch.counts.cpu().numpy()
        ax.hist(counts[counts > 0], bins=bins, histtype="step", lw=2, density=True, label=label)
    ax.axvline(settings.max_atoms_per_element + 0.5, ls="--", color="k", label="max_atoms_per_element")
    ax.set_xlabel("atoms of an element in the conventional cell (elements present)")
    ax.set_ylabel("density")
    ax.set_title("atoms per element")
    ax.legend()
    ax = axes[0, 2]
    table = space_group_table()
    for k, (label, batch) in enumerate(samplers.items()):
        system = table.crystal_system[batch.space_group.cpu()]
        share = torch.bincount(system, minlength=len(CRYSTAL_SYSTEMS)).float() / len(batch)
        ax.bar(np.arange(len(CRYSTAL_SYSTEMS)) + (k - 0.5) * width, share.numpy(), width=width, label=label)
    ax.set_xticks(range(len(CRYSTAL_SYSTEMS)), CRYSTAL_SYSTEMS, rotation=30, ha="right")
    ax.set_ylabel("share of crystals")
    allowed = settings.lattice_systems or "all"
    ax.set_title(f"crystal system (allowed lattice systems: {allowed})")
    ax.legend()
    for ax, columns, bounds, unit in ((axes[1, 0], slice(0, 3), settings.lattice.length, "A"),
                                      (axes[1, 1], slice(3, 6), settings.lattice.angle, "degrees")):
        values = {label: batch.lattice.cpu()[:, columns].reshape(-1).numpy() for label, batch in samplers.items()}
        edges = np.histogram_bin_edges(np.concatenate([*values.values(), [bounds.min, bounds.max]]), bins=60)
        for label, v in values.items():
            ax.hist(v, bins=edges, histtype="step", lw=2, density=True, label=label)
        for bound in (bounds.min, bounds.max):
            ax.axvline(bound, ls="--", color="k")
        ax.set_xlabel(f"{'a, b, c' if unit == 'A' else 'alpha, beta, gamma'} ({unit})")
        ax.set_ylabel("density" if unit == "A" else "density (log scale: 90 and 120 fixed by symmetry)")
        ax.set_yscale("linear" if unit == "A" else "log")
        ax.set_title(f"lattice {'lengths' if unit == 'A' else 'angles'}: range [{bounds.min:g}, {bounds.max:g}]")
        ax.legend()
    ax = axes[1, 2]
    edges = np.histogram_bin_edges(np.concatenate(list(predicted.values())), bins=50)
    for label, values in predicted.items():
        ax.hist(values, bins=edges, histtype="step", lw=2, density=True, label=f"{label} (n={len(values):,})")
    ax.set_xlabel("formation energy (eV/atom)")
    ax.set_ylabel("density")
    ax.set_title("formation energy (samples: proxy mean; MP: DFT)")
    ax.legend(fontsize=8)
    fig.suptitle(f"restricted sampling: {name}")
    return fig
