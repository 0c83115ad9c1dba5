"""The crystal parameter space: space groups, compositions, lattices, constraints, conversions."""

from aloop.space.crystal import LATTICE_KEYS, Crystal, CrystalBatch
from aloop.space.diversity import DiversityReport, diversity_report, plot_diversity
from aloop.space.groups import CRYSTAL_SYSTEMS, SpaceGroup, space_group, space_group_table
from aloop.space.space import CrystalSpace, SpaceError
from aloop.space.structure import (Placement, StructureError, has_close_atoms, min_distance, place, placed_structure,
                                   to_structure)
from aloop.space.templates import Template, TemplatePool, template_of
from aloop.space.validity import Constraint, Violation, check_crystal, valid_mask

__all__ = [
    "CRYSTAL_SYSTEMS",
    "LATTICE_KEYS",
    "Constraint",
    "Crystal",
    "CrystalBatch",
    "CrystalSpace",
    "DiversityReport",
    "Placement",
    "SpaceError",
    "SpaceGroup",
    "StructureError",
    "Template",
    "TemplatePool",
    "Violation",
    "check_crystal",
    "diversity_report",
    "has_close_atoms",
    "min_distance",
    "place",
    "placed_structure",
    "plot_diversity",
    "space_group",
    "space_group_table",
    "template_of",
    "to_structure",
    "valid_mask",
]
