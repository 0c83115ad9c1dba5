"""Writing and reading the experiment database: campaigns, rounds, candidates, labels, jobs.

Every function takes an open ``Session`` (from ``Store.session()``), so a caller groups
writes into one transaction. Labels and materials are written with ``INSERT ... ON
CONFLICT`` (PostgreSQL and SQLite alike): storing the same label twice, even from two
processes at once, leaves one row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymatgen.core import Composition, Structure
from sqlalchemy import Table, func, or_, select
from sqlalchemy.orm import Session

from aloop.oracle import FAILURE_KINDS
from aloop.space.crystal import Crystal
from aloop.store.engine import dialect_insert
from aloop.store.models import (
    CANDIDATE_STATES,
    JOB_STATUSES,
    Campaign,
    Candidate,
    Label,
    Material,
    OracleJob,
    Round,
    utcnow,
)


@dataclass(frozen=True)
class NewCandidate:
    """A crystal a round proposes, with what the proxy and acquisition said about it.

    Args:
        crystal: the crystal (its Wyckoff sites, when it has them, are stored too).
        proxy_mean, proxy_std: posterior mean and standard deviation of the target
            (units of the target, e.g. eV/atom).
        acquisition: the acquisition value that ranked it.
        cif: the structure to send to the oracle, if already built.
        origin: where that structure's atoms came from (``aloop.proposal.origin``).
        mlflow_run_id: its child run in MLflow, if already logged.
    """

    crystal: Crystal
    proxy_mean: float | None = None
    proxy_std: float | None = None
    acquisition: float | None = None
    cif: str | None = None
    origin: str | None = None
    mlflow_run_id: str | None = None


@dataclass(frozen=True)
class LabelledPoint:
    """One training example: a labelled crystal (or a bare composition) and its value.

    ``crystal`` is ``None`` for an imported material known by composition only.
    """

    crystal: Crystal | None
    composition: Composition
    property: str
    value: float
    uncertainty: float | None
    oracle: str
    fidelity: float


REFERENCE_SOURCE = "reference"
"""Material source of the hull's references (elemental ground states, known phases): never candidates, and not
among ``labelled_data`` (known phases reach the training set through ``aloop.hull.known_phase_entries``)."""


def get_or_create_campaign(session: Session, name: str) -> Campaign:
    """The campaign called ``name``, created on first use (safe against a concurrent create)."""
    session.execute(dialect_insert(session, Campaign.__table__).values(name=name, created_at=utcnow())
                    .on_conflict_do_nothing())
    return session.scalars(select(Campaign).where(Campaign.name == name)).one()


def find_campaign(session: Session, name: str) -> Campaign | None:
    """The campaign called ``name``, ``None`` if there is none (nothing is created)."""
    return session.scalars(select(Campaign).where(Campaign.name == name)).one_or_none()


def start_round(session: Session, campaign: Campaign, *, config: Mapping[str, Any], seed: int) -> Round:
    """Create the campaign's next round (number = last + 1, starting at 1).

    Args:
        config: the resolved config as JSON (``Config.model_dump(mode="json")``).
        seed: the round's random seed.
    """
    last = session.scalar(select(func.max(Round.number)).where(Round.campaign_id == campaign.id))
    round_ = Round(campaign_id=campaign.id, number=(last or 0) + 1, config=dict(config), seed=seed)
    session.add(round_)
    session.flush()
    return round_


def latest_round(session: Session, campaign: Campaign) -> Round | None:
    """The campaign's round with the highest number, ``None`` before the first."""
    return session.scalars(select(Round).where(Round.campaign_id == campaign.id)
                           .order_by(Round.number.desc()).limit(1)).first()


def add_candidates(session: Session, round_: Round, new: Sequence[NewCandidate]) -> list[Candidate]:
    """Store proposed candidates, skipping crystals already in the campaign (by canonical hash).

    Returns:
        the candidates actually added, in input order (a crystal repeated within ``new``
        or already stored in any round of the campaign is skipped).
    """
    hashes = [item.crystal.canonical_hash for item in new]
    known = set(session.scalars(select(Candidate.canonical_hash).where(
        Candidate.campaign_id == round_.campaign_id, Candidate.canonical_hash.in_(hashes))))
    added = []
    for item, canonical_hash in zip(new, hashes, strict=True):
        if canonical_hash in known:
            continue
        known.add(canonical_hash)
        a, b, c, alpha, beta, gamma = item.crystal.lattice
        added.append(Candidate(
            campaign_id=round_.campaign_id, round_id=round_.id, space_group=item.crystal.space_group,
            formula=item.crystal.formula, a=a, b=b, c=c, alpha=alpha, beta=beta, gamma=gamma,
            wyckoff=item.crystal.wyckoff or None, canonical_hash=canonical_hash, cif=item.cif,
            origin=item.origin, proxy_mean=item.proxy_mean, proxy_std=item.proxy_std, acquisition=item.acquisition,
            mlflow_run_id=item.mlflow_run_id,
        ))
    session.add_all(added)
    session.flush()
    return added


