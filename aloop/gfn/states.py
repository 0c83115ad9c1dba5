"""Complete trajectories of the Crystal-GFN as a batch of tensors.

The construction order is fixed (lattice system, point symmetry, space group, counts of
element 1..E, Wyckoff orbits element by element in each group's letter order, lattice),
so a terminal state determines its whole trajectory: every
partial state is a prefix of it. ``Trajectories`` therefore stores the actions, and the
partial states are rebuilt from them when the policy is scored (teacher forcing). The
rollout also records the masks of the count and orbit steps, the costliest part of
rebuilding the states (tables walked per step), so that scoring reuses them: they depend
on the actions alone, not on the policy, and stay valid in the replay buffer (about 0.7 kB
per trajectory on the default space). Trajectories rebuilt from crystals have none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
        count_mask: ``(N, E, K+1)`` bool, the counts each element's step allowed, or None (not recorded).
        letter_mask: ``(N, L, W)`` bool, the letters each orbit's step allowed (False on padding), or None.
    """

    lattice_system: torch.Tensor
    point_symmetry: torch.Tensor
    group: torch.Tensor
    counts: torch.Tensor
    sites: torch.Tensor
    unit: torch.Tensor
    lattice: torch.Tensor
    count_mask: torch.Tensor | None = None
    letter_mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.group.shape[0])

    def __getitem__(self, index: Any) -> Trajectories:
        return self._map(lambda t: t[index])

    def to(self, device: torch.device | str) -> Trajectories:
        return self._map(lambda t: t.to(device))

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Trajectories:
        """``fn`` applied to every field (masks that were not recorded stay None)."""
        return Trajectories(*(None if (value := getattr(self, f.name)) is None else fn(value) for f in fields(self)))

    @classmethod
    def cat(cls, parts: Sequence[Trajectories]) -> Trajectories:
        """Concatenate batches along the batch dimension; masks only if every part has them."""
        columns = ([getattr(p, f.name) for p in parts] for f in fields(cls))
        return cls(*(None if any(v is None for v in values) else torch.cat(values) for values in columns))
