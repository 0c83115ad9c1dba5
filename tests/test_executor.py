"""Executors: timeouts, errors and NaN become failures; ``workers: auto`` fills the cores; Dask runs oracles in
worker processes."""

from __future__ import annotations

import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pymatgen.core import Composition, Lattice, Structure

from aloop.config import load_config
from aloop.executor import JobPool, local_workers, open_executor, run_with_timeout
from aloop.oracle import Failed, Labelled, Lost, OracleInput, Pending

NACL = Structure.from_spacegroup(225, Lattice.cubic(5.69), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def item(candidate_id: str = "1") -> OracleInput:
    from aloop.space import Crystal

    return OracleInput(candidate_id, Crystal.from_structure(NACL), NACL)


def slow(item: OracleInput) -> Labelled:
    time.sleep(float(item.candidate_id))
    return Labelled(energy_per_atom=-1.0)


def test_an_evaluation_past_its_timeout_fails_and_frees_the_caller():
    start = time.monotonic()
    result = run_with_timeout(slow, item("30"), timeout_s=0.2)
    assert isinstance(result, Failed) and result.reason == "timed out after 0.2 s" and result.kind == "timeout"
    assert time.monotonic() - start < 5


def test_exceptions_and_nan_become_failures_with_their_reason():
    def boom(_: OracleInput) -> Labelled:
        raise ZeroDivisionError("no atoms")

    raised = run_with_timeout(boom, item(), timeout_s=5)
    assert isinstance(raised, Failed) and raised.reason == "ZeroDivisionError: no atoms"
    assert raised.kind == "oracle_error"
    assert "Traceback" in raised.metadata["traceback"]
    nan = run_with_timeout(lambda _: Labelled(energy_per_atom=math.nan, properties={"band_gap": 1.0}),
                           item(), timeout_s=5)
    assert isinstance(nan, Failed) and "['energy_per_atom']" in nan.reason and nan.kind == "non_finite"


def test_a_job_pool_reports_queued_running_done_and_lost_jobs():
    with open_executor(max_workers=1) as executor:
        pool = JobPool(slow, executor=executor, prefix="slow", timeout_s=10)
        first, second = pool.submit([item("0.5"), item("0")])
        assert first.startswith("slow-0.5-") and first != second
        states = pool.poll([first, second, "slow-9-unknown"])
        assert states[first] == Pending("running") and states[second] == Pending("queued")
        assert isinstance(states["slow-9-unknown"], Lost)
        while isinstance(pool.poll([second])[second], Pending):
            time.sleep(0.05)
        assert pool.poll([first, second]) == {first: Labelled(-1.0), second: Labelled(-1.0)}


def test_a_job_the_executor_cancelled_is_lost():
    executor = ThreadPoolExecutor(max_workers=1)
    pool = JobPool(slow, executor=executor, prefix="slow", timeout_s=10)
    running, queued = pool.submit([item("0.3"), item("0")])
    executor.shutdown(wait=True, cancel_futures=True)  # a cluster going away drops what it had not started
    states = pool.poll([running, queued])
    assert states[running] == Labelled(-1.0)
    assert states[queued] == Failed("cancelled by the executor", kind="lost")


@pytest.mark.parametrize(("overrides", "threads", "workers"), [
    ([], 1, 6),  # the default: CHGNet on one torch thread per relaxation
    (["oracle.settings={torch_threads: 2}"], 2, 3),
    (["oracle.settings={torch_threads: 4}"], 4, 1),
    (["oracle.settings={torch_threads: null}"], 6, 1),  # torch's default threads take every core
    (["oracle.workers=2"], 1, 2),  # a number is taken as it is
])
def test_auto_workers_fill_the_available_cores_with_the_oracles_threads(monkeypatch, overrides, threads, workers):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    settings = load_config(None, overrides).oracle
    assert local_workers(settings) == workers and workers * threads <= 6


def test_auto_gives_one_worker_to_an_oracle_that_does_not_say_its_threads(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    table = tmp_path / "table.csv"
    table.write_text("material_id,formula,spacegroup_number,formation_energy_per_atom,band_gap\n"
                     "mp-22862,NaCl,225,-2.105,5.1\n")
    settings = load_config(None, ["oracle.name=lookup", f"oracle.settings={{table: {table}}}"]).oracle
    assert local_workers(settings) == 1  # as before auto: a DFT code may take every core per evaluation


def test_an_auto_executor_runs_as_many_evaluations_at_once_as_there_are_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    settings = load_config(None).oracle
    assert settings.workers == "auto"  # the default
    together = threading.Barrier(3, timeout=10)  # breaks unless 3 evaluations run at the same time
    with open_executor(max_workers=local_workers(settings)) as executor:
        assert all(f.result() >= 0 for f in [executor.submit(together.wait) for _ in range(3)])


def test_dask_needs_a_scheduler_address():
    with pytest.raises(ValueError, match="scheduler_address"):
        with open_executor(kind="dask"):
            pass


@pytest.mark.slow
def test_chgnet_labels_through_a_dask_cluster_of_worker_processes(tmp_path: Path):
    from distributed import LocalCluster

    from aloop.labelling import label_candidates
    from aloop.oracle import load_oracle
    from aloop.space import Crystal
    from aloop.store import (
        Label, NewCandidate, add_candidates, get_or_create_campaign, open_store, start_round, transition)

    store = open_store(f"sqlite:///{tmp_path / 'aloop.db'}")
    with store.session() as session:
        campaign = get_or_create_campaign(session, "dask")
        round_ = start_round(session, campaign, config={}, seed=0)
        crystals = [Crystal(225, Composition("Na4Cl4"), (a, a, a, 90.0, 90.0, 90.0)) for a in (5.6, 5.8)]
        for candidate in add_candidates(session, round_, [NewCandidate(c) for c in crystals]):
            transition(candidate, "approved")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            open_executor(kind="dask", scheduler_address=cluster.scheduler_address) as executor:
        oracle = load_oracle("chgnet", {"max_steps": 100}, executor=executor)
        report = label_candidates(store, campaign.id, oracle, poll_interval_s=0.1)
    assert report.labelled == 2
    with store.session() as session:
        energies = session.query(Label).filter(Label.property == "energy_per_atom").all()
    workers = {label.meta["worker"].rpartition(":")[2] for label in energies}
    assert str(os.getpid()) not in workers and len(energies) == 2
    assert energies[0].value == pytest.approx(energies[1].value, abs=0.01)  # both relax to rock salt
    store.close()
