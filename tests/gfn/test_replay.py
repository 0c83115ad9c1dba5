"""Replay buffer: keeps the best distinct crystals, replays them with their rewards."""

import torch

from aloop.gfn.replay import ReplayBuffer
from aloop.gfn.states import Trajectories


def _trajectories(groups: list[int], a: list[float]) -> Trajectories:
    n = len(groups)
    lattice = torch.tensor([[x, x, x, 90.0, 90.0, 90.0] for x in a], dtype=torch.float64)
    return Trajectories(torch.full((n,), 7), torch.zeros(n, dtype=torch.long), torch.tensor(groups),
                        torch.ones(n, 2, dtype=torch.long), torch.full((n, 2, 2), -1), torch.rand(n, 6), lattice)


def test_keeps_the_highest_distinct_entries():
    buffer = ReplayBuffer.empty(capacity=3)
    buffer = buffer.add(_trajectories([0, 1, 2], [5.0, 5.0, 5.0]), torch.tensor([1.0, 3.0, 2.0]))
    # a duplicate of group 1 with a lower reward, a new best, a near-duplicate within 0.01 A
    buffer = buffer.add(_trajectories([1, 3, 3], [5.0, 6.0, 6.001]), torch.tensor([0.5, 4.0, 3.9]))
    assert len(buffer) == 3
    assert buffer.log_reward.tolist() == [4.0, 3.0, 2.0]
    assert buffer.trajectories.group.tolist() == [3, 1, 2]


def test_sample_returns_stored_pairs_and_zero_capacity_stays_empty():
    buffer = ReplayBuffer.empty(capacity=10).add(_trajectories([0, 1, 2, 3], [4.0, 5.0, 6.0, 7.0]),
                                                 torch.tensor([0.0, 1.0, 2.0, 3.0]))
    torch.manual_seed(0)
    batch, log_reward = buffer.sample(50)
    assert len(batch) == 50 and log_reward.shape == (50,)
    assert torch.equal(batch.group.float(), log_reward)  # rewards travel with their crystals
    assert len(ReplayBuffer.empty(capacity=0).add(_trajectories([0], [4.0]), torch.tensor([1.0]))) == 0


def test_crystals_that_differ_only_in_their_wyckoff_sites_are_distinct():
    same = _trajectories([1, 1], [5.0, 5.0])
    assert len(ReplayBuffer.empty(capacity=4).add(same, torch.tensor([1.0, 2.0]))) == 1
    other = _trajectories([1, 1], [5.0, 5.0])
    other.sites[1, 0] = torch.tensor([0, 3])  # same group, counts and lattice; another orbit
    buffer = ReplayBuffer.empty(capacity=4).add(other, torch.tensor([1.0, 2.0]))
    assert len(buffer) == 2 and sorted(buffer.log_reward.tolist()) == [1.0, 2.0]
