"""How diverse a set of crystals is: uniqueness and counts over the space's categories.

Example:
    >>> report = diversity_report(samples, space)  # a CrystalBatch or a list of Crystal
    >>> report.unique_fraction, report.lattice_systems["cubic"]  # share of distinct crystals, cubic count
    >>> plot_diversity(report).savefig("diversity.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from matplotlib.figure import Figure

from aloop.config import CRYSTAL_LATTICE_SYSTEMS, POINT_SYMMETRIES
from aloop.space.composition import unique_rows
from aloop.space.crystal import Crystal, CrystalBatch
from aloop.space.groups import CRYSTAL_SYSTEMS, N_SPACE_GROUPS, space_group_table
from aloop.space.space import CrystalSpace

LENGTH_DECIMALS = 2
ANGLE_DECIMALS = 1
"""Crystals equal after rounding lengths to 0.01 A and angles to 0.1 degree count as one
(the rounding of ``Crystal.canonical_hash``)."""


@dataclass(frozen=True)
class DiversityReport:
    """Uniqueness and category counts of a sample set.

    Attributes:
        n: number of crystals.
        unique_fraction: distinct crystals (group, counts, rounded lattice) / n.
        unique_composition_fraction: distinct (group, counts) pairs / n.
        crystal_systems, lattice_systems, point_symmetries: crystals per category, every
            category listed (zeros included), in the space's order.
        space_groups: crystals per space-group number (only numbers that occur).
        elements: crystals containing each element of the space (zeros included).
    """

    n: int
    unique_fraction: float
    unique_composition_fraction: float
    crystal_systems: dict[str, int]
    lattice_systems: dict[str, int]
    point_symmetries: dict[str, int]
    space_groups: dict[int, int]
    elements: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def diversity_report(crystals: CrystalBatch | Sequence[Crystal], space: CrystalSpace) -> DiversityReport:
    """Count a sample set by uniqueness and category; vectorised over a ``CrystalBatch``."""
    batch = crystals if isinstance(crystals, CrystalBatch) else CrystalBatch.from_crystals(crystals, space.elements)
    n = len(batch)
    sg = batch.space_group.cpu().long()
    counts = batch.counts.cpu().long()
    lattice = batch.lattice.cpu().double()
    rounded = torch.cat([(lattice[:, :3] * 10**LENGTH_DECIMALS).round(),
                         (lattice[:, 3:] * 10**ANGLE_DECIMALS).round()], dim=1)
    discrete = torch.cat([sg[:, None], counts], dim=1)
    table = space_group_table()

    def tally(index: torch.Tensor, names: Sequence[str]) -> dict[str, int]:
        return dict(zip(names, torch.bincount(index, minlength=len(names)).tolist(), strict=True))

    sg_counts = torch.bincount(sg, minlength=N_SPACE_GROUPS + 1)
    return DiversityReport(
        n=n,
        unique_fraction=_distinct(torch.cat([discrete, rounded.long()], dim=1)) / max(n, 1),
        unique_composition_fraction=_distinct(discrete) / max(n, 1),
        crystal_systems=tally(table.crystal_system[sg], CRYSTAL_SYSTEMS),
        lattice_systems=tally(table.lattice_system[sg], CRYSTAL_LATTICE_SYSTEMS),
        point_symmetries=tally(table.point_symmetry[sg], POINT_SYMMETRIES),
        space_groups={g: int(sg_counts[g]) for g in sg_counts.nonzero().flatten().tolist()},
        elements=dict(zip(batch.elements, (counts > 0).sum(dim=0).tolist(), strict=True)),
    )


def _distinct(rows: torch.Tensor) -> int:
    shifted = rows - rows.min(dim=0).values if rows.shape[0] else rows
    return int(unique_rows(shifted)[0].shape[0])


def plot_diversity(report: DiversityReport) -> Figure:
    """Bar charts of a report: lattice systems, point symmetries, crystal systems, elements, space groups.

    A plain ``Figure`` (no pyplot state, no GUI backend): save it with ``fig.savefig``.
    """
    fig = Figure(figsize=(15, 8), layout="constrained")
    axes = fig.subplots(2, 3)
    panels = [
        ("lattice system", report.lattice_systems),
        ("point symmetry", report.point_symmetries),
        ("crystal system", report.crystal_systems),
        ("element (crystals containing it)", report.elements),
    ]
    for ax, (title, data) in zip(axes.flat, panels, strict=False):
        ax.bar(range(len(data)), list(data.values()), color="tab:blue")
        ax.set_xticks(range(len(data)), [str(k).replace("_", " ") for k in data], rotation=45, ha="right")
        ax.set_title(title)
        ax.set_ylabel("crystals")
    ax = axes.flat[4]
    ax.bar(list(report.space_groups), list(report.space_groups.values()), width=1.0, color="tab:orange")
    ax.set_xlim(0, N_SPACE_GROUPS + 1)
    ax.set_title(f"space group ({len(report.space_groups)} distinct)")
    ax.set_xlabel("international number")
    ax.set_ylabel("crystals")
    ax = axes.flat[5]
    ax.bar(["unique crystals", "unique group + composition"],
           [report.unique_fraction, report.unique_composition_fraction], color="tab:green")
    ax.set_ylim(0, 1)
    ax.set_title(f"uniqueness (n = {report.n})")
    return fig
