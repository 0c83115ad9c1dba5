"""The cold-start design: spread-out crystals whose labels are of the crystals it names."""

from __future__ import annotations

from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from aloop.data.cold_start import initial_design
from aloop.space import CrystalBatch
from aloop.space.supergroup import forced_supergroup


def test_the_design_leaves_out_sites_that_force_a_higher_group(smoke_problem):
    # 40% of the untrained smoke generator's valid samples are such sets; without the filter this design has some
    space = smoke_problem.env.space
    design = initial_design(space, smoke_problem.cfg.gfn, 6, seed=0)
    crystals = [crystal for crystal, _ in design]
    assert len(design) == 6
    assert not forced_supergroup(CrystalBatch.from_crystals(crystals, space.elements)).any()
    exact = sum(SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_number() == crystal.space_group
                for crystal, structure in design)
    assert exact >= 5  # random coordinates land on a special value rarely
