"""Atom placement: Crystal -> pymatgen ``Structure``, atoms on Wyckoff sites of the group.

``place`` is the one placement every path uses (proposal, cold start, labelling): a
crystal with sites first takes the free coordinates of the chemically closest template
(``aloop.space.templates``) that keeps its atoms apart and its group; otherwise pyxtal
places the counts on exactly the crystal's sites (on Wyckoff positions of its choice when
the crystal has none) inside the given lattice, at random but seeded, keeping atoms apart
by its tolerance matrix. pyxtal's standard setting, R groups hexagonal. ``placed_structure``, the
round's placement, bounds that in CPU time and falls back on ``aloop.space.spread`` (all orbits' free
coordinates moved at once by descent) where pyxtal fails or lands in a higher group.
``Crystal.from_structure`` is the way back.

Example:
    >>> from pymatgen.core import Composition
    >>> from aloop.space.crystal import SYMPREC, Crystal, CrystalBatch
    >>> s = to_structure(Crystal(225, Composition("Na4Cl4"), (5.64,) * 3 + (90.0,) * 3), seed=0)
    >>> s.composition.reduced_formula, round(s.lattice.a, 2)
    ('NaCl', 5.64)
"""

from __future__ import annotations

import math
import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from pymatgen.analysis.structure_prediction.volume_predictor import DLSVolumePredictor
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from aloop.config import PlacementSettings
from aloop.space.crystal import SYMPREC, Crystal, CrystalBatch
from aloop.space.groups import space_group
from aloop.space.lattice import cell_volume
from aloop.space.spacing import crowded
from aloop.space.spread import SpreadError, hopeless, spread
from aloop.space.templates import Decoration, TemplatePool
from aloop.space.wyckoff import positions, site_errors

MIN_DISTANCE = 0.5
"""Two atoms closer than this (Angstrom) make a structure invalid (MatterGen/CDVAE convention)."""
MIN_VOLUME_PER_ATOM = 3.0
"""Cells denser than this (Angstrom^3 per atom) are refused at once: pyxtal spends about 30 s
per attempt on them and fails (measured on Fe6O6 and Li8O4 in P1), and no Materials Project
crystal is denser than 4.8 (mp_cgcnn36k)."""
PLACEMENT_CPU_S = 3.0
"""CPU seconds placement may spend on the atoms of one candidate. On sampled Wyckoff sites, 178 of
200 untrained samples (default and Li-Mn-O) were placed, 99% within 1.4 s and all within 2.6 s;
the 22 that could not be placed each used the whole limit (5 s before: 55 s of CPU per 100
candidates in batch selection). Sites that cannot keep their atoms apart in the sampled lattice
take pyxtal about 10 s of CPU per try (Na6Co6O6 in R3c, a = 5.2, c = 6.2 A), which stalled a round."""
SPREAD_CPU_S = 2.0
"""CPU seconds ``spread`` may spend on a crystal that templates and pyxtal could not place."""
EXPIRED_EVERY_S = 0.01
"""CPU seconds between two ``TimeLimit`` raised in a block that is past its limit (``cpu_time_limit``)."""
PACKING = 1.78
"""Cell volume over the atoms' sphere volume (pymatgen atomic radii): the median of 5,000 Materials Project
entries (mp_cgcnn36k; quartiles 1.42 and 2.52)."""
ROOM_STEPS = 8
"""Scales tried between the packed and the sampled cell when the packed one leaves some site no room."""
VOLUME_PREDICTOR = DLSVolumePredictor()
"""pymatgen's defaults: bonds looked for up to 4 A beyond the atomic radius, the volume changed by a factor 0.5-1.5
at most (one pair placed too close would otherwise blow the whole cell up)."""
TEMPLATE_PROPERTY = "template"
"""Key of ``Structure.properties`` naming the template a placed structure was decorated from (absent: pyxtal)."""


