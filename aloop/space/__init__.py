"""The crystal parameter space: space groups, compositions, lattices, constraints, conversions."""

from aloop.space.crystal import LATTICE_KEYS, Crystal, CrystalBatch

__all__ = ["LATTICE_KEYS", "Crystal", "CrystalBatch"]
