"""The lattice action: unit coordinates in [0, 1]^6 -> a valid cell, valid by construction.

Each free lattice parameter is drawn on an interval that depends on the ones drawn
before it, in the order alpha, beta, gamma, a, b, c, so every draw is a valid cell and
nothing is rejected:

- triclinic angles: alpha in [lo, A], beta in [lo, B(alpha)], gamma between
  ``|alpha - beta|`` and ``min(alpha + beta, 360 - alpha - beta)`` (the condition for a
  positive Gram determinant, ``aloop.space.lattice.gamma_bounds``), each kept a margin
  ``delta`` inside so the cell never degenerates;
- monoclinic beta in [max(lo, delta), min(hi, 180 - delta)];
- lengths in order with a lower bound that keeps the volume at least
  ``V = n_atoms * min_volume_per_atom``, each length at least
  ``min_length_fraction * V^(1/3)``, and ``c >= a`` for rhombohedral (R) lattices in
  the hexagonal setting; where the ranges cannot reach a bound it stops at
  ``hi - LENGTH_SLACK * (hi - lo)`` so the interval never vanishes.

The length bounds are a physical prior, not validity: cells with room for the atoms,
where pyxtal can place them without clashes. The defaults (7.5 A^3, 0.5) leave every
stable Materials Project entry of the default space that passes the other constraints
reachable (``benchmarks/space_recall.py``; 8 A^3 and 0.7 lost 6% of them, mostly layered
cells with a short a axis), while samples of the untrained sampler become clash-free pyxtal
structures (``benchmarks/gfn_sampling.py``). Setting both to 0 reaches every valid cell.

Tied parameters follow ``aloop.space.lattice`` (``SOURCE``/``FIXED``). The map is a
bijection between the unit box and the reachable cells; its log Jacobian, per unit of
the normalised parameter box (lengths over ``hi - lo`` of the length range, angles over
that of the angle range), turns Beta densities on the unit coordinates into densities
over lattices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from aloop.config import CRYSTAL_LATTICE_SYSTEMS
from aloop.space.lattice import FIXED, FREE, MIN_VOLUME, SOURCE, gamma_bounds

ANGLE_MARGIN = 5.0
"""Degrees kept between a triclinic/monoclinic angle and a degenerate cell."""
LENGTH_SLACK = 0.05
"""Smallest length interval, as a fraction of the length range, when the volume bound is out of reach."""
DRAW_ORDER = (3, 4, 5, 0, 1, 2)
"""Parameters are drawn angles first (they fix the volume factor), then lengths."""
_TRICLINIC = CRYSTAL_LATTICE_SYSTEMS.index("triclinic")
_RHOMBOHEDRAL = CRYSTAL_LATTICE_SYSTEMS.index("trigonal_rhombohedral")
_MULTIPLICITY = (SOURCE[:, :3].unsqueeze(2) == torch.arange(3)).sum(dim=1)
"""``(8, 3)``: how many of a, b, c each free length sets (cubic a: 3, tetragonal a: 2)."""

Pick = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class CellMap:
    """Bounds of the lattice action.

    Attributes:
        length_range: (lo, hi) Angstrom.
        angle_range: (lo, hi) degrees.
        min_volume_per_atom: Angstrom^3; 0 only keeps the volume above ``MIN_VOLUME``.
        min_length_fraction: each length is at least this times the cube root of the
            minimum volume.
    """

    length_range: tuple[float, float]
    angle_range: tuple[float, float]
    min_volume_per_atom: float
    min_length_fraction: float

    @property
    def margin(self) -> float:
        """Angle margin, shrunk for narrow ranges so every interval stays non-empty."""
        lo = self.angle_range[0]
        return min(ANGLE_MARGIN, lo / 3, max(120.0 - lo, 0.0) / 4)

    def to_lattice(self, system: torch.Tensor, unit: torch.Tensor, n_atoms: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit coordinates -> cell.

        Args:
            system: ``(N,)`` long lattice-system index.
            unit: ``(N, 6)`` in [0, 1]; entries of non-free parameters are ignored.
            n_atoms: ``(N,)`` atoms in the conventional cell.

        Returns:
            lattice ``(N, 6)`` float64 (Angstrom, degrees) and ``(N,)`` log Jacobian
            ``sum_free log((high - low) / range)``.
        """
        unit = unit.to(torch.float64)
        return self._walk(system, n_atoms, lambda j, low, high: low + (high - low) * unit[:, j])

    def to_unit(self, system: torch.Tensor, lattice: torch.Tensor, n_atoms: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell -> unit coordinates ``(N, 6)`` (outside [0, 1] if the cell is unreachable) and log Jacobian."""
        lattice = lattice.to(torch.float64)
        unit = torch.full_like(lattice, 0.5)

        def pick(j: int, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
            unit[:, j] = (lattice[:, j] - low) / (high - low)
            return lattice[:, j]

        _, log_jacobian = self._walk(system, n_atoms, pick)
        return unit, log_jacobian

    def _walk(self, system: torch.Tensor, n_atoms: torch.Tensor, pick: Pick) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw the parameters in ``DRAW_ORDER``; ``pick(j, low, high)`` returns parameter j ``(N,)``.

        Columns are kept in a list (no in-place writes) so the map stays differentiable.
        """
        device = system.device
        free = FREE.to(device)[system]  # (N, 6)
        fixed = FIXED.to(device)[system]  # (N, 6)
        x = list(torch.where(fixed.isnan(), torch.zeros_like(fixed), fixed).unbind(dim=1))
        log_jacobian = torch.zeros(system.shape[0], dtype=torch.float64, device=device)
        for j in DRAW_ORDER:
            low, high = self._bounds(j, system, x, n_atoms)
            x[j] = torch.where(free[:, j], pick(j, low, high), x[j])
            full = self.length_range if j < 3 else self.angle_range
            log_jacobian = log_jacobian + torch.where(free[:, j], torch.log((high - low) / (full[1] - full[0])), 0.0)
        lengths = torch.stack(x[:3], dim=1).gather(1, SOURCE.to(device)[system, :3])
        return torch.cat([lengths, torch.stack(x[3:], dim=1)], dim=1), log_jacobian

    def _bounds(self, j: int, system: torch.Tensor, x: list[torch.Tensor], n_atoms: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Interval ``(N,)``, ``(N,)`` of parameter j given the columns ``x`` drawn before it."""
        if j < 3:
            return self._length_bounds(j, system, x, n_atoms)
        lo, hi = self.angle_range
        delta = self.margin
        triclinic = system == _TRICLINIC
        full = torch.ones_like(x[0])
        if j == 3:
            return lo * full, min(hi, 180.0 - 2 * delta, 360.0 - 2 * lo - 3 * delta) * full
        if j == 4:
            triclinic_high = (360.0 - lo - 2 * delta - x[3]).clamp(max=min(hi, 180.0 - 2 * delta))
            low = torch.where(triclinic, lo * full, max(lo, delta) * full)
            return low, torch.where(triclinic, triclinic_high, min(hi, 180.0 - delta) * full)
        open_low, open_high = gamma_bounds(x[3], x[4])
        return (open_low + delta).clamp(min=lo), (open_high - delta).clamp(max=hi)

    def _length_bounds(self, j: int, system: torch.Tensor, x: list[torch.Tensor], n_atoms: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Length j's interval: at least what the target volume and the shape floor need, given lengths before it."""
        lo, hi = self.length_range
        multiplicity = _MULTIPLICITY.to(system.device)[system].to(torch.float64)  # (N, 3)
        cos = torch.cos(torch.deg2rad(torch.stack(x[3:], dim=1)))
        factor = (1 - (cos**2).sum(dim=1) + 2 * cos.prod(dim=1)).clamp_min(1e-12).sqrt()
        target = torch.clamp(n_atoms.to(torch.float64) * self.min_volume_per_atom, min=2 * MIN_VOLUME)
        done = torch.zeros_like(factor)
        for i in range(j):
            done = done + torch.where(multiplicity[:, i] > 0, x[i].clamp_min(1e-12).log() * multiplicity[:, i], 0.0)
        rest = multiplicity[:, j + 1:].sum(dim=1) * math.log(hi)
        own = multiplicity[:, j].clamp(min=1.0)
        needed = torch.exp((torch.log(target / factor) - done - rest) / own)
        floor = self.min_length_fraction * target ** (1 / 3)
        if j == 2:
            floor = torch.where(system == _RHOMBOHEDRAL, torch.maximum(floor, x[0]), floor)
        low = torch.maximum(needed, floor).clamp(min=lo, max=hi - LENGTH_SLACK * (hi - lo))
        return low, torch.full_like(low, hi)
