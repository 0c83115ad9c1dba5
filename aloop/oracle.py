"""The oracle protocol and its registry: what turns a candidate into a trusted label.

An oracle receives candidates (``OracleInput``: store id, crystal and the pyxtal structure
built once by aloop), returns job ids from ``submit`` at once and answers ``poll`` with one
result per job: ``Labelled``, ``Failed`` (a reason and a ``kind`` from ``FAILURE_KINDS``),
``Pending`` or ``Lost`` (the oracle has no record of the job: an in-process job whose process
ended). A synchronous oracle is done on its first poll. Oracles are found by name in the
``aloop.oracles`` entry-point group, or by an import path ``package.module:Class``, and built
from their own pydantic settings.

Example:
    >>> oracle = load_oracle("lookup", {"table": "summary.csv.gz"})  # doctest: +SKIP
    >>> ids = oracle.submit([OracleInput("c1", crystal, structure)])  # doctest: +SKIP
    >>> oracle.poll(ids)  # doctest: +SKIP
    {'lookup-c1-5f3a9b2e': Labelled(energy_per_atom=None, properties={...}, ...)}
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, get_args, runtime_checkable

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:  # annotations only: the command line reads FAILURE_KINDS without importing torch
    from pymatgen.core import Structure

    from aloop.space.crystal import Crystal

ENTRY_POINT_GROUP = "aloop.oracles"

FailureKind = Literal["placement", "not_converged", "too_close", "absurd_energy", "exploded", "timeout",
                      "non_finite", "unsupported", "oracle_error", "lost"]
"""Why an evaluation failed, for machines (``Failed.reason`` is for people):

- ``placement``: pyxtal cannot place the atoms of the crystal (aloop, before any oracle);
- ``not_converged``: the relaxation ran out of steps;
- ``too_close``: the relaxed structure has atoms too close together or no volume;
- ``absurd_energy``: a finite energy outside what any real crystal has;
- ``exploded``: the cell blew up during the relaxation;
- ``timeout``: past the oracle's or the queue's wall time;
- ``non_finite``: NaN or infinite values (a broken calculation);
- ``unsupported``: the oracle cannot evaluate this input (CHGNet refuses isolated atoms, MP2020
  rejects the entry, the lookup table has no row for it);
