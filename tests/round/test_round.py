"""End to end: a smoke round from an empty campaign leaves a consistent store and MLflow."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from rich.console import Console
from sqlalchemy import select

from aloop.data.table import crystal_table
from aloop.proxy import Proxy
from aloop.round import STAGES, run_round
from aloop.space import CrystalBatch
from aloop.store import Candidate, Label, open_store
from aloop.store.models import Round
from aloop.tracking import (CANDIDATE_TAG, EXPERIMENT_KIND_TAG, MODEL_TRAINING_VIEW, PROXY_MODEL, REVIEW_TAG,
                            STATE_TAG)


def _rounds_and_candidates(cfg):
    store = open_store(cfg.db_url)
    with store.session() as session:
        rounds = {r.number: (r.stage, r.mlflow_run_id) for r in session.scalars(select(Round))}
        candidates = list(session.scalars(select(Candidate).order_by(Candidate.id)))
        labels = list(session.scalars(select(Label).where(Label.candidate_id.is_not(None))))
    store.close()
    return rounds, candidates, labels


def test_smoke_round_labels_its_batch(smoke_round):
    cfg = smoke_round.cfg
    rounds, candidates, labels = _rounds_and_candidates(cfg)
    assert rounds[1][0] == "done"
    # cold start design plus the selected batch, all through the oracle
    assert cfg.data.cold_start_size < len(candidates) <= cfg.data.cold_start_size + cfg.selection.batch_size
    assert {c.state for c in candidates} <= {"labelled", "failed"}
    assert all(c.review == "approved" for c in candidates)
    by_candidate = {}
    for label in labels:
        by_candidate.setdefault(label.candidate_id, []).append(label)
    for candidate in candidates:
        mine = by_candidate[candidate.id]
        if candidate.state == "labelled":
            energy = [lab for lab in mine if lab.property == "formation_energy_per_atom" and lab.status == "ok"]
            assert len(energy) == 1 and energy[0].oracle.startswith("chgnet")
            assert -6.0 < energy[0].value < 6.0
        else:
            assert any(lab.status == "failed" and lab.reason for lab in mine)
    batch = [c for c in candidates if c.proxy_mean is not None]
    assert batch and all(c.proxy_std > 0 and c.acquisition is not None and c.cif for c in batch)
    assert len({c.canonical_hash for c in candidates}) == len(candidates)
    assert smoke_round.report.stage == "done" and not smoke_round.report.waiting_for_review


def test_smoke_round_is_tracked_in_mlflow(smoke_round):
    cfg = smoke_round.cfg
    rounds, candidates, _ = _rounds_and_candidates(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking_uri)
    experiment = client.get_experiment_by_name(f"aloop/{cfg.campaign}")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_VIEW
    parent = client.get_run(rounds[1][1])
    assert parent.data.params["gfn.train_steps"] == str(cfg.gfn.train_steps)
    assert parent.data.params["space.elements"] == '["Li", "Mn", "O"]'
    assert len(client.get_metric_history(parent.info.run_id, "gfn_loss")) == cfg.gfn.train_steps
    for stage in STAGES[:-1]:
        assert f"time_{stage}_s" in parent.data.metrics, stage
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"candidates.csv", "plots", "generator"} <= artifacts
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/diversity.png", "plots/reward_histogram.png", "plots/predicted_distribution.png",
            "plots/gfn_training.png"} <= plots

    table = client.download_artifacts(parent.info.run_id, "candidates.csv")
    rows = list(csv.DictReader(io.StringIO(open(table).read())))
    assert {r["candidate_id"] for r in rows} == {str(c.id) for c in candidates}
    origins = {str(c.id): c.origin for c in candidates}
    assert all(o == "sampled sites" or o.startswith("template ") for o in origins.values())  # every one placed here
    assert {r["candidate_id"]: r["origin"] for r in rows} == origins

    children = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == len(candidates)
    state = {str(c.id): c.state for c in candidates}
    in_training = {str(c.id) for c in candidates if c.proxy_mean is None and c.state == "labelled"}
    for child in children:
        tags = child.data.tags
        distance = child.data.metrics["nearest_known_feature_distance"]
        assert distance < 1e-3 if tags[CANDIDATE_TAG] in in_training else 0 <= distance < 100
        assert tags[REVIEW_TAG] == "approved"
        assert tags[STATE_TAG] == state[tags[CANDIDATE_TAG]]
        assert {"formula", "space_group", "crystal_system", "a", "gamma"} <= set(child.data.params)
        assert child.data.params["origin"] == origins[tags[CANDIDATE_TAG]]
        files = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert "structure.png" in files and f"{tags[CANDIDATE_TAG]}.cif" in files


def test_the_proxy_is_an_mlflow_model_that_predicts_as_the_proxy(smoke_round, monkeypatch):
    cfg = smoke_round.cfg
    rounds, candidates, _ = _rounds_and_candidates(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking_uri)
    [output] = client.get_run(rounds[1][1]).outputs.model_outputs
    assert client.get_logged_model(output.model_id).name == PROXY_MODEL
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cfg.tracking_uri)  # how a user resolves models:/ URIs
    model = mlflow.pyfunc.load_model(f"models:/{output.model_id}")

    crystals = [c.crystal for c in candidates]
    predicted = model.predict(crystal_table(crystals))
    proxy = Proxy.load(Path(cfg.workdir) / cfg.campaign / "round-1" / "proxy")
    prediction = proxy.predict(CrystalBatch.from_crystals(crystals, cfg.space.elements), observation_noise=False)
    mean, std = prediction.mean, prediction.std
    np.testing.assert_allclose(predicted["mean"], mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(predicted["std"], std.numpy(), rtol=1e-6)
    batch = [i for i, c in enumerate(candidates) if c.proxy_mean is not None]
    assert batch
    np.testing.assert_allclose(predicted["mean"].iloc[batch], [candidates[i].proxy_mean for i in batch], rtol=1e-6)
    np.testing.assert_allclose(predicted["std"].iloc[batch], [candidates[i].proxy_std for i in batch], rtol=1e-6)


@pytest.mark.slow
def test_next_round_learns_from_the_labels_and_warm_starts(smoke_round):
    cfg = smoke_round.cfg
    out = io.StringIO()
    report = run_round(cfg, progress=False, console=Console(file=out, width=200))
    rounds, candidates, _ = _rounds_and_candidates(cfg)
    assert report.round == 2 and rounds[2][0] == "done"
    second = [c for c in candidates if c.round_id != candidates[0].round_id]
    assert 0 < len(second) <= cfg.selection.batch_size  # no cold start the second time
    first_hashes = {c.canonical_hash for c in candidates if c.round_id == candidates[0].round_id}
    assert not first_hashes & {c.canonical_hash for c in second}
    assert "warm start from" in out.getvalue() and "round-1" in out.getvalue()
    assert (Path(cfg.workdir) / cfg.campaign / "round-2" / "gfn.pt").exists()


READS_HULL = {"none": ["proxy.baseline=none", "proxy.hull_input=false"],
              "input": ["proxy.extractor_min_rows=0"],
              "mean_and_input": ["proxy.extractor_min_rows=0", "proxy.baseline=hull"]}
"""How the smoke round's proxy reads the hull of its rows; its few labels read it only with ``extractor_min_rows``
lowered. ``input`` is the default (``proxy.hull_input``); ``mean_and_input`` adds ``proxy.baseline: hull``."""


@pytest.mark.parametrize("reads", list(READS_HULL))
def test_a_stability_round_measures_its_labels_against_the_oracle_hull(tmp_path, reads):
    """Also with the proxy reading the hull of its rows (``READS_HULL``): its predictions are still what the
    reward's energies above the hull are taken from."""
    from round.conftest import smoke_config

    from aloop.hull import formation_hull
    from aloop.proposal import Proposal
    from aloop.proxy import Proxy
    from aloop.space.templates import TemplatePool
    from aloop.store import find_campaign, relaxed_structures

    cfg = smoke_config(tmp_path, "proxy.target=stability", "review=manual",  # stops before the batch changes the hull
                       *READS_HULL[reads])
    out = io.StringIO()
    report = run_round(cfg, progress=False, console=Console(file=out, width=200))
    assert report.waiting_for_review and report.labels_ok > 0
    assert "E_hull against: hull of labelled candidates only" in out.getvalue()  # no Materials Project data
    assert report.ranked_by == "e_above_hull" and report.hull.startswith("hull of labelled candidates only")
    hulls = [b.e_above_hull for b in report.best]
    assert hulls and hulls == sorted(hulls)  # the best crystals are the most stable ones
    store = open_store(cfg.db_url)
    with store.session() as session:
        campaign_id = find_campaign(session, cfg.campaign).id
    hull = formation_hull(store, campaign_id, cfg.space.elements)
    with store.session() as session:  # the templates of the round's placement: the design's relaxed structures
        templated = TemplatePool.build([], relaxed_structures(session, find_campaign(session, cfg.campaign)))
    store.close()
    assert hull.entries  # the cold-start design's CHGNet formation energies make the hull
    proposal = Proposal.load(Path(cfg.workdir) / cfg.campaign / "round-1" / "proposal.pt")
    proxy = Proxy.load(Path(cfg.workdir) / cfg.campaign / "round-1" / "proxy")
    assert (proxy.model.baseline is not None, proxy.model.hull_input is not None) == (reads == "mean_and_input",
                                                                                     reads != "none")
    samples = proposal.samples[proposal.valid]
    above = proposal.prediction.mean - hull.at(samples.elements, samples.counts)  # predicted E_hull
    untemplated = ~templated.prototypes().known(samples)
    assert untemplated.any()
    # UCB (beta 2) of the energy above the hull: lower predicted E_hull, higher acquisition; crystals no
    # template fits lose the penalty
    np.testing.assert_allclose(proposal.acquisition, -above + 2 ** 0.5 * proposal.prediction.std
                               - cfg.acquisition.untemplated_penalty * untemplated.double(), atol=1e-4)


