"""``aloop status``: rounds with their stage, candidates by state, labels by source and property."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from pymatgen.core import Composition

from aloop.cli import main
from aloop.space import Crystal
from aloop.status import FailureCount, LabelCount, campaign_status
from aloop.store import (
    NewCandidate,
    RoundLock,
    Store,
    add_candidates,
    get_or_create_campaign,
    get_or_create_material,
    open_store,
    start_round,
    transition,
    upsert_label,
)


def cubic(formula: str, a: float) -> NewCandidate:
    return NewCandidate(Crystal(221, Composition(formula), (a, a, a, 90.0, 90.0, 90.0)))


def fill(store: Store) -> None:
    """Campaign ``lab``: round 1 done (3 candidates), round 2 proposed (1); another campaign beside it."""
    with store.session() as session:
        lab, other = get_or_create_campaign(session, "lab"), get_or_create_campaign(session, "other")
        first = start_round(session, lab, config={}, seed=0)
        first.stage, first.mlflow_run_id = "labelled", "run-1"
        labelled, failed, rejected = add_candidates(session, first, [cubic("SrTiO3", a) for a in (3.9, 4.0, 4.1)])
        for candidate in (labelled, failed):
            transition(candidate, "approved")
            transition(candidate, "submitted")
        transition(labelled, "labelled")
        transition(failed, "failed")
        transition(rejected, "rejected")
        upsert_label(session, candidate_id=labelled.id, oracle="chgnet", fidelity=0.5,
                     property="formation_energy_per_atom", value=-3.4)
        upsert_label(session, candidate_id=failed.id, oracle="chgnet", fidelity=0.5,
                     property="formation_energy_per_atom", value=None, status="failed", reason="relaxation diverged")
        second = start_round(session, lab, config={}, seed=1)
        second.stage = "proposed"
        add_candidates(session, second, [cubic("BaTiO3", 4.0)])
        material = get_or_create_material(session, lab, composition=Composition("NaCl"), source="lab")
        upsert_label(session, material_id=material.id, oracle="lab", fidelity=1.0, property="band_gap", value=8.5)
        add_candidates(session, start_round(session, other, config={}, seed=0), [cubic("CaTiO3", 3.8)])


def test_status_counts_only_the_campaign(store: Store) -> None:
    fill(store)
    with store.session() as session:
        status = campaign_status(session, "lab")
    assert [(r.number, r.stage, r.candidates, r.mlflow_run_id) for r in status.rounds] == [
        (1, "labelled", 3, "run-1"), (2, "proposed", 1, None)]
    assert status.candidates_by_state == {"proposed": 1, "approved": 0, "rejected": 1, "submitted": 0,
                                           "labelled": 1, "failed": 1}
    assert status.labels == (LabelCount("chgnet", "formation_energy_per_atom", ok=1, failed=1),
                              LabelCount("lab", "band_gap", ok=1, failed=0))
    assert status.lock_holder is None
    assert status.failures == (FailureCount("chgnet", None, 1),)  # stored without a kind


def test_unknown_campaign_is_empty_and_not_created(store: Store) -> None:
    with store.session() as session:
        status = campaign_status(session, "nobody")
    assert (status.exists, status.rounds, status.labels) == (False, (), ())
    assert set(status.candidates_by_state.values()) == {0}
    with store.session() as session:
        assert campaign_status(session, "nobody").exists is False


def test_cli_status_prints_rounds_states_labels_and_lock(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(store_url)
    fill(store)
    monkeypatch.setenv("ALOOP_DB_URL", store_url)
    monkeypatch.setenv("COLUMNS", "160")
    with RoundLock.acquire(store, "lab", holder="workstation pid 42", ttl_s=60, heartbeat=False):
        result = CliRunner().invoke(main, ["status", "--set", "campaign=lab"])
    store.close()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "round lock held by workstation pid 42" in result.output
    assert any("│ 1 " in line and "labelled" in line and "run-1" in line for line in lines)
    assert any("│ rejected " in line and "│ 1 " in line for line in lines)
    assert any("chgnet" in line and "formation_energy_per_atom" in line and "│ 1  │ 1 " in line for line in lines)
    assert any("Failures" in line for line in lines)
    assert any("chgnet" in line and "not recorded" in line and "│ 1 " in line for line in lines)
    assert "aloop retry" not in result.output  # no transient failure to retry
    empty = CliRunner().invoke(main, ["status", "--set", "campaign=nobody"])
    assert "campaign nobody" in empty.output and "no rounds and no labels yet" in empty.output


def test_cli_status_shows_failures_by_kind_and_says_transient_ones_can_be_retried(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(store_url)
    with store.session() as session:
        round_ = start_round(session, get_or_create_campaign(session, "lab"), config={}, seed=0)
        added = add_candidates(session, round_, [cubic("SrTiO3", a) for a in (3.9, 4.0, 4.1)])
        for candidate, (oracle, kind) in zip(added, [("chgnet", "timeout"), ("chgnet", "timeout"),
                                                     ("chgnet", "not_converged")], strict=True):
            transition(candidate, "approved")
            transition(candidate, "submitted")
            transition(candidate, "failed")
            upsert_label(session, candidate_id=candidate.id, oracle=oracle, fidelity=0.5, property="*", value=None,
                         status="failed", reason=kind, kind=kind)
    store.close()
    monkeypatch.setenv("ALOOP_DB_URL", store_url)
    monkeypatch.setenv("COLUMNS", "160")
    result = CliRunner().invoke(main, ["status", "--set", "campaign=lab"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("chgnet" in line and "│ timeout " in line and "│ 2 " in line for line in lines), result.output
    assert any("chgnet" in line and "│ not_converged " in line and "│ 1 " in line for line in lines)
    assert "2 of them transient" in result.output and "`aloop retry`" in result.output
