"""Manual review: the round stops for review; the next one submits exactly the approved ones."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from sqlalchemy import select

from aloop.cli import main
from aloop.config import CONFIG_DIR
from aloop.round import run_round
from aloop.store import Candidate, Label, OracleJob, open_store
from aloop.tracking import REVIEW_TAG, STATE_TAG

from .conftest import smoke_config, smoke_overrides


def _batch(cfg):
    """The round's proposed batch (not the cold-start design), by id."""
    store = open_store(cfg.db_url)
    with store.session() as session:
        rows = list(session.scalars(select(Candidate).where(Candidate.proxy_mean.is_not(None))
                                    .order_by(Candidate.id)))
        jobs = {j.candidate_id for j in session.scalars(select(OracleJob))}
        labelled = {lab.candidate_id for lab in session.scalars(select(Label))}
    store.close()
    return rows, jobs, labelled


@pytest.mark.slow
def test_manual_review_submits_exactly_the_approved(tmp_path):
    cfg = smoke_config(tmp_path, "review=manual")
    first = run_round(cfg, progress=False)
    assert first.waiting_for_review and first.stage == "reviewed"
    batch, jobs, _ = _batch(cfg)
    assert len(batch) >= 3
    assert {c.state for c in batch} == {"proposed"} and {c.review for c in batch} == {"pending"}
    assert not jobs & {c.id for c in batch}

    client = MlflowClient(tracking_uri=cfg.tracking_uri)
    approved, rejected, pending = batch[0], batch[1], batch[2:]
    cli = ["--config", str(CONFIG_DIR / "smoke.yaml")]
    cli += [arg for override in smoke_overrides(tmp_path, "review=manual") for arg in ("--set", override)]
    listing = CliRunner().invoke(main, ["review", *cli])
    assert listing.exit_code == 0 and f"awaiting review ({len(batch)})" in listing.output
    unknown = CliRunner().invoke(main, ["review", "--approve", f"{approved.id},999999", *cli])
    assert unknown.exit_code == 2 and "[999999] are not awaiting review" in unknown.output
    assert client.get_run(approved.mlflow_run_id).data.tags[REVIEW_TAG] == "pending"  # nothing written
    decided = CliRunner().invoke(main, ["review", "--approve", str(approved.id), *cli])  # from the terminal
    assert decided.exit_code == 0 and f"awaiting review ({len(batch)})" in decided.output  # decided, not applied
    assert client.get_run(approved.mlflow_run_id).data.tags[REVIEW_TAG] == "approved"
    client.set_tag(rejected.mlflow_run_id, REVIEW_TAG, "Rejected")  # as in the UI: case is ignored

    second = run_round(cfg, progress=False)
    assert second.round == first.round and second.stage == "done"
    batch, jobs, labelled = _batch(cfg)
    state = {c.id: c.state for c in batch}
    assert state[approved.id] in {"labelled", "failed"}
    assert state[rejected.id] == "rejected"
    assert all(state[c.id] == "proposed" for c in pending)
    assert jobs & {c.id for c in batch} <= {approved.id}
    assert labelled & {c.id for c in batch} == {approved.id}
    assert client.get_run(rejected.mlflow_run_id).data.tags[STATE_TAG] == "rejected"
    assert client.get_run(approved.mlflow_run_id).data.tags[STATE_TAG] == state[approved.id]
