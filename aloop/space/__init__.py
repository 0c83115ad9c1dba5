"""The crystal parameter space: space groups, compositions, lattices, constraints, conversions."""

from aloop.space.crystal import LATTICE_KEYS, Crystal, CrystalBatch
from aloop.space.diversity import DiversityReport, diversity_report, plot_diversity
from aloop.space.groups import CRYSTAL_SYSTEMS, SpaceGroup, space_group, space_group_table
from aloop.space.space import CrystalSpace, SpaceError
from aloop.space.structure import StructureError, has_close_atoms, min_distance, placed_structure, to_structure
from aloop.space.validity import Constraint, Violation, check_crystal, valid_mask

__all__ = [
    "CRYSTAL_SYSTEMS",
    "LATTICE_KEYS",
    "Constraint",
    "Crystal",
    "CrystalBatch",
    "CrystalSpace",
    "DiversityReport",
    "SpaceError",
    "SpaceGroup",
    "StructureError",
    "Violation",
    "check_crystal",
    "diversity_report",
    "has_close_atoms",
    "min_distance",
    "placed_structure",
    "plot_diversity",
    "space_group",
    "space_group_table",
    "to_structure",
    "valid_mask",
]
