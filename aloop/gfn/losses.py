"""Trajectory balance for the Crystal-GFN.

For a trajectory tau ending in crystal x, trajectory balance (Malkin et al., 2022) asks

    Z * prod_t P_F(s_{t+1} | s_t) = R(x) * prod_t P_B(s_t | s_{t+1})

and minimises the squared log ratio. The crystal is built in a fixed order (lattice
system, point symmetry, space group, the count of each element in turn, then the lattice
coordinates), so every state has exactly one parent: the backward policy is
deterministic, P_B = 1 and log P_B = 0 for every step, the continuous lattice step
included. The loss therefore reduces to ``(log Z + log P_F(tau) - log R(x))^2``, and at
its optimum ``log Z + log P_F(tau)`` equals ``log R(x)``.

The lattice step contributes a density (per unit of the normalised parameter box), so
``R`` is a density over the lattice box times a mass over the discrete choices.
"""

from __future__ import annotations

import torch


def trajectory_balance_loss(log_z: torch.Tensor, log_pf: torch.Tensor, log_reward: torch.Tensor) -> torch.Tensor:
    """Mean squared trajectory-balance residual.

    Args:
        log_z: scalar, learned log partition function.
        log_pf: ``(N,)`` summed forward log-probabilities of each trajectory.
        log_reward: ``(N,)`` log rewards of the terminal crystals.

    Returns:
        scalar loss.
    """
    residual = log_z + log_pf - log_reward  # (N,)
    return residual.pow(2).mean()
