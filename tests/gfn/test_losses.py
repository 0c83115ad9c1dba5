"""Trajectory balance against a hand computation."""

import torch

from aloop.gfn.losses import trajectory_balance_loss


def test_trajectory_balance_matches_hand_computation_and_gradient():
    log_z = torch.tensor(1.0, requires_grad=True)
    log_pf = torch.tensor([-1.0, -2.0], requires_grad=True)
    log_reward = torch.tensor([0.5, -3.0])
    loss = trajectory_balance_loss(log_z, log_pf, log_reward)
    # residuals: 1 - 1 - 0.5 = -0.5 and 1 - 2 + 3 = 2; mean of squares (0.25 + 4) / 2
    assert torch.isclose(loss, torch.tensor(2.125))
    loss.backward()
    assert torch.isclose(log_z.grad, torch.tensor(1.5))  # mean of 2 * residual
    assert torch.allclose(log_pf.grad, torch.tensor([-0.5, 2.0]))  # 2 * residual / N


def test_loss_is_zero_exactly_when_balanced():
    log_pf = torch.tensor([-0.3, -2.0, -5.0])
    assert trajectory_balance_loss(torch.tensor(2.0), log_pf, log_pf + 2.0) == 0.0
    assert trajectory_balance_loss(torch.tensor(2.1), log_pf, log_pf + 2.0) > 0.0