def test_the_round_logs_its_proxy_correction(tmp_path):
    """With labels beside other rows the round's proxy carries the campaign's correction, and says so in MLflow and
    on the terminal."""
    from proxy.conftest import random_crystals, truth
    from round.conftest import smoke_config

    from aloop.data.training import TrainingSet
    from aloop.round import RoundContext, train_proxy
    from aloop.tracking import client_for, ensure_experiment

    def rows(n: int, seed: int, source: str, offset: float) -> TrainingSet:
        batch = random_crystals(n, seed=seed)
        return TrainingSet("formation_energy_per_atom", batch, truth(batch) + offset,
                           torch.zeros(n, dtype=torch.long), (source,), tuple(f"{source}-{i}" for i in range(n)))

    cfg = smoke_config(tmp_path, "proxy.target=formation_energy_per_atom", "proxy.holdout_fraction=0.0")
    data = TrainingSet.concat([rows(300, 0, "mp", 0.0), rows(30, 1, "chgnet", 0.5).as_campaign_labels()])
    client = client_for(cfg.tracking_uri)
    experiment_id = ensure_experiment(client, cfg.campaign, artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment_id).info.run_id
    out = io.StringIO()
    ctx = RoundContext(cfg=cfg, store=None, space=None, client=client, experiment_id=experiment_id, campaign_id=1,
                       round_id=1, number=2, run_id=run_id, stage=None, workdir=tmp_path / "round-2",
                       console=Console(file=out, width=200), progress=False)
    proxy = train_proxy(ctx, data)
    metrics = client.get_run(run_id).data.metrics
    assert proxy.correction is not None and metrics["proxy_correction_labels"] == 30
    assert metrics["proxy_correction_offset"] == pytest.approx(proxy.correction[1]) and metrics[
        "proxy_correction_offset"] > 0.2  # the labels sit 0.5 above the other rows
    assert "proxy correction from 30 campaign labels" in out.getvalue()
