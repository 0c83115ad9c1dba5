"""The review gate: decisions come from the ``aloop.review`` tag of each candidate's MLflow run.

``review: auto`` approves a round's batch at once (and writes the tags so the UI shows
it); ``review: manual`` leaves the batch ``pending`` until a person sets the tags in the
MLflow UI (or with ``aloop review``, which writes the same tags), after which
``apply_reviews`` (run by the next round or ``aloop submit``) moves each candidate to
``approved`` or ``rejected``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from mlflow.tracking import MlflowClient
from sqlalchemy import select

from aloop.store import Candidate, Store, transition
from aloop.tracking import REVIEW_STATES, REVIEW_TAG, set_state


@dataclass(frozen=True)
class ReviewOutcome:
    """How many proposed candidates were approved, rejected, or are still pending."""

    approved: int
    rejected: int
    pending: int


def approve_round(store: Store, client: MlflowClient, *, round_id: int) -> ReviewOutcome:
    """Approve every proposed candidate of a round (``review: auto``) and tag their runs.

    Every approved candidate not yet submitted is tagged, so a rerun after a kill between
    the approval and the tags finishes the tagging.
    """
    with store.session() as session:
        proposed = list(session.scalars(select(Candidate).where(
            Candidate.round_id == round_id, Candidate.state == "proposed")))
        for candidate in proposed:
            candidate.review = "approved"
            transition(candidate, "approved")
        session.flush()
        runs = list(session.scalars(select(Candidate.mlflow_run_id).where(
            Candidate.round_id == round_id, Candidate.state == "approved", Candidate.mlflow_run_id.is_not(None))))
    for run_id in runs:
        set_state(client, run_id, state="approved", review="approved")
    return ReviewOutcome(approved=len(proposed), rejected=0, pending=0)


def apply_reviews(store: Store, client: MlflowClient, *, campaign_id: int) -> ReviewOutcome:
    """Read the review tags of the campaign's proposed candidates and act on them.

    Raises:
        ValueError: a run's tag is not one of pending/approved/rejected (nothing is changed).
    """
    with store.session() as session:
        proposed = list(session.scalars(select(Candidate).where(
            Candidate.campaign_id == campaign_id, Candidate.state == "proposed",
            Candidate.mlflow_run_id.is_not(None))))
        decisions = {c.id: _review_tag(client, c.mlflow_run_id) for c in proposed}
        counts: Counter = Counter(decisions.values())
        for candidate in proposed:
            decision = decisions[candidate.id]
            candidate.review = decision
            if decision != "pending":
                transition(candidate, decision)
        decided = [(c.mlflow_run_id, decisions[c.id]) for c in proposed if decisions[c.id] != "pending"]
    for run_id, decision in decided:
        set_state(client, run_id, state=decision)
    return ReviewOutcome(approved=counts["approved"], rejected=counts["rejected"], pending=counts["pending"])


def mirror_states(store: Store, client: MlflowClient, *, campaign_id: int) -> None:
    """Copy each logged candidate's lifecycle state onto its MLflow run's ``aloop.state`` tag."""
    with store.session() as session:
        states = session.execute(select(Candidate.mlflow_run_id, Candidate.state).where(
            Candidate.campaign_id == campaign_id, Candidate.mlflow_run_id.is_not(None))).all()
    for run_id, state in states:
        set_state(client, run_id, state=state)


def _review_tag(client: MlflowClient, run_id: str) -> str:
    value = client.get_run(run_id).data.tags.get(REVIEW_TAG, "pending").strip().lower()
    if value not in REVIEW_STATES:
        raise ValueError(f"MLflow run {run_id}: {REVIEW_TAG}={value!r} is not one of {list(REVIEW_STATES)}")
    return value


def awaiting_review(store: Store, client: MlflowClient, *, campaign_id: int) -> list[tuple[Candidate, str]]:
    """The campaign's logged candidates still ``proposed``, each with its current review tag."""
    with store.session() as session:
        proposed = list(session.scalars(select(Candidate).where(
            Candidate.campaign_id == campaign_id, Candidate.state == "proposed",
            Candidate.mlflow_run_id.is_not(None)).order_by(Candidate.id)))
        session.expunge_all()
    return [(candidate, _review_tag(client, candidate.mlflow_run_id)) for candidate in proposed]


def set_reviews(store: Store, client: MlflowClient, *, campaign_id: int, decisions: Mapping[int, str]) -> None:
    """Write decisions (candidate id -> approved/rejected) into the review tags the MLflow UI edits.

    Raises:
        ValueError: an id is not a proposed, logged candidate of the campaign, or a decision
            is not a review state (no tag is written then).
    """
    waiting = {candidate.id: candidate.mlflow_run_id
               for candidate, _ in awaiting_review(store, client, campaign_id=campaign_id)}
    unknown = sorted(set(decisions) - set(waiting))
    if unknown:
        raise ValueError(f"candidates {unknown} are not awaiting review in this campaign "
                         f"(awaiting: {sorted(waiting) or 'none'})")
    bad = {i: d for i, d in decisions.items() if d not in REVIEW_STATES}
    if bad:
        raise ValueError(f"decisions {bad} are not one of {list(REVIEW_STATES)}")
    for candidate_id, decision in decisions.items():
        client.set_tag(waiting[candidate_id], REVIEW_TAG, decision)
