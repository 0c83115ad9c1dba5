"""The candidate lifecycle, enforced here and nowhere else.

    proposed -> approved | rejected
    approved -> submitted
    submitted -> labelled | failed
    failed -> approved            (``aloop retry``: sent to the oracle again)

``rejected`` and ``labelled`` are final. A review decision (``approved`` or
``rejected``) is mirrored into ``Candidate.review``, the value shown in MLflow.
"""

from __future__ import annotations

from aloop.store.models import CANDIDATE_STATES, Candidate, utcnow

TRANSITIONS: dict[str, frozenset[str]] = {
    "proposed": frozenset({"approved", "rejected"}),
    "approved": frozenset({"submitted"}),
    "rejected": frozenset(),
    "submitted": frozenset({"labelled", "failed"}),
    "labelled": frozenset(),
    "failed": frozenset({"approved"}),
}


class LifecycleError(ValueError):
    """An illegal state change; the message names the candidate, its state and the target."""


def transition(candidate: Candidate, new_state: str) -> None:
    """Move ``candidate`` to ``new_state`` (flushed with its session).

    Raises:
        LifecycleError: ``new_state`` is unknown or not reachable from the current state,
            e.g. ``candidate 7 (Fe4 O6, sg 167): proposed -> labelled is not allowed;
            from proposed: ['approved', 'rejected']``.
    """
    current = candidate.state
    who = f"candidate {candidate.id} ({candidate.formula}, sg {candidate.space_group})"
    if new_state not in CANDIDATE_STATES:
        raise LifecycleError(f"{who}: unknown state {new_state!r}; states: {list(CANDIDATE_STATES)}")
    allowed = TRANSITIONS[current]
    if new_state not in allowed:
        raise LifecycleError(f"{who}: {current} -> {new_state} is not allowed; "
                             f"from {current}: {sorted(allowed) or 'none (final state)'}")
    candidate.state = new_state
    if new_state in ("approved", "rejected"):
        candidate.review = new_state
    candidate.updated_at = utcnow()
