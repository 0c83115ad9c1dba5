"""Labelling glue: approved candidates -> oracle -> labels, crash-safe and exactly once."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import BaseModel, ConfigDict
from pymatgen.core import Composition
from sqlalchemy import func, select

from aloop.executor import JobPool, open_executor
from aloop.config import OracleSettings
from aloop.hull import REFERENCE_PROPERTY
from aloop.labelling import FAILED_PROPERTY, label_candidates, open_oracle
from aloop.oracle import Failed, Labelled, OracleInput, Result, load_oracle
from aloop.space import Crystal
from aloop.store import (
    Candidate,
    Label,
    NewCandidate,
    OracleJob,
    Store,
    add_candidates,
    get_or_create_campaign,
    open_store,
    start_round,
    transition,
)

REPO = Path(__file__).resolve().parents[1]


def cubic(formula: str, a: float, space_group: int = 225) -> Crystal:
    return Crystal(space_group, Composition(formula), (a, a, a, 90.0, 90.0, 90.0))


def approve(store: Store, crystals: Sequence[Crystal], campaign: str = "test") -> list[int]:
    """Propose and approve ``crystals`` in a new round; returns their candidate ids."""
    with store.session() as session:
        campaign_row = get_or_create_campaign(session, campaign)
        round_ = start_round(session, campaign_row, config={}, seed=0)
        added = add_candidates(session, round_, [NewCandidate(c) for c in crystals])
        for candidate in added:
            transition(candidate, "approved")
        return [c.id for c in added]


def campaign_id(store: Store, name: str = "test") -> int:
    with store.session() as session:
        return get_or_create_campaign(session, name).id


def labels(store: Store) -> dict[tuple[int, str], Label]:
    with store.session() as session:
        rows = session.scalars(select(Label).where(Label.candidate_id.is_not(None))).all()
        return {(row.candidate_id, row.property): row for row in rows}


def states(store: Store, ids: Sequence[int]) -> list[str]:
    with store.session() as session:
        return [session.get_one(Candidate, i).state for i in ids]


@pytest.fixture
def table(tmp_path: Path) -> str:
    path = tmp_path / "table.csv"
    path.write_text("material_id,formula,spacegroup_number,formation_energy_per_atom,band_gap\n"
                    "mp-22862,NaCl,225,-2.105,5.1\nmp-1265,MgO,225,-3.062,4.4\n")
    return str(path)


def test_labels_each_approved_candidate_once_and_records_failures(store, table):
    ids = approve(store, [cubic("Na4Cl4", 5.69), cubic("Mg4O4", 4.21), cubic("Li4Cl4", 5.13)])
    with open_oracle(OracleSettings(name="lookup", settings={"table": table})) as oracle:
        report = label_candidates(store, campaign_id(store), oracle)
        again = label_candidates(store, campaign_id(store), oracle)
    assert (report.submitted, report.labelled, report.failed, report.pending) == (3, 2, 1, 0)
    assert (again.submitted, again.labelled, again.failed) == (0, 0, 0)
    assert states(store, ids) == ["labelled", "labelled", "failed"]
    stored = labels(store)
    assert stored[(ids[0], "formation_energy_per_atom")].value == pytest.approx(-2.105)
    assert stored[(ids[1], "band_gap")].value == pytest.approx(4.4)
    assert "no row" in stored[(ids[2], FAILED_PROPERTY)].reason
    assert stored[(ids[2], FAILED_PROPERTY)].failure_kind == "unsupported"
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(OracleJob)) == 3
        assert {c.cif is not None for c in session.scalars(select(Candidate))} == {True}


class _Crash(BaseException):
    """Stands for the process dying (not an ``Exception``: nothing catches it)."""


class CrashOnPoll:
    """Delegates to a real oracle, then dies on the first poll: a crash between submit and poll."""

    def __init__(self, oracle) -> None:
        self.oracle, self.name, self.fidelity, self.cost = oracle, oracle.name, oracle.fidelity, oracle.cost

    def submit(self, inputs: Sequence[OracleInput]) -> list[str]:
        return self.oracle.submit(inputs)

    def poll(self, job_ids: Sequence[str]) -> dict[str, Result]:
        raise _Crash


def test_a_crash_between_submit_and_poll_loses_nothing_and_labels_once(store, table):
    ids = approve(store, [cubic("Na4Cl4", 5.69), cubic("Mg4O4", 4.21)])
    with pytest.raises(_Crash):
        label_candidates(store, campaign_id(store), CrashOnPoll(load_oracle("lookup", {"table": table}, executor=None)))
    assert states(store, ids) == ["submitted", "submitted"]
    fresh = load_oracle("lookup", {"table": table}, executor=None)  # a new process knows no job
    report = label_candidates(store, campaign_id(store), fresh)
    assert (report.submitted, report.resubmitted, report.labelled) == (0, 2, 2)
    assert states(store, ids) == ["labelled", "labelled"]
    with store.session() as session:
        jobs = session.scalars(select(OracleJob).order_by(OracleJob.id)).all()
    assert [(j.status, j.failure_kind) for j in jobs] == [("lost", "lost")] * 2 + [("done", None)] * 2
    assert {row.job_id for row in labels(store).values()} == {j.job_id for j in jobs if j.status == "done"}


class BrokenSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    timeout_s: float = 1.0


def broken_evaluate(item: OracleInput) -> Labelled:
    """Raises for Na-Cl, hangs for Mg-O, answers NaN for Li-Cl, works for K-Cl."""
    system = item.crystal.chemical_system
    if system == "Cl-Na":
        raise RuntimeError("segfault in the force field")
    if system == "Mg-O":
        time.sleep(30)
    energy = math.nan if system == "Cl-Li" else -3.0
    return Labelled(energy_per_atom=energy, properties={"band_gap": 1.0})


class BrokenOracle:
    """An oracle whose evaluations raise, hang past the timeout or return NaN."""

    Settings: ClassVar[type[BaseModel]] = BrokenSettings
    name, fidelity, cost = "broken", 0.1, 1.0

    def __init__(self, settings: BrokenSettings, *, executor: Executor) -> None:
        self._pool = JobPool(broken_evaluate, executor=executor, prefix="broken", timeout_s=settings.timeout_s)

    def submit(self, inputs: Sequence[OracleInput]) -> list[str]:
        return self._pool.submit(inputs)

    def poll(self, job_ids: Sequence[str]) -> dict[str, Result]:
        return self._pool.poll(job_ids)


class RaisingOracle(BrokenOracle):
    def submit(self, inputs: Sequence[OracleInput]) -> list[str]:
        raise ConnectionError("queue unreachable")


def test_a_broken_oracle_leaves_failed_labels_and_the_batch_goes_on(store):
    crystals = [cubic("Na4Cl4", 5.69), cubic("Mg4O4", 4.21), cubic("Li4Cl4", 5.13), cubic("K4Cl4", 6.3)]
    ids = approve(store, crystals)
    with open_executor(max_workers=1) as executor:
        oracle = load_oracle(f"{__name__}:BrokenOracle", {"timeout_s": 1.0}, executor=executor)
        report = label_candidates(store, campaign_id(store), oracle, poll_interval_s=0.05)
    assert (report.labelled, report.failed, report.pending) == (1, 3, 0)
    assert states(store, ids) == ["failed", "failed", "failed", "labelled"]
    stored = labels(store)
    reasons = [stored[(i, FAILED_PROPERTY)].reason for i in ids[:3]]
    assert "RuntimeError: segfault" in reasons[0]
    assert "timed out after 1 s" in reasons[1]
    assert "non-finite" in reasons[2] and "energy_per_atom" in reasons[2]
    assert stored[(ids[3], "band_gap")].value == 1.0
    kinds = ["oracle_error", "timeout", "non_finite"]
    assert [stored[(i, FAILED_PROPERTY)].failure_kind for i in ids[:3]] == kinds
    with store.session() as session:
        jobs = {j.candidate_id: (j.status, j.failure_kind) for j in session.scalars(select(OracleJob))}
    assert [jobs[i] for i in ids] == [("failed", k) for k in kinds] + [("done", None)]


def test_an_oracle_whose_submit_raises_fails_the_candidates(store):
    ids = approve(store, [cubic("K4Cl4", 6.3)])
    with open_executor() as executor:
        report = label_candidates(store, campaign_id(store), RaisingOracle(BrokenSettings(), executor=executor))
    assert states(store, ids) == ["failed"]
    assert report.failed == 1
    failure = labels(store)[(ids[0], FAILED_PROPERTY)]
    assert "ConnectionError: queue unreachable" in failure.reason and failure.failure_kind == "oracle_error"


def test_a_crystal_pyxtal_cannot_fill_fails_before_the_oracle(store, table):
    ids = approve(store, [cubic("Na3Cl1", 5.69)])  # 3 Na cannot fill the 4/8-fold sites of Fm-3m
    report = label_candidates(store, campaign_id(store), load_oracle("lookup", {"table": table}, executor=None))
    assert report.failed == 1 and report.submitted == 0
    failure = labels(store)[(ids[0], FAILED_PROPERTY)]
    assert "cannot be placed" in failure.reason and failure.failure_kind == "placement"


class AnsweringOracle:
    """Answers NaN for Li-Cl, nothing for Mg-O, an exploded cell for K-Cl: what a hand-written plug-in may do."""

    name, fidelity, cost = "answering", 0.1, 1.0

    def submit(self, inputs: Sequence[OracleInput]) -> list[str]:
        return [f"answering-{item.crystal.chemical_system}" for item in inputs]

    def poll(self, job_ids: Sequence[str]) -> dict[str, Result]:
        answers = {"answering-Cl-Li": Labelled(None, {"band_gap": math.nan}),
                   "answering-Cl-K": Failed("cell exploded at step 3", kind="exploded")}
        return {j: answers[j] for j in job_ids if j in answers}


def test_failure_kinds_of_answers_aloop_checks_are_stored_with_label_and_job(store):
    ids = approve(store, [cubic("Li4Cl4", 5.13), cubic("Mg4O4", 4.21), cubic("K4Cl4", 6.3)])
    report = label_candidates(store, campaign_id(store), AnsweringOracle())
    assert report.failed == 3 and states(store, ids) == ["failed"] * 3
    stored = labels(store)
    assert [stored[(i, FAILED_PROPERTY)].failure_kind for i in ids] == ["non_finite", "oracle_error", "exploded"]
    assert "gave no answer" in stored[(ids[1], FAILED_PROPERTY)].reason
    with store.session() as session:
        jobs = {j.candidate_id: j.failure_kind for j in session.scalars(select(OracleJob))}
    assert [jobs[i] for i in ids] == ["non_finite", "oracle_error", "exploded"]


@pytest.fixture
def sqlite_store(tmp_path: Path):
    store = open_store(f"sqlite:///{tmp_path / 'aloop.db'}")
    yield store
    store.close()


def test_chgnet_labels_carry_formation_energy_and_hull_of_the_same_oracle(sqlite_store):
    rock_salt, cesium_chloride = cubic("Na4Cl4", 5.69), cubic("Na1Cl1", 3.4, space_group=221)
    ids = approve(sqlite_store, [rock_salt, cesium_chloride])
    with open_executor() as executor:
        oracle = load_oracle("chgnet", {"max_steps": 150}, executor=executor)
        report = label_candidates(sqlite_store, campaign_id(sqlite_store), oracle, poll_interval_s=0.1)
    assert report.labelled == 2
    stored = labels(sqlite_store)
    formation = [stored[(i, "formation_energy_per_atom")].value for i in ids]
    hull = [stored[(i, "e_above_hull")].value for i in ids]
    assert -2.3 < formation[0] < -1.9 and formation[1] > formation[0]
    assert hull[0] == 0.0 and hull[1] == pytest.approx(formation[1] - formation[0], abs=1e-6)
    assert stored[(ids[0], "energy_per_atom")].meta["model"] == "chgnet-0.3.0"
    with sqlite_store.session() as session:
        cached = session.scalars(select(Label).where(Label.property == REFERENCE_PROPERTY)).all()
    assert sorted(label.meta["element"] for label in cached) == ["Cl", "Na"]


CHILD = textwrap.dedent("""
    import sys
    from aloop.executor import open_executor
    from aloop.labelling import label_candidates
    from aloop.oracle import load_oracle
    from aloop.store import find_campaign, open_store
    store = open_store(sys.argv[1])
    with store.session() as session:
        campaign_id = find_campaign(session, "test").id
    with open_executor() as executor:
        oracle = load_oracle("chgnet", {"max_steps": 60, "fmax": 0.2, "batch_size": 1}, executor=executor)
        label_candidates(store, campaign_id, oracle, poll_interval_s=0.05)
