"""A campaign at a glance: rounds and their stage, candidates by state, labels by source, failures by kind.

Example:
    >>> with store.session() as session:  # doctest: +SKIP
    ...     print_status(campaign_status(session, "default"), Console())
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from aloop.oracle import TRANSIENT_KINDS
from aloop.store import (
    CANDIDATE_STATES,
    REFERENCE_SOURCE,
    Candidate,
    Label,
    Material,
    Round,
    RoundLease,
    find_campaign,
)


@dataclass(frozen=True)
class RoundStatus:
    """One round: its number, the last stage it completed, its MLflow run, its candidates."""

    number: int
    stage: str | None
    started_at: datetime
    finished_at: datetime | None
    mlflow_run_id: str | None
    candidates: int


@dataclass(frozen=True)
class LabelCount:
    """How many labels one source gave for one property, ok and failed."""

    oracle: str
    property: str
    ok: int
    failed: int


@dataclass(frozen=True)
class FailureCount:
    """How many candidates one oracle failed for one reason (their failure stands: not retried).

    ``kind`` is one of ``aloop.oracle.FAILURE_KINDS``, ``None`` for failures stored before kinds existed.
    """

    oracle: str
    kind: str | None
    count: int


@dataclass(frozen=True)
class CampaignStatus:
    """Everything ``aloop status`` shows; ``exists`` is false for a campaign never started."""

    campaign: str
    exists: bool
    rounds: tuple[RoundStatus, ...]
    candidates_by_state: dict[str, int]
    labels: tuple[LabelCount, ...]
    lock_holder: str | None
    lock_expires_at: datetime | None
    failures: tuple[FailureCount, ...] = ()


def campaign_status(session: Session, name: str) -> CampaignStatus:
    """Read the campaign's status (read only: an unknown campaign gives an empty one)."""
    campaign = find_campaign(session, name)
    lease = session.get(RoundLease, name)
    holder, expires = (lease.holder, lease.expires_at) if lease is not None else (None, None)
    if campaign is None:
        return CampaignStatus(name, False, (), dict.fromkeys(CANDIDATE_STATES, 0), (), holder, expires)
    counts = (select(Candidate.round_id, func.count().label("n")).group_by(Candidate.round_id).subquery())
    rounds = session.execute(
        select(Round, func.coalesce(counts.c.n, 0)).outerjoin(counts, counts.c.round_id == Round.id)
        .where(Round.campaign_id == campaign.id).order_by(Round.number)).tuples()
    by_state = {state: n for state, n in session.execute(
        select(Candidate.state, func.count()).where(Candidate.campaign_id == campaign.id).group_by(Candidate.state))}
    label_counts = session.execute(
        select(Label.oracle, Label.property, Label.status, func.count())
        .outerjoin(Candidate, Label.candidate_id == Candidate.id).outerjoin(Material, Label.material_id == Material.id)
        .where(or_(Candidate.campaign_id == campaign.id, Material.campaign_id == campaign.id),
               or_(Material.id.is_(None), Material.source != REFERENCE_SOURCE))
        .group_by(Label.oracle, Label.property, Label.status)).tuples()
    labels: dict[tuple[str, str], dict[str, int]] = {}
    for oracle, prop, status, n in label_counts:
        labels.setdefault((oracle, prop), {"ok": 0, "failed": 0})[status] = n
    failures = session.execute(
        select(Label.oracle, Label.failure_kind, func.count(Label.candidate_id.distinct()))
        .join(Candidate, Label.candidate_id == Candidate.id)
        .where(Candidate.campaign_id == campaign.id, Label.status == "failed")
        .group_by(Label.oracle, Label.failure_kind)).tuples()
    return CampaignStatus(
        campaign=name, exists=True,
        rounds=tuple(RoundStatus(r.number, r.stage, r.started_at, r.finished_at, r.mlflow_run_id, int(n))
                     for r, n in rounds),
        candidates_by_state={state: by_state.get(state, 0) for state in CANDIDATE_STATES},
        labels=tuple(LabelCount(o, p, c["ok"], c["failed"]) for (o, p), c in sorted(labels.items())),
        lock_holder=holder, lock_expires_at=expires,
        failures=tuple(FailureCount(o, k, n) for o, k, n in sorted(failures, key=lambda row: (row[0], row[1] or ""))),
    )


def print_status(status: CampaignStatus, console: Console, *, database: str = "") -> None:
    """Print the status as rich tables."""
    where = f" in {database}" if database else ""
    if not status.exists:
        console.print(f"campaign [bold]{status.campaign}[/bold]{where}: no rounds and no labels yet")
        return
    console.print(f"campaign [bold]{status.campaign}[/bold]{where}")
    if status.lock_holder is not None:
        console.print(f"round lock held by {status.lock_holder} until "
                      f"{status.lock_expires_at:%Y-%m-%d %H:%M:%S} UTC unless renewed")
    rounds = Table("round", "stage", "candidates", "started (UTC)", "finished (UTC)", "MLflow run", title="Rounds")
    for r in status.rounds:
        rounds.add_row(str(r.number), r.stage or "-", str(r.candidates), f"{r.started_at:%Y-%m-%d %H:%M}",
                       f"{r.finished_at:%Y-%m-%d %H:%M}" if r.finished_at else "-", r.mlflow_run_id or "-")
    states = Table("state", "candidates", title="Candidates")
    for state, n in status.candidates_by_state.items():
        states.add_row(state, str(n))
    labels = Table("source", "property", "ok", "failed", title="Labels")
    for count in status.labels:
        labels.add_row(count.oracle, count.property, str(count.ok), str(count.failed))
    for table in (rounds, states, labels):
        console.print(table)
    if status.failures:
        failures = Table("oracle", "kind", "candidates", title="Failures")
        for failure in status.failures:
            failures.add_row(failure.oracle, failure.kind or "- (not recorded)", str(failure.count))
        console.print(failures)
        transient = sum(f.count for f in status.failures if f.kind in TRANSIENT_KINDS)
        if transient:
            console.print(f"{transient} of them transient ({', '.join(TRANSIENT_KINDS)}): `aloop retry` sends them "
                          "to the oracle again")
