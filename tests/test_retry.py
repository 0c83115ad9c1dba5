"""Retrying failed candidates: which ones move back to approved, and what stays as history."""

from __future__ import annotations

import pytest
from pymatgen.core import Composition
from sqlalchemy import select

from aloop.retry import current_failures, retry_failed
from aloop.space import Crystal
from aloop.status import FailureCount, campaign_status
from aloop.store import Candidate, Label, NewCandidate, OracleJob, Store, get_or_create_campaign, start_round
from aloop.store import add_candidates, record_job, transition, upsert_label


def cubic(a: float) -> NewCandidate:
    return NewCandidate(Crystal(221, Composition("SrTiO3"), (a, a, a, 90.0, 90.0, 90.0)))


def failed_round(store: Store, kinds: list[str | None], *, oracle: str = "dft") -> list[int]:
    """A new round of campaign ``lab`` whose candidates failed with ``kinds`` (``None``: stored before kinds)."""
    with store.session() as session:
        campaign = get_or_create_campaign(session, "lab")
        round_ = start_round(session, campaign, config={}, seed=0)
        added = add_candidates(session, round_, [cubic(3.8 + 0.01 * (10 * round_.number + i))  # distinct crystals
                                                 for i in range(len(kinds))])
        for candidate, kind in zip(added, kinds, strict=True):
            transition(candidate, "approved")
            transition(candidate, "submitted")
            fail(session, candidate, kind, oracle=oracle)
        return [c.id for c in added]


def fail(session, candidate: Candidate, kind: str | None, *, oracle: str) -> None:
    """What labelling stores for a failed job: the job row and the failure label, then the state."""
    job_id = f"{oracle}-{candidate.id}-{len(candidate.jobs)}"
    record_job(session, candidate_id=candidate.id, oracle=oracle, job_id=job_id, status="failed",
               reason=f"{kind} happened", kind=kind)
    upsert_label(session, candidate_id=candidate.id, oracle=oracle, fidelity=1.0, property="*", value=None,
                 status="failed", reason=f"{kind} happened", kind=kind, job_id=job_id)
    if candidate.state == "submitted":
        transition(candidate, "failed")


def states(store: Store, ids: list[int]) -> list[str]:
    with store.session() as session:
        return [session.get_one(Candidate, i).state for i in ids]


def campaign_id(store: Store) -> int:
    with store.session() as session:
        return get_or_create_campaign(session, "lab").id


def test_only_transient_failures_move_back_and_their_failures_stay_as_history(store: Store) -> None:
    ids = failed_round(store, ["timeout", "not_converged", "lost", None, "oracle_error", "placement"])

    moved = retry_failed(store, campaign_id(store))

    assert moved == [ids[0], ids[2], ids[4]]
    assert states(store, ids) == ["approved", "failed", "approved", "failed", "approved", "failed"]
    with store.session() as session:
        labels = {lab.candidate_id: lab for lab in session.scalars(select(Label))}
        jobs = {job.candidate_id: job for job in session.scalars(select(OracleJob))}
    assert [labels[i].status for i in ids] == ["superseded", "failed", "superseded", "failed", "superseded", "failed"]
    assert [labels[i].failure_kind for i in ids] == ["timeout", "not_converged", "lost", None, "oracle_error",
                                                     "placement"]
    assert labels[ids[0]].reason == "timeout happened" and labels[ids[0]].job_id == jobs[ids[0]].job_id
    assert {(job.status, job.failure_kind) for job in jobs.values()} == {
        ("failed", kind) for kind in ("timeout", "not_converged", "lost", None, "oracle_error", "placement")}
    assert retry_failed(store, campaign_id(store)) == []  # nothing transient is left


def test_asked_kinds_and_round_are_the_only_ones_moved(store: Store) -> None:
    first = failed_round(store, ["not_converged", "timeout"])
    second = failed_round(store, ["not_converged", "exploded"])

    assert retry_failed(store, campaign_id(store), kinds=["not_converged", "exploded"], round_number=2) == second
    assert states(store, first + second) == ["failed", "failed", "approved", "approved"]
    assert retry_failed(store, campaign_id(store), kinds=["timeout"], round_number=3) == []
    assert retry_failed(store, campaign_id(store), kinds=["timeout"]) == [first[1]]


def test_the_latest_failure_decides(store: Store) -> None:
    [candidate_id] = failed_round(store, ["timeout"], oracle="chgnet")
    retry_failed(store, campaign_id(store))
    with store.session() as session:  # the retry with another oracle fails for a lasting reason
        candidate = session.get_one(Candidate, candidate_id)
        transition(candidate, "submitted")
        fail(session, candidate, "not_converged", oracle="dft")
    with store.session() as session:
        [failure] = current_failures(session, campaign_id(store))
    assert (failure.candidate_id, failure.oracle, failure.kind, failure.round) == (candidate_id, "dft",
                                                                                   "not_converged", 1)
    assert retry_failed(store, campaign_id(store)) == []
    assert states(store, [candidate_id]) == ["failed"]


def test_a_retried_failure_is_no_longer_counted_by_status(store: Store) -> None:
    failed_round(store, ["timeout", "timeout", "not_converged"])
    with store.session() as session:
        before = campaign_status(session, "lab").failures
    retry_failed(store, campaign_id(store))
    with store.session() as session:
        after = campaign_status(session, "lab")
    assert before == (FailureCount("dft", "not_converged", 1), FailureCount("dft", "timeout", 2))
    assert after.failures == (FailureCount("dft", "not_converged", 1),)
    assert [(c.property, c.ok, c.failed) for c in after.labels] == [("*", 0, 1)]


def test_an_unknown_kind_lists_the_kinds(store: Store) -> None:
    with pytest.raises(ValueError, match=r"unknown failure kinds \['walltime'\]; kinds: \['placement'"):
        retry_failed(store, campaign_id(store), kinds=["timeout", "walltime"])
