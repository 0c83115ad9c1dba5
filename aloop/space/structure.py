"""Atom placement: Crystal -> pymatgen ``Structure`` through pyxtal, atoms on Wyckoff sites of the group.

pyxtal places the given counts on Wyckoff positions of the space group (its standard
setting, R groups hexagonal) inside the given lattice, at random but seeded, keeping
atoms apart by its tolerance matrix. ``Crystal.from_structure`` is the way back.

Example:
    >>> from pymatgen.core import Composition
    >>> from aloop.space.crystal import SYMPREC, Crystal
    >>> s = to_structure(Crystal(225, Composition("Na4Cl4"), (5.64,) * 3 + (90.0,) * 3), seed=0)
    >>> s.composition.reduced_formula, round(s.lattice.a, 2)
    ('NaCl', 5.64)
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from aloop.space.crystal import SYMPREC, Crystal
from aloop.space.groups import space_group
from aloop.space.lattice import cell_volume

MIN_DISTANCE = 0.5
"""Two atoms closer than this (Angstrom) make a structure invalid (MatterGen/CDVAE convention)."""
MIN_VOLUME_PER_ATOM = 3.0
"""Cells denser than this (Angstrom^3 per atom) are refused at once: pyxtal spends about 30 s
per attempt on them and fails (measured on Fe6O6 and Li8O4 in P1), and no Materials Project
crystal is denser than 4.8 (mp_cgcnn36k)."""
PLACEMENT_CPU_S = 5.0
"""CPU seconds pyxtal may spend on the atoms of one candidate. Placements take 0.01-1 s; a
crystal whose Wyckoff sites cannot keep its atoms apart takes pyxtal about 10 s of CPU per
try and ten tries (measured: Na6Co6O6 in R3c, a = 5.2, c = 6.2 A), which stalled a round."""


class StructureError(ValueError):
    """pyxtal could not place the atoms of a crystal; the message says which crystal and why."""


class TimeLimit(Exception):
    """The block ran out of its CPU time."""


@contextmanager
def cpu_time_limit(seconds: float) -> Iterator[None]:
    """Raise ``TimeLimit`` in the block once the process has spent ``seconds`` of CPU time in it.

    CPU time, not wall time: a busy machine does not change which placements succeed, so a
    round stays reproducible. Only the main thread can be interrupted; elsewhere the
    block runs without a limit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise TimeLimit(f"over {seconds:g} s of CPU time")

    previous = signal.signal(signal.SIGVTALRM, expire)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)


def to_structure(crystal: Crystal, *, seed: int | None = None, attempts: int = 10,
                 exact_group: bool = False) -> Structure:
    """Atoms of ``crystal`` on Wyckoff sites of its group, in its lattice, as a pymatgen ``Structure``.

    Args:
        crystal: space group, conventional-cell counts and lattice (Angstrom, degrees).
        seed: seeds pyxtal's choice of Wyckoff positions and coordinates; the same seed
            gives the same structure.
        attempts: pyxtal placements tried before giving up.
        exact_group: also reject placements whose symmetry (spglib, ``SYMPREC``) is higher
            than the requested group, e.g. Ti2O4 in P4_2/mnm with O on a fixed 4c site
            (I4/mmm); by default any placement pyxtal accepts is returned.

    Raises:
        StructureError: the counts do not fit the group's Wyckoff positions, or no
            placement in ``attempts`` keeps the atoms apart (or has the exact group).
    """
    from pyxtal import pyxtal
    from pyxtal.lattice import Lattice
    from pyxtal.msg import Error as PyxtalError

    group = space_group(crystal.space_group)
    species = [el.symbol for el in crystal.composition]
    counts = [int(round(n)) for n in crystal.composition.values()]
    rng = np.random.default_rng(seed)
    where = f"{crystal.formula} in space group {crystal.space_group} ({group.symbol}) with lattice {crystal.lattice}"
    volume = float(cell_volume(torch.tensor([crystal.lattice], dtype=torch.float64))[0])
    if not volume >= MIN_VOLUME_PER_ATOM * sum(counts):
        raise StructureError(f"cannot place {where}: cell volume {volume:.2f} A^3 is below "
                             f"{MIN_VOLUME_PER_ATOM} A^3 per atom")
    reason = "no attempt made"
    for _ in range(attempts):
        generator = pyxtal()
        try:
            lattice = Lattice.from_para(*crystal.lattice, ltype=group.crystal_system, random_state=rng)
            generator.from_random(3, crystal.space_group, species, counts, lattice=lattice, max_count=1,
                                  random_state=rng)
        except PyxtalError as err:  # incompatible counts or impossible cell: no point in trying again
            raise StructureError(f"pyxtal cannot place {where}: {err}") from err
        except RuntimeError as err:  # pyxtal's "long time to generate structure": atoms too close
            reason = f"atoms could not be kept apart ({err})"
            continue
        structure = generator.to_pymatgen()
        found = SpacegroupAnalyzer(structure, symprec=SYMPREC).get_space_group_number() if exact_group else None
        if found is None or found == crystal.space_group:
            return structure
        reason = f"placements have the higher symmetry of space group {found}"
    raise StructureError(f"pyxtal cannot place {where} in {attempts} attempts: {reason}")


def placed_structure(crystal: Crystal) -> Structure | None:
    """The atoms of ``crystal`` placed by pyxtal, seeded by its hash (always the same placement),
    or ``None`` when pyxtal cannot place them within ``PLACEMENT_CPU_S``."""
    try:
        with cpu_time_limit(PLACEMENT_CPU_S):
            return to_structure(crystal, seed=int(crystal.canonical_hash[:8], 16))
    except (StructureError, TimeLimit):
        return None


def min_distance(structure: Structure) -> float:
    """Shortest distance (Angstrom) between two sites under periodic images; inf for one site."""
    if len(structure) < 2:
        return float("inf")
    distances = structure.distance_matrix + np.diag(np.full(len(structure), np.inf))
    return float(distances.min())


def has_close_atoms(structure: Structure, *, cutoff: float = MIN_DISTANCE) -> bool:
    """Whether two atoms are closer than ``cutoff`` Angstrom (structurally invalid)."""
    return min_distance(structure) < cutoff
