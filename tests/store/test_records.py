"""Campaigns, rounds, candidates, labels and jobs: dedup, idempotent upserts, concurrent writers."""

from __future__ import annotations

import multiprocessing

import pytest
from pymatgen.core import Composition
from sqlalchemy import func, select

from aloop.store import (
    Campaign,
    Label,
    Material,
    NewCandidate,
    Round,
    Store,
    add_candidates,
    candidates,
    get_or_create_campaign,
    get_or_create_material,
    labelled_data,
    latest_round,
    open_store,
    pending_jobs,
    record_job,
    start_round,
    transition,
    upsert_label,
)

from .conftest import rock_salt


def test_rounds_are_numbered_per_campaign(store: Store) -> None:
    with store.session() as session:
        one, other = get_or_create_campaign(session, "one"), get_or_create_campaign(session, "other")
        assert latest_round(session, one) is None
        numbers = [start_round(session, one, config={}, seed=0).number for _ in range(2)]
        assert numbers == [1, 2]
        assert start_round(session, other, config={"x": 1}, seed=3).number == 1
        assert latest_round(session, one).number == 2


def test_candidates_are_deduplicated_by_canonical_hash(store: Store,
                                                       campaign_round: tuple[Campaign, Round]) -> None:
    campaign, first = campaign_round
    with store.session() as session:
        added = add_candidates(session, first, [NewCandidate(rock_salt(5.6), proxy_mean=-1.5, proxy_std=0.2),
                                                NewCandidate(rock_salt(5.601)),  # same hash (0.01 A)
                                                NewCandidate(rock_salt(5.7))])
        assert [c.crystal.lattice[0] for c in added] == [5.6, 5.7]
        second = start_round(session, campaign, config={}, seed=1)
        again = add_candidates(session, second, [NewCandidate(rock_salt(5.7)), NewCandidate(rock_salt(5.8))])
        assert [c.crystal.lattice[0] for c in again] == [5.8]
        other = start_round(session, get_or_create_campaign(session, "other"), config={}, seed=0)
        assert len(add_candidates(session, other, [NewCandidate(rock_salt(5.6))])) == 1
    with store.session() as session:
        stored = candidates(session, campaign)
        assert [c.canonical_hash for c in stored] == [rock_salt(a).canonical_hash for a in (5.6, 5.7, 5.8)]
        assert stored[0].crystal == rock_salt(5.6)
        assert (stored[0].proxy_mean, stored[0].proxy_std, stored[0].state) == (-1.5, 0.2, "proposed")
        assert len(candidates(session, campaign, round_=second)) == 1


def test_candidates_by_state(store: Store, campaign_round: tuple[Campaign, Round]) -> None:
    campaign, round_ = campaign_round
    with store.session() as session:
        a, b, _ = add_candidates(session, round_, [NewCandidate(rock_salt(x)) for x in (5.6, 5.7, 5.8)])
        transition(a, "approved")
        transition(b, "rejected")
    with store.session() as session:
        assert [c.id for c in candidates(session, campaign, state="approved")] == [a.id]
        assert len(candidates(session, campaign, state=["approved", "proposed"])) == 2
        with pytest.raises(ValueError, match="unknown candidate states \\['done'\\]"):
            candidates(session, campaign, state="done")


def test_label_upsert_is_idempotent(store: Store, campaign_round: tuple[Campaign, Round]) -> None:
    campaign, round_ = campaign_round
    with store.session() as session:
        [candidate] = add_candidates(session, round_, [NewCandidate(rock_salt(5.6))])
        first = upsert_label(session, candidate_id=candidate.id, oracle="chgnet", fidelity=0.5,
                             property="formation_energy_per_atom", value=-2.0, metadata={"steps": 10})
    with store.session() as session:
        created = session.get(Label, first).created_at
    with store.session() as session:
        again = upsert_label(session, candidate_id=candidate.id, oracle="chgnet", fidelity=0.5,
                             property="formation_energy_per_atom", value=-2.1, metadata={"steps": 12},
                             structure="data_x", job_id="chgnet-1")
        other = upsert_label(session, candidate_id=candidate.id, oracle="chgnet", fidelity=0.5,
                             property="band_gap", value=4.0)
    assert again == first != other
    with store.session() as session:
        label = session.get(Label, first)
        assert (label.value, label.meta, label.structure, label.job_id) == (-2.1, {"steps": 12}, "data_x", "chgnet-1")
        assert label.created_at == created <= label.updated_at
        assert session.scalar(select(func.count()).select_from(Label)) == 2
        assert len(labelled_data(session, campaign)) == 2


