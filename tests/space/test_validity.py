"""The validity checker: each constraint caught alone and named; batch mask; MP entries."""

import pandas as pd
import pytest
import torch
from pymatgen.core import Composition

from aloop.config import SpaceSettings
from aloop.space.crystal import Crystal, CrystalBatch
from aloop.space.space import CrystalSpace
from aloop.space.validity import Constraint, broken_constraints, check_crystal, valid_mask

CUBIC = (4.3, 4.3, 4.3, 90.0, 90.0, 90.0)
TRICLINIC = (4.1, 4.5, 5.2, 80.0, 95.0, 100.0)


@pytest.fixture(scope="module")
def space() -> CrystalSpace:
    """Li-Fe-O, at most 8 atoms per element, 12 in all, 1-2 elements; lengths 2-15 A, angles 60-140."""
    return CrystalSpace.from_settings(SpaceSettings(elements=["Li", "Fe", "O"], max_atoms_per_element=8,
                                                    max_atoms=12, max_elements=2, min_elements=1))


def crystal(sg: int, formula: str, lattice=CUBIC) -> Crystal:
    return Crystal(sg, Composition(formula) if formula else Composition({}), tuple(map(float, lattice)))


BROKEN = [
    (crystal(225, "Fe4S4"), Constraint.UNKNOWN_ELEMENT, "['S']"),
    (crystal(1, "", TRICLINIC), Constraint.NO_ATOMS, "no atoms"),
    (crystal(1, "Fe9", TRICLINIC), Constraint.TOO_MANY_ATOMS_OF_ELEMENT, "max_atoms_per_element=8"),
    (crystal(1, "Fe7O7", TRICLINIC), Constraint.TOO_MANY_ATOMS, "14 atoms exceed space.max_atoms=12"),
    (crystal(1, "LiFeO2", TRICLINIC), Constraint.TOO_MANY_ELEMENTS, "3 elements"),
    (crystal(1, "FeO3", TRICLINIC), Constraint.NOT_CHARGE_NEUTRAL, "Fe1 O3"),
    (crystal(231, "Fe4O4"), Constraint.SPACE_GROUP_NOT_ALLOWED, "space group 231"),
    (crystal(225, "Fe2O2"), Constraint.WYCKOFF_INCOMPATIBLE, "space group 225"),
    (Crystal(225, Composition("Fe4O4"), CUBIC, (("Fe", "a"), ("O", "a"))), Constraint.WYCKOFF_SITES,
     "position 4a has no free coordinate but holds 2 orbits"),
    (Crystal(225, Composition("Fe4O4"), CUBIC, (("Fe", "a"), ("O", "c"))), Constraint.WYCKOFF_SITES,
     "O: orbits hold 8 atoms, the composition has 4"),
    (crystal(225, "Fe4O4", (4.3, 4.4, 4.3, 90, 90, 90)), Constraint.LATTICE_SYSTEM_RULE, "cubic rule"),
    (crystal(225, "Fe4O4", (21.0, 21.0, 21.0, 90, 90, 90)), Constraint.LATTICE_OUT_OF_RANGE, "(2.0, 20.0)"),
    (crystal(1, "FeO", (4.0, 4.0, 4.0, 60, 60, 130)), Constraint.NOT_A_CELL, "no cell"),
]


def test_a_valid_crystal_has_no_violations(space):
    assert check_crystal(crystal(225, "Fe4O4"), space) == []
    assert check_crystal(Crystal(225, Composition("Fe4O4"), CUBIC, (("Fe", "a"), ("O", "b"))), space) == []
    assert check_crystal(crystal(166, "Fe3O3", (3.0, 3.0, 7.5, 90, 90, 120)), space) == []


@pytest.mark.parametrize(("bad", "constraint", "fragment"), BROKEN, ids=[c.value for _, c, _ in BROKEN])
def test_each_constraint_is_caught_alone_and_named(space, bad, constraint, fragment):
    violations = check_crystal(bad, space)
    assert [v.constraint for v in violations] == [constraint]
    assert fragment in violations[0].message


def test_elemental_crystal_breaks_min_elements():
    binary = CrystalSpace.from_settings(SpaceSettings(elements=["Li", "Fe", "O"], max_atoms_per_element=8,
                                                      max_atoms=12, max_elements=2))
    [violation] = check_crystal(crystal(1, "Fe4", TRICLINIC), binary)
    assert violation.constraint == Constraint.TOO_FEW_ELEMENTS
    assert "fewer than space.min_elements=2" in violation.message


def test_space_group_outside_restriction():
    centro = CrystalSpace.from_settings(SpaceSettings(elements=["Fe", "O"], point_symmetries=["centrosymmetric"]))
    zinc_blende = crystal(216, "Fe4O4")  # F-43m: 4a + 4c, not centrosymmetric
    assert [v.constraint for v in check_crystal(zinc_blende, centro)] == [Constraint.SPACE_GROUP_NOT_ALLOWED]


def test_valid_mask_agrees_with_check_crystal_and_has_batch_shape(space):
    crystals = [crystal(225, "Fe4O4"), *(c for c, _, _ in BROKEN if c.space_group <= 230), crystal(12, "Li4O2",
                (5.0, 6.0, 7.0, 90.0, 100.0, 90.0))]
    elements = ("Li", "Fe", "O", "S")
    batch = CrystalBatch.from_crystals(crystals, elements)
    mask = valid_mask(batch, space)
    assert mask.shape == (len(crystals),) and mask.dtype == torch.bool
    assert mask.tolist() == [not check_crystal(c, space) for c in crystals]
    assert all(m.shape == (len(crystals),) for m in broken_constraints(batch, space).values())


def test_every_table_entry_is_valid_with_an_allowed_lattice(space):
    g, m = space.compatible.nonzero(as_tuple=True)
    systems = space.lattice_system[g]
    free = torch.tensor([[5.0, 6.0, 7.0, 80.0, 95.0, 100.0]], dtype=torch.float64).expand(len(g), 6)
    from aloop.space.lattice import expand_lattice

    batch = CrystalBatch(space.elements, space.space_groups[g], space.compositions[m], expand_lattice(systems, free))
    assert valid_mask(batch, space).all()


def test_materials_project_conventional_cells_follow_lattice_rules_and_wyckoff_positions(shared_data):
    # Every MP conventional cell (pymatgen's, symprec 0.1) lands in the space's conventions:
    # only counts, elements and ranges may exclude it, never the lattice rule or Wyckoff positions.
    summary = pd.read_csv(shared_data / "mp_cgcnn36k" / "summary.csv.gz")
    summary = summary[summary.conv_nsites <= 16]
    crystals = []
    for formula, n_sites, sg, *lattice in summary[["formula", "conv_nsites", "spacegroup_number", "conv_a", "conv_b",
                                                   "conv_c", "conv_alpha", "conv_beta", "conv_gamma"]].itertuples(
                                                       index=False):
        reduced = Composition(formula)
        crystals.append(Crystal(int(sg), reduced * (n_sites / reduced.num_atoms), tuple(lattice)))
    elements = sorted({el.symbol for c in crystals for el in c.composition})
    everything = CrystalSpace.from_settings(SpaceSettings(elements=["Fe", "O"]))
    broken = broken_constraints(CrystalBatch.from_crystals(crystals, elements), everything)
    assert len(crystals) > 5000
    assert not broken[Constraint.LATTICE_SYSTEM_RULE].any()
    assert not broken[Constraint.WYCKOFF_INCOMPATIBLE].any()
    assert not broken[Constraint.NOT_A_CELL].any()
    assert broken[Constraint.UNKNOWN_ELEMENT].any()  # the checker does look at the rest