- ``oracle_error``: the oracle or its executor raised or crashed (the default);
- ``lost``: the job was dropped where it ran (a node lost, a cancelled task).
"""
FAILURE_KINDS: tuple[FailureKind, ...] = get_args(FailureKind)
TRANSIENT_KINDS: tuple[FailureKind, ...] = ("timeout", "lost", "oracle_error")
"""Failures that may not happen again on a second try: what ``aloop retry`` sends again by default."""


class OracleError(ValueError):
    """An oracle cannot be found, loaded or configured; the message says which and why."""


@dataclass(frozen=True)
class OracleInput:
    """One candidate sent to an oracle.

    Args:
        candidate_id: the experiment-database id, carried into job ids and results.
        crystal: the three-stage parameters the candidate was proposed as.
        structure: the atoms placed by pyxtal (conventional cell, Angstrom).
    """

    candidate_id: str
    crystal: Crystal
    structure: Structure


@dataclass(frozen=True)
class Labelled:
    """A finished evaluation.

    Args:
        energy_per_atom: eV/atom on the oracle's own energy scale, ``None`` if it has none.
        properties: named scalars (``band_gap`` in eV, ``formation_energy_per_atom`` ...).
        structure: the relaxed structure, ``None`` when the oracle does not relax.
        metadata: JSON-serialisable provenance (model version, steps, convergence ...).
    """

    energy_per_atom: float | None
    properties: Mapping[str, float] = field(default_factory=dict)
    structure: Structure | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def non_finite(self) -> list[str]:
        """Names of values that are NaN or infinite (a broken oracle's result)."""
        values = {"energy_per_atom": self.energy_per_atom, **self.properties}
        return [k for k, v in values.items() if v is not None and not math.isfinite(v)]


@dataclass(frozen=True)
class Failed:
    """An evaluation that gave no label.

    Args:
        reason: why, in one line, for people.
        metadata: JSON-serialisable details (traceback, steps, forces ...).
        kind: why, for machines: one of ``FAILURE_KINDS`` (keyword only; ``oracle_error`` when
            not given). ``aloop status`` counts failures by kind and ``aloop retry`` sends
            the candidates of the chosen kinds to the oracle again.

    Example:
        >>> Failed("timed out after 600 s", kind="timeout").kind
        'timeout'
    """

    reason: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    kind: FailureKind = field(default="oracle_error", kw_only=True)

    def __post_init__(self) -> None:
        if self.kind not in FAILURE_KINDS:
            raise ValueError(f"Failed({self.reason!r}): kind={self.kind!r} is not one of {list(FAILURE_KINDS)}")


@dataclass(frozen=True)
class Pending:
    """Not finished yet: ``state`` is the oracle's word (queued, running, ...).

    Time limits are the oracle's business (its settings, or the queue's wall time): a job
    past its limit is answered ``Failed``, never left pending.
    """

    state: str = "queued"


@dataclass(frozen=True)
class Lost:
    """The oracle has no record of this job (it lived in a process that ended)."""

    reason: str


Result = Labelled | Failed | Pending | Lost


@runtime_checkable
class Oracle(Protocol):
    """What labels candidates.

    Attributes:
        name: the label source stored with every label; labels sharing a name share one
            energy scale (same model, same functional), so they may share a convex hull.
        fidelity: trust in (0, 1]; 1 for DFT-level labels.
        cost: expected seconds of compute per candidate.
    """

    name: str
    fidelity: float
    cost: float

    def submit(self, inputs: Sequence[OracleInput]) -> list[str]:
        """Start one job per input and return their ids at once, in input order.

        An oracle whose jobs outlive the process should return the existing job id when
        it is given a candidate whose job is still queued or running (job ids derived from
        ``candidate_id``); a candidate whose job failed (sent again by ``aloop retry``) gets
        a new job.
        """
        ...

    def poll(self, job_ids: Sequence[str]) -> dict[str, Result]:
        """One result for each job id asked for; never raises for a job's failure."""
        ...


@runtime_checkable
class ThermoOracle(Oracle, Protocol):
    """An oracle whose energies can make formation energies and convex hulls."""

    def reference_energies(self, elements: Sequence[str]) -> dict[str, float]:
        """Energy per atom (eV/atom) of each element's ground state on this oracle's scale."""
        ...


class OracleClass(Protocol):
    """What the registry builds an oracle from: a settings model and a constructor."""

    Settings: ClassVar[type[BaseModel]]

    def __call__(self, settings: Any, *, executor: Executor) -> Oracle: ...


def installed_oracles() -> list[str]:
    """Names in the ``aloop.oracles`` entry-point group (nothing is imported)."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def resolve_oracle(name: str) -> OracleClass:
    """The oracle class for an entry-point name or an import path ``package.module:Class``.

    Raises:
        OracleError: unknown name (listing the installed ones), or a failed import.
    """
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise OracleError(f"oracle.name={name!r}: cannot import {attr!r} from {module_name!r} ({err})") from err
    matches = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not matches:
        raise OracleError(f"oracle.name={name!r} is not an installed oracle; installed: {installed_oracles()} "
                          "(or give an import path package.module:Class)")
    entry_point = next(iter(matches))
    try:
        return entry_point.load()
    except Exception as err:
        raise OracleError(f"oracle entry point {name!r} ({entry_point.value}) failed to load: "
                          f"{type(err).__name__}: {err}") from err


def load_oracle(name: str, settings: Mapping[str, Any], *, executor: Executor | None) -> Oracle:
    """Build an oracle by name with its settings validated by its own ``Settings`` model.

    Args:
        name: entry-point name (``chgnet``) or import path (``my_lab.oracle:XRDOracle``).
        settings: the ``oracle.settings`` mapping of the config.
        executor: where the oracle runs its evaluations (in-process or Dask); ``None`` only
            for oracles that run nothing themselves (lookup, remote queues).

    Raises:
        OracleError: unknown oracle, no ``Settings`` model, or a bad setting, e.g.
            ``oracle.settings.fmax=-1 (oracle 'chgnet'): Input should be greater than 0``.
    """
    return resolve_oracle(name)(validate_settings(name, settings), executor=executor)


def validate_settings(name: str, settings: Mapping[str, Any]) -> BaseModel:
    """The oracle's ``Settings`` model built from ``settings``, without building the oracle.

    Lets a command check ``oracle.settings`` before any work starts.

    Raises:
        OracleError: as ``load_oracle``.
    """
    cls = resolve_oracle(name)
    model = getattr(cls, "Settings", None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise OracleError(f"oracle {name!r} ({cls!r}) has no pydantic `Settings` class attribute")
    try:
        return model.model_validate(dict(settings))
    except ValidationError as err:
        raise OracleError(_settings_errors(name, model, err)) from None


def _settings_errors(name: str, model: type[BaseModel], err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"oracle.settings: unknown key {key!r} for oracle {name!r} "
                         f"(valid keys: {sorted(model.model_fields)})")
        elif e["type"] == "missing":
            lines.append(f"oracle.settings.{key} is required by oracle {name!r}")
        else:
            lines.append(f"oracle.settings.{key}={e.get('input')!r} (oracle {name!r}): {e['msg']}")
    return "\n".join(lines)
