"""The lattice action: every unit vector gives a valid cell; the map inverts; its Jacobian is right."""

import pytest
import torch

from aloop.config import CRYSTAL_LATTICE_SYSTEMS
from aloop.gfn.cell import LENGTH_SLACK, CellMap
from aloop.space.lattice import FREE, cell_volume, follows_system, in_ranges, is_real_cell

RANGES = [((2.0, 15.0), (60.0, 140.0)), ((10.0, 20.0), (75.0, 135.0)), ((2.0, 15.0), (1.0, 179.0))]
TRICLINIC = CRYSTAL_LATTICE_SYSTEMS.index("triclinic")


def _draw(cell: CellMap, n: int, *, systems=range(8), seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    system = torch.tensor(list(systems))[torch.randint(len(systems), (n,), generator=generator)]
    unit = torch.rand(n, 6, generator=generator, dtype=torch.float64)
    unit[:4] = torch.tensor([[0.0] * 6, [1.0] * 6, [0.0, 1.0] * 3, [1.0, 0.0] * 3])  # corners of the box too
    n_atoms = torch.randint(1, 21, (n,), generator=generator)
    return system, unit, n_atoms


@pytest.mark.parametrize("length_range, angle_range", RANGES)
def test_every_unit_vector_gives_a_valid_cell_in_range(length_range, angle_range):
    cell = CellMap(length_range, angle_range, 8.0, 0.7)
    system, unit, n_atoms = _draw(cell, 50_000)
    lattice, log_jacobian = cell.to_lattice(system, unit, n_atoms)
    assert is_real_cell(lattice).all()
    assert in_ranges(lattice, length_range=length_range, angle_range=angle_range).all()
    assert follows_system(system, lattice).all()
    assert torch.isfinite(log_jacobian).all()


def test_narrow_angle_range_near_the_triclinic_limit_stays_valid():
    cell = CellMap((3.0, 6.0), (110.0, 119.5), 0.0, 0.0)
    system, unit, n_atoms = _draw(cell, 20_000, systems=[TRICLINIC])
    lattice, _ = cell.to_lattice(system, unit, n_atoms)
    assert is_real_cell(lattice).all()
    assert in_ranges(lattice, length_range=(3.0, 6.0), angle_range=(110.0, 119.5)).all()


def test_volume_and_length_prior_hold_where_the_range_allows():
    cell = CellMap((2.0, 15.0), (60.0, 140.0), 10.0, 0.7)
    system, unit, n_atoms = _draw(cell, 20_000, systems=[s for s in range(8) if s != TRICLINIC])
    lattice, _ = cell.to_lattice(system, unit, n_atoms)
    target = n_atoms.double() * 10.0
    assert (cell_volume(lattice) >= target * (1 - 1e-9)).all()
    assert (lattice[:, :3].min(dim=1).values >= 0.7 * target ** (1 / 3) - 1e-9).all()
    rhombohedral = system == CRYSTAL_LATTICE_SYSTEMS.index("trigonal_rhombohedral")
    reachable_c = lattice[rhombohedral, 0].clamp(max=15.0 - LENGTH_SLACK * 13.0)  # the bound stops below hi
    assert (lattice[rhombohedral, 2] >= reachable_c).all()


def test_to_unit_inverts_to_lattice():
    cell = CellMap((2.0, 15.0), (60.0, 140.0), 8.0, 0.7)
    system, unit, n_atoms = _draw(cell, 5000)
    lattice, log_jacobian = cell.to_lattice(system, unit, n_atoms)
    back, back_log_jacobian = cell.to_unit(system, lattice, n_atoms)
    free = FREE[system]
    assert torch.allclose(back[free], unit[free], atol=1e-9)
    assert torch.allclose(back_log_jacobian, log_jacobian)
    far = lattice.clone()
    far[:, 0] = 30.0  # beyond the length range: unreachable, so outside [0, 1]
    assert (cell.to_unit(system, far, n_atoms)[0][:, 0] > 1).all()


@pytest.mark.parametrize("system", range(8))
def test_log_jacobian_is_the_log_determinant_of_the_map(system):
    # Numerical check of the triangular map's determinant over the free parameters,
    # in normalised units (lengths / 13 A, angles / 80 degrees).
    cell = CellMap((2.0, 15.0), (60.0, 140.0), 8.0, 0.7)
    free = FREE[system]
    scale = torch.tensor([13.0] * 3 + [80.0] * 3, dtype=torch.float64)[free]
    torch.manual_seed(system)
    for _ in range(3):
        unit = torch.rand(6, dtype=torch.float64)

        def free_lattice(u_free, unit=unit):
            full = unit.clone()
            full[free] = u_free
            lattice, _ = cell.to_lattice(torch.tensor([system]), full.unsqueeze(0), torch.tensor([6]))
            return lattice[0, free] / scale

        jacobian = torch.autograd.functional.jacobian(free_lattice, unit[free])
        _, log_jacobian = cell.to_lattice(torch.tensor([system]), unit.unsqueeze(0), torch.tensor([6]))
        assert torch.allclose(torch.linalg.slogdet(jacobian).logabsdet, log_jacobian[0], atol=1e-6)
