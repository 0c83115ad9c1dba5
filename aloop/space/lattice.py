"""Lattice-system rules: which of a, b, c, alpha, beta, gamma are free and how the rest are tied.

Lattices are the conventional standard cell, the cell whose atom counts the space
uses, in pyxtal's standard settings. Rhombohedral (R) groups use the **hexagonal
setting** (a = b, alpha = beta = 90, gamma = 120; 3 lattice points per cell), as
``Crystal.from_structure`` and pyxtal's Wyckoff tables do: ``trigonal_rhombohedral``
differs from ``trigonal_hexagonal`` by its R centring, not by its six parameters.
``rhombohedral_to_hexagonal`` / ``hexagonal_to_rhombohedral`` convert to and from the
primitive rhombohedral cell (a_r, alpha_r).

Rules by system (index into ``aloop.config.CRYSTAL_LATTICE_SYSTEMS``), free parameters
in brackets:

====================== ===========================================
triclinic              [a b c alpha beta gamma]
monoclinic             [a b c beta], alpha = gamma = 90 (unique axis b)
orthorhombic           [a b c], angles 90
tetragonal             [a c], b = a, angles 90
trigonal_rhombohedral  [a c], b = a, alpha = beta = 90, gamma = 120
trigonal_hexagonal     [a c], b = a, alpha = beta = 90, gamma = 120
hexagonal              [a c], b = a, alpha = beta = 90, gamma = 120
cubic                  [a], b = c = a, angles 90
====================== ===========================================

Lengths in Angstrom, angles in degrees, parameter order ``LATTICE_KEYS``.
"""

from __future__ import annotations

import math

import torch

from aloop.config import CRYSTAL_LATTICE_SYSTEMS

MIN_VOLUME = 0.1
"""Smallest cell volume (Angstrom^3) counted as a real cell."""
LENGTH_TOL = 1e-3
"""Relative tolerance on tied lengths (b = a ...)."""
ANGLE_TOL = 1e-2
"""Tolerance (degrees) on tied and fixed angles."""

_NAN = float("nan")
_A, _B, _C, _ALPHA, _BETA, _GAMMA = range(6)
_HEXAGONAL_RULE = ((_A, _A, _C, _ALPHA, _BETA, _GAMMA), (_NAN, _NAN, _NAN, 90.0, 90.0, 120.0))
_RULES = {
    # system: (source parameter of each of the six, fixed value or nan)
    "triclinic": ((_A, _B, _C, _ALPHA, _BETA, _GAMMA), (_NAN,) * 6),
    "monoclinic": ((_A, _B, _C, _ALPHA, _BETA, _GAMMA), (_NAN, _NAN, _NAN, 90.0, _NAN, 90.0)),
    "orthorhombic": ((_A, _B, _C, _ALPHA, _BETA, _GAMMA), (_NAN, _NAN, _NAN, 90.0, 90.0, 90.0)),
    "tetragonal": ((_A, _A, _C, _ALPHA, _BETA, _GAMMA), (_NAN, _NAN, _NAN, 90.0, 90.0, 90.0)),
    "trigonal_rhombohedral": _HEXAGONAL_RULE,
    "trigonal_hexagonal": _HEXAGONAL_RULE,
    "hexagonal": _HEXAGONAL_RULE,
    "cubic": ((_A, _A, _A, _ALPHA, _BETA, _GAMMA), (_NAN, _NAN, _NAN, 90.0, 90.0, 90.0)),
}
SOURCE = torch.tensor([_RULES[s][0] for s in CRYSTAL_LATTICE_SYSTEMS], dtype=torch.long)
"""``(8, 6)`` long: parameter j of system s is copied from free parameter ``SOURCE[s, j]``."""
FIXED = torch.tensor([_RULES[s][1] for s in CRYSTAL_LATTICE_SYSTEMS], dtype=torch.float64)
"""``(8, 6)`` float: the fixed value of parameter j in system s (degrees), nan when not fixed."""
FREE = (SOURCE == torch.arange(6)) & FIXED.isnan()
"""``(8, 6)`` bool: parameter j is a free parameter of system s."""


def free_mask(lattice_system: torch.Tensor) -> torch.Tensor:
    """Which parameters are free: ``(N,)`` long system index -> ``(N, 6)`` bool."""
    return FREE.to(lattice_system.device)[lattice_system]


