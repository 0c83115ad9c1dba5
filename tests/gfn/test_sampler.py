"""Rollouts and their log-probabilities: valid samples, exact probabilities, hand-computed TB."""

import dataclasses

import pytest
import torch
from pymatgen.core import Composition

from aloop.gfn import build_policy
from aloop.gfn.losses import trajectory_balance_loss
from aloop.gfn.policy import N_LATTICE_COORDS
from aloop.gfn.replay import ReplayBuffer
from aloop.gfn.sampler import log_prob, rollout
from aloop.gfn.states import Trajectories
from aloop.gfn.wyckoff import all_assignments
from aloop.space.crystal import Crystal, CrystalBatch
from aloop.space.validity import valid_mask

from .conftest import PRESETS, SMALL

UNIFORM = SMALL.model_copy(update={"wyckoff_prior_weight": 0.0})
"""Untrained, this policy is uniform over the allowed actions (exploration's policy)."""


def _random_policy(env, *, seed: int, lattice_too: bool = False):
    """A policy with random head weights, so probabilities are far from uniform."""
    torch.manual_seed(seed)
    policy = build_policy(env, SMALL)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "head" in name and (lattice_too or "lattice" not in name):
                parameter.normal_(0, 0.5)
    return policy


@pytest.mark.parametrize("name", PRESETS)
def test_every_sample_is_valid_and_every_step_had_allowed_actions(env_for, name):
    env = env_for(name)
    policy = _random_policy(env, seed=1, lattice_too=True)
    torch.manual_seed(0)
    trajectories = rollout(env, policy, 2000, epsilon=0.3, temperature=2.0)
    assert valid_mask(env.to_batch(trajectories), env.space).all()
    # a finite log-probability means every chosen action was allowed by its step's mask
    assert torch.isfinite(log_prob(env, policy, trajectories)).all()


@pytest.mark.parametrize("name", PRESETS)
def test_recorded_masks_equal_recomputed_ones_also_after_replay(env_for, name):
    # training scores fresh and replayed trajectories with the masks their rollout recorded; they
    # must be the masks the environment computes from the actions alone, and give the same log P_F
    env = env_for(name)
    policy = _random_policy(env, seed=2, lattice_too=True)
    torch.manual_seed(0)
    fresh = rollout(env, policy, 600, epsilon=0.3, temperature=2.0)
    buffer = ReplayBuffer.empty(capacity=200).add(fresh[:400], torch.randn(400))
    replayed, _ = buffer.sample(200)
    trajectories = Trajectories.cat([fresh[400:], replayed])
    assert torch.equal(trajectories.count_mask, env.trie.count_masks(trajectories.counts, trajectories.group))
    assert torch.equal(trajectories.letter_mask,
                       env.wyckoff.replay(trajectories.group, trajectories.counts, trajectories.sites).mask)
    bare = dataclasses.replace(trajectories, count_mask=None, letter_mask=None)
    assert torch.equal(log_prob(env, policy, trajectories), log_prob(env, policy, bare))


def test_batch_shapes(small_env):
    trajectories = rollout(small_env, build_policy(small_env, SMALL), 7)
    e = small_env.n_elements
    assert [tuple(t.shape) for t in (trajectories.lattice_system, trajectories.group, trajectories.counts,
                                      trajectories.unit, trajectories.lattice)] == [(7,), (7,), (7, e), (7, 6), (7, 6)]
    assert log_prob(small_env, build_policy(small_env, SMALL), trajectories).shape == (7,)


def _all_discrete_trajectories(env) -> Trajectories:
    """Every (group, composition, Wyckoff assignment) the space allows, with the lattice at the unit box centre."""
    group, composition = env.space.compatible.nonzero(as_tuple=True)
    crystal, sites = all_assignments(env.wyckoff, group, env.space.compositions[composition], env.max_atoms)
    group, counts = group[crystal], env.space.compositions[composition][crystal]
    system = env.group_lattice_system[group]
    unit = torch.full((len(group), N_LATTICE_COORDS), 0.5)
    lattice, _ = env.cell.to_lattice(system, unit, counts.sum(dim=1))
    return Trajectories(system, env.group_point_symmetry[group], group, counts, sites, unit, lattice)


def _keys(trajectories: Trajectories) -> torch.Tensor:
    """``(N, K)`` the discrete part of each trajectory: group, counts, sites."""
    return torch.cat([trajectories.group.unsqueeze(1), trajectories.counts, trajectories.sites.flatten(1)], dim=1)


