"""Space-group tables read from pyxtal: systems, point symmetry classes, Wyckoff positions."""

from collections import Counter

import pytest
import torch

from aloop.config import CRYSTAL_LATTICE_SYSTEMS, POINT_SYMMETRIES
from aloop.space.groups import (
    CRYSTAL_SYSTEMS,
    POINT_GROUPS,
    all_space_groups,
    space_group,
    space_group_table,
)


def test_table_shapes_and_unused_index_zero():
    table = space_group_table()
    for column in (table.crystal_system, table.lattice_system, table.point_group, table.point_symmetry):
        assert column.shape == (231,)
        assert column[0] == -1 and (column[1:] >= 0).all()
    assert table.wyckoff_multiplicity.shape == table.wyckoff_free.shape
    assert table.wyckoff_multiplicity.shape[0] == 231


def test_lattice_systems_split_trigonal_by_centring():
    counts = Counter(g.lattice_system for g in all_space_groups())
    # International Tables: 7 rhombohedral (R) groups among the 25 trigonal ones.
    assert counts == {"triclinic": 2, "monoclinic": 13, "orthorhombic": 59, "tetragonal": 68,
                      "trigonal_rhombohedral": 7, "trigonal_hexagonal": 18, "hexagonal": 27, "cubic": 36}
    assert [g.number for g in all_space_groups() if g.lattice_system == "trigonal_rhombohedral"] == \
        [146, 148, 155, 160, 161, 166, 167]
    assert set(counts) == set(CRYSTAL_LATTICE_SYSTEMS)


def test_point_symmetry_classes_are_the_textbook_ones():
    by_class: dict[str, set[str]] = {name: set() for name in POINT_SYMMETRIES}
    for g in all_space_groups():
        assert g.point_group in POINT_GROUPS
        by_class[g.point_symmetry].add(g.point_group)
    # 11 Laue classes are centrosymmetric, 10 point groups polar, 11 neither.
    assert by_class["centrosymmetric"] == {"-1", "2/m", "mmm", "4/m", "4/mmm", "-3", "-3m", "6/m", "6/mmm",
                                           "m-3", "m-3m"}
    assert by_class["non_centrosymmetric_polar"] == {"1", "2", "m", "mm2", "4", "4mm", "3", "3m", "6", "6mm"}
    assert len(by_class["non_centrosymmetric_non_polar"]) == 11


@pytest.mark.parametrize("number, crystal_system, point_group", [(1, "triclinic", "1"), (14, "monoclinic", "2/m"),
                                                                 (62, "orthorhombic", "mmm"), (186, "hexagonal", "6mm"),
                                                                 (225, "cubic", "m-3m")])
def test_known_groups(number, crystal_system, point_group):
    g = space_group(number)
    assert (g.crystal_system, g.point_group) == (crystal_system, point_group)
    table = space_group_table()
    assert CRYSTAL_SYSTEMS[table.crystal_system[number]] == crystal_system


def test_wyckoff_positions_of_rock_salt_group():
    wyckoff = space_group(225).wyckoff_positions
    assert wyckoff[0].multiplicity == 192 and wyckoff[0].free  # general position 192l
    fixed = sorted((w.multiplicity, w.letter) for w in wyckoff if not w.free)
    assert fixed == [(4, "a"), (4, "b"), (8, "c"), (24, "d")]
    row = space_group_table().wyckoff_multiplicity[225]
    assert row[: len(wyckoff)].tolist() == [w.multiplicity for w in wyckoff]
    assert (row[len(wyckoff):] == 0).all()


def test_space_group_outside_range():
    with pytest.raises(ValueError, match="231 is outside 1-230"):
        space_group(231)


def test_table_indexes_by_number():
    table = space_group_table()
    numbers = torch.tensor([2, 166, 167, 229])
    names = [CRYSTAL_LATTICE_SYSTEMS[i] for i in table.lattice_system[numbers]]
    assert names == ["triclinic", "trigonal_rhombohedral", "trigonal_rhombohedral", "cubic"]
