"""Lattice-system rules, cell validity and the rhombohedral <-> hexagonal conversion."""

import math

import pytest
import torch
from pymatgen.core import Lattice

from aloop.config import CRYSTAL_LATTICE_SYSTEMS
from aloop.space.lattice import (
    cell_volume,
    expand_lattice,
    follows_system,
    free_mask,
    gamma_bounds,
    hexagonal_to_rhombohedral,
    in_ranges,
    is_real_cell,
    rhombohedral_to_hexagonal,
    system_fits_ranges,
)

SYSTEM = {name: i for i, name in enumerate(CRYSTAL_LATTICE_SYSTEMS)}


def random_free(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lengths = 3 + 7 * torch.rand(n, 3, generator=g, dtype=torch.float64)
    angles = 80 + 20 * torch.rand(n, 3, generator=g, dtype=torch.float64)
    return torch.cat([lengths, angles], dim=1)


def test_batch_shapes():
    systems = torch.arange(8).repeat(5)
    assert free_mask(systems).shape == (40, 6)
    assert expand_lattice(systems, random_free(40)).shape == (40, 6)
    assert follows_system(systems, random_free(40)).shape == (40,)
    assert is_real_cell(random_free(40)).shape == (40,)


def test_number_of_free_parameters():
    n_free = free_mask(torch.arange(8)).sum(dim=1).tolist()
    assert dict(zip(CRYSTAL_LATTICE_SYSTEMS, n_free, strict=True)) == {
        "triclinic": 6, "monoclinic": 4, "orthorhombic": 3, "tetragonal": 2,
        "trigonal_rhombohedral": 2, "trigonal_hexagonal": 2, "hexagonal": 2, "cubic": 1}


@pytest.mark.parametrize(("system", "check"), [
    ("cubic", lambda p: p[0] == p[1] == p[2] and p[3] == p[4] == p[5] == 90),
    ("tetragonal", lambda p: p[0] == p[1] and p[3] == p[4] == p[5] == 90),
    ("orthorhombic", lambda p: p[3] == p[4] == p[5] == 90),
    ("monoclinic", lambda p: p[3] == p[5] == 90 and p[4] != 90),
    ("hexagonal", lambda p: p[0] == p[1] and p[3] == p[4] == 90 and p[5] == 120),
    ("trigonal_rhombohedral", lambda p: p[0] == p[1] and p[3] == p[4] == 90 and p[5] == 120),
    ("triclinic", lambda p: len(set(p[3:])) == 3),
])
def test_expand_lattice_ties_parameters(system, check):
    free = random_free(16)
    expanded = expand_lattice(torch.full((16,), SYSTEM[system]), free)
    mask = free_mask(torch.full((16,), SYSTEM[system]))
    assert torch.equal(expanded[mask], free[mask])  # free entries pass through untouched
    assert all(check(row) for row in expanded.tolist())
    assert follows_system(torch.full((16,), SYSTEM[system]), expanded).all()


def test_follows_system_rejects_broken_ties():
    cubic = torch.tensor([[4.0, 4.0, 4.0, 90.0, 90.0, 90.0], [4.0, 4.1, 4.0, 90.0, 90.0, 90.0],
                          [4.0, 4.0, 4.0, 90.0, 91.0, 90.0]], dtype=torch.float64)
    assert follows_system(torch.full((3,), SYSTEM["cubic"]), cubic).tolist() == [True, False, False]


def test_volume_matches_pymatgen_and_impossible_angles_make_no_cell():
    free = random_free(20, seed=3)
    expected = torch.tensor([Lattice.from_parameters(*row).volume for row in free.tolist()], dtype=torch.float64)
    assert torch.allclose(cell_volume(free), expected, rtol=1e-9)
    impossible = torch.tensor([[3.0, 3.0, 3.0, 60.0, 60.0, 140.0],    # gamma > alpha + beta
                               [3.0, 3.0, 3.0, 130.0, 130.0, 130.0],  # sum above 360
                               [0.01, 0.01, 0.01, 90.0, 90.0, 90.0]], dtype=torch.float64)  # too small
    assert not is_real_cell(impossible).any()
    assert cell_volume(impossible[:2]).isnan().all()


def test_gamma_bounds_give_exactly_the_real_cells():
    g = torch.Generator().manual_seed(1)
    angles = 30 + 150 * torch.rand(2000, 3, generator=g, dtype=torch.float64)
    low, high = gamma_bounds(angles[:, 0], angles[:, 1])
    inside = (angles[:, 2] > low + 1e-6) & (angles[:, 2] < high - 1e-6)
    outside = (angles[:, 2] < low - 1e-6) | (angles[:, 2] > high + 1e-6)
    lattice = torch.cat([torch.full((2000, 3), 5.0, dtype=torch.float64), angles], dim=1)
    real = is_real_cell(lattice)
    assert real[inside].all() and not real[outside].any()
    assert inside.any() and outside.any()


def test_ranges_and_which_systems_fit_them():
    lattice = torch.tensor([[10.0, 12.0, 20.0, 90.0, 75.0, 135.0], [9.9, 12.0, 15.0, 90.0, 90.0, 90.0]],
                           dtype=torch.float64)
    assert in_ranges(lattice, length_range=(10.0, 20.0), angle_range=(75.0, 135.0)).tolist() == [True, False]
    assert system_fits_ranges((75.0, 135.0)).all()
    fits = dict(zip(CRYSTAL_LATTICE_SYSTEMS, system_fits_ranges((60.0, 100.0)).tolist(), strict=True))
    assert not fits["hexagonal"] and not fits["trigonal_rhombohedral"] and fits["cubic"] and fits["triclinic"]
    assert not system_fits_ranges((125.0, 140.0)).any()


@pytest.mark.parametrize(("a_r", "alpha_r"), [(5.0, 55.0), (3.5, 90.0), (6.2, 101.0)])
def test_rhombohedral_hexagonal_round_trip_keeps_three_primitive_volumes(a_r, alpha_r):
    a, c = rhombohedral_to_hexagonal(a_r, alpha_r)
    primitive = Lattice.from_parameters(a_r, a_r, a_r, alpha_r, alpha_r, alpha_r)
    hexagonal = Lattice.hexagonal(a, c)
    assert math.isclose(hexagonal.volume, 3 * primitive.volume, rel_tol=1e-9)
    assert hexagonal_to_rhombohedral(a, c) == pytest.approx((a_r, alpha_r))
