"""The experiment database: SQLAlchemy 2.0 models, Alembic migrations applied on open.

Example:
    >>> store = open_store("sqlite:///aloop.db")  # doctest: +SKIP
    >>> with store.session() as session:  # doctest: +SKIP
    ...     campaign = get_or_create_campaign(session, "default")
    ...     round_ = start_round(session, campaign, config={}, seed=0)
    ...     [candidate] = add_candidates(session, round_, [NewCandidate(crystal, proxy_mean=-1.2)])
    ...     transition(candidate, "approved")
"""

from aloop.store.engine import Store, StoreError, open_store
from aloop.store.lifecycle import TRANSITIONS, LifecycleError, transition
from aloop.store.lock import LockHeld, LockLost, RoundLock
from aloop.store.models import (
    CANDIDATE_STATES,
    Campaign,
    Candidate,
    Label,
    Material,
    OracleJob,
    Round,
    RoundLease,
)
from aloop.store.records import (
    REFERENCE_SOURCE,
    LabelledPoint,
    NewCandidate,
    add_candidates,
    candidate_structures,
    candidates,
    find_campaign,
    get_or_create_campaign,
    get_or_create_material,
    label_rows,
    labelled_data,
    latest_round,
    material_key,
    pending_jobs,
    record_job,
    relaxed_structures,
    start_round,
    stored_structure,
    upsert_label,
)

__all__ = [
    "CANDIDATE_STATES", "REFERENCE_SOURCE", "TRANSITIONS", "Campaign", "Candidate", "Label", "LabelledPoint", "LifecycleError",
    "LockHeld", "LockLost", "Material", "NewCandidate", "OracleJob", "Round", "RoundLease", "RoundLock",
    "Store", "StoreError", "add_candidates", "candidate_structures", "candidates", "find_campaign",
    "get_or_create_campaign", "get_or_create_material", "label_rows", "labelled_data", "latest_round", "material_key",
    "open_store", "pending_jobs", "record_job", "relaxed_structures", "start_round",
    "stored_structure", "transition", "upsert_label",
]