def expand_lattice(lattice_system: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
    """Apply the system's ties: ``(N,)`` system index and ``(N, 6)`` parameters -> ``(N, 6)``.

    Only the free entries of ``free`` are read (see ``free_mask``); tied ones are copied
    from their source and fixed angles set, so the result obeys the system's rule.
    """
    source = SOURCE.to(free.device)[lattice_system]
    fixed = FIXED.to(device=free.device, dtype=free.dtype)[lattice_system]
    return torch.where(fixed.isnan(), free.gather(1, source), fixed)


def follows_system(lattice_system: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: the ``(N, 6)`` lattice obeys its system's ties within ``LENGTH_TOL``/``ANGLE_TOL``."""
    gap = (expand_lattice(lattice_system, lattice) - lattice).abs()
    length_ok = gap[:, :3] <= LENGTH_TOL * lattice[:, :3].abs().clamp_min(1.0)
    angle_ok = gap[:, 3:] <= ANGLE_TOL
    return torch.cat([length_ok, angle_ok], dim=1).all(dim=1)


def cell_volume(lattice: torch.Tensor) -> torch.Tensor:
    """``(N, 6)`` parameters -> ``(N,)`` volume in Angstrom^3, nan when the angles make no cell."""
    cos = torch.cos(torch.deg2rad(lattice[:, 3:]))
    factor = 1 - (cos**2).sum(dim=1) + 2 * cos.prod(dim=1)
    volume = lattice[:, :3].prod(dim=1) * factor.clamp_min(0).sqrt()
    return torch.where(factor > 0, volume, torch.full_like(volume, float("nan")))


def is_real_cell(lattice: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: positive lengths, angles in (0, 180) and volume >= ``MIN_VOLUME``.

    For any angles in (0, 180) a positive Gram determinant is equivalent to each angle
    being below the sum of the other two and the three summing to below 360 degrees.
    """
    angles = lattice[:, 3:]
    shape_ok = (lattice[:, :3] > 0).all(dim=1) & ((angles > 0) & (angles < 180)).all(dim=1)
    return shape_ok & (cell_volume(lattice).nan_to_num(0.0) >= MIN_VOLUME)


def gamma_bounds(alpha: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Open interval of gamma (degrees) that makes a real cell with ``alpha``, ``beta`` (both ``(N,)``).

    |alpha - beta| < gamma < min(alpha + beta, 360 - alpha - beta); lets a sampler draw a
    triclinic gamma that always gives a cell, with no rejection.
    """
    low = (alpha - beta).abs()
    high = torch.minimum(alpha + beta, 360 - alpha - beta)
    return low, high


def in_ranges(lattice: torch.Tensor, *, length_range: tuple[float, float],
              angle_range: tuple[float, float]) -> torch.Tensor:
    """``(N,)`` bool: all three lengths and all three angles of ``(N, 6)`` lie in the closed ranges."""
    lengths, angles = lattice[:, :3], lattice[:, 3:]
    ok_lengths = (lengths >= length_range[0]) & (lengths <= length_range[1])
    ok_angles = (angles >= angle_range[0] - ANGLE_TOL) & (angles <= angle_range[1] + ANGLE_TOL)
    return torch.cat([ok_lengths, ok_angles], dim=1).all(dim=1)


def system_fits_ranges(angle_range: tuple[float, float]) -> torch.Tensor:
    """``(8,)`` bool: the system's fixed angles (90, 120) lie in ``angle_range``; a triclinic cell needs
    some angle below 120 (equal angles theta < 120 make a cell)."""
    fixed = FIXED.nan_to_num(angle_range[0])[:, 3:]
    fits = ((fixed >= angle_range[0]) & (fixed <= angle_range[1])).all(dim=1)
    fits[CRYSTAL_LATTICE_SYSTEMS.index("triclinic")] = angle_range[0] < 120.0
    return fits


def rhombohedral_to_hexagonal(a_r: float, alpha_r: float) -> tuple[float, float]:
    """Primitive rhombohedral (a_r Angstrom, alpha_r degrees) -> hexagonal setting (a, c)."""
    a = 2 * a_r * math.sin(math.radians(alpha_r) / 2)
    c = a_r * math.sqrt(3 * (1 + 2 * math.cos(math.radians(alpha_r))))
    return a, c


def hexagonal_to_rhombohedral(a: float, c: float) -> tuple[float, float]:
    """Hexagonal setting (a, c in Angstrom) of an R lattice -> primitive rhombohedral (a_r, alpha_r degrees)."""
    a_r = math.sqrt(3 * a**2 + c**2) / 3
    alpha_r = math.degrees(2 * math.asin(a / (2 * a_r)))
    return a_r, alpha_r
