"""A queued oracle (``oracle.wait: false``) on a cold start: rounds wait for the design, collect pending
jobs first whatever stage they stopped at, end with jobs still queued, ``aloop submit`` collects them and
``aloop retry`` sends the transient failures again."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from aloop.cli import main
from aloop.config import CONFIG_DIR
from aloop.round import run_round
from aloop.store import Candidate, Label, OracleJob, open_store

from .conftest import smoke_config, smoke_overrides

HERE = Path(__file__).resolve().parent


def queued(root: Path, store_url: str) -> list[str]:
    return [f"store.url={store_url}", "oracle.name=queued_oracle:QueuedOracle", "oracle.wait=false",
            f"oracle.settings={{queue: {root / 'queue'}, polls: 1, fail_every: 4}}"]


def snapshot(store_url: str) -> tuple[Counter, list[tuple[int, str, str]], list[tuple[int, str]]]:
    """Candidates by state, every oracle job (candidate, job id, status), every candidate label (candidate, property)."""
    store = open_store(store_url)
    with store.session() as session:
        states = Counter(session.scalars(select(Candidate.state)))
        jobs = [(j.candidate_id, j.job_id, j.status) for j in session.scalars(select(OracleJob).order_by(OracleJob.id))]
        labels = [(lab.candidate_id, lab.property) for lab in session.scalars(select(Label))]
    store.close()
    return states, jobs, labels


@pytest.mark.slow
def test_rounds_and_submit_with_a_queued_oracle(store_url: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    cfg = smoke_config(tmp_path, *queued(tmp_path, store_url))

    waiting = run_round(cfg, progress=False)  # the design goes to the queue; nothing to fit a proxy on yet
    assert waiting.stage == "designed" and waiting.waiting_for_labels
    assert waiting.pending_jobs == cfg.data.cold_start_size
    states, jobs, labels = snapshot(store_url)
    assert states == {"submitted": cfg.data.cold_start_size} and not labels

    first = run_round(cfg, progress=False)  # resumed after "designed": collects the design first, then goes on
    assert first.round == 1 and first.stage == "done" and not first.waiting_for_labels
    assert first.pending_jobs == cfg.selection.batch_size  # the batch is queued, the round ended anyway
    states, jobs, labels = snapshot(store_url)
    design = {c for c, *_ in jobs[: cfg.data.cold_start_size]}
    done = {c for c, _, status in jobs if status == "done"}
    failed = {c for c, _, status in jobs if status == "failed"}
    assert design == done | failed and len(failed) == 2  # job 0 gave NaN, job 4 lost its node
    assert states["submitted"] == cfg.selection.batch_size
    assert Counter(p for _, p in labels) == {"formation_energy_per_atom": 4, "*": 2}

    cli = ["--config", str(CONFIG_DIR / "smoke.yaml"),
           *(arg for s in smoke_overrides(tmp_path, *queued(tmp_path, store_url)) for arg in ("--set", s))]
    submitted = CliRunner().invoke(main, ["submit", "--quiet", *cli])
    assert submitted.exit_code == 0, submitted.output
    assert f"0 submitted, {cfg.selection.batch_size - 1} labelled, 1 failed, 0 still pending" in submitted.output

    second = run_round(cfg, progress=False)  # learns from the batch's labels, queues its own
    assert second.round == 2 and second.stage == "done" and second.pending_jobs == cfg.selection.batch_size
    states, jobs, labels = snapshot(store_url)
    assert len({job_id for _, job_id, _ in jobs}) == len(jobs)  # every job submitted once, none twice
    assert len({c for c, _, _ in jobs}) == len(jobs)  # one job per candidate: nothing was resubmitted
    assert Counter(labels) == Counter(set(labels))  # no label stored twice
    assert states["labelled"] + states["failed"] == cfg.data.cold_start_size + cfg.selection.batch_size
    assert states["submitted"] == cfg.selection.batch_size

    retried = CliRunner().invoke(main, ["retry", *cli])  # transient failures (the wall time) go again, NaN does not
    assert retried.exit_code == 0, retried.output
    again = CliRunner().invoke(main, ["submit", "--quiet", *cli])
    assert again.exit_code == 0 and "2 submitted" in again.output, again.output
    _, after, _ = snapshot(store_url)
    timed_out = {c for c, job_id, status in jobs if status == "failed" and job_id != "q-0"}
    assert len(timed_out) == 2 and len(after) == len(jobs) + 2  # new jobs; the old ones kept as history
    assert {c for c, _, status in after[len(jobs):]} == timed_out

