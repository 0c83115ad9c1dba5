"""Retry: send failed candidates to the oracle again (``failed -> approved``).

A transient failure (a queue's wall time, a node lost, an oracle that crashed) says nothing
about the crystal, so ``failed`` is not final. ``retry_failed`` moves the failed candidates
whose latest failure is of the chosen kinds (by default ``TRANSIENT_KINDS``) back to
``approved``, in one transaction; the next ``aloop submit`` or round labels them again under
a new job id (their structure is kept, so the oracle gets the same atoms).

What happens to the old failure:

- its ``oracle_job`` row keeps its status (``failed``), reason and failure kind;
- its failure label (property ``*``, one per candidate and oracle) keeps its reason, kind,
  job id and metadata, but its status becomes ``superseded``. Every reader that counts
  ``status='failed'`` labels (``aloop status``, the round report, exports) then sees only
  the failures that still stand, and a later success leaves no failed label behind. A
  failure of the new try replaces the superseded label (``failed`` again, with the new
  reason, kind and job id); the earlier try stays in its ``oracle_job`` row.

The label is not deleted because a placement or ``submit`` failure has no job row: the label
is its only record. It is not left ``failed`` for readers to filter by the candidate's
state, because every reader would then have to know.

Example:
    >>> retry_failed(store, campaign_id, kinds=("timeout",), round_number=3)  # doctest: +SKIP
    [41, 57]
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from aloop.oracle import FAILURE_KINDS, TRANSIENT_KINDS
from aloop.store import Candidate, Label, Round, Store, transition


@dataclass(frozen=True)
class Failure:
    """A failed candidate's latest failure (its newest ``failed`` label).

    Attributes:
        kind: one of ``FAILURE_KINDS``; ``None`` for a failure stored before failure kinds
            existed (revision 0002), which no ``kinds`` selects.
    """

    candidate_id: int
    round: int
    oracle: str
    kind: str | None
    reason: str | None
    job_id: str | None


def current_failures(session: Session, campaign_id: int, *, round_number: int | None = None) -> list[Failure]:
    """The latest failure of each ``failed`` candidate of the campaign (or of one round), by candidate id."""
    query = (select(Label, Round.number).join(Candidate, Label.candidate_id == Candidate.id)
             .join(Round, Candidate.round_id == Round.id)
             .where(Candidate.campaign_id == campaign_id, Candidate.state == "failed", Label.status == "failed")
             .order_by(Label.updated_at, Label.id))
    if round_number is not None:
        query = query.where(Round.number == round_number)
    latest = {label.candidate_id: Failure(label.candidate_id, number, label.oracle, label.failure_kind, label.reason,
                                          label.job_id)
              for label, number in session.execute(query).tuples()}  # newest last: it wins
    return [latest[i] for i in sorted(latest)]


def retry_failed(store: Store, campaign_id: int, *, kinds: Collection[str] = TRANSIENT_KINDS,
                 round_number: int | None = None) -> list[int]:
    """Move the failed candidates whose latest failure is of one of ``kinds`` back to ``approved``.

    Their failure labels become ``superseded`` (see the module docstring); all in one transaction.

    Args:
        store: the experiment database.
        campaign_id: the campaign's id in ``store``.
        kinds: failure kinds to retry, from ``FAILURE_KINDS``. ``placement`` fails again: pyxtal
            is seeded by the candidate id.
        round_number: only candidates proposed by this round; ``None``: every round.

    Returns:
        the ids of the candidates moved back, ascending (empty when none matched).

    Raises:
        ValueError: a kind that is not in ``FAILURE_KINDS``.
    """
    unknown = sorted(set(kinds) - set(FAILURE_KINDS))
    if unknown:
        raise ValueError(f"unknown failure kinds {unknown}; kinds: {list(FAILURE_KINDS)}")
    with store.session() as session:
        chosen = [f.candidate_id for f in current_failures(session, campaign_id, round_number=round_number)
                  if f.kind in kinds]
        if chosen:
            session.execute(update(Label).where(Label.candidate_id.in_(chosen), Label.status == "failed")
                            .values(status="superseded"))
        for candidate_id in chosen:
            transition(session.get_one(Candidate, candidate_id), "approved")
    return chosen
