"""Wyckoff sets that force a higher symmetry: no choice of free coordinates gives the sampled group.

A structure's symmetry operations map every orbit onto itself. An orbit on a special position often
has more symmetry than its group whatever its free coordinates (P222's orbits on the 2-fold axes,
``(x, 0, 0), (-x, 0, 0)``, are mirror-symmetric too), and a set made only of such orbits keeps the
extra operations they share: P222 with every orbit on its axes is Pmmm. Operations an orbit has only
at its own coordinates (R3m's 3a orbit alone is centrosymmetric about its own height) are left out:
orbits at independent coordinates do not share them, so the check may miss a set of one or two
such orbits but never calls a set forced that is not. Neither does it see operations that swap two
orbits of one element; a set whose sites all lack free coordinates has one structure, elements
included, and is checked whole (Li on 4b, 4c and 4d with Mn on 4a of F-43m is Fm-3m's: its
inversion swaps 4c and 4d). A trained Li-Mn-O generator sampled that set 467 times in a round.
pyxtal then places the atoms, but the structure is another crystal than the one sampled; 16 of
Fe-O's 21 labelled candidates of campaign v2's aloop arm whose group was not the sampled one were
such sets (``benchmarks/results/placement.md``).

Written here because neither pyxtal nor spglib tells which sets of Wyckoff positions are
characteristic of their group: each letter's orbit is built by pyxtal at random free coordinates
in a cell of its lattice system, spglib finds the orbit's symmetry operations in that cell, and a
set of letters forces a supergroup when the operations common to its orbits outnumber the
group's. One table per group, the check batched over a ``CrystalBatch``.

Example:
    >>> from pymatgen.core import Composition
    >>> from aloop.space.crystal import Crystal, CrystalBatch
    >>> axes = Crystal(16, Composition("Fe2O2"), (4.0, 5.0, 6.0, 90, 90, 90), (("Fe", "i"), ("O", "k")))
    >>> general = Crystal(16, Composition("Fe4O4"), (4.0, 5.0, 6.0, 90, 90, 90), (("Fe", "u"), ("O", "u")))
    >>> forced_supergroup(CrystalBatch.from_crystals([axes, general], ("Fe", "O"))).tolist()
    [True, False]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from aloop.space.cache import load_arrays, save_arrays
from aloop.space.crystal import CrystalBatch
from aloop.space.groups import N_SPACE_GROUPS
from aloop.space.spacing import lattice_vectors, orbit_points
from aloop.space.wyckoff import Sites, letter_index, letters, positions

GENERIC_CELLS = {
    "triclinic": (4.1, 5.3, 6.7, 79.0, 83.0, 71.0),
    "monoclinic": (4.1, 5.3, 6.7, 90.0, 101.0, 90.0),
    "orthorhombic": (4.1, 5.3, 6.7, 90.0, 90.0, 90.0),
    "tetragonal": (4.1, 4.1, 6.7, 90.0, 90.0, 90.0),
    "trigonal": (4.1, 4.1, 6.7, 90.0, 90.0, 120.0),
    "hexagonal": (4.1, 4.1, 6.7, 90.0, 90.0, 120.0),
    "cubic": (5.3, 5.3, 5.3, 90.0, 90.0, 90.0),
}
"""A cell of each lattice system with no metric coincidence beyond the system's own (pyxtal's settings)."""
CACHE_NAME = "orbit-symmetry-v2"
POINTS = 3
"""Random points per letter: an orbit's operations at all of them are those it has whatever its coordinates."""
SYMPREC = 1e-4
"""spglib's distance tolerance (Angstrom): the orbits are exact images of one point, so any small value does."""


@dataclass(frozen=True)
class OrbitSymmetry:
    """Symmetry of each letter's orbits in one group whatever their coordinates, over the operations any of them has.

    Attributes:
        fixes: ``(W, U)`` bool, letters (index as ``letters(group)``) by operations: which fix that orbit.
        order: operations of the group in its conventional cell (those fixing its general position).
    """

    fixes: torch.Tensor
    order: int


@cache
def orbit_symmetry(number: int) -> OrbitSymmetry:
    """The symmetry operations every letter's orbit of group ``number`` has at any free coordinates (those it has at
    ``POINTS`` random ones)."""
    import spglib
    from pyxtal.symmetry import Group

    group = Group(number)
    cell = lattice_vectors(torch.tensor([GENERIC_CELLS[group.lattice_type]], dtype=torch.float64))[0].numpy()
    index = letter_index(number)
    rng = np.random.default_rng(number)
    found: dict[int, set[tuple]] = {}
    for wp in group:
        common = None
        for _ in range(POINTS):
            point = rng.uniform(0.05, 0.45, size=3) + rng.integers(0, 2, size=3) * 0.5
            orbit = orbit_points(wp, point) % 1.0
            symmetry = spglib.get_symmetry((cell, orbit, [1] * len(orbit)), symprec=SYMPREC)
            ops = {_key(r, t) for r, t in zip(symmetry["rotations"], symmetry["translations"], strict=True)}
            common = ops if common is None else common & ops
        found[index[wp.letter]] = common
    universe = sorted(set().union(*found.values()))
    column = {op: i for i, op in enumerate(universe)}
    fixes = torch.zeros(len(index), len(universe), dtype=torch.bool)
    for letter, ops in found.items():
        fixes[letter, [column[op] for op in ops]] = True
    return OrbitSymmetry(fixes, len(found[index[group[0].letter]]))


