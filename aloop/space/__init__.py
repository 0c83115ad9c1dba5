"""The crystal parameter space: space groups, compositions, lattices, constraints, conversions."""

from aloop.space.crystal import LATTICE_KEYS, Crystal, CrystalBatch
from aloop.space.space import CrystalSpace, SpaceError
from aloop.space.structure import StructureError, to_structure

__all__ = ["LATTICE_KEYS", "Crystal", "CrystalBatch", "CrystalSpace", "SpaceError", "StructureError", "to_structure"]
