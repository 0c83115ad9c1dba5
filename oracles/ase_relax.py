"""One structure at a time through ASE: the relaxation, limits and checks the ML-potential oracles share.

An ML-potential oracle (``chgnet``, ``sevennet``) is a ``Potential``: how its ASE calculator is made,
its name (the label source) and, where its training energies were not MP2020-corrected, how its energies
get there. Everything else is here, the same for every potential: ASE's optimizer (FIRE by default) on
a ``FrechetCellFilter`` when the cell relaxes, a check after every evaluation (wall-clock limit, cell
volume, isolated atoms for a potential that does not refuse them itself) that stops a runaway relaxation
early with a reason and a failure kind, the judgement of the relaxed structure (finite and sane energy,
converged, atoms apart), the oracle's job pool and the elemental references relaxed the same way.

``oracles.batched_relax`` relaxes many structures at once for CHGNet with the same limits; its results
are judged by ``judge`` too.

Example:
    >>> potential = Potential("chgnet-0.3.0", "CHGNet", settings, calculator=chgnet_calculator)  # doctest: +SKIP
    >>> relax_candidate(item, potential=potential)  # doctest: +SKIP
    Labelled(energy_per_atom=-6.31, ...)
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
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.filters import FrechetCellFilter
from ase.neighborlist import neighbor_list
from ase.optimize import BFGS, FIRE, LBFGS, BFGSLineSearch, LBFGSLineSearch, MDMin
from ase.optimize.sciopt import SciPyFminBFGS, SciPyFminCG
from pydantic import BaseModel, ConfigDict, Field
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor
from threadpoolctl import threadpool_limits

from aloop.executor import JobPool
from aloop.oracle import Failed, FailureKind, Labelled, OracleInput
from aloop.space.structure import MIN_DISTANCE, has_close_atoms, min_distance
from oracles.references import reference_structures

MAX_VOLUME_RATIO = 5.0
"""A cell that grows past this multiple of its starting volume has exploded."""
HARD_TIMEOUT_GRACE_S = 30.0
"""The relaxation stops itself at ``timeout_s`` (with the step it reached); the executor
abandons it only this much later (model loading, a step stuck in C)."""
ENERGY_RANGE = (-20.0, 5.0)
"""eV/atom; a potential's energies outside it are absurd (MP spans about -14 to 0)."""

OPTIMIZERS = {"FIRE": FIRE, "BFGS": BFGS, "LBFGS": LBFGS, "BFGSLineSearch": BFGSLineSearch,
              "LBFGSLineSearch": LBFGSLineSearch, "MDMin": MDMin, "SciPyFminCG": SciPyFminCG,
              "SciPyFminBFGS": SciPyFminBFGS}
"""ASE's optimizers by name (the names and classes of CHGNet's ``StructOptimizer``)."""


class RelaxSettings(BaseModel):
    """Settings every ML-potential oracle has; its own settings add the weights (``model``) and more."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    """Pretrained weights shipped in the potential's wheel (each oracle lists its own)."""
    optimizer: Literal["FIRE", "BFGS", "LBFGS", "BFGSLineSearch", "MDMin", "SciPyFminCG",
                       "SciPyFminBFGS"] = "FIRE"
    fmax: float = Field(0.1, gt=0)
    """Converged when every force (and the cell's virial per atom) is below this, eV/Angstrom."""
    max_steps: int = Field(500, gt=0)
    relax_cell: bool = True
    timeout_s: float = Field(600.0, gt=0)
    """Wall-clock seconds one relaxation may take; relaxed in a batch, a structure is charged its share of each
    batched evaluation."""
    device: str = "cpu"
    torch_threads: int | None = Field(1, gt=0)
    """Intra-op threads per process, of torch and of numpy's BLAS; one evaluation per core scales
    through executor workers, and spinning threads run 3-6x slower on a busy 2-core machine.
    ``None``: the libraries' defaults."""


Correct = Callable[[Structure, float], tuple[float, dict[str, Any]]]
"""The label's energy per atom (eV/atom) and what to record about it, from a relaxed structure and the
potential's own energy per atom."""


