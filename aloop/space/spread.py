"""Atoms spread over a crystal's Wyckoff sites by descent, for sites pyxtal cannot fill.

pyxtal places one orbit at a time at random coordinates and keeps each only if it is far enough
from those placed before. Where many orbits share one Wyckoff line or plane (six Mn orbits on
the 3a lines of P3_221, twelve atoms on the 1a and 1b lines of P3m1) nearly every draw collides
and pyxtal spends its whole time limit. ``spread`` moves the free coordinates of all orbits at
once instead: a batch of random starts descends a soft repulsion (the squared shortfall of each
pair below pyxtal's closest approach, periodic images included) until a start keeps every pair
apart (``MARGIN`` times that distance) and its structure has exactly the crystal's group (spglib, ``SYMPREC``).

Written by hand because neither pyxtal nor spglib places atoms by optimisation; the orbits are
pyxtal's Wyckoff operations, the distances those of ``aloop.space.spacing``.

Example:
    >>> from pymatgen.core import Composition
    >>> from aloop.space.crystal import Crystal
    >>> from aloop.space.structure import min_distance
    >>> sites = (("Li", "a"),) * 3 + (("Mn", "b"),) * 3 + (("O", "c"),) * 3  # three orbits on each 3-fold axis
    >>> chain = Crystal(156, Composition("Li3Mn3O3"), (3.0, 3.0, 7.0, 90, 90, 120), sites)
    >>> s = spread(chain, seed=0)
    >>> len(s), min_distance(s) >= float(closest_approach(("O",))[0, 0])
    (9, True)
"""

from __future__ import annotations

from functools import cache
from itertools import product

import numpy as np
import torch
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from aloop.hardware import torch_threads
from aloop.space.crystal import SYMPREC, Crystal, CrystalBatch
from aloop.space.spacing import closest_approach, crowded, lattice_vectors
from aloop.space.supergroup import forced_supergroup
from aloop.space.wyckoff import positions

STARTS = 8
"""Random starts descended together."""
STEPS = 150
"""Descent steps before giving up."""
LEARNING_RATE = 0.01
"""Adam's step, in fractional coordinates of the general point."""
MARGIN = 1.3
"""Starts descend until every pair is this many times pyxtal's closest approach apart (pyxtal's random
placements mostly keep more than its bare tolerance); one that only reaches 1 is kept when none does better."""
MAX_GROWTH = 1.5
"""Most a cell's lengths may grow (``spread(grow=True)``): volume 3.4 times the cell's."""
SHIFTS = torch.tensor(list(product((-1.0, 0.0, 1.0), repeat=3)), dtype=torch.float64)
"""Periodic images looked at around the nearest one."""


class SpreadError(ValueError):
    """No start kept the atoms apart in the crystal's exact group; the message says which crystal."""


@cache
def orbit_operations(group: int, letter: str) -> torch.Tensor:
    """``(m, 3, 4)`` affine maps (pyxtal's Wyckoff operations) from a general point to the ``m`` points of
    the orbit through its projection on the letter's locus."""
    from pyxtal.symmetry import Group

    wp = next(w for w in Group(group) if w.letter == letter)
    return torch.tensor(np.array([op.affine_matrix[:3] for op in wp.ops]), dtype=torch.float64)


def spread(crystal: Crystal, *, seed: int, grow: bool = False, starts: int = STARTS, steps: int = STEPS) -> Structure:
    """The crystal's elements on exactly its sites, in its lattice, every pair at least pyxtal's closest
    approach apart, in exactly its group. On one torch thread: the tensors are small, and a second thread
    only waits (three times the CPU time on a loaded machine).

    Args:
        grow: where no start keeps the atoms apart in the crystal's cell, the most spread-out one may have
            its cell grown (shape and fractional coordinates kept, lengths times ``MAX_GROWTH`` at most) until
            it does: for placements whose volume is set afterwards from the bonds (``predicted_volume``).

    Raises:
        SpreadError: the crystal has no sites, sites without room (``crowded``) or sites that force a higher
            group (``forced_supergroup``), or no start kept its atoms apart in exactly its group.
    """
    where = f"{crystal.formula} on {crystal.wyckoff} of space group {crystal.space_group}"
    if (reason := hopeless(crystal)) is not None:
        raise SpreadError(f"cannot spread {where}: {reason}")
    fixed = not has_free_coordinates(crystal)
    with torch_threads(1):
        structure = _descend(crystal, seed=seed, grow=grow, starts=1 if fixed else starts, steps=0 if fixed else steps)
    if structure is None and fixed:
        raise SpreadError(f"cannot spread {where} in lattice {crystal.lattice}: its sites have no free coordinates, "
                          f"and their one structure has its atoms too close or another group")
    if structure is None:
        raise SpreadError(f"cannot spread {where} in lattice {crystal.lattice}: no start of {starts} kept its "
                          f"atoms apart in exactly that group within {steps} steps")
    return structure


