"""`aloop submit` and `aloop round` through the command line, as a user runs them after a review."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from pymatgen.core import Composition
from sqlalchemy import select

from aloop.cli import main
from aloop.config import CONFIG_DIR
from aloop.space import Crystal
from aloop.store import Candidate, Label, NewCandidate, OracleJob, add_candidates, get_or_create_campaign, open_store
from aloop.store import start_round
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
    assert "1 submitted, 1 labelled, 0 failed" in result.output
    states, jobs, labelled = stored(tmp_path)
    assert states == {ids["Na4Cl4"]: "labelled", ids["Mg4O4"]: "rejected", ids["Li4Cl4"]: "proposed"}
    assert jobs == labelled == {ids["Na4Cl4"]}
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    store = open_store(f"sqlite:///{tmp_path / 'aloop.db'}")
    with store.session() as session:
        runs = {c.id: c.mlflow_run_id for c in session.scalars(select(Candidate))}
    store.close()
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
