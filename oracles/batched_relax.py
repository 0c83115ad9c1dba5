"""Batched CHGNet relaxation: many structures, one CHGNet evaluation per FIRE step for all still moving.

Each structure keeps its own FIRE state (velocity, time step, mixing, step count) over the degrees
of freedom of ASE's ``FrechetCellFilter``: atom positions in the undeformed cell and the cell's log
strain times the number of atoms, with the virial pulled back through the Frechet derivative of the
matrix exponential. The update is ASE's ``FIRE`` (same defaults: dt 0.1, maxstep 0.2 A, dtmax 1.0 ...)
written in torch over the whole batch, so a batch relaxes each structure along the path the
one-at-a-time ASE relaxation takes, up to float rounding. A structure leaves the batch when its forces
(and cell forces) are below ``fmax``, at ``max_steps``, or when it stops early (timeout, exploded cell,
isolated atoms); the others go on.

Written here rather than taken from torch-sim: ``torch-sim-atomistic`` 0.3.0, the newest the package
index serves for this Python and torch, has no CHGNet model (MACE, Fairchem, ORB, SevenNet, MatterSim,
...), so CHGNet would need a hand-written wrapper anyway; its FIRE has its own per-batch convergence
and no per-step hook for aloop's failure rules; and it would add h5py, tables and vesin to the
dependencies. What is left to write is this FIRE and cell filter, about as long as that wrapper.

Example:
    >>> runs = relax_batch([atoms_a, atoms_b], load_model("0.3.0", "cpu"), limits=Limits())  # doctest: +SKIP
    >>> runs[0].converged, atoms_a.get_volume()  # the Atoms hold the relaxed cell and positions  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from ase import Atoms
from pymatgen.core import Lattice, Structure

if TYPE_CHECKING:
    from chgnet.model import CHGNet

StopKind = Literal["timeout", "exploded", "unsupported"]

DT, DT_MAX, MAX_STEP, N_MIN, F_INC, F_DEC, A_START, F_A = 0.1, 1.0, 0.2, 5, 1.1, 0.5, 0.1, 0.99
"""ASE FIRE's defaults (``ase.optimize.FIRE``), which the one-at-a-time path uses."""


@dataclass(frozen=True)
class Limits:
    """When a relaxation ends: converged below ``fmax`` (eV/A), or stopped by a limit."""

    fmax: float = 0.1
    max_steps: int = 500
    relax_cell: bool = True
    timeout_s: float = 600.0
    """Seconds charged to one structure: each evaluation's wall-clock time shared evenly by the structures it
    evaluated. Alone, a structure's wall-clock seconds, as one at a time; in a batch of 32 cells of 32 atoms, the
    batch's 600 s (load 3) had timed out 47 of 96 structures that relax in 200 s each one at a time."""
    max_volume_ratio: float = 5.0


@dataclass(frozen=True)
class Run:
    """How one structure's relaxation ended; its ``Atoms`` hold the last cell and positions.

    ``stop`` is set (reason, kind) when it ended early; then the other fields describe the last step.
    ``magmoms`` are CHGNet's, at the last step (what ``CHGNetCalculator`` leaves on the atoms).
    """

    energy_per_atom: float
    steps: int
    converged: bool
    max_force: float
    seconds: float
    magmoms: np.ndarray | None = None
    stop: tuple[str, StopKind] | None = None


