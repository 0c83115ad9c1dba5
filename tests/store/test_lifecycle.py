"""The candidate lifecycle: every legal step works, every other one raises and names the candidate."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from aloop.store import (
    CANDIDATE_STATES,
    Campaign,
    Candidate,
    LifecycleError,
    NewCandidate,
    Round,
    Store,
    add_candidates,
    transition,
)

from .conftest import rock_salt

PATH_TO = {
    "proposed": [],
    "approved": ["approved"],
    "rejected": ["rejected"],
    "submitted": ["approved", "submitted"],
    "labelled": ["approved", "submitted", "labelled"],
    "failed": ["approved", "submitted", "failed"],
}
LEGAL = {("proposed", "approved"), ("proposed", "rejected"), ("approved", "submitted"),
         ("submitted", "labelled"), ("submitted", "failed"), ("failed", "approved")}


def candidate_in(state: str) -> Candidate:
    candidate = Candidate(id=7, formula="Na4 Cl4", space_group=225, state="proposed", review="pending")
    for step in PATH_TO[state]:
        transition(candidate, step)
    return candidate


@pytest.mark.parametrize(("current", "target"), list(itertools.product(CANDIDATE_STATES, repeat=2)))
def test_only_the_lifecycle_steps_are_allowed(current: str, target: str) -> None:
    candidate = candidate_in(current)
    if (current, target) in LEGAL:
        transition(candidate, target)
        assert candidate.state == target
    else:
        with pytest.raises(LifecycleError, match=rf"candidate 7 \(Na4 Cl4, sg 225\): {current} -> {target}"):
            transition(candidate, target)
        assert candidate.state == current


def test_unknown_state_lists_the_states() -> None:
    with pytest.raises(LifecycleError, match="unknown state 'done'.*labelled"):
        transition(candidate_in("submitted"), "done")


def test_review_mirrors_the_decision() -> None:
    assert candidate_in("rejected").review == "rejected"
    assert candidate_in("labelled").review == "approved"
    assert candidate_in("proposed").review == "pending"


def test_transition_is_persisted_and_concurrent_change_is_refused(store: Store,
                                                                   campaign_round: tuple[Campaign, Round]) -> None:
    _, round_ = campaign_round
    with store.session() as session:
        [candidate] = add_candidates(session, round_, [NewCandidate(rock_salt(5.6))])
    with store.session() as session:
        transition(session.get(Candidate, candidate.id), "approved")
    with store.session() as session:
        assert session.get(Candidate, candidate.id).state == "approved"
    # two sessions read the same row; the second writer must not silently win
    with store.session() as first:
        stale = first.get(Candidate, candidate.id)
    with store.session() as second:
        transition(second.get(Candidate, candidate.id), "submitted")
    with pytest.raises(StaleDataError), store.session() as third:
        third.add(stale)
        stale.review = "rejected"
    with store.session() as session:
        assert session.get(Candidate, candidate.id).state == "submitted"


def test_database_refuses_an_unknown_state(store: Store, campaign_round: tuple[Campaign, Round]) -> None:
    _, round_ = campaign_round
    with store.session() as session:
        [candidate] = add_candidates(session, round_, [NewCandidate(rock_salt(5.6))])
    with pytest.raises(IntegrityError), store.session() as session:
        session.get(Candidate, candidate.id).state = "done"