def has_free_coordinates(crystal: Crystal) -> bool:
    """Whether any of the crystal's Wyckoff sites has a free coordinate (else its atoms have one structure per
    cell: nothing to descend, and it is checked once; every start descending it took about 1 s a crystal)."""
    free = positions(crystal.space_group)
    return any(free[letter].free for _, letter in crystal.sites)


def _descend(crystal: Crystal, *, seed: int, grow: bool, starts: int, steps: int) -> Structure | None:
    """``spread``'s descent: the first start whose atoms are ``MARGIN`` apart in the crystal's group, else the
    most spread-out one that is (or, grown, gets) apart; ``None`` when none is."""
    symbols = tuple(sorted({el for el, _ in crystal.sites}))
    operations = [orbit_operations(crystal.space_group, letter) for _, letter in crystal.sites]
    operation = torch.cat(operations)
    orbit = torch.repeat_interleave(torch.arange(len(operations)), torch.tensor([len(o) for o in operations]))
    element = torch.tensor([symbols.index(el) for el, _ in crystal.sites])[orbit]
    tolerance = closest_approach(symbols)[element][:, element]
    cell = lattice_vectors(torch.tensor([crystal.lattice], dtype=torch.float64))[0]
    species = [symbols[e] for e in element.tolist()]
    generator = torch.Generator().manual_seed(seed)
    general = torch.rand(starts, len(operations), 3, generator=generator, dtype=torch.float64).requires_grad_()
    optimiser = torch.optim.Adam([general], lr=LEARNING_RATE)

    def in_group(points: torch.Tensor) -> Structure | None:
        structure = Structure(Lattice(cell.numpy()), species, (points.detach() % 1.0).numpy())
        found = SpacegroupAnalyzer(structure, symprec=SYMPREC).get_space_group_number()
        return structure if found == crystal.space_group else None

    for _ in range(steps):
        points = atom_positions(general, operation, orbit)
        apart = closest_distances(points, cell) / tolerance
        loss = torch.relu(MARGIN - apart).square().sum(dim=(1, 2))
        for start in (loss == 0).nonzero().flatten().tolist():
            if (structure := in_group(points[start])) is not None:
                return structure
            with torch.no_grad():  # apart but in another group: start this one again elsewhere
                general[start] = torch.rand(len(operations), 3, generator=generator, dtype=torch.float64)
        optimiser.zero_grad()
        loss.sum().backward()
        optimiser.step()
    with torch.no_grad():  # none reached the margin: the most spread-out start that is (or, grown, gets) apart
        points = atom_positions(general, operation, orbit)
        closest = (closest_distances(points, cell) / tolerance).flatten(1).amin(dim=1)
    enough = 1.0 / MAX_GROWTH if grow else 1.0
    for start in closest.argsort(descending=True).tolist():
        if closest[start] >= enough and (structure := in_group(points[start])) is not None:
            if closest[start] < 1.0:
                structure.scale_lattice(structure.volume / float(closest[start]) ** 3)
            return structure
    return None


def hopeless(crystal: Crystal) -> str | None:
    """Why no coordinates put the crystal's atoms apart in its group (``None``: some may). Builds
    ``forced_supergroup``'s table on first use (seconds): call it before a time limit, not inside."""
    if not crystal.sites:
        return "it has no Wyckoff sites"
    batch = CrystalBatch.from_crystals([crystal], tuple(sorted({el for el, _ in crystal.sites})))
    if bool(crowded(batch)[0]):
        return "a Wyckoff line or plane has no room for its atoms"
    if bool(forced_supergroup(batch)[0]):
        return "these sites have a higher group whatever their coordinates"
    return None


def atom_positions(general: torch.Tensor, operation: torch.Tensor, orbit: torch.Tensor) -> torch.Tensor:
    """``(S, A, 3)`` fractional positions of every atom: ``operation[a]`` applied to its orbit's general point
    (``general``: ``(S, orbits, 3)``)."""
    mine = general[:, orbit]
    return torch.einsum("aij,saj->sai", operation[:, :, :3], mine) + operation[:, :, 3]


def closest_distances(points: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """``(S, A, A)`` distance (Angstrom) between atoms at their closest periodic images; an atom and itself:
    far apart (its images are a lattice vector away whatever its coordinates). The closest image is found
    without gradients, and only its distance is differentiated (27 times less to carry back)."""
    difference = points[:, :, None] - points[:, None, :]
    vector = (difference - torch.round(difference).detach()) @ cell
    shifts = SHIFTS @ cell
    with torch.no_grad():
        nearest = (vector.detach().float().unsqueeze(-2) + shifts.float()).square().sum(dim=-1).argmin(dim=-1)
    squared = (vector + shifts[nearest]).square().sum(dim=-1)
    far = torch.eye(points.shape[1], dtype=points.dtype) * 1e6
    return torch.sqrt(squared + far + 1e-12)