def _key(rotation: np.ndarray, translation: np.ndarray) -> tuple:
    """A hashable symmetry operation: the integer rotation and the translation modulo 1 on a 1/1000 grid."""
    return (*rotation.astype(int).flatten().tolist(), *(np.round(translation % 1.0, 3) % 1.0).tolist())


@cache
def _table() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``orbit_symmetry`` of every group stacked, the operations packed 64 to a word: ``(231, W_max, K)`` int64,
    ``(231,)`` orders and ``(231, W_max)`` bool, the letters without free coordinates; row 0 empty; kept in the
    on-disk cache (9 s to compute)."""
    if (cached := load_arrays(CACHE_NAME)) is not None:
        return tuple(torch.from_numpy(cached[name]) for name in ("words", "order", "fixed"))
    tables = {n: orbit_symmetry(n) for n in range(1, N_SPACE_GROUPS + 1)}
    width = max(t.fixes.shape[0] for t in tables.values())
    universe = 64 * -(-max(t.fixes.shape[1] for t in tables.values()) // 64)
    fixes = torch.zeros(N_SPACE_GROUPS + 1, width, universe, dtype=torch.bool)
    order = torch.zeros(N_SPACE_GROUPS + 1, dtype=torch.long)
    fixed = torch.zeros(N_SPACE_GROUPS + 1, width, dtype=torch.bool)
    for n, t in tables.items():
        fixes[n, : t.fixes.shape[0], : t.fixes.shape[1]] = t.fixes
        order[n] = t.order
        fixed[n, : t.fixes.shape[0]] = torch.tensor([not positions(n)[letter].free for letter in letters(n)])
    bits = fixes.view(N_SPACE_GROUPS + 1, width, -1, 64).long() << torch.arange(64)
    words = bits.sum(dim=-1)  # disjoint bits: the sum is their OR (bit 63 makes a word negative, still exact)
    save_arrays(CACHE_NAME, words=words.numpy(), order=order.numpy(), fixed=fixed.numpy())
    return words, order, fixed


@cache
def fixed_sites_forced(number: int, sites: Sites) -> bool:
    """Whether the one structure of ``sites``, none with a free coordinate, has more symmetry than group
    ``number`` (spglib, in a cell of its lattice system without metric coincidences)."""
    import spglib
    from pyxtal.symmetry import Group

    group = Group(number)
    cell = lattice_vectors(torch.tensor([GENERIC_CELLS[group.lattice_type]], dtype=torch.float64))[0].numpy()
    by_letter = {wp.letter: wp for wp in group}
    symbols = sorted({element for element, _ in sites})
    orbits = [(orbit_points(by_letter[letter], np.zeros(3)) % 1.0, symbols.index(element))
              for element, letter in sites]
    points = np.concatenate([points for points, _ in orbits])
    numbers = [kind for points, kind in orbits for _ in points]
    return spglib.get_symmetry_dataset((cell, points, numbers), symprec=SYMPREC).number != number


_BITS_IN_BYTE = torch.tensor([bin(b).count("1") for b in range(256)])


def forced_supergroup(batch: CrystalBatch) -> torch.Tensor:
    """``(N,)`` bool: the crystal's Wyckoff set has more symmetry than its group at any free coordinates
    (``False`` for crystals without sites)."""
    n = len(batch)
    if batch.sites is None or n == 0:
        return torch.zeros(n, dtype=torch.bool, device=batch.space_group.device)
    words, order, fixed = _table()
    sites = batch.sites.cpu().long()
    letter = sites[..., 1]
    real = (letter >= 0) & (sites[..., 0] >= 0)
    group = batch.space_group.cpu().long().clamp(1, N_SPACE_GROUPS)
    per_site = torch.where(real.unsqueeze(2), words[group.unsqueeze(1), letter.clamp(min=0)], -1)  # (N, L, K)
    common = per_site[:, 0]
    for site in range(1, per_site.shape[1]):  # torch has no AND reduction
        common = common & per_site[:, site]
    count = _BITS_IN_BYTE[common.contiguous().view(torch.uint8).long()].sum(dim=1)
    forced = (count > order[group]) & real.any(dim=1)
    whole = ~forced & real.any(dim=1) & (fixed[group.unsqueeze(1), letter.clamp(min=0)] | ~real).all(dim=1)
    if whole.any():  # few distinct sets: each checked once per process
        rows = torch.cat([group[whole].unsqueeze(1), sites[whole].flatten(1)], dim=1)
        distinct, inverse = torch.unique(rows, dim=0, return_inverse=True)
        verdict = torch.tensor([fixed_sites_forced(int(row[0]), _sites(row[1:].view(-1, 2), int(row[0]),
                                                                        batch.elements)) for row in distinct])
        forced[whole] = verdict[inverse]
    return forced.to(batch.space_group.device)


def _sites(pairs: torch.Tensor, group: int, elements: Sequence[str]) -> Sites:
    """``(L, 2)`` (element index, letter index) rows, ``-1`` padded, as sorted ``(symbol, letter)`` pairs."""
    names = letters(group)
    return tuple(sorted((elements[e], names[w]) for e, w in pairs.tolist() if e >= 0 and w >= 0))
