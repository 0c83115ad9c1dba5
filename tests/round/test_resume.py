"""A round killed inside any stage continues where it stopped and ends as an uninterrupted one.

One campaign is crashed once inside every stage, in stage order: each run of the round
resumes after the last recorded stage and dies inside the next crash point, so every
stage is entered by a fresh ``run_round`` that resumes a killed one, and the work is
shared between the cases. Crashes come in two kinds: at the ``end`` of a stage (its work
done, the stage not yet recorded: the rerun redoes it) and in the ``middle`` of a stage
that persists part of its work (a labelled job, a proxy model without its files, a child
run half logged, an approval not yet mirrored to MLflow).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mlflow.pyfunc
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

import aloop.labelling
import aloop.review
import aloop.tracking
from aloop.round import STAGES, RoundContext, run_round
from aloop.store import LockHeld, RoundLock, open_store
from aloop.report import RoundReport
from aloop.tracking import CANDIDATE_TAG, KIND_TAG, child_runs

from .conftest import Outcome, outcome, smoke_config


class Killed(Exception):
    """Stands for the process dying inside a stage."""


@dataclass(frozen=True)
class CrashPoint:
    stage: str
    where: str  # "end" or "middle"

    def __str__(self) -> str:
        return f"{self.stage}-{self.where}"


MIDDLE = {
    "designed": (aloop.labelling, "_store_result", 2),  # one cold-start label stored, the other jobs running
    "trained_proxy": (mlflow.pyfunc, "save_model", 1),  # the proxy's MLflow model created, without files
    "logged": (aloop.tracking, "plot_structure", 2),  # the second child run has params and CIF, no picture
    "reviewed": (aloop.review, "set_state", 1),  # the approval committed, no run tagged yet
    "labelled": (aloop.labelling, "_store_result", 2),  # one batch label stored
}
"""Stage -> (module, function, call that dies): where a crash leaves a stage half done."""
CRASH_POINTS = [CrashPoint(stage, where) for stage in STAGES
                for where in (("middle", "end") if stage in MIDDLE else ("end",))]


@dataclass(frozen=True)
class Crash:
    raised: bool
    recorded_stage: str | None
    """The round's stage in the store right after the crash."""


@dataclass(frozen=True)
class CrashedCampaign:
    crashes: dict[str, Crash]
    report: RoundReport
    outcome: Outcome
    client: MlflowClient
    experiment_id: str


def _dies_at_call(function: Callable, call: int) -> Callable:
    calls = {"n": 0}

    def dying(*args, **kwargs):  # noqa: ANN202
        calls["n"] += 1
        if calls["n"] == call:
            raise Killed(function.__name__)
        return function(*args, **kwargs)

    return dying


def _inject(monkeypatch: pytest.MonkeyPatch, point: CrashPoint) -> None:
    """Make the next round die at ``point`` (only while that stage runs)."""
    original = RoundContext.run

    def run(self, stage, compute, load):  # noqa: ANN001, ANN202
        if stage != point.stage or self.done(stage):
            return original(self, stage, compute, load)
        if point.where == "end":
            def compute_then_die():  # noqa: ANN202
                compute()
                raise Killed(str(point))
            return original(self, stage, compute_then_die, load)
        module, name, call = MIDDLE[stage]
        with pytest.MonkeyPatch.context() as inner:
            inner.setattr(module, name, _dies_at_call(getattr(module, name), call))
            return original(self, stage, compute, load)

    monkeypatch.setattr(RoundContext, "run", run)


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> CrashedCampaign:
    """A smoke campaign killed at every crash point in turn, then run once more to the end."""
    cfg = smoke_config(tmp_path_factory.mktemp("crashed"))
    crashes = {}
    for point in CRASH_POINTS:
        with pytest.MonkeyPatch.context() as monkeypatch:
            _inject(monkeypatch, point)
            try:
                run_round(cfg, progress=False)
                raised = False
            except Killed:
                raised = True
        crashes[str(point)] = Crash(raised, outcome(cfg).stages[-1])
    report = run_round(cfg, progress=False)
    client = MlflowClient(tracking_uri=cfg.tracking_uri)
    return CrashedCampaign(crashes, report, outcome(cfg), client,
                           client.get_experiment_by_name(f"aloop/{cfg.campaign}").experiment_id)


@pytest.mark.slow
@pytest.mark.parametrize("point", CRASH_POINTS, ids=str)
def test_a_crash_inside_the_stage_leaves_it_unrecorded(point, crashed):
    crash = crashed.crashes[str(point)]
    before = STAGES[STAGES.index(point.stage) - 1] if point.stage != STAGES[0] else None
    assert crash.raised, f"no crash happened at {point}"
    assert crash.recorded_stage == before


@pytest.mark.slow
def test_the_resumed_round_ends_as_an_uninterrupted_one(crashed, smoke_round):
    assert crashed.report.stage == "done" and crashed.report.round == 1
    assert crashed.outcome == smoke_round.outcome
    assert len({h for h, _ in crashed.outcome.candidates}) == len(crashed.outcome.candidates)
    assert len(set(crashed.outcome.labels)) == len(crashed.outcome.labels)


@pytest.mark.slow
def test_the_resumed_round_has_one_mlflow_run_per_round_and_candidate_and_one_proxy_model(crashed):
    client = crashed.client
    rounds = client.search_runs([crashed.experiment_id], filter_string=f"tags.`{KIND_TAG}` = 'round'")
    assert len(rounds) == 1
    children = child_runs(client, crashed.experiment_id, rounds[0].info.run_id)
    ids = [r.data.tags[CANDIDATE_TAG] for r in children]
    assert len(ids) == len(set(ids)) == len(crashed.outcome.candidates)
    for run in [*rounds, *children]:
        assert run.info.status == "FINISHED"
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert len(steps) == len(set(steps)), f"{run.info.run_name}: {key} logged twice"
    for child in children:
        files = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"structure.png", f"{child.data.tags[CANDIDATE_TAG]}.cif"} <= files
    [model] = client.search_logged_models([crashed.experiment_id])
    assert model.source_run_id == rounds[0].info.run_id and model.status == LoggedModelStatus.READY


def test_a_second_round_on_the_same_campaign_is_refused(tmp_path):
    cfg = smoke_config(tmp_path)
    store = open_store(cfg.db_url)
    with RoundLock.acquire(store, cfg.campaign, holder="someone else", ttl_s=60, heartbeat=False):
        with pytest.raises(LockHeld, match="someone else"):
            run_round(cfg, progress=False)
    store.close()
