"""Complete trajectories of the Crystal-GFN as a batch of tensors.

The construction order is fixed (lattice system, point symmetry, space group, counts of
element 1..E, Wyckoff orbits element by element in each group's letter order, lattice),
so a terminal state determines its whole trajectory: every
partial state is a prefix of it. ``Trajectories`` therefore stores only the actions; the
partial states are rebuilt from them when the policy is scored (teacher forcing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch


@dataclass(frozen=True)
class Trajectories:
    """A batch of ``N`` complete trajectories.

    Attributes:
        lattice_system: ``(N,)`` long, index into ``CRYSTAL_LATTICE_SYSTEMS``.
        point_symmetry: ``(N,)`` long, 0 centrosymmetric, 1 polar, 2 non-polar.
        group: ``(N,)`` long, index into the space's allowed space groups.
        counts: ``(N, E)`` long, atoms of each element in the conventional cell.
        sites: ``(N, L, 2)`` long, the Wyckoff orbits in the order they were placed: element
            column and pyxtal letter index (``aloop.space.wyckoff.letters``), -1 pads; L is
            the environment's ``max_orbits``.
        unit: ``(N, 6)`` float, the lattice action in [0, 1] per coordinate (a b c alpha
            beta gamma order; entries of tied coordinates are ignored).
        lattice: ``(N, 6)`` float64, a b c (Angstrom) alpha beta gamma (degrees).
    """

    lattice_system: torch.Tensor
    point_symmetry: torch.Tensor
    group: torch.Tensor
    counts: torch.Tensor
    sites: torch.Tensor
    unit: torch.Tensor
    lattice: torch.Tensor

    def __len__(self) -> int:
        return int(self.group.shape[0])

    def __getitem__(self, index: Any) -> Trajectories:
        return Trajectories(*(getattr(self, f.name)[index] for f in fields(self)))

    def to(self, device: torch.device | str) -> Trajectories:
        return Trajectories(*(getattr(self, f.name).to(device) for f in fields(self)))

    @classmethod
    def cat(cls, parts: Sequence[Trajectories]) -> Trajectories:
        """Concatenate batches along the batch dimension."""
        return cls(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)))
