"""Exact targets for Crystal-GFN benchmarks: the measure trajectory balance samples against.

With a reward that depends only on the discrete part d (group, composition, Wyckoff
assignment), the trained sampler draws d with probability proportional to ``R(d) * V(d)``, where V(d) is
the volume of d's reachable lattice region in normalised units (``aloop.gfn.cell``).
V depends only on the lattice system and the atom count; it is the integral of the
map's Jacobian over the unit box, estimated here by Monte Carlo.
"""

from __future__ import annotations

import torch

from aloop.gfn import CrystalEnv
from aloop.gfn.wyckoff import all_assignments


def lattice_volumes(env: CrystalEnv, *, n_samples: int = 50_000, seed: int = 0) -> torch.Tensor:
    """``(8, max_atoms + 1)`` float64: V(system, n) = E_u[exp(log Jacobian)] with u uniform."""
    generator = torch.Generator().manual_seed(seed)
    unit = torch.rand(n_samples, 6, generator=generator, dtype=torch.float64)
    volumes = torch.zeros(8, env.max_atoms + 1, dtype=torch.float64)
    for system in range(8):
        for n_atoms in range(1, env.max_atoms + 1):
            _, log_jacobian = env.cell.to_lattice(torch.full((n_samples,), system), unit,
                                                  torch.full((n_samples,), n_atoms))
            volumes[system, n_atoms] = log_jacobian.exp().mean()
    return volumes


def discrete_pairs(env: CrystalEnv) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every allowed (group index, composition index) pair ``(P,)``, ``(P,)`` and its lattice volume ``(P,)``."""
    group, composition = env.space.compatible.nonzero(as_tuple=True)
    n_atoms = env.space.compositions[composition].sum(dim=1)
    volume = lattice_volumes(env)[env.group_lattice_system[group], n_atoms]
    return group, composition, volume


def discrete_states(env: CrystalEnv) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every allowed (group, composition, Wyckoff assignment) of a small space: ``(D,)`` group index,
    ``(D,)`` composition index, ``(D, L, 2)`` sites in trajectory order and ``(D,)`` lattice volume."""
    group, composition, volume = discrete_pairs(env)
    pair, sites = all_assignments(env.wyckoff, group, env.space.compositions[composition], env.max_atoms)
    return group[pair], composition[pair], sites, volume[pair]