@dataclass(frozen=True)
class Potential:
    """An ML potential as an oracle relaxes with it; picklable, as Dask sends it to its workers.

    Args:
        name: the label source and the labels' ``model`` metadata, e.g. ``chgnet-0.3.0``: labels sharing
            it share one energy scale.
        title: the model in failure reasons (``CHGNet cannot evaluate the structure ...``).
        settings: the oracle's settings.
        calculator: builds the ASE calculator from ``settings`` (a module-level function), called once
            per thread and kept; a ``ValueError`` it raises while evaluating makes the structure
            ``unsupported``.
        correct: brings the potential's energies to the label scale (MP2020-corrected), raising
            ``ValueError`` (an ``unsupported`` failure) when it cannot; ``None`` when they are on it already.
        cutoff: Angstrom; an atom without a neighbour this close stops the relaxation as ``unsupported``
            (isolated atoms), for a potential whose calculator evaluates such structures without
            complaint; ``None`` when it refuses them itself.
    """

    name: str
    title: str
    settings: RelaxSettings
    calculator: Callable[[Any], Calculator]
    correct: Correct | None = None
    cutoff: float | None = None


class Stop(Exception):
    """Ends a relaxation early with a reason and its failure ``kind``."""

    def __init__(self, reason: str, *, kind: FailureKind) -> None:
        super().__init__(reason)
        self.kind = kind


_local = threading.local()
_QUIET = threading.Lock()
"""Held while stdout is redirected: ``redirect_stdout`` swaps the process-wide ``sys.stdout``, and two
threads redirecting at once could leave it pointing at a discarded buffer (a round's report was lost so)."""


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Prints and warnings of a model's constructor silenced, one thread at a time."""
    with _QUIET, contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _calculator(potential: Potential) -> Calculator:
    """One ASE calculator per thread and potential (it holds per-call results)."""
    key = (potential.name, potential.settings.device)
    calculators = _local.__dict__.setdefault("calculators", {})
    if key not in calculators:
        calculators[key] = potential.calculator(potential.settings)
    return calculators[key]


def limit_threads(torch_threads: int | None) -> None:
    """Torch and BLAS threads of this process as the settings ask (ASE's optimiser steps are numpy)."""
    if torch_threads:
        torch.set_num_threads(torch_threads)
        threadpool_limits(torch_threads, user_api="blas")


def isolated_atoms(atoms: Atoms, cutoff: float) -> np.ndarray:
    """Indices of the atoms with no neighbour (periodic images included) within ``cutoff`` Angstrom."""
    return np.setdiff1d(np.arange(len(atoms)), neighbor_list("i", atoms, cutoff))


def _refused(potential: Potential, step: int, error: object) -> Stop:
    return Stop(f"{potential.title} cannot evaluate the structure at step {step}: {error}", kind="unsupported")


def relax_atoms(atoms: Atoms, potential: Potential, *, max_steps: int | None = None) -> dict:
    """Relax ``atoms`` in place; returns the potential's energy per atom, steps, convergence, max force.

    Raises:
        Stop: past ``timeout_s``, when the volume grows ``MAX_VOLUME_RATIO``-fold, or when the potential
            cannot evaluate the structure (isolated atoms, an element it does not know).
    """
    settings = potential.settings
    limit_threads(settings.torch_threads)
    start, volume0 = time.monotonic(), atoms.get_volume()
    try:
        atoms.calc = _calculator(potential)  # a calculator may refuse the elements here
    except ValueError as error:
        raise _refused(potential, 0, error) from error
    target = FrechetCellFilter(atoms) if settings.relax_cell else atoms
    optimizer = OPTIMIZERS[settings.optimizer](target, logfile=None)

    def watch() -> None:
        if time.monotonic() - start > settings.timeout_s:
            raise Stop(f"timed out after {settings.timeout_s:g} s at step {optimizer.nsteps}", kind="timeout")
        if atoms.get_volume() > MAX_VOLUME_RATIO * volume0:
            raise Stop(f"cell exploded: volume {atoms.get_volume():.1f} A^3 from {volume0:.1f} A^3 "
                       f"at step {optimizer.nsteps}", kind="exploded")
        if potential.cutoff and len(lonely := isolated_atoms(atoms, potential.cutoff)):
            raise _refused(potential, optimizer.nsteps,
                           f"isolated atoms {lonely.tolist()} (no neighbour within {potential.cutoff:g} A)")

    optimizer.attach(watch)
    try:
        converged = bool(optimizer.run(fmax=settings.fmax, steps=max_steps or settings.max_steps))
    except ValueError as error:  # CHGNet's graph refuses a cell whose atoms drifted apart (isolated atoms)
        raise _refused(potential, optimizer.nsteps, error) from error
    forces = target.get_forces()
    return {
        "energy_per_atom": float(atoms.get_potential_energy()) / len(atoms),
        "steps": int(optimizer.nsteps),
        "converged": converged,
        "max_force": float(np.linalg.norm(forces, axis=1).max()),
        "seconds": time.monotonic() - start,
    }


