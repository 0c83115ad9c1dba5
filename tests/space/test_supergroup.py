"""Wyckoff sets that force a supergroup, checked against spglib on the structures pyxtal places."""

import pytest
from pymatgen.core import Composition, Lattice, Structure

from aloop.space.crystal import Crystal, CrystalBatch
from aloop.space.structure import to_structure
from aloop.space.supergroup import forced_supergroup, orbit_symmetry
from aloop.space.wyckoff import letter_index

ORTHO = (4.0, 5.0, 6.0, 90.0, 90.0, 90.0)
CUBIC = (5.6, 5.6, 5.6, 90.0, 90.0, 90.0)
CRYSTALS = {  # (crystal, forced): placed by pyxtal at several seeds, spglib must agree with the check
    "P222, both orbits on 2-fold axes (Pmmm)": (Crystal(16, Composition("Fe2O2"), ORTHO, (("Fe", "i"), ("O", "k"))), True),
    "P222, general positions": (Crystal(16, Composition("Fe4O4"), ORTHO, (("Fe", "u"), ("O", "u"))), False),
    "P222, one orbit general": (Crystal(16, Composition("Fe2O4"), ORTHO, (("Fe", "i"), ("O", "u"))), False),
    "F23, fixed points 4a 4b (rock salt, Fm-3m)": (Crystal(196, Composition("Na4Cl4"), CUBIC,
                                                           (("Na", "a"), ("Cl", "b"))), True),
    "Fm-3m, rock salt": (Crystal(225, Composition("Na4Cl4"), CUBIC, (("Na", "a"), ("Cl", "b"))), False),
    "F-43m, zinc blende": (Crystal(216, Composition("Zn4S4"), CUBIC, (("Zn", "a"), ("S", "c"))), False),
}


@pytest.mark.parametrize("name", list(CRYSTALS))
def test_the_check_agrees_with_the_group_of_every_placement(name):
    crystal, forced = CRYSTALS[name]
    assert forced_supergroup(CrystalBatch.from_crystals([crystal], ("Na", "Fe", "Zn", "S", "O", "Cl"))).tolist() == [forced]
    groups = {Crystal.from_structure(to_structure(crystal, seed=seed)).space_group for seed in range(4)}
    assert (groups != {crystal.space_group}) == forced, groups


def test_operations_an_orbit_has_only_at_its_own_coordinates_are_not_shared():
    # R3m's 3a orbit, (0, 0, z) with R centring, is centrosymmetric about its own height, so one orbit alone
    # has R-3m's 36 operations at any z, but two at independent heights share only R3m's 18
    table, index = orbit_symmetry(160), letter_index(160)
    assert table.order == 18 and int(table.fixes[index["a"]].sum()) == 18
    two = Crystal(160, Composition("Li3O3"), (3.0, 3.0, 14.0, 90.0, 90.0, 120.0), (("Li", "a"), ("O", "a")))
    assert forced_supergroup(CrystalBatch.from_crystals([two], ("Li", "O"))).tolist() == [False]
    assert Crystal.from_structure(to_structure(two, seed=0)).space_group == 160


def test_crystals_without_sites_are_never_forced():
    bare = Crystal(225, Composition("Na4Cl4"), CUBIC)
    assert forced_supergroup(CrystalBatch.from_crystals([bare], ("Na", "Cl"))).tolist() == [False]
    rock_salt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    known = Crystal.from_structure(rock_salt)
    assert forced_supergroup(CrystalBatch.from_crystals([known], ("Na", "Cl"))).tolist() == [False]


def test_sites_without_free_coordinates_are_checked_whole_elements_included():
    """Per orbit, Li on 4c and on 4d of F-43m have only the group's symmetry; together, as one element, the
    inversion that swaps them makes the set Fm-3m's (Li3Bi-type). Other elements there keep F-43m."""
    cubic = (6.0,) * 3 + (90.0,) * 3
    crystals = [Crystal(216, Composition("Li12Mn4"), cubic, (("Li", "b"), ("Li", "c"), ("Li", "d"), ("Mn", "a"))),
                Crystal(216, Composition("Li8Mn4O4"), cubic, (("Li", "b"), ("Li", "c"), ("O", "d"), ("Mn", "a"))),
                Crystal(216, Composition("Mn4O4"), cubic, (("Mn", "a"), ("O", "c"))),
                Crystal(216, Composition("Mn4O8"), cubic, (("Mn", "a"), ("O", "c"), ("O", "d")))]
    batch = CrystalBatch.from_crystals(crystals, ("O", "Li", "Mn"))
    assert forced_supergroup(batch).tolist() == [True, False, False, True]
    assert forced_supergroup(batch[[1, 0]]).tolist() == [False, True]  # the same sets, another batch
