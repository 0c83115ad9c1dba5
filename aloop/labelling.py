"""Labelling: send approved candidates to an oracle and store every answer as it arrives.

The experiment database is the only memory, so a run killed anywhere resumes without
losing or repeating a label:

1. **collect**: jobs still ``pending`` in the store (an earlier round, a killed run) are
   polled first;
2. **prepare**: each approved candidate gets its structure (pyxtal, seeded by its id,
   kept as CIF so a resubmission sends the same atoms); a crystal pyxtal cannot fill is
   a failed label and never reaches the oracle;
3. **submit**: job ids are recorded and candidates moved to ``submitted`` in the same
   transaction as soon as ``submit`` returns;
4. **wait**: poll, storing each finished job in its own transaction (labels, formation
   energy and hull for energy oracles, job status, lifecycle). A ``Lost`` job (an
   in-process job whose process ended) is submitted again under a new id.

An energy oracle (``ThermoOracle``) first relaxes the known phases it has not relaxed yet
(``aloop.hull``), so E_hull is measured against the known phases of each chemical system on
the oracle's own scale; after the batch, every stored E_hull is brought up to date with the
hull (``refresh_e_above_hull``).

Labels are keyed by (candidate, oracle, property), so storing one twice keeps one row.

``label_approved`` is what the round and ``aloop submit`` call: it applies the reviews left
in MLflow, opens the configured executor and oracle, labels, and mirrors the candidates'
states back to MLflow.

Example:
    >>> label_approved(store, client, campaign_id=1, settings=config.oracle)  # doctest: +SKIP
    SubmitReport(reviews=ReviewOutcome(approved=32, rejected=0, pending=0),
                 labelling=LabellingReport(submitted=32, labelled=30, failed=2, pending=0, resubmitted=0))
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from mlflow.tracking import MlflowClient
from rich.console import Console
from pymatgen.core import Composition, Structure
from sqlalchemy.orm import Session
from tqdm import tqdm

from aloop.config import OracleSettings
from aloop.executor import local_workers, open_executor
from aloop.hull import (
    REFERENCE_PROPERTY,
    REFERENCE_SOURCE,
    KnownPhase,
    describe_hull,
    hull_entries,
    references,
    refresh_e_above_hull,
    relax_known_phases,
)
from aloop.oracle import Failed, FailureKind, Labelled, Lost, Oracle, OracleInput, Result, ThermoOracle, load_oracle
from aloop.review import ReviewOutcome, apply_reviews, mirror_states
from aloop.space.structure import Placement, StructureError, place
from aloop.store import (
    Campaign,
    Candidate,
    Store,
    candidates,
    get_or_create_material,
    pending_jobs,
    record_job,
    transition,
    upsert_label,
)
from aloop.thermo import e_above_hull, formation_energy_per_atom

FAILED_PROPERTY = "*"
"""Property of the label recording a failure of the whole evaluation."""


@dataclass(frozen=True)
class LabellingReport:
    """What one call did: candidates submitted, results stored, jobs left running, and the hull
    its E_hull values are measured against (``hull``: one line, ``known_relaxed``: phases relaxed now)."""

    submitted: int
    labelled: int
    failed: int
    pending: int
    resubmitted: int
    hull: str = ""
    known_relaxed: int = 0


@dataclass(frozen=True)
class SubmitReport:
    """What ``label_approved`` did: the reviews it applied, then the labelling."""

    reviews: ReviewOutcome
    labelling: LabellingReport


def label_approved(store: Store, client: MlflowClient, *, campaign_id: int, settings: OracleSettings,
                   known: Sequence[KnownPhase] = (), placement: Placement = Placement(), progress: bool = False,
                   submit: bool = True) -> SubmitReport:
    """Apply the reviews left in MLflow, label the approved candidates (and collect pending jobs)
    with the configured oracle on its executor, and mirror the candidates' states to MLflow.

    Args:
        settings: ``oracle`` of the config: which oracle, its settings, executor and whether to wait.
        known: known phases for the hull (``aloop.hull.known_phases``; see ``label_candidates``).
        placement: how approved candidates without a structure get their atoms (``label_candidates``).
        submit: ``False`` only collects pending jobs (no reviews applied, nothing new submitted).

    Raises:
        OracleError: unknown oracle or bad ``oracle.settings``.
    """
    reviews = apply_reviews(store, client, campaign_id=campaign_id) if submit else ReviewOutcome(0, 0, 0)
    with open_oracle(settings) as oracle:
        report = label_candidates(store, campaign_id, oracle, wait=settings.wait, submit=submit,
                                  poll_interval_s=settings.poll_interval_s, progress=progress, known=known,
                                  placement=placement)
    mirror_states(store, client, campaign_id=campaign_id)
    return SubmitReport(reviews, report)


def label_candidates(store: Store, campaign_id: int, oracle: Oracle, *, wait: bool = True,
                     poll_interval_s: float = 1.0, progress: bool = False, known: Sequence[KnownPhase] = (),
                     placement: Placement = Placement(), submit: bool = True) -> LabellingReport:
    """Label the campaign's approved candidates (and collect its pending jobs) with ``oracle``.

    Args:
        store: the experiment database.
        campaign_id: the campaign's id in ``store``.
        oracle: any ``Oracle``; a ``ThermoOracle`` also gets formation energy and hull labels.
        wait: poll until no job is pending; ``False`` polls once (queued DFT).
        poll_interval_s: pause between polls that found nothing new.
        progress: show a progress bar of finished jobs.
        known: known phases of the space's chemical systems; a ``ThermoOracle`` that is waited
            for relaxes those it has not relaxed in this campaign before anything else, and they
            join its elemental references and labels on the hull.
        placement: how approved candidates without a structure get their atoms
            (``aloop.space.structure.place``, seeded by the candidate's id).
        submit: also submit the approved candidates; ``False`` only collects pending jobs.
    """
    failed = submitted = 0
    if submit:
        failed = _prepare(store, campaign_id, oracle, placement)
        submitted, rejected = _submit(store, oracle, _approved(store, campaign_id))
        failed += rejected
    known_relaxed = 0
    if isinstance(oracle, ThermoOracle):
        elements = _pending_elements(store, campaign_id) | {el.symbol for p in known for el in p.structure.composition}
        _references(store, campaign_id, oracle, elements)
        if wait:
            known_relaxed = relax_known_phases(store, campaign_id, oracle, known, progress=progress)
    labelled = resubmitted = 0
    bar = tqdm(desc=f"labelling with {oracle.name}", unit="job", disable=not progress)
    while jobs := _pending(store, campaign_id, oracle):
        results = _poll(oracle, list(jobs))
        lost = {j: r for j, r in results.items() if isinstance(r, Lost)}
        done = {j: r for j, r in results.items() if isinstance(r, Labelled | Failed)}
        for job_id, result in done.items():
            ok = _store_result(store, oracle, jobs[job_id], job_id, result)
            labelled, failed = labelled + ok, failed + (not ok)
        _mark_lost(store, oracle, lost, jobs)
        again, rejected = _submit(store, oracle, _inputs(store, [jobs[j] for j in lost]))
        resubmitted, failed = resubmitted + again, failed + rejected
        bar.update(len(done))
        if not wait:
            break
        if not done and not lost:
            time.sleep(poll_interval_s)
    bar.close()
    if isinstance(oracle, ThermoOracle):
        refresh_e_above_hull(store, campaign_id, oracle.name)
        hull = describe_hull(store, campaign_id, oracle.name).describe()
    else:
        hull = f"no hull: {oracle.name} has no reference energies (not a ThermoOracle)"
    return LabellingReport(submitted, labelled, failed, len(_pending(store, campaign_id, oracle)), resubmitted,
                           hull, known_relaxed)


@contextmanager
def open_oracle(settings: OracleSettings) -> Iterator[Oracle]:
    """The configured oracle on its configured executor (closed on exit).

    Raises:
        OracleError: unknown oracle or bad ``oracle.settings``.
    """
    with open_executor(kind=settings.executor, scheduler_address=settings.scheduler_address,
                       max_workers=local_workers(settings)) as executor:
        yield load_oracle(settings.name, settings.settings, executor=executor)


def print_hull(console: Console, report: LabellingReport) -> None:
    """One line: what E_hull is measured against, and the known phases relaxed for it now."""
    relaxed = f" ({report.known_relaxed} known phases relaxed now, kept for later rounds)" if report.known_relaxed else ""
    console.print(f"E_hull against: {report.hull}{relaxed}")


def _prepare(store: Store, campaign_id: int, oracle: Oracle, placement: Placement) -> int:
    """Give approved candidates a structure; those that cannot be placed fail here. Returns failures."""
    failures = 0
    with store.session() as session:
        for candidate in candidates(session, session.get_one(Campaign, campaign_id), state="approved"):
            if candidate.cif is not None:
                continue
            try:
                candidate.cif = place(candidate.crystal, placement, seed=candidate.id).to(fmt="cif")
            except StructureError as err:
                transition(candidate, "submitted")
                _fail(session, candidate, oracle, f"atoms cannot be placed: {err}", job_id=None, kind="placement")
                failures += 1
    return failures


def _approved(store: Store, campaign_id: int) -> list[OracleInput]:
    with store.session() as session:
        rows = candidates(session, session.get_one(Campaign, campaign_id), state="approved")
        return [_input(c) for c in rows]


def _inputs(store: Store, candidate_ids: Sequence[int]) -> list[OracleInput]:
    with store.session() as session:
        return [_input(session.get_one(Candidate, i)) for i in candidate_ids]


def _input(candidate: Candidate) -> OracleInput:
    return OracleInput(str(candidate.id), candidate.crystal, Structure.from_str(candidate.cif, fmt="cif"))


def _submit(store: Store, oracle: Oracle, inputs: list[OracleInput]) -> tuple[int, int]:
    """Submit and record the job ids at once; a raising ``submit`` fails those candidates.

    Returns:
        (candidates sent, candidates failed because ``submit`` raised).
    """
    if not inputs:
        return 0, 0
    try:
        job_ids = oracle.submit(inputs)
        error = None if len(job_ids) == len(inputs) else f"returned {len(job_ids)} job ids for {len(inputs)} inputs"
    except Exception as err:
        job_ids, error = [], f"raised {type(err).__name__}: {err}"
    with store.session() as session:
        for i, item in enumerate(inputs):
            candidate = session.get_one(Candidate, int(item.candidate_id))
            if candidate.state == "approved":
                transition(candidate, "submitted")
            if error is not None:
                _fail(session, candidate, oracle, f"{oracle.name}.submit {error}", job_id=None, kind="oracle_error")
            else:
                record_job(session, candidate_id=candidate.id, oracle=oracle.name, job_id=job_ids[i])
    return len(inputs), 0 if error is None else len(inputs)


def _pending(store: Store, campaign_id: int, oracle: Oracle) -> dict[str, int]:
    """Pending job id -> candidate id."""
    with store.session() as session:
        jobs = pending_jobs(session, session.get_one(Campaign, campaign_id), oracle=oracle.name)
        return {job.job_id: job.candidate_id for job in jobs}


def _poll(oracle: Oracle, job_ids: list[str]) -> dict[str, Result]:
    """``oracle.poll`` that never raises: an error or a missing answer fails the job."""
    try:
        results = oracle.poll(job_ids)
    except Exception as err:
        return {j: Failed(f"{oracle.name}.poll raised {type(err).__name__}: {err}", kind="oracle_error")
                for j in job_ids}
    return {j: results.get(j, Failed(f"{oracle.name}.poll gave no answer for job {j}", kind="oracle_error"))
            for j in job_ids}


def _mark_lost(store: Store, oracle: Oracle, lost: dict[str, Lost], jobs: dict[str, int]) -> None:
    with store.session() as session:
        for job_id, result in lost.items():
            record_job(session, candidate_id=jobs[job_id], oracle=oracle.name, job_id=job_id, status="lost",
                       reason=result.reason, kind="lost")


def _store_result(store: Store, oracle: Oracle, candidate_id: int, job_id: str, result: Labelled | Failed) -> bool:
    """Store one finished job in one transaction; returns whether it gave labels."""
    if isinstance(result, Labelled) and (bad := result.non_finite()):
        result = Failed(f"non-finite values {bad}", dict(result.metadata), kind="non_finite")
    with store.session() as session:
        candidate = session.get_one(Candidate, candidate_id)
        if isinstance(result, Failed):
            record_job(session, candidate_id=candidate_id, oracle=oracle.name, job_id=job_id, status="failed",
                       reason=result.reason, kind=result.kind)
            _fail(session, candidate, oracle, result.reason, job_id=job_id, metadata=dict(result.metadata),
                  kind=result.kind)
            return False
        values = dict(result.properties)
        metadata = dict(result.metadata)
        if result.energy_per_atom is not None:
            values["energy_per_atom"] = result.energy_per_atom
            if isinstance(oracle, ThermoOracle):
                values |= _thermo(session, oracle, candidate, result.energy_per_atom)
                metadata["hull"] = (f"{oracle.name} elemental references, known phases and labels of "
                                    f"{candidate.round.campaign.name}")
        cif = result.structure.to(fmt="cif") if result.structure is not None else None
        for name, value in values.items():
            upsert_label(session, candidate_id=candidate_id, oracle=oracle.name, fidelity=oracle.fidelity,
                         property=name, value=value, structure=cif, metadata=metadata, job_id=job_id)
        record_job(session, candidate_id=candidate_id, oracle=oracle.name, job_id=job_id, status="done")
        if candidate.state == "submitted":
            transition(candidate, "labelled")
    return True


def _fail(session: Session, candidate: Candidate, oracle: Oracle, reason: str, *, job_id: str | None,
          kind: FailureKind, metadata: dict | None = None) -> None:
    upsert_label(session, candidate_id=candidate.id, oracle=oracle.name, fidelity=oracle.fidelity,
                 property=FAILED_PROPERTY, value=None, status="failed", reason=reason, kind=kind, job_id=job_id,
                 metadata=metadata)
    if candidate.state == "submitted":
        transition(candidate, "failed")


def _thermo(session: Session, oracle: ThermoOracle, candidate: Candidate, energy_per_atom: float) -> dict[str, float]:
    """Formation energy and energy above the hull of the oracle's references, known phases and labels (eV/atom)."""
    composition = candidate.crystal.composition
    refs = references(session, candidate.campaign_id, oracle.name)
    if any(el.symbol not in refs for el in composition.elements):
        return {}
    known = [(c, e) for c, e, i in hull_entries(session, candidate.campaign_id, oracle.name) if i != candidate.id]
    return {"formation_energy_per_atom": formation_energy_per_atom(composition, energy_per_atom, refs),
            "e_above_hull": e_above_hull(composition, energy_per_atom, references=refs, known=known)}


def _pending_elements(store: Store, campaign_id: int) -> set[str]:
    with store.session() as session:
        rows = candidates(session, session.get_one(Campaign, campaign_id), state="submitted")
        return {el.symbol for c in rows for el in Composition(c.formula).elements}


def _references(store: Store, campaign_id: int, oracle: ThermoOracle, elements: set[str]) -> None:
    """Compute (once per campaign and oracle) and cache the missing elemental references."""
    with store.session() as session:
        missing = sorted(elements - set(references(session, campaign_id, oracle.name)))
    if not missing:
        return
    try:
        energies = oracle.reference_energies(missing)
    except Exception as err:  # labels still get stored, without formation energy and hull
        warnings.warn(f"{oracle.name}.reference_energies({missing}) raised {type(err).__name__}: {err}",
                      stacklevel=2)
        return
    with store.session() as session:
        campaign = session.get_one(Campaign, campaign_id)
        for element, energy in energies.items():
            material = get_or_create_material(session, campaign, composition=Composition(element),
                                              source=REFERENCE_SOURCE)
            upsert_label(session, material_id=material.id, oracle=oracle.name, fidelity=oracle.fidelity,
                         property=REFERENCE_PROPERTY, value=energy,
                         metadata={"element": element, "relaxed_by": oracle.name})