def metadata(n_atoms: int, potential: Potential) -> dict:
    """Provenance of one relaxation: the potential, its limits, the size and the worker."""
    settings = potential.settings
    return {"model": potential.name, "optimizer": settings.optimizer, "fmax": settings.fmax,
            "max_steps": settings.max_steps, "n_atoms": n_atoms, "worker": f"{socket.gethostname()}:{os.getpid()}"}


def judge(run: dict, structure: Structure, meta: dict, potential: Potential) -> Labelled | Failed:
    """The label of a finished relaxation, or why it is none (energy, convergence, relaxed geometry)."""
    meta |= run
    energy = run["energy_per_atom"]
    if not math.isfinite(energy):
        return Failed(f"non-finite energy {energy} eV/atom", meta, kind="non_finite")
    if not ENERGY_RANGE[0] <= energy <= ENERGY_RANGE[1]:
        return Failed(f"absurd energy {energy} eV/atom (expected within {ENERGY_RANGE})", meta, kind="absurd_energy")
    if not run["converged"]:
        return Failed(f"not converged after {run['steps']} steps: max force {run['max_force']:.3f} "
                      f"eV/A > fmax {potential.settings.fmax}", meta, kind="not_converged")
    if structure.volume < 0.1 or has_close_atoms(structure):
        return Failed(f"invalid relaxed structure: atoms closer than {MIN_DISTANCE} A "
                      f"(min {min_distance(structure):.2f} A) or volume {structure.volume:.2f} A^3", meta,
                      kind="too_close")
    if potential.correct is not None:
        try:
            energy, correction = potential.correct(structure, energy)
        except ValueError as error:  # e.g. MP2020 rejects the entry
            return Failed(f"energy correction failed: {error}", meta, kind="unsupported")
        meta |= correction
    return Labelled(energy_per_atom=energy, structure=structure, metadata=meta)


def relax_candidate(item: OracleInput, *, potential: Potential) -> Labelled | Failed:
    """Relax one candidate and judge the result; every failure is a ``Failed`` with its reason and kind."""
    atoms = AseAtomsAdaptor.get_atoms(item.structure)
    meta = metadata(len(atoms), potential)
    try:
        run = relax_atoms(atoms, potential)
    except Stop as stop:
        return Failed(str(stop), meta, kind=stop.kind)
    return judge(run, AseAtomsAdaptor.get_structure(atoms), meta, potential)


def job_pool(potential: Potential, *, executor: Executor, prefix: str) -> JobPool:
    """The oracle's jobs: one ``relax_candidate`` per candidate on ``executor``, abandoned
    ``HARD_TIMEOUT_GRACE_S`` after the relaxation's own time limit."""
    return JobPool(functools.partial(relax_candidate, potential=potential), executor=executor, prefix=prefix,
                   timeout_s=potential.settings.timeout_s + HARD_TIMEOUT_GRACE_S)


def reference_energies(potential: Potential, elements: Sequence[str]) -> dict[str, float]:
    """Lowest energy per atom (eV/atom, on the label scale) of each element's relaxed reference structures.

    Raises:
        ValueError: every reference structure of an element failed to relax.
    """
    energies = {}
    for element in elements:
        found = []
        for atoms in reference_structures(element):
            atoms = atoms.copy()
            try:
                energy = relax_atoms(atoms, potential, max_steps=1000)["energy_per_atom"]
            except Stop:
                continue
            if potential.correct is not None:  # MP2020 corrects no element: kept for one scale by construction
                energy = potential.correct(AseAtomsAdaptor.get_structure(atoms), energy)[0]
            found.append(energy)
        if not found:
            raise ValueError(f"every reference structure of {element} failed to relax with {potential.name}")
        energies[element] = min(found)
    return energies