def candidates(session: Session, campaign: Campaign, *, state: str | Sequence[str] | None = None,
               round_: Round | None = None) -> list[Candidate]:
    """The campaign's candidates by id, optionally only in ``state`` (one or several) or one round."""
    query = select(Candidate).where(Candidate.campaign_id == campaign.id).order_by(Candidate.id)
    if state is not None:
        states = [state] if isinstance(state, str) else list(state)
        unknown = sorted(set(states) - set(CANDIDATE_STATES))
        if unknown:
            raise ValueError(f"unknown candidate states {unknown}; states: {list(CANDIDATE_STATES)}")
        query = query.where(Candidate.state.in_(states))
    if round_ is not None:
        query = query.where(Candidate.round_id == round_.id)
    return list(session.scalars(query))


def candidate_structures(session: Session, campaign: Campaign) -> list[Structure]:
    """The structure (CIF) of every candidate of the campaign that has one, by id."""
    cifs = session.scalars(select(Candidate.cif).where(Candidate.campaign_id == campaign.id,
                                                       Candidate.cif.is_not(None)).order_by(Candidate.id))
    return [Structure.from_str(cif, fmt="cif") for cif in cifs]


def material_key(composition: Composition, crystal: Crystal | None) -> str:
    """A material's identity in a campaign: the crystal's hash, else its cell formula."""
    return crystal.canonical_hash if crystal is not None else f"composition:{composition.formula}"


def get_or_create_material(session: Session, campaign: Campaign, *, composition: Composition,
                           crystal: Crystal | None = None, cif: str | None = None,
                           source: str, key: str | None = None) -> Material:
    """The campaign's material with this crystal (or bare composition), created if new.

    Args:
        composition: the cell composition (``crystal.composition`` when a crystal is given).
        crystal: space group and lattice (and Wyckoff sites, if it has them), when known.
        cif: the structure it came from, when known.
        source: where it came from (``mp``, ``import``, a lab's name); kept from the first.
        key: its identity when not the crystal's (a known phase: ``known:mp-1234``).
    """
    key = key or material_key(composition, crystal)
    lattice = dict(zip(("a", "b", "c", "alpha", "beta", "gamma"), crystal.lattice, strict=True)) if crystal else {}
    values = dict(campaign_id=campaign.id, key=key, formula=composition.formula, cif=cif, source=source,
                  space_group=crystal.space_group if crystal else None,
                  wyckoff=(crystal.wyckoff or None) if crystal else None, created_at=utcnow(), **lattice)
    session.execute(dialect_insert(session, Material.__table__).values(**values).on_conflict_do_nothing())
    return session.scalars(select(Material).where(Material.campaign_id == campaign.id,
                                                  Material.key == key)).one()


def upsert_label(session: Session, *, candidate_id: int | None = None, material_id: int | None = None,
                 oracle: str, fidelity: float, property: str, value: float | None,
                 uncertainty: float | None = None, structure: str | None = None,
                 metadata: Mapping[str, Any] | None = None, status: str = "ok",
                 reason: str | None = None, kind: str | None = None, job_id: str | None = None) -> int:
    """Store one label for a candidate or a material (exactly one), keyed by (subject, oracle, property).

    Storing the same key again updates the row in place, except that a failure never
    replaces an ``ok`` label: a result once obtained is not lost (a failure does replace
    a ``superseded`` one, the failure of an earlier try). A failed evaluation has
    ``status='failed'``, ``value=None``, a ``reason`` and a ``kind``; when it concerns every
    property, record it under ``property='*'``.

    Args:
        oracle: the label source (oracle name, or ``import``/the file's ``source``).
        fidelity: trust in (0, 1]; 1 for DFT-level labels.
        value, uncertainty: in the property's units (eV/atom, eV).
        structure: the relaxed structure as CIF or pymatgen JSON.
        metadata: JSON-serialisable raw oracle output and provenance.
        kind: why a failed evaluation failed, one of ``aloop.oracle.FAILURE_KINDS`` (failures only).
        job_id: the oracle job that produced it.

    Returns:
        the label's id.
    """
    if (candidate_id is None) == (material_id is None):
        raise ValueError(f"a label belongs to exactly one of candidate_id={candidate_id} and "
                         f"material_id={material_id}")
    if status not in ("ok", "failed") or (status == "ok" and value is None):
        raise ValueError(f"label {oracle}/{property}: status={status!r} value={value!r}; expected status "
                         "'ok' with a value or 'failed' with a reason")
    _check_kind(f"label {oracle}/{property}", kind, failure=status == "failed")
    now = utcnow()
    table: Table = Label.__table__  # type: ignore[assignment]
    updated = {"fidelity": fidelity, "value": value, "uncertainty": uncertainty, "structure": structure,
               "metadata": dict(metadata or {}), "status": status, "reason": reason, "failure_kind": kind,
               "job_id": job_id}
    statement = dialect_insert(session, table).values(candidate_id=candidate_id, material_id=material_id, oracle=oracle,
                                               property=property, created_at=now, updated_at=now, **updated)
    subject = "candidate_id" if candidate_id is not None else "material_id"
    statement = statement.on_conflict_do_update(
        index_elements=[subject, "oracle", "property"],
        set_={**{name: statement.excluded[name] for name in updated}, "updated_at": now},
        where=or_(table.c.status != "ok", statement.excluded.status == "ok"),
    ).returning(table.c.id)
    label_id = session.scalar(statement)
    if label_id is None:  # an ok label was kept against a failure
        subject_id = candidate_id if candidate_id is not None else material_id
        label_id = session.scalar(select(Label.id).where(table.c[subject] == subject_id, Label.oracle == oracle,
                                                         Label.property == property))
    return int(label_id)  # type: ignore[arg-type]