@dataclass
class _Batch:
    """FIRE state of the structures still moving; per-atom rows are grouped by ``owner``."""

    index: torch.Tensor  # (B,) position in the caller's list
    numbers: list[np.ndarray]  # atomic numbers of each structure
    owner: torch.Tensor  # (n,) structure of each atom row
    n_atoms: torch.Tensor  # (B,)
    cell0: torch.Tensor  # (B, 3, 3) starting cell, rows are lattice vectors
    volume0: torch.Tensor  # (B,)
    log_strain: torch.Tensor  # (B, 3, 3) L; the cell is cell0 @ expm(L).T
    reference: torch.Tensor  # (n, 3) positions in the undeformed cell
    velocity: torch.Tensor  # (n, 3)
    cell_velocity: torch.Tensor  # (B, 3, 3)
    dt: torch.Tensor  # (B,)
    alpha: torch.Tensor  # (B,)
    n_positive: torch.Tensor  # (B,) steps since the power last turned negative (FIRE's Nsteps)
    steps: torch.Tensor  # (B,)

    def select(self, keep: torch.Tensor) -> _Batch:
        """The batch without the structures where ``keep`` is false."""
        rows = keep[self.owner]
        numbers = [z for z, k in zip(self.numbers, keep.tolist(), strict=True) if k]
        n_atoms = self.n_atoms[keep]
        return _Batch(self.index[keep], numbers, torch.repeat_interleave(torch.arange(len(n_atoms)), n_atoms),
                      n_atoms, self.cell0[keep], self.volume0[keep], self.log_strain[keep], self.reference[rows],
                      self.velocity[rows], self.cell_velocity[keep], self.dt[keep], self.alpha[keep],
                      self.n_positive[keep], self.steps[keep])


def _start(atoms: Sequence[Atoms]) -> _Batch:
    """A fresh FIRE state for each of ``atoms`` (no velocity, the filter's reference is the starting cell)."""
    n_atoms = torch.tensor([len(a) for a in atoms])
    count = len(atoms)
    cell0 = torch.tensor(np.array([a.cell.array for a in atoms]), dtype=torch.float64)
    reference = torch.tensor(np.concatenate([a.positions for a in atoms]), dtype=torch.float64)
    zeros = torch.zeros(count, 3, 3, dtype=torch.float64)
    return _Batch(torch.arange(count), [a.numbers.copy() for a in atoms],
                  torch.repeat_interleave(torch.arange(count), n_atoms), n_atoms, cell0,
                  torch.linalg.det(cell0).abs(), zeros, reference, torch.zeros_like(reference), zeros.clone(),
                  torch.full((count,), DT, dtype=torch.float64), torch.full((count,), A_START, dtype=torch.float64),
                  torch.zeros(count, dtype=torch.long), torch.zeros(count, dtype=torch.long))