def _frequencies(drawn: Trajectories, every: Trajectories) -> torch.Tensor:
    """Share of ``drawn`` equal to each of ``every``'s discrete trajectories."""
    return (_keys(drawn).unsqueeze(1) == _keys(every).unsqueeze(0)).all(dim=2).float().mean(dim=0)


def _discrete_log_prob(env, policy, trajectories):
    """log P_F minus the lattice step (uniform Beta: its term is minus the log Jacobian)."""
    _, log_jacobian = env.cell.to_lattice(trajectories.lattice_system, trajectories.unit,
                                          trajectories.counts.sum(dim=1))
    return log_prob(env, policy, trajectories) + log_jacobian.float()


def test_discrete_probabilities_sum_to_one_and_match_rollout_frequencies(small_env):
    env = small_env
    policy = _random_policy(env, seed=3)
    every = _all_discrete_trajectories(env)
    assert len(every) > len(env.space.compatible.nonzero())  # some crystals have several assignments
    probability = _discrete_log_prob(env, policy, every).detach().exp()
    assert torch.isclose(probability.sum(), torch.tensor(1.0), atol=1e-5)
    torch.manual_seed(0)
    drawn = rollout(env, policy, 40_000)
    frequency = _frequencies(drawn, every)
    assert torch.isclose(frequency.sum(), torch.tensor(1.0))  # nothing drawn outside the enumeration
    assert 0.5 * (frequency - probability).abs().sum() < 0.03  # total variation; sampling noise ~0.01


def test_exploration_draws_a_share_of_whole_trajectories_from_the_uniform_policy(small_env):
    # epsilon = 0.5: half the trajectories follow the policy throughout, half the uniform policy
    # throughout, so the discrete distribution is the even mixture of the two (a uniform action
    # mixed into every step would give another one)
    env = small_env
    every = _all_discrete_trajectories(env)
    policy = _random_policy(env, seed=3)
    mixture = 0.5 * (_discrete_log_prob(env, policy, every).detach().exp()
                     + _discrete_log_prob(env, build_policy(env, UNIFORM), every).detach().exp())
    torch.manual_seed(0)
    drawn = rollout(env, policy, 40_000, epsilon=0.5)
    assert 0.5 * (_frequencies(drawn, every) - mixture).abs().sum() < 0.03


def test_trajectory_balance_on_the_tiny_space_matches_hand_computation(tiny_env):
    # Space: Pm-3m (221) hosts NaF, Na3F3, Na4F4; Fm-3m (225) only Na4F4; both cubic and
    # centrosymmetric. The untrained policy without Wyckoff prior is uniform over allowed actions:
    # group 1/2, then in 221 the Na count 1/3 (F is forced), in 225 everything forced; Na's orbit
    # on 4a or 4b of 225 (1a or 1b of 221) 1/2, F's forced onto the other. Cubic a is uniform on
    # [max(2, (7.5 A^3 * n)^(1/3)), 20] A; its density per unit of the 2-20 A range is 18 / width.
    env = tiny_env
    policy = build_policy(env, UNIFORM)
    crystals = [Crystal(225, Composition("Na4F4"), (7.3,) * 3 + (90.0,) * 3, (("Na", "b"), ("F", "a"))),
                Crystal(221, Composition("NaF"), (3.1,) * 3 + (90.0,) * 3, (("Na", "a"), ("F", "b")))]
    trajectories, inside = env.from_batch(CrystalBatch.from_crystals(crystals, env.space.elements))
    assert inside.all()
    low = torch.tensor([60.0, 15.0]) ** (1 / 3)
    assert torch.allclose(trajectories.unit[:, 0], (torch.tensor([7.3, 3.1]) - low) / (20.0 - low))
    expected = torch.log(torch.tensor([0.5 / 2, 0.5 / 3 / 2])) + torch.log(18.0 / (20.0 - low))
    log_pf = log_prob(env, policy, trajectories)
    assert torch.allclose(log_pf, expected, atol=1e-5)
    loss = trajectory_balance_loss(policy.log_z, log_pf, torch.tensor([-1.0, 0.5]))
    hand = ((expected[0] + 1.0) ** 2 + (expected[1] - 0.5) ** 2) / 2  # log Z = 0 untrained
    assert torch.isclose(loss, hand, atol=1e-5)
