"""CHGNet oracle, the default: relax a candidate with the pretrained CHGNet shipped in its wheel.

CHGNet was trained on MPtrj energies that already carry MaterialsProject2020Compatibility
corrections, so its energies are on the MP2020-corrected scale and get **no** further
correction. Formation energies and hulls are built (by aloop's labelling) from these
energies and the elemental references this oracle relaxes itself (``reference_energies``).
CHGNet predicts no band gap.

The relaxation is written with ASE around ``CHGNetCalculator`` rather than through
``StructOptimizer.relax`` because that offers no per-step hook: each step here checks the
wall-clock limit and the cell volume, so a runaway relaxation stops early with a reason.
With ``batch_size`` above 1 the oracle relaxes the submitted candidates in groups of that many, one
batched CHGNet evaluation per FIRE step (``oracles.batched_relax``), with the same filter, limits and checks.

Example:
    >>> oracle = CHGNetOracle(CHGNetSettings(max_steps=50), executor=executor)  # doctest: +SKIP
    >>> oracle.poll(oracle.submit([item]))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.filters import FrechetCellFilter
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor
from threadpoolctl import threadpool_limits

from aloop.executor import JobPool
from aloop.oracle import Failed, FailureKind, Labelled, Lost, OracleInput, Result
from aloop.space.structure import MIN_DISTANCE, has_close_atoms, min_distance
from oracles.batched_relax import Limits, Run, relax_batch
from oracles.references import reference_structures

if TYPE_CHECKING:
    from chgnet.model import CHGNet

MAX_VOLUME_RATIO = 5.0
"""A cell that grows past this multiple of its starting volume has exploded."""
HARD_TIMEOUT_GRACE_S = 30.0
"""The relaxation stops itself at ``timeout_s`` (with the step it reached); the executor
abandons it only this much later (model loading, a step stuck in C)."""
ENERGY_RANGE = (-20.0, 5.0)
"""eV/atom; CHGNet energies outside it are absurd (MP spans about -14 to 0)."""


class CHGNetSettings(BaseModel):
    """Settings of the CHGNet oracle (``oracle.settings`` when ``oracle.name: chgnet``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: Literal["0.3.0", "0.2.0"] = "0.3.0"
    """Pretrained weights shipped in the chgnet wheel (both on the MP2020-corrected GGA scale)."""
    optimizer: Literal["FIRE", "BFGS", "LBFGS", "BFGSLineSearch", "MDMin", "SciPyFminCG",
                       "SciPyFminBFGS"] = "FIRE"
    fmax: float = Field(0.1, gt=0)
    """Converged when every force (and the cell's virial per atom) is below this, eV/Angstrom."""
    max_steps: int = Field(500, gt=0)
    relax_cell: bool = True
    timeout_s: float = Field(600.0, gt=0)
    """Wall-clock seconds one relaxation may take."""
    device: str = "cpu"
    torch_threads: int | None = Field(1, gt=0)
    """Intra-op threads per process, of torch and of numpy's BLAS; one evaluation per core scales
    through executor workers, and spinning threads run 3-6x slower on a busy 2-core machine.
    ``None``: the libraries' defaults."""
    batch_size: int = Field(8, gt=0)
    """Candidates relaxed together, one batched CHGNet evaluation per FIRE step for all still moving;
    1 relaxes one at a time through ASE. A submit is split into groups of at most this many, each one
    executor job (so ``oracle.workers`` relax groups side by side)."""

    @model_validator(mode="after")
    def _batched_is_fire(self) -> CHGNetSettings:
        if self.batch_size > 1 and self.optimizer != "FIRE":
            raise ValueError(f"batch_size {self.batch_size} relaxes with FIRE only, not {self.optimizer} "
                             "(batch_size: 1 relaxes one at a time with any optimizer)")
        return self


class _Stop(Exception):
    """Ends a relaxation early with a reason and its failure ``kind``."""

    def __init__(self, reason: str, *, kind: FailureKind) -> None:
        super().__init__(reason)
        self.kind = kind


@functools.lru_cache(maxsize=4)
def load_model(name: str, device: str) -> CHGNet:
    """The pretrained CHGNet, loaded once per process from the wheel (no download).

    Called by the oracle's calculators; call it ahead to warm a worker process.

    Args:
        name: weights version, ``CHGNetSettings.model`` (e.g. ``"0.3.0"``).
        device: torch device name, ``CHGNetSettings.device`` (e.g. ``"cpu"``).
    """
    from chgnet.model import CHGNet

    return CHGNet.load(model_name=name, use_device=device, verbose=False)


_local = threading.local()
_QUIET = threading.Lock()
"""Held while stdout is redirected: ``redirect_stdout`` swaps the process-wide ``sys.stdout``, and two
threads redirecting at once could leave it pointing at a discarded buffer (a round's report was lost so)."""


def _calculator(settings: CHGNetSettings):
    """One ASE calculator per thread (it holds per-call results), built quietly."""
    from chgnet.model.dynamics import CHGNetCalculator

    key = (settings.model, settings.device)
    calculators = _local.__dict__.setdefault("calculators", {})
    if key not in calculators:
        with _QUIET, contextlib.redirect_stdout(io.StringIO()):  # CHGNetCalculator always prints its device
            calculators[key] = CHGNetCalculator(model=load_model(*key), use_device=settings.device,
                                                on_isolated_atoms="error")
    return calculators[key]


def relax_atoms(atoms: Atoms, settings: CHGNetSettings, *, fmax: float | None = None,
                max_steps: int | None = None) -> dict:
    """Relax ``atoms`` in place with CHGNet; returns energy, steps, convergence, max force.

    Raises:
        _Stop: past ``settings.timeout_s``, when the volume grows ``MAX_VOLUME_RATIO``-fold, or
            when CHGNet refuses the structure (isolated atoms).
    """
    from chgnet.model.dynamics import OPTIMIZERS

    _limit_threads(settings)
    atoms.calc = _calculator(settings)
    target = FrechetCellFilter(atoms) if settings.relax_cell else atoms
    optimizer = OPTIMIZERS[settings.optimizer](target, logfile=None)
    start, volume0 = time.monotonic(), atoms.get_volume()

    def watch() -> None:
        if time.monotonic() - start > settings.timeout_s:
            raise _Stop(f"timed out after {settings.timeout_s:g} s at step {optimizer.nsteps}", kind="timeout")
        if atoms.get_volume() > MAX_VOLUME_RATIO * volume0:
            raise _Stop(f"cell exploded: volume {atoms.get_volume():.1f} A^3 from {volume0:.1f} A^3 "
                        f"at step {optimizer.nsteps}", kind="exploded")

    optimizer.attach(watch)
    try:
        converged = bool(optimizer.run(fmax=fmax or settings.fmax, steps=max_steps or settings.max_steps))
    except ValueError as error:  # CHGNet's graph refuses a cell whose atoms drifted apart (isolated atoms)
        raise _Stop(f"CHGNet cannot evaluate the structure at step {optimizer.nsteps}: {error}",
                    kind="unsupported") from error
    forces = target.get_forces()
    return {
        "energy_per_atom": float(atoms.get_potential_energy()) / len(atoms),
        "steps": int(optimizer.nsteps),
        "converged": converged,
        "max_force": float(np.linalg.norm(forces, axis=1).max()),
        "seconds": time.monotonic() - start,
    }


def _limit_threads(settings: CHGNetSettings) -> None:
    """Torch and BLAS threads of this process as the settings ask (ASE's optimiser steps are numpy)."""
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
        threadpool_limits(settings.torch_threads, user_api="blas")


def _meta(n_atoms: int, settings: CHGNetSettings) -> dict:
    return {"model": f"chgnet-{settings.model}", "optimizer": settings.optimizer, "fmax": settings.fmax,
            "max_steps": settings.max_steps, "n_atoms": n_atoms, "worker": f"{socket.gethostname()}:{os.getpid()}"}


def _checked(run: dict, structure: Structure, meta: dict, settings: CHGNetSettings) -> Labelled | Failed:
    """The label of a finished relaxation, or why it is none (energy, convergence, relaxed geometry)."""
    meta |= run
    energy = run["energy_per_atom"]
    if not math.isfinite(energy):
        return Failed(f"non-finite energy {energy} eV/atom", meta, kind="non_finite")
    if not ENERGY_RANGE[0] <= energy <= ENERGY_RANGE[1]:
        return Failed(f"absurd energy {energy} eV/atom (expected within {ENERGY_RANGE})", meta, kind="absurd_energy")
    if not run["converged"]:
        return Failed(f"not converged after {run['steps']} steps: max force {run['max_force']:.3f} "
                      f"eV/A > fmax {settings.fmax}", meta, kind="not_converged")
    if structure.volume < 0.1 or has_close_atoms(structure):
        return Failed(f"invalid relaxed structure: atoms closer than {MIN_DISTANCE} A "
                      f"(min {min_distance(structure):.2f} A) or volume {structure.volume:.2f} A^3", meta,
                      kind="too_close")
    return Labelled(energy_per_atom=energy, structure=structure, metadata=meta)


def relax_candidate(item: OracleInput, *, settings: CHGNetSettings) -> Labelled | Failed:
    """Relax one candidate and check the result; every failure is a ``Failed`` with its reason and kind."""
    atoms = AseAtomsAdaptor.get_atoms(item.structure)
    meta = _meta(len(atoms), settings)
    try:
        run = relax_atoms(atoms, settings)
    except _Stop as stop:
        return Failed(str(stop), meta, kind=stop.kind)
    return _checked(run, AseAtomsAdaptor.get_structure(atoms), meta, settings)


def relax_candidates(items: Sequence[OracleInput], *, settings: CHGNetSettings) -> list[Labelled | Failed]:
    """Relax candidates together (``oracles.batched_relax``); results as ``relax_candidate`` gives them, in order."""
    _limit_threads(settings)
    atoms = [AseAtomsAdaptor.get_atoms(item.structure) for item in items]
    limits = Limits(fmax=settings.fmax, max_steps=settings.max_steps, relax_cell=settings.relax_cell,
                    timeout_s=settings.timeout_s, max_volume_ratio=MAX_VOLUME_RATIO)
    runs = relax_batch(atoms, load_model(settings.model, settings.device), limits=limits)
    return [_batched_label(a, run, settings) for a, run in zip(atoms, runs, strict=True)]


def _batched_label(atoms: Atoms, run: Run, settings: CHGNetSettings) -> Labelled | Failed:
    meta = _meta(len(atoms), settings)
    if run.stop:
        return Failed(run.stop[0], meta, kind=run.stop[1])
    # the relaxed structure carries CHGNet's magmoms as in the one-at-a-time path (final_magmom)
    atoms.calc = SinglePointCalculator(atoms, energy=run.energy_per_atom * len(atoms), magmoms=run.magmoms)
    return _checked({"energy_per_atom": run.energy_per_atom, "steps": run.steps, "converged": run.converged,
                     "max_force": run.max_force, "seconds": run.seconds},
                    AseAtomsAdaptor.get_structure(atoms), meta, settings)


@dataclass(frozen=True)
class _Group:
    """Candidates relaxed together as one executor job; ``candidate_id`` names the job's thread and id."""

    items: tuple[OracleInput, ...]

    @property
    def candidate_id(self) -> str:
        return f"{self.items[0].candidate_id}+{len(self.items) - 1}"


def _relax_group(group: _Group, *, settings: CHGNetSettings) -> list[Labelled | Failed]:
    """One group job of the oracle (module level, so Dask can pickle it)."""
    return relax_candidates(group.items, settings=settings)


def split_groups(inputs: Sequence[OracleInput], batch_size: int) -> list[_Group]:
    """``inputs`` in as few groups of at most ``batch_size`` as possible, of even sizes (workers finish together)."""
    count = max(1, math.ceil(len(inputs) / batch_size))
    return [_Group(tuple(inputs[i] for i in part)) for part in np.array_split(np.arange(len(inputs)), count)
            if len(part)]


class CHGNetOracle:
    """Relaxes candidates with CHGNet on the given executor (synchronous: done on first poll)."""

    Settings: ClassVar[type[BaseModel]] = CHGNetSettings
    fidelity = 0.5
    cost = 10.0

    def __init__(self, settings: CHGNetSettings, *, executor: Executor) -> None:
        self.settings = settings
        self.name = f"chgnet-{settings.model}"
        timeout_s = settings.timeout_s + HARD_TIMEOUT_GRACE_S
        self._pool = JobPool(functools.partial(relax_candidate, settings=settings), executor=executor,
                             prefix="chgnet", timeout_s=timeout_s)
        # a group job evaluates a _Group to a list of results; run_with_timeout and JobPool pass it through
        self._groups = JobPool(functools.partial(_relax_group, settings=settings), executor=executor,
                               prefix="chgnet-group", timeout_s=timeout_s)
        self._members: dict[str, tuple[str, int]] = {}
        """Job id of each candidate relaxed in a group: the group's job id and the candidate's place in it."""

    def submit(self, inputs: Sequence[OracleInput]) -> list[str]:
        if self.settings.batch_size == 1:
            return self._pool.submit(inputs)
        job_ids = []
        parts = split_groups(inputs, self.settings.batch_size)
        for group, group_id in zip(parts, self._groups.submit(parts), strict=True):
            for index, item in enumerate(group.items):
                job_ids.append(job_id := f"chgnet-{item.candidate_id}-{uuid.uuid4().hex[:8]}")
                self._members[job_id] = (group_id, index)
        return job_ids

    def poll(self, job_ids: Sequence[str]) -> dict[str, Result]:
        if self.settings.batch_size == 1:
            return self._pool.poll(job_ids)
        states = self._groups.poll(list({self._members[j][0] for j in job_ids if j in self._members}))
        results: dict[str, Result] = {}
        for job_id in job_ids:
            if job_id not in self._members:
                results[job_id] = Lost(f"job {job_id} is not known to this process (it ran in a process that ended)")
                continue
            group_id, index = self._members[job_id]
            state = states[group_id]
            results[job_id] = state[index] if isinstance(state, list) else state
        return results

    def reference_energies(self, elements: Sequence[str]) -> dict[str, float]:
        """Lowest CHGNet energy per atom (eV/atom) of each element's relaxed reference structures."""
        energies = {}
        for element in elements:
            runs = []
            for atoms in reference_structures(element):
                try:
                    runs.append(relax_atoms(atoms.copy(), self.settings, max_steps=1000))
                except _Stop:
                    continue
            if not runs:
                raise ValueError(f"every reference structure of {element} failed to relax with {self.name}")
            energies[element] = min(run["energy_per_atom"] for run in runs)
        return energies