@dataclass(frozen=True)
class Placement:
    """How atoms are placed: the template pool (``None``: pyxtal only) and the ``placement`` settings."""

    pool: TemplatePool | None = None
    attempts: int = 10
    """pyxtal placements tried, and templates tried, before giving up."""
    lattice: Literal["sampled", "template"] = "sampled"
    volume: Literal["sampled", "predicted"] = "sampled"
    """``predicted``: the placed structure is scaled to its bonds' expected lengths (``predicted_volume``)."""
    spread: bool = True
    """``placed_structure`` spreads what pyxtal cannot place, or places in a higher group (``spread``)."""

    @classmethod
    def from_settings(cls, settings: PlacementSettings, pool: TemplatePool | None) -> Placement:
        return cls(pool if settings.templates else None, settings.attempts, settings.lattice, settings.volume,
                   settings.spread)


class StructureError(ValueError):
    """pyxtal could not place the atoms of a crystal; the message says which crystal and why."""


class TimeLimit(Exception):
    """The block ran out of its CPU time."""


@contextmanager
def cpu_time_limit(seconds: float) -> Iterator[None]:
    """Raise ``TimeLimit`` in the block once the process has spent ``seconds`` of CPU time in it.

    CPU time, not wall time: a busy machine does not change which placements succeed, so a
    round stays reproducible. Only the main thread can be interrupted; elsewhere the
    block runs without a limit. Once expired, the limit is raised again about every
    ``EXPIRED_EVERY_S`` of CPU until the block ends: pyxtal's bare ``except:`` clauses
    swallow one ``TimeLimit``, and a placement then ran on for 281 s of CPU. Those repeats
    run on the wall clock, jittered (0.5-1.5 times): the CPU clock advances in kernel
    ticks, and a loop of about one tick per pass was caught at the same place every time,
    inside its ``except:`` (the test's loop, in 6 of 12 runs). Once expired the block stops
    either way, so the wall clock changes only how soon.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    jitter = random.Random(0)

    def expire(signum: int, frame: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, EXPIRED_EVERY_S * jitter.uniform(0.5, 1.5))
        raise TimeLimit(f"over {seconds:g} s of CPU time")

    previous = signal.signal(signal.SIGVTALRM, expire), signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGVTALRM, previous[0])
        signal.signal(signal.SIGALRM, previous[1])


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

    A crystal with sites gets its atoms on exactly those orbits.

    Raises:
        StructureError: the counts (or sites) do not fit the group's Wyckoff positions, or no
            placement in ``attempts`` keeps the atoms apart (or has the exact group).
    """
    from pyxtal import pyxtal
    from pyxtal.lattice import Lattice
    from pyxtal.msg import Error as PyxtalError

    group = space_group(crystal.space_group)
    species = [el.symbol for el in crystal.composition]
    counts = [int(round(n)) for n in crystal.composition.values()]
    table = positions(crystal.space_group)
    sites = [[f"{table[w].multiplicity}{w}" for el, w in crystal.sites if el == symbol] for symbol in species]
    rng = np.random.default_rng(seed)
    where = f"{crystal.formula} in space group {crystal.space_group} ({group.symbol}) with lattice {crystal.lattice}"
    volume = float(cell_volume(torch.tensor([crystal.lattice], dtype=torch.float64))[0])
    if crystal.sites and (errors := site_errors(crystal.sites, crystal.space_group, dict(zip(species, counts)))):
        raise StructureError(f"cannot place {where} on sites {crystal.wyckoff}: {'; '.join(errors)}")
    if crystal.sites and bool(crowded(CrystalBatch.from_crystals([crystal], tuple(species)))[0]):
        raise StructureError(f"cannot place {where} on sites {crystal.wyckoff}: a Wyckoff line or plane has no room "
                             "for its atoms (aloop.space.spacing)")
    if not volume >= MIN_VOLUME_PER_ATOM * sum(counts):
        raise StructureError(f"cannot place {where}: cell volume {volume:.2f} A^3 is below "
                             f"{MIN_VOLUME_PER_ATOM} A^3 per atom")
    reason = "no attempt made"
    for _ in range(attempts):
        generator = pyxtal()
        try:
            lattice = Lattice.from_para(*crystal.lattice, ltype=group.crystal_system, random_state=rng)
            generator.from_random(3, crystal.space_group, species, counts, lattice=lattice, max_count=1,
                                  sites=sites if crystal.sites else None, random_state=rng)
        except PyxtalError as err:  # incompatible counts or impossible cell: no point in trying again
            raise StructureError(f"pyxtal cannot place {where}: {err}") from err
        except RuntimeError as err:  # pyxtal's "long time to generate structure": atoms too close
            reason = f"atoms could not be kept apart ({err})"
            continue
        except TypeError as err:  # pyxtal 1.1.5 compares with a missing distance tolerance on some given sites
            reason = f"pyxtal failed inside its distance check ({err})"
            continue
        structure = generator.to_pymatgen()
        found = _group(structure) if exact_group else None
        if found is None or found == crystal.space_group:
            return structure
        reason = f"placements have the higher symmetry of space group {found}"
    raise StructureError(f"pyxtal cannot place {where} in {attempts} attempts: {reason}")


