"""Crystal -> pymatgen ``Structure`` through pyxtal: atoms on Wyckoff sites of the group.

pyxtal places the given counts on Wyckoff positions of the space group (its standard
setting, R groups hexagonal) inside the given lattice, at random but seeded, keeping
atoms apart by its tolerance matrix. ``Crystal.from_structure`` is the way back.

Example:
    >>> from pymatgen.core import Composition
    >>> from aloop.space.crystal import Crystal
    >>> s = to_structure(Crystal(225, Composition("Na4Cl4"), (5.64,) * 3 + (90.0,) * 3), seed=0)
    >>> s.composition.reduced_formula, round(s.lattice.a, 2)
    ('NaCl', 5.64)
"""

from __future__ import annotations

import numpy as np
from pymatgen.core import Structure

from aloop.space.crystal import Crystal
from aloop.space.groups import space_group

MIN_DISTANCE = 0.5
"""Two atoms closer than this (Angstrom) make a structure invalid (MatterGen/CDVAE convention)."""


class StructureError(ValueError):
    """pyxtal could not place the atoms of a crystal; the message says which crystal and why."""


def to_structure(crystal: Crystal, *, seed: int | None = None, attempts: int = 10) -> Structure:
    """Atoms of ``crystal`` on Wyckoff sites of its group, in its lattice, as a pymatgen ``Structure``.

    Args:
        crystal: space group, conventional-cell counts and lattice (Angstrom, degrees).
        seed: seeds pyxtal's placement; the same seed gives the same structure.
        attempts: placements pyxtal tries before giving up.

    Raises:
        StructureError: the counts do not fit the group's Wyckoff positions, or no
            placement keeps the atoms apart in this lattice within ``attempts``.
    """
    from pyxtal import pyxtal
    from pyxtal.lattice import Lattice

    group = space_group(crystal.space_group)
    species = [el.symbol for el in crystal.composition]
    counts = [int(round(n)) for n in crystal.composition.values()]
    lattice = Lattice.from_para(*crystal.lattice, ltype=group.crystal_system)
    generator = pyxtal()
    try:
        generator.from_random(3, crystal.space_group, species, counts, lattice=lattice, max_count=attempts,
                              random_state=np.random.default_rng(seed))
    except Exception as err:  # pyxtal raises bare RuntimeError/ValueError/its own classes: report all
        raise StructureError(f"pyxtal cannot place {crystal.formula} in space group {crystal.space_group} "
                             f"({group.symbol}) with lattice {crystal.lattice}: {err}") from err
    if not generator.valid:
        raise StructureError(f"pyxtal found no valid placement of {crystal.formula} in space group "
                             f"{crystal.space_group} with lattice {crystal.lattice} in {attempts} attempts")
    return generator.to_pymatgen()


def min_distance(structure: Structure) -> float:
    """Shortest distance (Angstrom) between two sites under periodic images; inf for one site."""
    if len(structure) < 2:
        return float("inf")
    distances = structure.distance_matrix + np.diag(np.full(len(structure), np.inf))
    return float(distances.min())


def has_close_atoms(structure: Structure, *, cutoff: float = MIN_DISTANCE) -> bool:
    """Whether two atoms are closer than ``cutoff`` Angstrom (structurally invalid)."""
    return min_distance(structure) < cutoff