def test_failure_never_replaces_an_ok_label(store: Store, campaign_round: tuple[Campaign, Round]) -> None:
    _, round_ = campaign_round
    key = dict(oracle="dft", fidelity=1.0, property="band_gap")
    with store.session() as session:
        ok, failing = add_candidates(session, round_, [NewCandidate(rock_salt(5.6)), NewCandidate(rock_salt(5.7))])
        kept = upsert_label(session, candidate_id=ok.id, value=1.2, **key)
        assert upsert_label(session, candidate_id=ok.id, value=None, status="failed", reason="lost", **key) == kept
        failed = upsert_label(session, candidate_id=failing.id, value=None, status="failed", reason="SCF", **key)
        assert upsert_label(session, candidate_id=failing.id, value=0.8, **key) == failed
    with store.session() as session:
        assert (session.get(Label, kept).status, session.get(Label, kept).value) == ("ok", 1.2)
        assert (session.get(Label, failed).status, session.get(Label, failed).value) == ("ok", 0.8)


def test_a_failure_keeps_its_kind_and_replaces_a_superseded_one(store: Store,
                                                                campaign_round: tuple[Campaign, Round]) -> None:
    _, round_ = campaign_round
    key = dict(oracle="dft", fidelity=1.0, property="*", value=None, status="failed")
    with store.session() as session:
        [candidate] = add_candidates(session, round_, [NewCandidate(rock_salt(5.6))])
        label_id = upsert_label(session, candidate_id=candidate.id, reason="walltime", kind="timeout", **key)
        assert session.get(Label, label_id).failure_kind == "timeout"
        session.get(Label, label_id).status = "superseded"  # what `aloop retry` does
    with store.session() as session:
        assert upsert_label(session, candidate_id=candidate.id, reason="SCF", kind="not_converged", **key) == label_id
    with store.session() as session:
        label = session.get(Label, label_id)
        assert (label.status, label.reason, label.failure_kind) == ("failed", "SCF", "not_converged")
        with pytest.raises(ValueError, match=r"label dft/\*: kind='walltime'; only a failure has a kind, one of"):
            upsert_label(session, candidate_id=candidate.id, reason="x", kind="walltime", **key)
        with pytest.raises(ValueError, match="kind='timeout'; only a failure has a kind"):
            upsert_label(session, candidate_id=candidate.id, oracle="dft", fidelity=1.0, property="band_gap",
                         value=1.0, kind="timeout")


def test_label_needs_exactly_one_subject_and_a_value(store: Store) -> None:
    with store.session() as session:
        with pytest.raises(ValueError, match="exactly one of candidate_id=None and material_id=None"):
            upsert_label(session, oracle="x", fidelity=1.0, property="p", value=1.0)
        with pytest.raises(ValueError, match="status='ok' value=None"):
            upsert_label(session, material_id=1, oracle="x", fidelity=1.0, property="p", value=None)


