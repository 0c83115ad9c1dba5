"""The 230 space groups as pyxtal knows them: systems, point groups, Wyckoff positions.

Everything is read from ``pyxtal.symmetry.Group`` (its tables come from the
International Tables via spglib's Hall settings), never typed by hand. The data is
cached on disk (``aloop.space.cache``) because building 230 groups takes about 1.5 s.

Settings: pyxtal's standard settings, the ones its Wyckoff multiplicities refer to:
monoclinic groups with unique axis b, and rhombohedral (R) groups in the hexagonal
setting (3 lattice points per conventional cell), as ``Crystal.from_structure`` yields.

Example:
    >>> space_group(166).lattice_system, space_group(166).point_symmetry
    ('trigonal_rhombohedral', 'centrosymmetric')
    >>> space_group_table().lattice_system.shape
    torch.Size([231])
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch

from aloop.config import CRYSTAL_LATTICE_SYSTEMS, POINT_SYMMETRIES
from aloop.space.cache import load_cached, save_cached

CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")
POINT_GROUPS = (
    "1", "-1", "2", "m", "2/m", "222", "mm2", "mmm", "4", "-4", "4/m", "422", "4mm", "-42m",
    "4/mmm", "3", "-3", "32", "3m", "-3m", "6", "-6", "6/m", "622", "6mm", "-62m", "6/mmm",
    "23", "m-3", "432", "-43m", "m-3m",
)
"""The 32 crystallographic point groups in pyxtal's notation, in International Tables order."""
N_SPACE_GROUPS = 230
N_LATTICE_SYSTEMS = len(CRYSTAL_LATTICE_SYSTEMS)
N_POINT_SYMMETRIES = len(POINT_SYMMETRIES)
_CACHE = "space-groups-v3"


@dataclass(frozen=True)
class WyckoffPosition:
    """One Wyckoff position: multiplicity in the conventional cell, letter, free or fixed."""

    multiplicity: int
    letter: str
    free: bool
    """True when the position has free coordinates, so it may be occupied more than once."""


@dataclass(frozen=True)
class SpaceGroup:
    """One space group in pyxtal's standard setting."""

    number: int
    symbol: str
    crystal_system: str
    lattice_system: str
    """One of ``CRYSTAL_LATTICE_SYSTEMS``: trigonal groups split by centring (R or P)."""
    point_group: str
    point_symmetry: str
    hall_number: int
    """spglib's Hall number of pyxtal's setting (origin choice 2 where the group has two)."""
    wyckoff_positions: tuple[WyckoffPosition, ...]
    """General position first, as pyxtal lists them."""
    multiplicity_bounds: tuple[tuple[int, ...], tuple[int | None, ...]]
    """pyxtal's (distinct multiplicities, how often each may be used; None = unbounded)."""


@dataclass(frozen=True)
class SpaceGroupTable:
    """Per-group data as tensors indexed by space-group number (length 231, index 0 unused, -1).

    Attributes:
        crystal_system: ``(231,)`` long, index into ``CRYSTAL_SYSTEMS``.
        lattice_system: ``(231,)`` long, index into ``CRYSTAL_LATTICE_SYSTEMS``.
        point_group: ``(231,)`` long, index into ``POINT_GROUPS``.
        point_symmetry: ``(231,)`` long, index into ``aloop.config.POINT_SYMMETRIES``.
        wyckoff_multiplicity: ``(231, W)`` long, multiplicities padded with 0.
        wyckoff_free: ``(231, W)`` bool, position has free coordinates (False on padding).
    """

    crystal_system: torch.Tensor
    lattice_system: torch.Tensor
    point_group: torch.Tensor
    point_symmetry: torch.Tensor
    wyckoff_multiplicity: torch.Tensor
    wyckoff_free: torch.Tensor


def _lattice_system(crystal_system: str, symbol: str) -> str:
    if crystal_system == "trigonal":
        return "trigonal_rhombohedral" if symbol.startswith("R") else "trigonal_hexagonal"
    return crystal_system


def _point_symmetry(inversion: bool, polar: bool) -> str:
    if inversion:
        return "centrosymmetric"
    return "non_centrosymmetric_polar" if polar else "non_centrosymmetric_non_polar"


def _read_pyxtal(number: int) -> dict:
    from pyxtal.symmetry import Group

    group = Group(number)
    base, upper = group._get_base_and_upper_bounds()  # what Group.check_compatible feeds its solver
    return {
        "number": number,
        "symbol": group.symbol,
        "crystal_system": group.lattice_type,
        "point_group": group.point_group,
        "inversion": bool(group.inversion),
        "polar": bool(group.polar),
        "hall_number": int(group.hall_number),
        "wyckoff": [[int(wp.multiplicity), wp.letter, bool(wp.get_dof() > 0)] for wp in group],
        "bounds": [[int(b) for b in base], upper],
    }


@cache
def all_space_groups() -> tuple[SpaceGroup, ...]:
    """The 230 groups in order (``all_space_groups()[n - 1].number == n``), from pyxtal."""
    raw = load_cached(_CACHE)
    if raw is None:
        raw = [_read_pyxtal(n) for n in range(1, N_SPACE_GROUPS + 1)]
        save_cached(_CACHE, raw)
    return tuple(
        SpaceGroup(
            number=d["number"],
            symbol=d["symbol"],
            crystal_system=d["crystal_system"],
            lattice_system=_lattice_system(d["crystal_system"], d["symbol"]),
            point_group=d["point_group"],
            point_symmetry=_point_symmetry(d["inversion"], d["polar"]),
            hall_number=d["hall_number"],
            wyckoff_positions=tuple(WyckoffPosition(m, letter, free) for m, letter, free in d["wyckoff"]),
            multiplicity_bounds=(tuple(d["bounds"][0]), tuple(d["bounds"][1])),
        )
        for d in raw
    )


def space_group(number: int) -> SpaceGroup:
    """Space group ``number`` (1-230); ``ValueError`` outside that range."""
    if not 1 <= number <= N_SPACE_GROUPS:
        raise ValueError(f"space group {number} is outside 1-{N_SPACE_GROUPS}")
    return all_space_groups()[number - 1]


@cache
def space_group_table() -> SpaceGroupTable:
    """All groups as tensors indexed by number; see ``SpaceGroupTable``."""
    groups = all_space_groups()
    width = max(len(g.wyckoff_positions) for g in groups)
    multiplicity = torch.zeros(N_SPACE_GROUPS + 1, width, dtype=torch.long)
    free = torch.zeros(N_SPACE_GROUPS + 1, width, dtype=torch.bool)
    for g in groups:
        multiplicity[g.number, : len(g.wyckoff_positions)] = torch.tensor([w.multiplicity for w in g.wyckoff_positions])
        free[g.number, : len(g.wyckoff_positions)] = torch.tensor([w.free for w in g.wyckoff_positions])

    def column(names: tuple[str, ...], values: list[str]) -> torch.Tensor:
        return torch.tensor([-1] + [names.index(v) for v in values], dtype=torch.long)

    return SpaceGroupTable(
        crystal_system=column(CRYSTAL_SYSTEMS, [g.crystal_system for g in groups]),
        lattice_system=column(CRYSTAL_LATTICE_SYSTEMS, [g.lattice_system for g in groups]),
        point_group=column(POINT_GROUPS, [g.point_group for g in groups]),
        point_symmetry=column(POINT_SYMMETRIES, [g.point_symmetry for g in groups]),
        wyckoff_multiplicity=multiplicity,
        wyckoff_free=free,
    )
