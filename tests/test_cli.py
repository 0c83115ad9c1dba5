"""`aloop submit` and `aloop round` through the command line, as a user runs them after a review."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from pymatgen.core import Composition, Structure
from sqlalchemy import select

from aloop.cli import main
from aloop.config import CONFIG_DIR
from aloop.labelling import label_candidates
from aloop.oracle import Failed, OracleInput, Result
from aloop.space import Crystal
from aloop.store import Candidate, Label, NewCandidate, OracleJob, add_candidates, get_or_create_campaign, open_store
from aloop.store import RoundLock, start_round, transition
from aloop.tracking import REVIEW_TAG, STATE_TAG, client_for, ensure_experiment

ALOOP = Path(sys.executable).with_name("aloop")


@pytest.fixture(autouse=True)
def _no_outside_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALOOP_DB_URL", "MLFLOW_TRACKING_URI", "MP_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def cli_args(root: Path, *overrides: str) -> list[str]:
    """``--config smoke.yaml`` with every store and folder under ``root``."""
    settings = [f"store.url=sqlite:///{root / 'aloop.db'}", f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
                f"tracking.artifact_location={root / 'mlartifacts'}", f"workdir={root / 'work'}",
                f"data.mp.cache_dir={root / 'mp_cache'}", *overrides]
    return ["--config", str(CONFIG_DIR / "smoke.yaml"), *(arg for s in settings for arg in ("--set", s))]


def lookup_oracle(root: Path) -> list[str]:
    """Overrides for the lookup oracle on a two-row table (NaCl and MgO in rock salt)."""
    table = root / "table.csv"
    table.write_text("material_id,formula,spacegroup_number,formation_energy_per_atom,band_gap\n"
                     "mp-22862,NaCl,225,-2.105,5.1\nmp-1265,MgO,225,-3.062,4.4\n")
    return ["oracle.name=lookup", f"oracle.settings={{table: {table}}}"]


def rock_salt(formula: str, a: float) -> Crystal:
    return Crystal(225, Composition(formula), (a, a, a, 90.0, 90.0, 90.0))


def logged_candidates(root: Path, reviews: dict[str, str]) -> dict[str, int]:
    """Proposed candidates of campaign ``smoke``, each with an MLflow run whose review tag is ``reviews[formula]``."""
    client = client_for(f"sqlite:///{root / 'mlflow.db'}")
    experiment = ensure_experiment(client, "smoke", artifact_location=str(root / "mlartifacts"))
    store = open_store(f"sqlite:///{root / 'aloop.db'}")
    with store.session() as session:
        round_ = start_round(session, get_or_create_campaign(session, "smoke"), config={}, seed=0)
        ids = {}
        for formula, review in reviews.items():
            run = client.create_run(experiment, tags={REVIEW_TAG: review})
            [candidate] = add_candidates(session, round_, [NewCandidate(rock_salt(formula, 5.0),
                                                                        mlflow_run_id=run.info.run_id)])
            ids[formula] = candidate.id
    store.close()
    return ids


def stored(root: Path) -> tuple[dict[int, str], set[int], set[int]]:
    """State of each candidate, candidates with an oracle job, candidates with a label."""
    store = open_store(f"sqlite:///{root / 'aloop.db'}")
    with store.session() as session:
        states = {c.id: c.state for c in session.scalars(select(Candidate))}
        jobs = {j.candidate_id for j in session.scalars(select(OracleJob))}
        labelled = {lab.candidate_id for lab in session.scalars(select(Label))}
    store.close()
    return states, jobs, labelled


def test_submit_labels_the_approved_and_leaves_the_rest(tmp_path: Path) -> None:
    ids = logged_candidates(tmp_path, {"Na4Cl4": "approved", "Mg4O4": "rejected", "Li4Cl4": "pending"})
    args = cli_args(tmp_path, *lookup_oracle(tmp_path))

    result = CliRunner().invoke(main, ["submit", "--quiet", *args])

    assert result.exit_code == 0, result.output
    assert "1 approved, 1 rejected, 1 pending" in result.output
    assert f"library warnings in {tmp_path / 'work' / 'smoke' / 'submit.log'}" in result.output
    assert (tmp_path / "work" / "smoke" / "submit.log").exists()
    assert "1 submitted, 1 labelled, 0 failed" in result.output
    states, jobs, labelled = stored(tmp_path)
    assert states == {ids["Na4Cl4"]: "labelled", ids["Mg4O4"]: "rejected", ids["Li4Cl4"]: "proposed"}
    assert jobs == labelled == {ids["Na4Cl4"]}
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    store = open_store(f"sqlite:///{tmp_path / 'aloop.db'}")
    with store.session() as session:
        runs = {c.id: c.mlflow_run_id for c in session.scalars(select(Candidate))}
        placed = Structure.from_str(session.get_one(Candidate, ids["Na4Cl4"]).cif, fmt="cif")
    store.close()
    # placed as the round places (the config's placement): sampled a = 5.0, scaled to its bonds (NaCl: 5.64)
    assert 5.1 < placed.lattice.a < 5.7
    assert client.get_run(runs[ids["Na4Cl4"]]).data.tags[STATE_TAG] == "labelled"  # mirrored for the UI
    assert client.get_run(runs[ids["Mg4O4"]]).data.tags[STATE_TAG] == "rejected"

    again = CliRunner().invoke(main, ["submit", "--quiet", *args])
    assert again.exit_code == 0 and "nothing to label" in again.output
    assert stored(tmp_path) == (states, jobs, labelled)


def test_submit_with_nothing_to_do_is_a_clean_exit(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["submit", *cli_args(tmp_path, *lookup_oracle(tmp_path))])
    assert result.exit_code == 0 and "nothing to label" in result.output


def test_submit_with_bad_oracle_settings_exits_2_before_touching_the_database(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["submit", *cli_args(tmp_path, "oracle.settings={fmax: -1}")])
    assert result.exit_code == 2
    assert "oracle.settings.fmax=-1" in result.output
    assert not (tmp_path / "aloop.db").exists()


def test_round_verbose_shows_library_warnings_on_the_terminal_and_still_logs_them(tmp_path: Path) -> None:
    run = subprocess.run([str(ALOOP), "round", "--quiet", "--verbose", *cli_args(tmp_path)], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    log = tmp_path / "work" / "smoke" / "round-1" / "round.log"
    warning = "UserWarning: Issues encountered while parsing CIF"  # pymatgen's, placing and logging candidates
    assert warning in run.stderr and warning in log.read_text()
    assert re.search(rf"^\d+ library warnings? in {re.escape(str(log))}$", run.stderr, flags=re.MULTILINE), run.stderr
    assert "initialized with" not in run.stdout + run.stderr  # CHGNet's constructor prints whatever verbose says


@pytest.mark.slow
def test_round_stops_for_review_then_submit_labels_the_approved(tmp_path: Path) -> None:
    args = cli_args(tmp_path, "review=manual")
    first = subprocess.run([str(ALOOP), "round", "--quiet", *args], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "waiting for review" in first.stdout and "round 1" in first.stdout, first.stdout + first.stderr[-3000:]
    states, _, _ = stored(tmp_path)
    proposed = sorted(i for i, state in states.items() if state == "proposed")
    assert len(proposed) >= 2

    decided = CliRunner().invoke(main, ["review", "--approve", str(proposed[0]), "--reject", str(proposed[1]), *args])
    assert decided.exit_code == 0, decided.output
    submitted = CliRunner().invoke(main, ["submit", "--quiet", *args])
    assert submitted.exit_code == 0, submitted.output
    assert "1 approved, 1 rejected" in submitted.output and "1 submitted" in submitted.output

    states, jobs, labelled = stored(tmp_path)
    assert states[proposed[0]] in {"labelled", "failed"} and states[proposed[0]] != "approved"
    assert states[proposed[1]] == "rejected" and proposed[1] not in jobs | labelled
    assert all(states[i] == "proposed" for i in proposed[2:])
    assert proposed[0] in jobs and proposed[0] in labelled


FLAKY_FAILURES = {"Cl-Na": Failed("wall time of 2 h reached", kind="timeout"),
                  "Mg-O": Failed("node crashed: segfault", kind="oracle_error"),
                  "Cl-Li": Failed("not converged after 500 steps", kind="not_converged"),
                  "Cl-K": Failed("wall time of 2 h reached", kind="timeout")}


class FlakyOracle:
    """Fails every candidate, by chemical system (``FLAKY_FAILURES``): a wall time, a crash, or a lasting reason."""

    name, fidelity, cost = "flaky", 0.5, 1.0

    def __init__(self) -> None:
        self._jobs: dict[str, str] = {}

    def submit(self, inputs: Sequence[OracleInput]) -> list[str]:
        self._jobs |= {f"flaky-{item.candidate_id}": item.crystal.chemical_system for item in inputs}
        return [f"flaky-{item.candidate_id}" for item in inputs]

    def poll(self, job_ids: Sequence[str]) -> dict[str, Result]:
        return {job_id: FLAKY_FAILURES[self._jobs[job_id]] for job_id in job_ids}


def failed_campaign(root: Path) -> dict[str, int]:
    """Campaign ``smoke``: round 1 failed Na4Cl4 (timeout), Mg4O4 (oracle_error), Li4Cl4 (not_converged);
    round 2 failed K4Cl4 (timeout)."""
    ids = logged_candidates(root, {"Na4Cl4": "approved", "Mg4O4": "approved", "Li4Cl4": "approved"})
    ids |= logged_candidates(root, {"K4Cl4": "approved"})
    store = open_store(f"sqlite:///{root / 'aloop.db'}")
    with store.session() as session:
        for candidate in session.scalars(select(Candidate)):
            transition(candidate, "approved")
        campaign_id = get_or_create_campaign(session, "smoke").id
    assert label_candidates(store, campaign_id, FlakyOracle()).failed == 4
    store.close()
    return ids


def test_retry_sends_transient_failures_of_a_round_again_and_submit_labels_them_with_new_jobs(tmp_path: Path) -> None:
    ids = failed_campaign(tmp_path)
    args = cli_args(tmp_path, *lookup_oracle(tmp_path))

    retried = CliRunner().invoke(main, ["retry", "--round", "1", *args])

    assert retried.exit_code == 0, retried.output
    assert "round 1: 2 failed candidates moved back to approved" in retried.output
    assert "timeout: 1" in retried.output and "oracle_error: 1" in retried.output
    assert "not_converged" not in retried.output
    assert "`aloop submit` or `make round` labels them again" in retried.output
    states, _, _ = stored(tmp_path)
    assert [states[ids[f]] for f in ("Na4Cl4", "Mg4O4", "Li4Cl4", "K4Cl4")] == ["approved", "approved", "failed",
                                                                                 "failed"]
    store = open_store(f"sqlite:///{tmp_path / 'aloop.db'}")
    with store.session() as session:
        run_id = session.get_one(Candidate, ids["Na4Cl4"]).mlflow_run_id
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(run_id).data.tags[STATE_TAG] == "approved"  # mirrored for the UI

    submitted = CliRunner().invoke(main, ["submit", "--quiet", *args])

    assert submitted.exit_code == 0, submitted.output
    assert "2 submitted, 2 labelled, 0 failed" in submitted.output
    with store.session() as session:
        jobs = {(j.candidate_id, j.oracle): (j.job_id, j.status, j.failure_kind)
                for j in session.scalars(select(OracleJob))}
        labels = {(lab.candidate_id, lab.property): lab for lab in session.scalars(select(Label))}
        states = {c.id: c.state for c in session.scalars(select(Candidate))}
    store.close()
    for formula, kind in (("Na4Cl4", "timeout"), ("Mg4O4", "oracle_error")):
        candidate_id = ids[formula]
        assert states[candidate_id] == "labelled"
        assert jobs[candidate_id, "flaky"] == (f"flaky-{candidate_id}", "failed", kind)  # the first try, kept
        new_job, status, _ = jobs[candidate_id, "lookup-table"]
        assert status == "done" and labels[candidate_id, "formation_energy_per_atom"].job_id == new_job
        failure = labels[candidate_id, "*"]
        assert (failure.status, failure.failure_kind, failure.job_id) == ("superseded", kind, f"flaky-{candidate_id}")
    assert labels[ids["Li4Cl4"], "*"].status == labels[ids["K4Cl4"], "*"].status == "failed"

    status = CliRunner().invoke(main, ["status", *args], env={"COLUMNS": "160"})
    lines = status.output.splitlines()
    assert any("flaky" in line and "│ not_converged " in line and "│ 1 " in line for line in lines), status.output
    assert any("flaky" in line and "│ timeout " in line and "│ 1 " in line for line in lines)
    assert not any("oracle_error" in line for line in lines if "flaky" in line)


def test_retry_moves_the_asked_kinds_then_the_transient_ones_then_none(tmp_path: Path) -> None:
    ids = failed_campaign(tmp_path)
    args = cli_args(tmp_path)

    asked = CliRunner().invoke(main, ["retry", "--kind", "not_converged", "--kind", "exploded", *args])
    assert asked.exit_code == 0, asked.output
    assert "1 failed candidates moved back" in asked.output and "not_converged: 1" in asked.output
    default = CliRunner().invoke(main, ["retry", *args])
    assert default.exit_code == 0 and "3 failed candidates moved back" in default.output
    assert "timeout: 2" in default.output and "oracle_error: 1" in default.output
    assert set(stored(tmp_path)[0].values()) == {"approved"}
    again = CliRunner().invoke(main, ["retry", *args])
    assert again.exit_code == 0 and "nothing to retry" in again.output
    assert CliRunner().invoke(main, ["retry", "--kind", "walltime", *args]).exit_code == 2  # not a kind
    assert sorted(ids.values()) == sorted(stored(tmp_path)[0])


def test_retry_exits_3_while_a_round_runs_and_2_on_a_config_error(tmp_path: Path) -> None:
    ids = failed_campaign(tmp_path)
    store = open_store(f"sqlite:///{tmp_path / 'aloop.db'}")
    with RoundLock.acquire(store, "smoke", holder="round pid 7", ttl_s=60, heartbeat=False):
        locked = CliRunner().invoke(main, ["retry", *cli_args(tmp_path)])
    store.close()
    assert locked.exit_code == 3 and "another round is running" in locked.output
    bad = CliRunner().invoke(main, ["retry", *cli_args(tmp_path, "store.lock_ttl_s=-1")])
    assert bad.exit_code == 2 and "config error" in bad.output
    assert stored(tmp_path)[0][ids["Na4Cl4"]] == "failed"
