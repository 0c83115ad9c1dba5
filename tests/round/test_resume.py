"""A round killed inside any stage continues where it stopped and ends as an uninterrupted one."""

from __future__ import annotations

import pytest
from sqlalchemy import select

import aloop.round as round_module
from aloop.round import run_round
from aloop.store import Candidate, Label, LockHeld, RoundLock, open_store
from aloop.store.models import Round

from .conftest import smoke_config


class Killed(Exception):
    """Stands for the process dying in the middle of a stage."""


def _outcome(cfg):
    store = open_store(cfg.db_url)
    with store.session() as session:
        candidates = sorted((c.canonical_hash, c.state) for c in session.scalars(select(Candidate)))
        labels = sorted((c.canonical_hash, lab.property, lab.status) for lab, c in
                        session.execute(select(Label, Candidate).join(Candidate)).tuples())
        stages = [r.stage for r in session.scalars(select(Round))]
    store.close()
    return candidates, labels, stages


# A crash inside the cold-start labelling (the first call of `label`) and one inside
# the stage that writes the batch to the store; the other stages persist the same way.
@pytest.mark.slow
@pytest.mark.parametrize("function", ["label", "select_batch"])
def test_killed_stage_resumes_to_the_same_result(function, smoke_round, tmp_path, monkeypatch):
    cfg = smoke_config(tmp_path)
    original = getattr(round_module, function)
    calls = {"n": 0}

    def dies_after_doing_its_work(*args, **kwargs):
        calls["n"] += 1
        original(*args, **kwargs)
        raise Killed(function)

    monkeypatch.setattr(round_module, function, dies_after_doing_its_work)
    with pytest.raises(Killed):
        run_round(cfg, progress=False)
    monkeypatch.setattr(round_module, function, original)
    assert _outcome(cfg)[2] != ["done"]

    run_round(cfg, progress=False)
    assert _outcome(cfg) == _outcome(smoke_round.cfg)


def test_a_second_round_on_the_same_campaign_is_refused(tmp_path):
    cfg = smoke_config(tmp_path)
    store = open_store(cfg.db_url)
    with RoundLock.acquire(store, cfg.campaign, holder="someone else", ttl_s=60, heartbeat=False):
        with pytest.raises(LockHeld, match="someone else"):
            run_round(cfg, progress=False)
    store.close()
