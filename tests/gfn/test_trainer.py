"""Training moves the sampler toward the reward; sampling is seeded; bad rewards fail clearly."""

import dataclasses

import pytest
import torch

from aloop.gfn import build_policy, estimated_log_reward, sample, train, trainer
from aloop.gfn.sampler import log_prob, rollout

from .conftest import SMALL

TARGET_GROUP = 225


def _log_reward(batch):
    return torch.where(batch.space_group == TARGET_GROUP, 3.0, 0.0)


def _target_probability(env) -> float:
    """Reward-proportional probability of group 225: rewards times the lattice box volume of each
    (group, composition) pair (cubic: the width of a's interval, exp of the log Jacobian)."""
    group, composition = env.space.compatible.nonzero(as_tuple=True)
    counts = env.space.compositions[composition]
    _, log_volume = env.cell.to_lattice(env.group_lattice_system[group], torch.full((len(group), 6), 0.5),
                                        counts.sum(dim=1))
    mass = torch.exp(_log_reward(type("B", (), {"space_group": env.group_number[group]})) + log_volume)
    return float(mass[env.group_number[group] == TARGET_GROUP].sum() / mass.sum())


def test_short_training_moves_sampling_toward_the_reward(small_env):
    env = small_env
    torch.manual_seed(0)
    policy = build_policy(env, SMALL)
    before = float((sample(env, policy, 4000, seed=1).space_group == TARGET_GROUP).float().mean())
    history = train(env, policy, _log_reward, steps=80, settings=SMALL.model_copy(update={"lr": 3e-3}),
                    progress=False)
    after = float((sample(env, policy, 4000, seed=1).space_group == TARGET_GROUP).float().mean())
    target = _target_probability(env)
    assert before < 0.15 < target
    assert abs(after - target) < 0.4 * abs(before - target)
    assert len(history.loss) == 80 and history.loss[-1] < history.loss[0]
    # the learned log Z approaches log of the total reward mass: positive once group 225 pays e^3
    assert history.log_z[-1] > 0.5


def test_training_with_recorded_masks_matches_training_that_recomputes_them(small_env, monkeypatch):
    def run():
        torch.manual_seed(0)
        history = train(small_env, build_policy(small_env, SMALL), _log_reward, steps=30, settings=SMALL,
                        progress=False)
        return history.loss, history.log_z

    recorded = run()
    monkeypatch.setattr(trainer, "log_prob", lambda env, policy, trajectories: log_prob(
        env, policy, dataclasses.replace(trajectories, count_mask=None, letter_mask=None)))
    assert run() == recorded


def test_callback_sees_every_step_and_can_stop_training(small_env):
    seen = []

    def callback(step: int, loss: float) -> bool:
        seen.append((step, loss))
        return step == 3

    history = train(small_env, build_policy(small_env, SMALL), _log_reward, steps=50, settings=SMALL,
                    progress=False, callback=callback)
    assert seen == list(zip([1, 2, 3], history.loss)) and len(history.log_z) == 3


def test_sampling_is_reproducible_and_leaves_the_global_generator_alone(small_env):
    policy = build_policy(small_env, SMALL)
    torch.manual_seed(5)
    expected_next = torch.rand(1)
    torch.manual_seed(5)
    first = sample(small_env, policy, 300, seed=11)
    assert torch.equal(torch.rand(1), expected_next)
    second = sample(small_env, policy, 300, seed=11)
    assert torch.equal(first.lattice, second.lattice) and torch.equal(first.counts, second.counts)
    assert not torch.equal(sample(small_env, policy, 300, seed=12).lattice, first.lattice)


@pytest.mark.parametrize("reward, message", [
    (lambda batch: torch.zeros(len(batch) + 1), "shape"),
    (lambda batch: torch.full((len(batch),), float("-inf")), "non-finite"),
])
def test_bad_reward_functions_fail_clearly(small_env, reward, message):
    with pytest.raises(ValueError, match=message):
        train(small_env, build_policy(small_env, SMALL), reward, steps=1, settings=SMALL, progress=False)


def test_estimated_log_reward_is_finite_inside_and_minus_infinity_outside(small_env):
    policy = build_policy(small_env, SMALL)
    batch = small_env.to_batch(rollout(small_env, policy, 20))
    assert torch.isfinite(estimated_log_reward(small_env, policy, batch)).all()
    batch.lattice[:, :3] = 100.0
    assert torch.isinf(estimated_log_reward(small_env, policy, batch)).all()


def test_cosine_schedule_decays_both_learning_rates_to_the_final_fraction():
    from aloop.gfn.trainer import _scheduler

    settings = SMALL.model_copy(update={"lr": 0.01, "lr_logz": 0.1, "lr_schedule": "cosine",
                                        "lr_final_fraction": 0.05})
    parameter = torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.Adam([{"params": [parameter], "lr": 0.01}, {"params": [], "lr": 0.1}])
    scheduler = _scheduler(optimizer, 11, settings)
    rates = []
    for _ in range(11):
        rates.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx([0.01, 0.1]) and rates[-1] == pytest.approx([0.0005, 0.005])
    assert rates[5] == pytest.approx([0.00525, 0.0525])  # half way: the mean of start and end
    assert _scheduler(optimizer, 11, SMALL.model_copy(update={"lr_schedule": "constant"})) is None