def _geometry(batch: _Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deformation gradients F = expm(L), cells and Cartesian positions of the batch."""
    deformation = torch.linalg.matrix_exp(batch.log_strain)
    cells = batch.cell0 @ deformation.transpose(1, 2)
    positions = torch.einsum("nij,nj->ni", deformation[batch.owner], batch.reference)
    return deformation, cells, positions


def _sum(atom_rows: torch.Tensor, cell_rows: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """Per-structure sum of per-atom rows (n, 3) and per-structure cell rows (B, 3, 3)."""
    return cell_rows.sum(dim=(1, 2)).index_add(0, owner, atom_rows.sum(dim=1))


def _cell_forces(log_strain: torch.Tensor, deformation: torch.Tensor, stress: torch.Tensor,
                 volumes: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
    """FrechetCellFilter's forces on the log strain: the virial pulled back through d expm(L), over n atoms.

    The adjoint of expm's Frechet derivative at L is the derivative at L^T, read from the upper-right
    block of expm([[L^T, G], [0, L^T]]).
    """
    virial = -volumes[:, None, None] * stress
    gradient = virial @ torch.linalg.inv(deformation.transpose(1, 2))
    block = torch.zeros(len(log_strain), 6, 6, dtype=log_strain.dtype)
    block[:, :3, :3] = block[:, 3:, 3:] = log_strain.transpose(1, 2)
    block[:, :3, 3:] = gradient
    return torch.linalg.matrix_exp(block)[:, :3, 3:] / n_atoms[:, None, None]


def _fire_step(batch: _Batch, forces: torch.Tensor, cell_forces: torch.Tensor) -> None:
    """One ASE FIRE step for every structure of ``batch``, in place (a structure's first step only
    starts its velocity)."""
    owner, fresh = batch.owner, batch.steps == 0
    power = _sum(forces * batch.velocity, cell_forces * batch.cell_velocity, owner)
    force_norm = _sum(forces**2, cell_forces**2, owner).sqrt()
    speed = _sum(batch.velocity**2, batch.cell_velocity**2, owner).sqrt()
    downhill = (power > 0) & ~fresh
    uphill = (power <= 0) & ~fresh
    mix = torch.where(downhill, batch.alpha, 0.0)
    scale = torch.where(downhill, mix * speed / force_norm, 0.0)
    keep = torch.where(uphill, 0.0, 1.0 - mix)
    batch.velocity = keep[owner, None] * batch.velocity + scale[owner, None] * forces
    batch.cell_velocity = keep[:, None, None] * batch.cell_velocity + scale[:, None, None] * cell_forces
    speed_up = downhill & (batch.n_positive > N_MIN)
    batch.dt = torch.where(speed_up, torch.clamp(batch.dt * F_INC, max=DT_MAX), batch.dt)
    batch.alpha = torch.where(speed_up, batch.alpha * F_A, batch.alpha)
    batch.n_positive = torch.where(downhill, batch.n_positive + 1, batch.n_positive)
    batch.dt = torch.where(uphill, batch.dt * F_DEC, batch.dt)
    batch.alpha = torch.where(uphill, A_START, batch.alpha)
    batch.n_positive = torch.where(uphill, 0, batch.n_positive)

    batch.velocity = batch.velocity + batch.dt[owner, None] * forces
    batch.cell_velocity = batch.cell_velocity + batch.dt[:, None, None] * cell_forces
    step, cell_step = batch.dt[owner, None] * batch.velocity, batch.dt[:, None, None] * batch.cell_velocity
    length = _sum(step**2, cell_step**2, owner).sqrt()
    shrink = torch.clamp(MAX_STEP / length, max=1.0)
    batch.reference = batch.reference + shrink[owner, None] * step
    batch.log_strain = batch.log_strain + shrink[:, None, None] * cell_step / batch.n_atoms[:, None, None]
    batch.steps = batch.steps + 1


def _graphs(model: CHGNet, batch: _Batch, cells: torch.Tensor, positions: torch.Tensor
            ) -> tuple[list, dict[int, str]]:
    """CHGNet's graph of each structure, and why CHGNet refuses the others (isolated atoms), by position."""
    graphs, refused = [], {}
    rows = torch.split(positions, batch.n_atoms.tolist())
    for i, (numbers, cell, xyz) in enumerate(zip(batch.numbers, cells.numpy(), rows, strict=True)):
        try:
            graphs.append(model.graph_converter(Structure(Lattice(cell), numbers, xyz.numpy(),
                                                          coords_are_cartesian=True)))
        except ValueError as error:
            refused[i] = str(error)
    return graphs, refused


@dataclass(frozen=True)
class _Prediction:
    """CHGNet's outputs for a batch: eV/atom (B,), eV/A (n, 3), eV/A^3 (B, 3, 3), Bohr magnetons per structure."""

    energy_per_atom: torch.Tensor
    forces: torch.Tensor
    stress: torch.Tensor
    magmoms: list[np.ndarray]


def _predict(model: CHGNet, graphs: list) -> _Prediction:
    """Energies, forces, stresses and magmoms of ``graphs`` in one batched CHGNet evaluation.

    What ``CHGNet.forward(task="efsm")`` computes, with the forces and stresses taken as plain first
    derivatives: ``forward`` asks autograd for a differentiable (``create_graph``) gradient, for training,
    which doubles the cost of a step. Uses ``CHGNet._compute`` (chgnet is pinned in pyproject.toml).
    """
    from chgnet.model.model import BatchedGraph

    batched = BatchedGraph.from_graphs(graphs, bond_basis_expansion=model.bond_basis_expansion,
                                       angle_basis_expansion=model.angle_basis_expansion, compute_stress=True)
    prediction = model._compute(batched, compute_magmom=True)
    n_atoms = prediction["atoms_per_graph"]
    energy = prediction["e"] * n_atoms if model.is_intensive else prediction["e"]
    gradients = torch.autograd.grad(energy.sum(), [*batched.atom_positions, *batched.strains])
    per_atom = prediction["e"] / (1 if model.is_intensive else n_atoms)
    if model.composition_model is not None:
        per_atom = per_atom + model.composition_model(graphs) / (1 if model.is_intensive else n_atoms)
    stress = torch.stack(gradients[len(graphs):]) / batched.volumes[:, None, None]
    return _Prediction(per_atom.detach().to(torch.float64), -torch.cat(gradients[:len(graphs)]).to(torch.float64),
                       stress.to(torch.float64), [m.detach().numpy() for m in prediction["m"]])


def relax_batch(atoms: Sequence[Atoms], model: CHGNet, *, limits: Limits) -> list[Run]:
    """Relax all ``atoms`` together, in place (cell and positions); one ``Run`` per structure, in order.

    A structure ends converged, at ``limits.max_steps`` or stopped (timeout, exploded, unsupported),
    checked after each evaluation in the order of the one-at-a-time path: limits first, then forces.
    """
    model.graph_converter.set_isolated_atom_response("error")
    model.eval()
    batch, runs = _start(atoms), [None] * len(atoms)
    spent = torch.zeros(len(atoms), dtype=torch.float64)  # seconds charged to each structure
    last = time.monotonic()
    while len(batch.index):
        deformation, cells, positions = _geometry(batch)
        graphs, refused = _graphs(model, batch, cells, positions)
        if refused:  # dropped, then the step is redone without them
            for i, reason in refused.items():
                step = int(batch.steps[i])
                runs[batch.index[i]] = Run(float("nan"), step, False, float("nan"), float(spent[batch.index[i]]), stop=(
                    f"CHGNet cannot evaluate the structure at step {step}: {reason}", "unsupported"))
            batch = batch.select(~torch.isin(torch.arange(len(batch.index)), torch.tensor(list(refused))))
            continue
        prediction = _predict(model, graphs)
        stress = (prediction.stress + prediction.stress.transpose(1, 2)) / 2  # ASE keeps the Voigt (symmetric) part
        volumes = torch.linalg.det(cells).abs()
        atom_forces = torch.einsum("ni,nij->nj", prediction.forces, deformation[batch.owner])
        cell_forces = _cell_forces(batch.log_strain, deformation, stress, volumes, batch.n_atoms)
        if not limits.relax_cell:
            cell_forces = torch.zeros_like(cell_forces)
        atom_max = torch.zeros(len(batch.index), dtype=torch.float64).scatter_reduce(
            0, batch.owner, atom_forces.norm(dim=1), "amax", include_self=False)
        max_force = torch.maximum(atom_max, cell_forces.norm(dim=2).amax(dim=1))
        now = time.monotonic()
        spent[batch.index] += (now - last) / len(batch.index)
        last, seconds = now, spent[batch.index]
        timed_out = seconds > limits.timeout_s
        exploded = volumes > limits.max_volume_ratio * batch.volume0
        converged = max_force < limits.fmax
        ended = exploded | converged | (batch.steps >= limits.max_steps) | timed_out
        for i in torch.nonzero(ended).flatten().tolist():
            step = int(batch.steps[i])
            stop = None
            if timed_out[i]:
                stop = (f"timed out after {limits.timeout_s:g} s at step {step}", "timeout")
            elif exploded[i]:
                stop = (f"cell exploded: volume {volumes[i]:.1f} A^3 from {batch.volume0[i]:.1f} A^3 at step {step}",
                        "exploded")
            out = atoms[batch.index[i]]
            out.set_cell(cells[i].numpy())
            out.positions = positions[batch.owner == i].numpy()
            runs[batch.index[i]] = Run(float(prediction.energy_per_atom[i]), step, bool(converged[i]) and stop is None,
                                       float(max_force[i]), float(seconds[i]), prediction.magmoms[i], stop)
        if ended.all():
            break
        left = ~ended
        rows = left[batch.owner]
        batch = batch.select(left)
        _fire_step(batch, atom_forces[rows], cell_forces[left])
    return runs