def place(crystal: Crystal, placement: Placement = Placement(), *, seed: int | None) -> Structure:
    """The atoms of ``crystal``: on the closest template that fits, else by pyxtal (``to_structure``).

    A template fits when its decoration keeps atoms ``MIN_DISTANCE`` apart and has exactly the
    crystal's group (spglib, ``SYMPREC``); up to ``placement.attempts`` templates are tried, closest
    first. A templated structure names its template in ``properties[TEMPLATE_PROPERTY]``. pyxtal's
    placement is kept whatever its symmetry: sites on fixed positions only can force a higher group
    (about half of an untrained generator's samples in the smoke space; ``aloop.space.supergroup`` tells
    which: the generator's reward gives them the floor, and the round's design and batch pass them over).
    With ``placement.volume == "predicted"`` the atoms are placed in the crystal's cell shape at
    ``at_packed_volume`` and the result is scaled to its bonds (``predicted_volume``).

    Raises:
        StructureError: no template fits and pyxtal cannot place the atoms.
    """
    if placement.volume == "predicted":
        crystal = at_packed_volume(crystal)
    structure = None
    if crystal.sites and placement.pool is not None:
        for decoration in placement.pool.decorations(crystal)[:placement.attempts]:
            candidate = decorated(crystal, decoration, placement.lattice)
            if not has_close_atoms(candidate) and _group(candidate) == crystal.space_group:
                candidate.properties[TEMPLATE_PROPERTY] = decoration.template.source
                structure = candidate
                break
    if structure is None:
        structure = to_structure(crystal, seed=seed, attempts=placement.attempts)
    return predicted_volume(structure) if placement.volume == "predicted" else structure


def at_packed_volume(crystal: Crystal) -> Crystal:
    """``crystal`` with its lattice scaled (shape kept) to ``PACKING`` times its atoms' sphere volume (pymatgen's
    atomic radii): a density at which pyxtal's atoms get neighbours, before ``predicted_volume`` sets the bonds.

    Shrinking can leave a Wyckoff line or plane too short for its atoms (``crowded``) where the sampled cell had
    room: then the densest of ``ROOM_STEPS`` scales between the packed and the sampled cell that has room (of
    Li-Mn-O samples the round would send, 11 of 142 failed placement this way).
    """
    spheres = sum(n * 4 / 3 * math.pi * float(el.atomic_radius or el.atomic_radius_calculated) ** 3
                  for el, n in crystal.composition.items())
    volume = float(cell_volume(torch.tensor([crystal.lattice], dtype=torch.float64))[0])
    scale = (PACKING * spheres / volume) ** (1 / 3)
    if crystal.sites and scale < 1.0:
        scales = [scale ** (1 - i / (ROOM_STEPS - 1)) for i in range(ROOM_STEPS)]  # packed ... sampled, geometric
        shrunk = [_scaled(crystal, s) for s in scales]
        roomy = ~crowded(CrystalBatch.from_crystals(shrunk, tuple(el.symbol for el in crystal.composition)))
        if bool(roomy.any()):
            scale = scales[int(roomy.int().argmax())]
    return _scaled(crystal, scale)