def record_job(session: Session, *, candidate_id: int, oracle: str, job_id: str, status: str = "pending",
               reason: str | None = None, kind: str | None = None) -> OracleJob:
    """Record a submission (``pending``) or its outcome (``done``, ``failed``, ``lost``), keyed by (oracle, job_id).

    ``kind`` is the ``aloop.oracle.FAILURE_KINDS`` entry of a ``failed`` or ``lost`` job.
    """
    if status not in JOB_STATUSES:
        raise ValueError(f"job {job_id}: status {status!r} is not one of {list(JOB_STATUSES)}")
    _check_kind(f"job {job_id}", kind, failure=status in ("failed", "lost"))
    now = utcnow()
    statement = dialect_insert(session, OracleJob.__table__).values(
        candidate_id=candidate_id, oracle=oracle, job_id=job_id, status=status, reason=reason, failure_kind=kind,
        submitted_at=now, updated_at=now)
    session.execute(statement.on_conflict_do_update(
        index_elements=["oracle", "job_id"],
        set_={"status": status, "reason": reason, "failure_kind": kind, "updated_at": now}))
    return session.scalars(select(OracleJob).where(OracleJob.oracle == oracle, OracleJob.job_id == job_id)
                           .execution_options(populate_existing=True)).one()


def _check_kind(what: str, kind: str | None, *, failure: bool) -> None:
    """A failure kind only on a failure, and one of ``FAILURE_KINDS``."""
    if kind is not None and not (failure and kind in FAILURE_KINDS):
        raise ValueError(f"{what}: kind={kind!r}; only a failure has a kind, one of {list(FAILURE_KINDS)}")


def pending_jobs(session: Session, campaign: Campaign, *, oracle: str | None = None) -> list[OracleJob]:
    """The campaign's jobs still ``pending``, oldest first (to poll after a restart)."""
    query = (select(OracleJob).join(Candidate).where(Candidate.campaign_id == campaign.id,
                                                     OracleJob.status == "pending").order_by(OracleJob.id))
    if oracle is not None:
        query = query.where(OracleJob.oracle == oracle)
    return list(session.scalars(query))


def label_rows(session: Session, campaign: Campaign, *, status: str | None = "ok",
               property: str | None = None) -> list[tuple[Label, Candidate | None, Material | None]]:
    """The campaign's labels by id, each with its candidate or its material (the other is ``None``)."""
    query = (select(Label, Candidate, Material).outerjoin(Candidate, Label.candidate_id == Candidate.id)
             .outerjoin(Material, Label.material_id == Material.id)
             .where(or_(Candidate.campaign_id == campaign.id, Material.campaign_id == campaign.id))
             .order_by(Label.id))
    if status is not None:
        query = query.where(Label.status == status)
    if property is not None:
        query = query.where(Label.property == property)
    return list(session.execute(query).tuples())


def relaxed_structures(session: Session, campaign: Campaign) -> dict[str, Structure]:
    """Every relaxed structure the oracle returned in ``campaign``, one per candidate (``candidate-<id>``)
    or known phase (``material-<id>``)."""
    found: dict[str, Structure] = {}
    for label, candidate, material in label_rows(session, campaign):
        if label.structure:
            source = f"candidate-{candidate.id}" if candidate is not None else f"material-{material.id}"  # type: ignore[union-attr]
            found.setdefault(source, stored_structure(label.structure))
    return found


def stored_structure(text: str) -> Structure:
    """A label's relaxed structure, stored as CIF or pymatgen JSON."""
    text = text.lstrip()
    return Structure.from_str(text, fmt="json" if text.startswith("{") else "cif")


def labelled_data(session: Session, campaign: Campaign, *, property: str | None = None) -> list[LabelledPoint]:
    """Every ``ok`` label of the campaign's candidates and materials, as training examples; the hull's
    reference labels (materials of source ``REFERENCE_SOURCE``) are not examples and stay out."""
    points = []
    for label, candidate, material in label_rows(session, campaign, property=property):
        if material is not None and material.source == REFERENCE_SOURCE:
            continue
        crystal = candidate.crystal if candidate is not None else material.crystal  # type: ignore[union-attr]
        composition = crystal.composition if crystal is not None else Composition(material.formula)  # type: ignore[union-attr]
        points.append(LabelledPoint(crystal, composition, label.property, float(label.value),  # type: ignore[arg-type]
                                    label.uncertainty, label.oracle, label.fidelity))
    return points
