"""Crystal <-> pymatgen Structure: known structures survive the round trip through pyxtal."""

from dataclasses import replace

import pytest
from pymatgen.core import Composition, Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from aloop.config import PlacementSettings
from aloop.space.crystal import SYMPREC, Crystal, CrystalBatch
from aloop.space.spacing import crowded
from aloop.space.structure import (
    PLACEMENT_CPU_S,
    Placement,
    StructureError,
    TimeLimit,
    at_packed_volume,
    cpu_time_limit,
    has_close_atoms,
    min_distance,
    place,
    placed_structure,
    predicted_volume,
    to_structure,
)


def rock_salt() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def rutile() -> Structure:
    return Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"],
                                     [[0, 0, 0], [0.3048, 0.3048, 0]])


def perovskite() -> Structure:
    return Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.905), ["Sr", "Ti", "O"],
                                     [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0]])


def layered_oxide() -> Structure:
    # LiCoO2, R-3m: exercises the hexagonal setting of rhombohedral groups
    return Structure.from_spacegroup("R-3m", Lattice.hexagonal(2.816, 14.05), ["Li", "Co", "O"],
                                     [[0, 0, 0.5], [0, 0, 0], [0, 0, 0.2396]])


def triclinic() -> Structure:
    lattice = Lattice.from_parameters(5.1, 5.9, 6.7, 82.0, 97.0, 104.0)
    return Structure.from_spacegroup("P-1", lattice, ["Si", "O", "O"],
                                     [[0.11, 0.23, 0.31], [0.37, 0.12, 0.41], [0.21, 0.43, 0.08]])


KNOWN = {
    "rock salt": (rock_salt, 225, "Na4 Cl4"),
    "rutile": (rutile, 136, "Ti2 O4"),
    "perovskite": (perovskite, 221, "Sr1 Ti1 O3"),
    "LiCoO2": (layered_oxide, 166, "Li3 Co3 O6"),
    "triclinic": (triclinic, 2, "Si2 O4"),
}


def reduced_parameters(lattice: Lattice) -> list[float]:
    return list(lattice.get_niggli_reduced_lattice().parameters)


@pytest.mark.parametrize("name", KNOWN)
def test_round_trip_keeps_group_composition_and_lattice(name):
    build, number, formula = KNOWN[name]
    original = build()
    crystal = Crystal.from_structure(original)
    assert crystal.space_group == number
    assert crystal.composition == Composition(formula)

    rebuilt = to_structure(crystal, seed=7, exact_group=True)
    again = Crystal.from_structure(rebuilt)
    assert again.space_group == number
    assert again.composition == crystal.composition
    assert again.lattice == pytest.approx(crystal.lattice, abs=1e-3) or \
        reduced_parameters(rebuilt.lattice) == pytest.approx(reduced_parameters(original.lattice), abs=1e-3)
    assert rebuilt.volume == pytest.approx(Lattice.from_parameters(*crystal.lattice).volume, rel=1e-6)
    assert not has_close_atoms(rebuilt)


def test_hexagonal_setting_of_rhombohedral_groups():
    crystal = Crystal.from_structure(layered_oxide())
    a, b, _, alpha, beta, gamma = crystal.lattice
    assert a == pytest.approx(b) and (alpha, beta, gamma) == pytest.approx((90, 90, 120))
    assert crystal.composition.num_atoms == 12  # 3 lattice points x LiCoO2


def test_same_seed_same_structure_other_seed_other_structure():
    crystal = Crystal(136, Composition("Ti2O4"), (4.6, 4.6, 2.96, 90.0, 90.0, 90.0))
    first, second, other = (to_structure(crystal, seed=s) for s in (3, 3, 4))
    assert first == second
    assert first != other  # Wyckoff positions and free coordinates are drawn at random


def test_exact_group_rejects_placements_of_higher_symmetry():
    # F23 (196) hosts Na4Cl4 only on its fixed 4a-4d sites: rock salt (225) or zinc blende (216)
    crystal = Crystal(196, Composition("Na4Cl4"), (5.64, 5.64, 5.64, 90.0, 90.0, 90.0))
    assert Crystal.from_structure(to_structure(crystal, seed=0)).space_group in (216, 225)
    with pytest.raises(StructureError, match=r"higher symmetry of space group 2(16|25)"):
        to_structure(crystal, seed=0, attempts=3, exact_group=True)


@pytest.mark.parametrize(("crystal", "reason"), [
    (Crystal(123, Composition("NaCl"), (6.0, 6.0, 1.0, 90.0, 90.0, 90.0)), "could not be kept apart"),
    (Crystal(1, Composition("Fe6O6"), (3.0, 3.0, 3.0, 90.0, 90.0, 90.0)), r"below 3.0 A\^3 per atom"),
    (Crystal(229, Composition("Na3"), (5.0, 5.0, 5.0, 90.0, 90.0, 90.0)), "not compatible"),
])
def test_impossible_placements_raise_structure_error(crystal, reason):
    with pytest.raises(StructureError, match=reason):
        to_structure(crystal, seed=0, attempts=2)


def test_min_distance():
    assert min_distance(rock_salt()) == pytest.approx(5.64 / 2)
    single = Structure(Lattice.cubic(3.0), ["Fe"], [[0, 0, 0]])
    assert min_distance(single) == float("inf")
    crowded = Structure(Lattice.cubic(3.0), ["Fe", "Fe"], [[0, 0, 0], [0.1, 0, 0]])
    assert has_close_atoms(crowded) and not has_close_atoms(crowded, cutoff=0.2)


