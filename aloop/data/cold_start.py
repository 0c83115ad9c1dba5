"""Cold start: with no training data at all, a space-filling design of valid crystals for the oracle.

Valid crystals are drawn from the untrained Crystal-GFN (uniform over the allowed action at
every step), then spread out by farthest-point selection in feature space. Crystals whose
atoms cannot sit on their sites (``crowded``) or whose sites force a higher space group
(``forced_supergroup``: about 30% of untrained samples of the default space) are left out,
as the generator's reward leaves them out: the design's labels are of the crystals it names.
"""

from __future__ import annotations

import torch
from pymatgen.core import Structure

from aloop.config import GFNSettings
from aloop.gfn import CrystalEnv, build_policy, sample
from aloop.selection import farthest_point_indices
from aloop.space import Crystal, CrystalSpace, Placement, placed_structure, valid_mask
from aloop.space.features import featurize
from aloop.space.spacing import crowded
from aloop.space.supergroup import forced_supergroup

DESIGN_SPARE = 3
"""The design is picked from this many times its size of farthest-point crystals, in
farthest-point order, skipping those whose atoms cannot be placed."""
MIN_POOL = 1000
"""Fewest crystals drawn for the design (50 per design point above 20 points)."""


def initial_design(space: CrystalSpace, settings: GFNSettings, size: int, *, seed: int,
                   placement: Placement = Placement()) -> list[tuple[Crystal, Structure]]:
    """Up to ``size`` valid, spread-out crystals of ``space`` with their atoms placed (``placed_structure``).

    The same ``seed`` gives the same design on the same device: the draw runs on
    ``settings.device``, the selection on CPU.
    """
    env = CrystalEnv.from_space(space, settings, device=settings.device)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        pool = sample(env, build_policy(env, settings), max(50 * size, MIN_POOL), seed=seed).to("cpu")
    pool = pool[valid_mask(pool, space)]
    pool = pool[~(crowded(pool) | forced_supergroup(pool))]
    order = farthest_point_indices(featurize(pool), DESIGN_SPARE * size, seed=seed)
    design = []
    for crystal in pool[order].to_crystals():  # the most spread first; those that cannot be placed are passed over
        if (structure := placed_structure(crystal, placement)) is not None:
            design.append((crystal, structure))
        if len(design) == size:
            break
    return design