""")


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_batch_then_resume_labels_every_candidate_exactly_once(sqlite_store):
    crystals = [cubic("Na4Cl4", a) for a in (5.6, 5.8)] + [cubic("Li4Cl4", a) for a in (5.0, 5.2)]
    ids = approve(sqlite_store, crystals)
    child = subprocess.Popen([sys.executable, "-c", CHILD, sqlite_store.url], cwd=REPO)
    deadline = time.monotonic() + 240
    while not _done_before_kill(sqlite_store) and child.poll() is None:
        assert time.monotonic() < deadline, "the child labelled nothing in time"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    before = {key: (row.id, row.job_id, row.value) for key, row in labels(sqlite_store).items()}
    assert 0 < len({cid for cid, _ in before}) < len(ids), "the kill did not land in the middle of the batch"
    subprocess.run([sys.executable, "-c", CHILD, sqlite_store.url], cwd=REPO, check=True, timeout=300)
    after = labels(sqlite_store)
    assert set(states(sqlite_store, ids)) <= {"labelled", "failed"}
    assert all((after[key].id, after[key].job_id, after[key].value) == old for key, old in before.items())
    with sqlite_store.session() as session:
        done = session.execute(select(OracleJob.candidate_id, func.count()).where(
            OracleJob.status.in_(["done", "failed"])).group_by(OracleJob.candidate_id)).all()
    assert sorted(done) == [(i, 1) for i in ids]


def _done_before_kill(store: Store) -> bool:
    with store.session() as session:
        return bool(session.scalar(select(func.count()).select_from(OracleJob).where(OracleJob.status == "done")))
