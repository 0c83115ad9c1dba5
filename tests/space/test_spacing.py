"""Room on Wyckoff lines and planes: the bound at its edge, shared loci, and placement refusing early."""

from __future__ import annotations

import math
import time

import pytest
from pymatgen.core import Composition

from aloop.space import Crystal, CrystalBatch
from aloop.space.spacing import closest_approach, crowded, group_loci
from aloop.space.structure import StructureError, to_structure
from aloop.space.wyckoff import letter_index

MN_MN, MN_O, O_O = (float(closest_approach(("Mn", "O"))[i, j]) for i, j in ((0, 0), (0, 1), (1, 1)))


def is_crowded(*crystals: Crystal, elements: tuple[str, ...] = ("Mn", "O")) -> list[bool]:
    return crowded(CrystalBatch.from_crystals(list(crystals), elements)).tolist()


def tetragonal(c: float, sites: tuple[tuple[str, str], ...], a: float = 9.0) -> Crystal:
    counts = Composition({el: sum(1 for e, _ in sites if e == el) for el, _ in sites})
    return Crystal(99, counts, (a, a, c, 90.0, 90.0, 90.0), sites)


def test_a_line_holds_as_many_atoms_as_fit_along_it():
    # P4mm 1a is the line (0, 0, z), one atom per period c: k Mn orbits need c >= k * d(Mn, Mn)
    for k in (1, 4, 9):
        edge = k * MN_MN
        assert is_crowded(tetragonal(edge * 0.99, (("Mn", "a"),) * k),
                          tetragonal(edge * 1.01, (("Mn", "a"),) * k)) == [True, False]


def test_each_atom_needs_its_closest_neighbour_element_on_the_line():
    # 3 Mn and 3 O on one line: each atom needs the smallest distance to an element on it (Mn-O for Mn, O-O for O)
    sites = (("Mn", "a"),) * 3 + (("O", "a"),) * 3
    edge = 3 * min(MN_MN, MN_O) + 3 * min(O_O, MN_O)
    assert is_crowded(tetragonal(edge * 0.99, sites), tetragonal(edge * 1.01, sites)) == [True, False]
    # orbits on another letter's line (1b: (1/2, 1/2, z)) do not crowd line 1a
    assert is_crowded(tetragonal(edge * 1.01, sites + (("O", "b"),) * 3)) == [False]


def test_fixed_points_on_a_line_take_room_on_it():
    # P6_3/mcm: 4e (0, 0, z) has 4 points per c; the fixed 2b orbit (0, 0, 0), (0, 0, 1/2) lies on that line
    loci, index = group_loci(193), letter_index(193)
    assert int(loci.points[index["e"], index["e"]]) == 4 and int(loci.points[index["b"], index["e"]]) == 2
    hexagonal = (8.0, 8.0, 4 * O_O * 1.05, 90.0, 90.0, 120.0)
    alone = Crystal(193, Composition("O4"), hexagonal, (("O", "e"),))
    shared = Crystal(193, Composition("Mn2O4"), hexagonal, (("Mn", "b"), ("O", "e")))
    assert is_crowded(alone, shared) == [False, True]


def test_a_plane_holds_as_many_discs_as_its_area():
    # P4mm 4d (x, x, z): plane spanned by [110] and [001], area sqrt(2) a c, 2 points of an orbit per period
    d, per_orbit, orbits, c = O_O, 2, 5, 3.0
    edge = orbits * per_orbit * math.pi * (d / 2) ** 2 / (math.sqrt(2) * c)
    sites = (("O", "d"),) * orbits
    assert is_crowded(tetragonal(c, sites, a=edge * 0.99), tetragonal(c, sites, a=edge * 1.01)) == [True, False]


def test_crystals_without_sites_are_never_crowded():
    assert is_crowded(Crystal(99, Composition("Mn9"), (9.0, 9.0, 1.0, 90.0, 90.0, 90.0))) == [False]


def test_placement_refuses_a_crowded_crystal_at_once_and_says_why():
    # 16 Mn orbits on one line of length 10.3 A: pyxtal spent its whole time limit on this (seen in a round)
    crystal = tetragonal(10.3, (("Mn", "a"),) * 16)
    start = time.process_time()
    with pytest.raises(StructureError, match="no room"):
        to_structure(crystal, seed=0)
    assert time.process_time() - start < 1.0
