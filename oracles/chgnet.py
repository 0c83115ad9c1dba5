"""CHGNet oracle, the default: relax a candidate with the pretrained CHGNet shipped in its wheel.

CHGNet was trained on MPtrj energies that already carry MaterialsProject2020Compatibility
corrections, so its energies are on the MP2020-corrected scale and get **no** further
correction. Formation energies and hulls are built (by aloop's labelling) from these
energies and the elemental references this oracle relaxes itself (``reference_energies``).
CHGNet predicts no band gap.

The relaxation is written with ASE around ``CHGNetCalculator`` rather than through
``StructOptimizer.relax`` because that offers no per-step hook: each step checks the
wall-clock limit and the cell volume, so a runaway relaxation stops early with a reason
(``oracles.ase_relax``, shared with the SevenNet oracle). With ``batch_size`` above 1 the oracle
relaxes the submitted candidates in groups of that many, one batched CHGNet evaluation per FIRE step
(``oracles.batched_relax``), with the same filter, limits and checks.

Example:
    >>> oracle = CHGNetOracle(CHGNetSettings(max_steps=50), executor=executor)  # doctest: +SKIP
    >>> oracle.poll(oracle.submit([item]))  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import importlib
import math
import uuid
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from pydantic import BaseModel, Field, model_validator
from pymatgen.io.ase import AseAtomsAdaptor

from aloop.executor import JobPool
from aloop.oracle import Failed, Labelled, Lost, OracleInput, Result
from oracles import ase_relax
from oracles.ase_relax import (
    HARD_TIMEOUT_GRACE_S,
    MAX_VOLUME_RATIO,
    Potential,
    RelaxSettings,
    judge,
    limit_threads,
    metadata,
    quiet,
)
from oracles.batched_relax import Limits, Run, relax_batch

if TYPE_CHECKING:
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

class CHGNetSettings(RelaxSettings):
    """Settings of the CHGNet oracle (``oracle.settings`` when ``oracle.name: chgnet``)."""

    model: Literal["0.3.0", "0.2.0"] = "0.3.0"
    """Pretrained weights shipped in the chgnet wheel (both on the MP2020-corrected GGA scale)."""
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


@functools.lru_cache(maxsize=4)
def load_model(name: str, device: str) -> CHGNet:
    """The pretrained CHGNet, loaded once per process from the wheel (no download).

    Called by the oracle's calculators; call it ahead to warm a worker process.

    Args:
        name: weights version, ``CHGNetSettings.model`` (e.g. ``"0.3.0"``).
        device: torch device name, ``CHGNetSettings.device`` (e.g. ``"cpu"``).
    """
    from chgnet.model import CHGNet

    with quiet():  # its constructor prints its parameter count whatever ``verbose`` says
        return CHGNet.load(model_name=name, use_device=device, verbose=False)


def _calculator(settings: CHGNetSettings) -> CHGNetCalculator:
    """CHGNet's ASE calculator, refusing isolated atoms, built quietly (it always prints its device)."""
    from chgnet.model.dynamics import CHGNetCalculator

    model = load_model(settings.model, settings.device)
    with quiet():
        return CHGNetCalculator(model=model, use_device=settings.device, on_isolated_atoms="error")


def potential(settings: CHGNetSettings) -> Potential:
    """CHGNet as ``oracles.ase_relax`` relaxes with it: source ``chgnet-<model>``, energies as they come."""
    return Potential(f"chgnet-{settings.model}", "CHGNet", settings, calculator=_calculator)


def relax_candidate(item: OracleInput, *, settings: CHGNetSettings) -> Labelled | Failed:
    """Relax one candidate through ASE and check the result; every failure is a ``Failed`` with its reason and kind."""
    return ase_relax.relax_candidate(item, potential=potential(settings))


def relax_candidates(items: Sequence[OracleInput], *, settings: CHGNetSettings) -> list[Labelled | Failed]:
    """Relax candidates together (``oracles.batched_relax``); results as ``relax_candidate`` gives them, in order."""
    limit_threads(settings.torch_threads)
    atoms = [AseAtomsAdaptor.get_atoms(item.structure) for item in items]
    limits = Limits(fmax=settings.fmax, max_steps=settings.max_steps, relax_cell=settings.relax_cell,
                    timeout_s=settings.timeout_s, max_volume_ratio=MAX_VOLUME_RATIO)
    runs = relax_batch(atoms, load_model(settings.model, settings.device), limits=limits)
    return [_batched_label(a, run, potential(settings)) for a, run in zip(atoms, runs, strict=True)]


def _batched_label(atoms: Atoms, run: Run, chgnet: Potential) -> Labelled | Failed:
    meta = metadata(len(atoms), chgnet)
    if run.stop:
        return Failed(run.stop[0], meta, kind=run.stop[1])
    # the relaxed structure carries CHGNet's magmoms as in the one-at-a-time path (final_magmom)
    atoms.calc = SinglePointCalculator(atoms, energy=run.energy_per_atom * len(atoms), magmoms=run.magmoms)
    return judge({"energy_per_atom": run.energy_per_atom, "steps": run.steps, "converged": run.converged,
                  "max_force": run.max_force, "seconds": run.seconds},
                 AseAtomsAdaptor.get_structure(atoms), meta, chgnet)


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
        # imported here, not first in two worker threads at once: Python's import locks then raise
        # _DeadlockError on chgnet's circular modules, and every job of the batch fails
        importlib.import_module("chgnet.model.dynamics")
        self.settings = settings
        self._potential = potential(settings)
        self.name = self._potential.name
        self._pool = ase_relax.job_pool(self._potential, executor=executor, prefix="chgnet")
        # a group job evaluates a _Group to a list of results; run_with_timeout and JobPool pass it through. Each
        # member is charged its share of the group's time (``Limits.timeout_s``): the group may take them all
        self._groups = JobPool(functools.partial(_relax_group, settings=settings), executor=executor,
                               prefix="chgnet-group",
                               timeout_s=settings.timeout_s * settings.batch_size + HARD_TIMEOUT_GRACE_S)
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
        return ase_relax.reference_energies(self._potential, elements)
