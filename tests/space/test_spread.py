"""Atoms spread on their Wyckoff sites by descent: apart, in exactly the group, on exactly the sites."""

import numpy as np
import pytest
from pymatgen.core import Composition

from aloop.space.crystal import Crystal
from aloop.space.spacing import closest_approach
from aloop.space.spread import SpreadError, spread

CHAINS = Crystal(156, Composition("Li3Mn3O3"), (3.0, 3.0, 7.0, 90.0, 90.0, 120.0),
                 (("Li", "a"),) * 3 + (("Mn", "b"),) * 3 + (("O", "c"),) * 3)
"""Three orbits on each of P3m1's three 3-fold axes: nine atoms on lines of 7 A."""


def shortfall(structure) -> float:
    """Smallest distance between two atoms over pyxtal's closest approach for their elements (>= 1: apart)."""
    symbols = tuple(sorted({site.specie.symbol for site in structure}))
    index = [symbols.index(site.specie.symbol) for site in structure]
    tolerance = closest_approach(symbols).numpy()[np.ix_(index, index)]
    ratio = structure.distance_matrix / tolerance + np.eye(len(structure)) * 1e6
    return float(ratio.min())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spread_atoms_are_apart_on_exactly_the_sites_and_group(seed):
    structure = spread(CHAINS, seed=seed)
    assert shortfall(structure) >= 1.0
    back = Crystal.from_structure(structure)
    assert (back.space_group, back.composition, back.sites) == (156, CHAINS.composition, CHAINS.sites)
    assert structure.lattice.abc == pytest.approx(CHAINS.lattice[:3])


def test_spread_is_seeded():
    same = [spread(CHAINS, seed=3).frac_coords for _ in range(2)]
    assert np.array_equal(*same)
    assert not np.allclose(same[0], spread(CHAINS, seed=4).frac_coords)


def test_general_positions_with_a_crowded_screw_axis():
    # P3_221 with six Mn orbits on the 2-fold axes of 3a and O on general positions
    crystal = Crystal(154, Composition("Mn18O24"), (10.0, 10.0, 6.0, 90.0, 90.0, 120.0),
                      (("Mn", "a"),) * 6 + (("O", "c"),) * 4)
    structure = spread(crystal, seed=0)
    assert len(structure) == 42 and shortfall(structure) >= 1.0
    assert Crystal.from_structure(structure).space_group == 154


@pytest.mark.parametrize("crystal, reason", [
    (Crystal(99, Composition("Mn8"), (9.5, 9.5, 5.0, 90, 90, 90), (("Mn", "a"),) * 8), "no room"),
    (Crystal(156, Composition("Li6"), (4.0, 4.0, 9.0, 90, 90, 120), (("Li", "a"),) * 6), "higher group"),
    (Crystal(225, Composition("Na4Cl4"), (5.64,) * 3 + (90.0,) * 3), "no Wyckoff sites"),
])
def test_spread_refuses_what_no_coordinates_can_give(crystal, reason):
    with pytest.raises(SpreadError, match=reason):
        spread(crystal, seed=0)



def cesium_chloride(c: float) -> Crystal:
    """CsCl's sites in P4/mmm (1a and 1d, no free coordinate): in group 123 unless ``c`` equals ``a`` (Pm-3m)."""
    return Crystal(123, Composition("LiMn"), (3.0, 3.0, c, 90.0, 90.0, 90.0), (("Li", "a"), ("Mn", "d")))


def test_sites_without_free_coordinates_have_their_one_structure_checked_once(monkeypatch):
    import aloop.space.spread as module

    checks = []

    class Counting(module.SpacegroupAnalyzer):
        def __init__(self, *args, **kwargs):
            checks.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(module, "SpacegroupAnalyzer", Counting)
    with pytest.raises(SpreadError, match="no free coordinates"):
        spread(cesium_chloride(3.0), seed=0, grow=True)
    assert len(checks) == 1  # every start is the same structure: 1,208 checks (8 starts x 151) before
    tetragonal = spread(cesium_chloride(3.4), seed=0)
    assert Crystal.from_structure(tetragonal).space_group == 123 and len(tetragonal) == 2