def _scaled(crystal: Crystal, scale: float) -> Crystal:
    return replace(crystal, lattice=(*(x * scale for x in crystal.lattice[:3]), *crystal.lattice[3:]))


def predicted_volume(structure: Structure) -> Structure:
    """``structure`` scaled (cell and atoms alike) so that its shortest bond, relative to its expected length, takes
    that length: pymatgen's data-mined lattice scaling (``DLSVolumePredictor``, volume changed 0.5-1.5x at most).

    Applied after a placement at ``at_packed_volume``, it sets the scale from the bonds the atoms actually
    have. Rock salts come out 5-7% short in length (NaCl 5.22, MgO 3.93 A), which a relaxation takes back in
    a few steps.
    """
    try:
        volume = VOLUME_PREDICTOR.predict(structure)
    except ValueError:  # no pair within the cutoff: keep the cell
        return structure
    scaled = structure.copy()
    scaled.scale_lattice(volume)
    return scaled


def decorated(crystal: Crystal, decoration: Decoration, lattice: Literal["sampled", "template"]) -> Structure:
    """The crystal's elements on the template's orbits, in the crystal's lattice or (``template``) the
    template's lattice rescaled to the crystal's volume."""
    if lattice == "sampled":
        return decoration.template.structure(decoration.elements, Lattice.from_parameters(*crystal.lattice))
    own = Lattice.from_parameters(*decoration.template.lattice)
    scale = (float(cell_volume(torch.tensor([crystal.lattice], dtype=torch.float64))[0]) / own.volume) ** (1 / 3)
    return decoration.template.structure(decoration.elements, Lattice.from_parameters(
        *(x * scale for x in own.abc), *own.angles))


def _group(structure: Structure) -> int:
    return SpacegroupAnalyzer(structure, symprec=SYMPREC).get_space_group_number()


def placed_structure(crystal: Crystal, placement: Placement = Placement()) -> Structure | None:
    """``place`` seeded by the crystal's hash (always the same placement). Where that fails within
    ``PLACEMENT_CPU_S`` or pyxtal's atoms land in a higher group, and ``placement.spread``, the atoms are
    spread on the crystal's sites by descent (``spread``, within ``SPREAD_CPU_S``, in the cell ``place``
    would use). ``None`` when nothing places them; pyxtal's higher-group structure when spreading does
    no better.

    Of 200 untrained samples of each preset that a round could send (``benchmarks.placement``), pyxtal
    could not place 7 of the default space's 125 and 15 of Li-Mn-O's 142 (many orbits on one line or
    plane, at the packed volume); spreading placed 7 and 14 of them, and 3 of pyxtal's 6 higher-group
    structures in their own group.
    """
    seed, structure = int(crystal.canonical_hash[:8], 16), None
    try:
        with cpu_time_limit(PLACEMENT_CPU_S):
            structure = place(crystal, placement, seed=seed)
    except (StructureError, TimeLimit):
        pass
    if not placement.spread or not crystal.sites or (structure is not None and (
            TEMPLATE_PROPERTY in structure.properties or _group(structure) == crystal.space_group)):
        return structure
    if hopeless(crystal) is not None:  # outside the time limit: it may build forced_supergroup's table
        return structure
    try:
        with cpu_time_limit(SPREAD_CPU_S):
            if placement.volume == "predicted":
                return predicted_volume(spread(at_packed_volume(crystal), seed=seed, grow=True))
            return spread(crystal, seed=seed)
    except (SpreadError, TimeLimit):
        return structure


def min_distance(structure: Structure) -> float:
    """Shortest distance (Angstrom) between two sites under periodic images; inf for one site."""
    if len(structure) < 2:
        return float("inf")
    distances = structure.distance_matrix + np.diag(np.full(len(structure), np.inf))
    return float(distances.min())


def has_close_atoms(structure: Structure, *, cutoff: float = MIN_DISTANCE) -> bool:
    """Whether two atoms are closer than ``cutoff`` Angstrom (structurally invalid)."""
    return min_distance(structure) < cutoff
