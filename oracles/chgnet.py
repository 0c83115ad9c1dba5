"""CHGNet oracle, the default: relax a candidate with the pretrained CHGNet shipped in its wheel.

CHGNet was trained on MPtrj energies that already carry MaterialsProject2020Compatibility
corrections, so its energies are on the MP2020-corrected scale and get **no** further
correction. Formation energies and hulls are built (by aloop's labelling) from these
energies and the elemental references this oracle relaxes itself (``reference_energies``).
CHGNet predicts no band gap.

The relaxation is written with ASE around ``CHGNetCalculator`` rather than through
``StructOptimizer.relax`` because that offers no per-step hook: each step here checks the
wall-clock limit and the cell volume, so a runaway relaxation stops early with a reason.

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
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch
from ase import Atoms
from ase.filters import FrechetCellFilter
from pydantic import BaseModel, ConfigDict, Field
from pymatgen.io.ase import AseAtomsAdaptor
from threadpoolctl import threadpool_limits

from aloop.executor import JobPool
from aloop.oracle import Failed, FailureKind, Labelled, OracleInput, Result
from aloop.space.structure import MIN_DISTANCE, has_close_atoms, min_distance
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

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
        threadpool_limits(settings.torch_threads, user_api="blas")  # ASE's optimiser steps are numpy
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


def relax_candidate(item: OracleInput, *, settings: CHGNetSettings) -> Labelled | Failed:
    """Relax one candidate and check the result; every failure is a ``Failed`` with its reason and kind."""
    atoms = AseAtomsAdaptor.get_atoms(item.structure)
    meta = {"model": f"chgnet-{settings.model}", "optimizer": settings.optimizer, "fmax": settings.fmax,
            "max_steps": settings.max_steps, "n_atoms": len(atoms), "worker": f"{socket.gethostname()}:{os.getpid()}"}
    try:
        run = relax_atoms(atoms, settings)
    except _Stop as stop:
        return Failed(str(stop), meta, kind=stop.kind)
    meta |= run
    energy = run["energy_per_atom"]
    if not math.isfinite(energy):
        return Failed(f"non-finite energy {energy} eV/atom", meta, kind="non_finite")
    if not ENERGY_RANGE[0] <= energy <= ENERGY_RANGE[1]:
        return Failed(f"absurd energy {energy} eV/atom (expected within {ENERGY_RANGE})", meta, kind="absurd_energy")
    if not run["converged"]:
        return Failed(f"not converged after {run['steps']} steps: max force {run['max_force']:.3f} "
                      f"eV/A > fmax {settings.fmax}", meta, kind="not_converged")
    structure = AseAtomsAdaptor.get_structure(atoms)
    if structure.volume < 0.1 or has_close_atoms(structure):
        return Failed(f"invalid relaxed structure: atoms closer than {MIN_DISTANCE} A "
                      f"(min {min_distance(structure):.2f} A) or volume {structure.volume:.2f} A^3", meta,
                      kind="too_close")
    return Labelled(energy_per_atom=energy, structure=structure, metadata=meta)


class CHGNetOracle:
    """Relaxes candidates with CHGNet on the given executor (synchronous: done on first poll)."""

    Settings: ClassVar[type[BaseModel]] = CHGNetSettings
    fidelity = 0.5
    cost = 10.0

    def __init__(self, settings: CHGNetSettings, *, executor: Executor) -> None:
        self.settings = settings
        self.name = f"chgnet-{settings.model}"
        self._pool = JobPool(functools.partial(relax_candidate, settings=settings), executor=executor,
                             prefix="chgnet", timeout_s=settings.timeout_s + HARD_TIMEOUT_GRACE_S)

    def submit(self, inputs: Sequence[OracleInput]) -> list[str]:
        return self._pool.submit(inputs)

    def poll(self, job_ids: Sequence[str]) -> dict[str, Result]:
        return self._pool.poll(job_ids)

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