def test_materials_are_found_again_by_crystal_or_composition(store: Store) -> None:
    with store.session() as session:
        campaign = get_or_create_campaign(session, "test")
        crystal = rock_salt(5.64)
        m1 = get_or_create_material(session, campaign, composition=crystal.composition, crystal=crystal, source="mp")
        m2 = get_or_create_material(session, campaign, composition=crystal.composition, crystal=crystal, source="lab")
        bare = get_or_create_material(session, campaign, composition=Composition("NaCl"), source="lab")
        assert m1.id == m2.id != bare.id
        assert (m2.source, m2.crystal, bare.crystal) == ("mp", crystal, None)
        upsert_label(session, material_id=bare.id, oracle="lab", fidelity=1.0, property="band_gap", value=8.5,
                     uncertainty=0.1)
        [point] = labelled_data(session, campaign, property="band_gap")
        assert (point.crystal, point.composition, point.value, point.uncertainty) == (None, Composition("NaCl"),
                                                                                      8.5, 0.1)
        assert labelled_data(session, campaign, property="formation_energy_per_atom") == []


def test_jobs_are_recorded_once_and_pending_ones_listed(store: Store,
                                                        campaign_round: tuple[Campaign, Round]) -> None:
    campaign, round_ = campaign_round
    with store.session() as session:
        a, b = add_candidates(session, round_, [NewCandidate(rock_salt(5.6)), NewCandidate(rock_salt(5.7))])
        record_job(session, candidate_id=a.id, oracle="dft", job_id="j-a")
        record_job(session, candidate_id=a.id, oracle="dft", job_id="j-a")
        record_job(session, candidate_id=b.id, oracle="dft", job_id="j-b")
        record_job(session, candidate_id=b.id, oracle="chgnet", job_id="j-b")
    with store.session() as session:
        assert [(j.oracle, j.job_id) for j in pending_jobs(session, campaign)] == [
            ("dft", "j-a"), ("dft", "j-b"), ("chgnet", "j-b")]
        done = record_job(session, candidate_id=b.id, oracle="dft", job_id="j-b", status="failed", reason="walltime",
                          kind="timeout")
        assert (done.status, done.reason, done.failure_kind) == ("failed", "walltime", "timeout")
        assert [j.job_id for j in pending_jobs(session, campaign, oracle="dft")] == ["j-a"]
        with pytest.raises(ValueError, match="status 'queued' is not one of"):
            record_job(session, candidate_id=a.id, oracle="dft", job_id="j-a", status="queued")
        with pytest.raises(ValueError, match="j-a: kind='timeout'; only a failure has a kind"):
            record_job(session, candidate_id=a.id, oracle="dft", job_id="j-a", status="done", kind="timeout")


N_CONCURRENT = 30


def _writer(url: str, worker: int, barrier: multiprocessing.synchronize.Barrier) -> None:
    """Open a fresh database (racing the other worker's migration) and write the same labels."""
    barrier.wait()
    store = open_store(url)
    barrier.wait()
    for i in range(N_CONCURRENT):
        with store.session() as session:
            campaign = get_or_create_campaign(session, "shared")
            crystal = rock_salt(5.0 + 0.1 * i)
            material = get_or_create_material(session, campaign, composition=crystal.composition, crystal=crystal,
                                              source=f"worker{worker}")
            upsert_label(session, material_id=material.id, oracle="chgnet", fidelity=0.5, property="e",
                         value=float(i))
            upsert_label(session, material_id=material.id, oracle=f"worker{worker}", fidelity=0.5, property="e",
                         value=float(worker))
    store.close()


def test_two_processes_writing_at_once_store_each_label_once(store_url: str) -> None:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2, timeout=30)  # a worker that dies breaks the other's wait
    workers = [context.Process(target=_writer, args=(store_url, w, barrier)) for w in (1, 2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=90)
    assert [p.exitcode for p in workers] == [0, 0]
    store = open_store(store_url)
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Campaign)) == 1
        assert session.scalar(select(func.count()).select_from(Material)) == N_CONCURRENT
        rows = session.execute(select(Label.oracle, func.count(), func.sum(Label.value)).group_by(Label.oracle)).all()
        assert sorted(rows) == [("chgnet", N_CONCURRENT, sum(range(N_CONCURRENT))),
                                ("worker1", N_CONCURRENT, N_CONCURRENT), ("worker2", N_CONCURRENT, 2 * N_CONCURRENT)]
    store.close()