def test_cpu_time_limit_stops_a_busy_block_and_leaves_others_alone():
    with pytest.raises(TimeLimit):
        with cpu_time_limit(0.2):
            while True:
                sum(range(1000))
    with cpu_time_limit(5.0):
        total = sum(range(1000))
    assert total == 499500


def test_cpu_time_limit_outlasts_code_that_swallows_it():
    # as pyxtal's bare ``except:`` clauses do: nine tenths of the work inside one; a limit raised once lands
    # there nine times in ten and is lost, and the block would run to its end (about 30 s of CPU)
    def spin(n: int) -> None:
        for _ in range(n):
            sum(range(100))

    with pytest.raises(TimeLimit):
        with cpu_time_limit(0.1):
            for _ in range(2000):
                try:
                    spin(9000)
                except BaseException:
                    pass
                spin(1000)


@pytest.mark.parametrize("a", [3.0, 5.64, 12.0])
def test_a_placed_structure_takes_its_bonds_lengths_whatever_the_cells_scale(a):
    # rock salt sampled crushed, right or four times too sparse (isolated atoms, which CHGNet cannot relax):
    # scaled alike, the cell's shape and the fractional coordinates kept
    crystal = Crystal(225, Composition("Na4Cl4"), (a,) * 3 + (90.0,) * 3)
    sampled = place(crystal, Placement(), seed=0)
    predicted = place(crystal, Placement(volume="predicted"), seed=0)
    assert sampled.lattice.a == pytest.approx(a)
    assert predicted.lattice.a == pytest.approx(place(Crystal(225, Composition("Na4Cl4"), (5.64,) * 3 + (90.0,) * 3),
                                                      Placement(volume="predicted"), seed=0).lattice.a)
    assert 4.5 < predicted.lattice.a < 6.2  # NaCl: 5.64 A
    assert predicted.frac_coords.ravel().tolist() == pytest.approx(sampled.frac_coords.ravel().tolist())


def test_a_cell_with_no_pair_within_reach_keeps_its_volume():
    lone = Structure(Lattice.cubic(30.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert predicted_volume(lone).volume == pytest.approx(lone.volume)


def test_atoms_sharing_a_wyckoff_line_keep_room_when_the_cell_is_packed():
    # Li and Mn on the same 3-fold axis (1b) of P3m1: the sampled c = 8.2 A holds both, the packed cell's would
    # not; placement takes the densest scale between them that does, and the atoms stay apart
    crystal = Crystal(156, Composition("LiMnO2"), (17.6, 17.6, 8.2, 90.0, 90.0, 120.0),
                      (("Li", "b"), ("Mn", "b"), ("O", "a"), ("O", "c")))
    elements = ("Li", "Mn", "O")
    assert not crowded(CrystalBatch.from_crystals([crystal], elements)).any()
    packed = at_packed_volume(crystal)
    assert packed.lattice[2] < crystal.lattice[2]
    assert not crowded(CrystalBatch.from_crystals([packed], elements)).any()
    at_packing = replace(at_packed_volume(replace(crystal, sites=())), sites=crystal.sites)  # the packing alone
    assert packed.lattice[2] > at_packing.lattice[2]
    assert crowded(CrystalBatch.from_crystals([at_packing], elements)).any()
    structure = place(crystal, Placement(volume="predicted"), seed=0)
    assert len(structure) == 4 and not has_close_atoms(structure)


MN9O15 = Crystal(154, Composition("Mn9O15"), (6.62, 6.62, 14.72, 90.0, 90.0, 120.0),
                 (("Mn", "a"),) * 3 + (("O", "a"),) * 3 + (("O", "c"),))
"""Six orbits on the 2-fold axes (x, 0, 1/3) of P3_221: a sample pyxtal spends its whole time limit on."""


def test_sites_pyxtal_cannot_fill_in_time_are_spread_on_exactly_those_sites_unless_spread_is_off():
    placement = Placement(volume="predicted")
    with pytest.raises((StructureError, TimeLimit)), cpu_time_limit(PLACEMENT_CPU_S):
        place(MN9O15, placement, seed=int(MN9O15.canonical_hash[:8], 16))
    structure = placed_structure(MN9O15, placement)
    assert structure is not None and not has_close_atoms(structure)
    back = Crystal.from_structure(structure)
    assert (back.space_group, back.composition) == (154, MN9O15.composition)
    assert sorted(letter for _, letter in back.sites) == sorted(letter for _, letter in MN9O15.sites)
    pyxtal_only = Placement.from_settings(PlacementSettings(volume="predicted", spread=False), None)
    assert placed_structure(MN9O15, pyxtal_only) is None


def test_a_pyxtal_placement_in_a_higher_group_is_spread_into_its_own():
    # a = 7.8: the seed the crystal hashes to makes pyxtal land in P6_3mc (asserted below)
    crystal = Crystal(159, Composition("Na6Li4Mg2"), (7.8, 7.8, 16.3, 90.0, 90.0, 120.0),
                      (("Na", "c"), ("Li", "b"), ("Li", "b"), ("Mg", "a")))
    placement = Placement(volume="predicted")
    pyxtal = place(crystal, placement, seed=int(crystal.canonical_hash[:8], 16))
    assert SpacegroupAnalyzer(pyxtal, symprec=SYMPREC).get_space_group_number() != 159
    structure = placed_structure(crystal, placement)
    assert SpacegroupAnalyzer(structure, symprec=SYMPREC).get_space_group_number() == 159
    assert structure.composition == crystal.composition
