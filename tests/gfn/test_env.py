"""Environment tables and conversions between trajectories and crystal batches."""

import pytest
import torch

from aloop.config import GFNSettings
from aloop.gfn import CrystalEnv, build_policy
from aloop.gfn.sampler import rollout
from aloop.space.crystal import CrystalBatch

from .conftest import SMALL


def test_hierarchy_masks_follow_the_space_groups(small_env):
    env = small_env
    systems, symmetries = env.group_lattice_system, env.group_point_symmetry
    for g in range(env.n_groups):
        assert env.group_mask[systems[g], symmetries[g], g]
        assert env.group_mask[:, :, g].sum() == 1
    # every allowed choice has an allowed continuation
    for s in env.lattice_system_mask.nonzero().flatten():
        assert env.point_symmetry_mask[s].any()
        for p in env.point_symmetry_mask[s].nonzero().flatten():
            assert env.group_mask[s, p].any()
    assert env.lattice_system_mask.sum() == 1  # the fixture's space is cubic only


def test_round_trip_through_crystal_batches(small_env):
    torch.manual_seed(0)
    trajectories = rollout(small_env, build_policy(small_env, SMALL), 500, epsilon=0.5)
    back, inside = small_env.from_batch(small_env.to_batch(trajectories))
    assert inside.all()
    assert torch.equal(back.group, trajectories.group) and torch.equal(back.counts, trajectories.counts)
    assert torch.equal(back.lattice_system, trajectories.lattice_system)
    assert torch.allclose(back.unit[:, 0], trajectories.unit[:, 0], atol=1e-5)  # cubic: a is the only free one
    assert torch.equal(back.sites, trajectories.sites)
    # through Crystal objects, whose sites are in canonical (not trajectory) order
    crystals = small_env.to_batch(trajectories).to_crystals()
    again, inside = small_env.from_batch(CrystalBatch.from_crystals(crystals, small_env.space.elements))
    assert inside.all() and torch.equal(again.sites, trajectories.sites)


def test_crystals_outside_the_space_are_flagged(small_env):
    env = small_env
    good = env.to_batch(rollout(env, build_policy(env, SMALL), 1))
    rows = []
    for change in ("group", "composition", "length", "tie", "no sites", "sites"):
        lattice, counts, group, sites = good.lattice.clone(), good.counts.clone(), good.space_group.clone(), \
            good.sites.clone()
        if change == "no sites":
            sites[:] = -1
        elif change == "sites":
            sites[0, 0, 1] = 0  # the first orbit on the general position: too many atoms
        elif change == "group":
            group[:] = 2  # triclinic, not allowed
        elif change == "composition":
            counts[:] = torch.tensor([[4, 1]])  # Fe4O: not charge neutral
        elif change == "length":
            lattice[:, :3] = 40.0
        else:
            lattice[:, 1] = lattice[:, 0] + 1.0  # b != a in a cubic cell
        rows.append(CrystalBatch(good.elements, group, counts, lattice, sites))
    batch = CrystalBatch(good.elements, *(torch.cat([getattr(r, k) for r in [good, *rows]])
                                          for k in ("space_group", "counts", "lattice", "sites")))
    _, inside = env.from_batch(batch)
    assert inside.tolist() == [True, False, False, False, False, False, False]
    with pytest.raises(ValueError, match="elements"):
        env.from_batch(CrystalBatch(("O", "Fe"), good.space_group, good.counts, good.lattice))


def test_fingerprint_tells_spaces_and_priors_apart(small_env, tiny_env):
    rebuilt = CrystalEnv.from_space(small_env.space, GFNSettings())
    assert rebuilt.fingerprint() == small_env.fingerprint()
    assert tiny_env.fingerprint() != small_env.fingerprint()
    other_prior = CrystalEnv.from_space(small_env.space, GFNSettings(min_volume_per_atom=9.0))
    assert other_prior.fingerprint() != small_env.fingerprint()
