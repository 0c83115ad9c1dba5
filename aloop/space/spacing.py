"""Room for the atoms on Wyckoff lines and planes: a necessary condition for placing them at all.

An orbit with one free coordinate keeps its atoms on lines (``(0, 0, z)``), one with two on
planes (``(x, y, 1/4)``). Every orbit on a letter shares that letter's lines or planes, so
``k`` orbits on a letter put ``k * P`` atoms on each line per period ``L`` (``P``: the orbit's
points on one line), and no choice of coordinates keeps them apart unless
``L >= k * P * d``; on planes, discs of diameter ``d`` cannot cover more than the plane's area
``A`` per period. ``d`` is the smallest distance pyxtal accepts between an atom and the
elements sharing its locus (its ``atomic`` tolerance matrix), so a crystal that fails this
check is one pyxtal would spend its whole time limit failing to place (measured: 16 Mn
orbits on ``(0, 0, z)`` of P4mm along c = 10.3 A).

Written here because neither pyxtal nor spglib offers it: the loci come from pyxtal's
Wyckoff operations, one table per group, and the check is batched over a ``CrystalBatch``.

Example:
    >>> from pymatgen.core import Composition
    >>> from aloop.space.crystal import Crystal, CrystalBatch
    >>> line = Crystal(99, Composition("Mn8"), (9.5, 9.5, 5.0, 90, 90, 90), (("Mn", "a"),) * 8)
    >>> bool(crowded(CrystalBatch.from_crystals([line], ("Mn",)))[0])
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from itertools import product

import numpy as np
import torch

from aloop.space.crystal import CrystalBatch
from aloop.space.groups import N_SPACE_GROUPS, space_group
from aloop.space.wyckoff import letter_index

CHUNK = 1 << 22
"""Elements of the largest ``(rows, letters, elements, elements)`` tensor built at once."""

@dataclass(frozen=True)
class Loci:
    """Lines and planes of the Wyckoff letters of one group, indexed like ``letters(group)``.

    Attributes:
        dimension: ``(W,)`` long, 1 for a line, 2 for a plane, 0 otherwise (fixed point, general position).
        period: ``(W, 2, 3)`` float, integer vectors (fractional) spanning one period of the line
            (first row) or plane (both rows); zero rows where unused.
        points: ``(W, W)`` long, ``points[f, w]``: atoms of one orbit on letter ``f`` that lie on one
            line or plane of letter ``w`` (its own orbit's, and those of fixed points on a line, lines in a plane).
    """

    dimension: torch.Tensor
    period: torch.Tensor
    points: torch.Tensor


@cache
def group_loci(number: int) -> Loci:
    """The lines and planes of group ``number``'s letters, from pyxtal's Wyckoff operations."""
    from pyxtal.symmetry import Group

    index = letter_index(number)
    size = len(index)
    dimension = torch.zeros(size, dtype=torch.long)
    period = torch.zeros(size, 2, 3, dtype=torch.float64)
    points = torch.zeros(size, size, dtype=torch.long)
    rng = np.random.default_rng(0)
    rank = {index[wp.letter]: int(np.linalg.matrix_rank(wp.ops[0].rotation_matrix)) for wp in Group(number)}
    orbit = {index[wp.letter]: orbit_points(wp, rng.random(3)) for wp in Group(number)}
    for wp in Group(number):
        w = index[wp.letter]
        if rank[w] not in (1, 2):
            continue
        basis = _integer_basis(np.asarray(wp.ops[0].rotation_matrix), rank[w])
        dimension[w], period[w, : rank[w]] = rank[w], torch.from_numpy(basis)
        for f in orbit:
            if f == w or rank[f] < rank[w]:
                points[f, w] = _on_locus(orbit[f] - orbit[w][0], basis)
    return Loci(dimension, period, points)


def orbit_points(wp: object, general: np.ndarray) -> np.ndarray:
    """The points of a pyxtal Wyckoff position's orbit through the projection of ``general`` (fractional) onto its
    locus."""
    return np.array([op.operate(general) for op in wp.ops])


def _integer_basis(rotation: np.ndarray, rank: int) -> np.ndarray:
    """Primitive integer vectors spanning the column space of a Wyckoff operation's rotation part."""
    columns = [c for c in rotation.T if np.abs(c).sum() > 1e-9]
    basis = [columns[0]]
    for c in columns[1:]:
        if len(basis) < rank and np.linalg.matrix_rank(np.array([*basis, c])) > len(basis):
            basis.append(c)
    vectors = np.round(np.array(basis)).astype(int)
    return np.array([v // math.gcd(*map(abs, v)) for v in vectors], dtype=float)


def _on_locus(offsets: np.ndarray, basis: np.ndarray) -> int:
    """How many ``offsets`` (points minus a point of the locus) lie in ``span(basis)`` modulo the lattice."""
    shifts = np.array(list(product(range(-2, 3), repeat=3)), dtype=float)
    moved = offsets[:, None, :] - shifts[None, :, :]
    if len(basis) == 1:
        off = np.linalg.norm(np.cross(moved, basis[0]), axis=-1)
    else:
        off = np.abs(moved @ np.cross(basis[0], basis[1]))
    return int((off < 1e-6).any(axis=1).sum())


@cache
def _loci_table() -> Loci:
    """``group_loci`` of every group stacked: ``(231, W_max, ...)``, row 0 empty."""
    width = max(len(letter_index(n)) for n in range(1, N_SPACE_GROUPS + 1))
    dimension = torch.zeros(N_SPACE_GROUPS + 1, width, dtype=torch.long)
    period = torch.zeros(N_SPACE_GROUPS + 1, width, 2, 3, dtype=torch.float64)
    points = torch.zeros(N_SPACE_GROUPS + 1, width, width, dtype=torch.long)
    for n in range(1, N_SPACE_GROUPS + 1):
        loci, size = group_loci(n), len(space_group(n).wyckoff_positions)
        dimension[n, :size], period[n, :size], points[n, :size, :size] = loci.dimension, loci.period, loci.points
    return Loci(dimension, period, points)


@cache
def closest_approach(elements: tuple[str, ...]) -> torch.Tensor:
    """``(E, E)`` smallest distance (Angstrom) pyxtal's ``atomic`` tolerance accepts between two elements."""
    from pyxtal.tolerance import Tol_matrix

    tolerance = Tol_matrix(prototype="atomic")
    return torch.tensor([[tolerance.get_tol(a, b) for b in elements] for a in elements], dtype=torch.float64)


def lattice_vectors(lattice: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 3)`` cell vectors as rows (a along x, b in the xy plane) of ``(N, 6)`` parameters."""
    a, b, c = lattice[:, 0], lattice[:, 1], lattice[:, 2]
    alpha, beta, gamma = (torch.deg2rad(lattice[:, k]) for k in (3, 4, 5))
    cx = c * torch.cos(beta)
    cy = c * (torch.cos(alpha) - torch.cos(beta) * torch.cos(gamma)) / torch.sin(gamma)
    cz = torch.sqrt(torch.clamp(c**2 - cx**2 - cy**2, min=0.0))
    zero = torch.zeros_like(a)
    return torch.stack([torch.stack([a, zero, zero], dim=-1),
                        torch.stack([b * torch.cos(gamma), b * torch.sin(gamma), zero], dim=-1),
                        torch.stack([cx, cy, cz], dim=-1)], dim=1)


def crowded(batch: CrystalBatch) -> torch.Tensor:
    """``(N,)`` bool: some Wyckoff line or plane of the crystal holds more atoms than it has room for."""
    return crowded_letters(batch).any(dim=1)


def crowded_letters(batch: CrystalBatch) -> torch.Tensor:
    """``(N, W)`` bool: which letters' lines or planes (index as ``letters(group)``) hold more atoms than
    they have room for; ``False`` for crystals without sites. All orbits on a letter share its loci. Each atom
    needs half the smallest distance to any element on its locus on either side (a line)
    or a disc of that radius (a plane): a necessary condition, so no placeable crystal is
    called crowded.
    """
    n, width = len(batch), _loci_table().dimension.shape[1]
    if batch.sites is None or n == 0:
        return torch.zeros(n, width, dtype=torch.bool, device=batch.space_group.device)
    sites = batch.sites.cpu().long()
    element, letter = sites[..., 0], sites[..., 1]
    real = (letter >= 0) & (letter < width) & (element >= 0)
    used, element = torch.unique(torch.where(real, element, 0), return_inverse=True)  # only the elements on sites
    distance = closest_approach(tuple(batch.elements[i] for i in used.tolist()))
    sg, lattice = batch.space_group.cpu().long().clamp(1, N_SPACE_GROUPS), batch.lattice.cpu().double()
    rows = max(1, CHUNK // (width * len(used) ** 2))
    return torch.cat([_crowded(sg[i:i + rows], lattice[i:i + rows], element[i:i + rows], letter[i:i + rows],
                               real[i:i + rows], distance) for i in range(0, n, rows)]).to(batch.space_group.device)


def _crowded(sg: torch.Tensor, lattice: torch.Tensor, element: torch.Tensor, letter: torch.Tensor, real: torch.Tensor,
             distance: torch.Tensor) -> torch.Tensor:
    """``crowded_letters`` of a few rows; ``element`` indexes the ``(E, E)`` closest-approach matrix ``distance``.
    Each occupied (letter, element) adds its orbits' atoms on one locus of every letter (``points``), and only the
    (crystal, letter) pairs whose line or plane holds atoms are measured."""
    table = _loci_table()
    n, width, n_elements = len(sg), table.dimension.shape[1], len(distance)
    slot = torch.where(real, letter * n_elements + element, 0)
    orbits = torch.zeros(n, width * n_elements, dtype=torch.float64).scatter_add_(1, slot, real.double())
    crystal, kind = orbits.nonzero(as_tuple=True)
    occupied, kind_element = kind // n_elements, kind % n_elements
    atoms = torch.zeros(n * n_elements, width, dtype=torch.float64).index_add_(
        0, crystal * n_elements + kind_element, orbits[crystal, kind].unsqueeze(1) * table.points[sg[crystal], occupied])
    atoms = atoms.view(n, n_elements, width).transpose(1, 2)  # (n, W, E) atoms on one locus of each letter
    dimension = table.dimension[sg]
    row, locus = ((dimension > 0) & (atoms > 0).any(dim=-1)).nonzero(as_tuple=True)  # lines and planes with atoms
    present = atoms[row, locus]  # (P, E): the few (crystal, letter) pairs that need the (E, E) distances
    nearest = torch.where(present.unsqueeze(1) > 0, distance, torch.inf).amin(dim=-1)
    half = torch.where(present > 0, nearest / 2, 0.0)
    spans = table.period[sg[row], locus] @ lattice_vectors(lattice)[row]  # (P, 2, 3) Angstrom
    kind = dimension[row, locus]
    too_long = (kind == 1) & (spans[:, 0].norm(dim=-1) < (present * 2 * half).sum(dim=-1))
    too_dense = (kind == 2) & (torch.linalg.cross(spans[:, 0], spans[:, 1]).norm(dim=-1)
                               < (present * math.pi * half**2).sum(dim=-1))
    out = torch.zeros(n, width, dtype=torch.bool)
    out[row, locus] = too_long | too_dense
    return out
