"""MLflow tracking: one experiment per campaign, a parent run per round, a child run per
batch candidate carrying the review tag a person edits in the MLflow UI.

Everything goes through ``MlflowClient`` (no fluent global state), so a resumed round
finds its runs again by id and tag instead of creating duplicates.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from pymatgen.core import Structure  # noqa: E402

from aloop.space import LATTICE_KEYS, Crystal, space_group  # noqa: E402

REVIEW_TAG = "aloop.review"
STATE_TAG = "aloop.state"
CANDIDATE_TAG = "aloop.candidate_id"
ROUND_TAG = "aloop.round"
KIND_TAG = "aloop.kind"
REVIEW_STATES = ("pending", "approved", "rejected")
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_VIEW = "custom_model_development"


@dataclass(frozen=True)
class CandidateView:
    """What a reviewer sees of one batch candidate."""

    candidate_id: str
    crystal: Crystal
    proxy_mean: float
    proxy_std: float
    acquisition: float
    nearest_known_distance: float | None
    state: str
    review: str
    structure: Structure | None


def client_for(tracking_uri: str) -> MlflowClient:
    """An MLflow client bound to one tracking store (no global ``set_tracking_uri``)."""
    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(client: MlflowClient, campaign: str, *, artifact_location: str) -> str:
    """The campaign's experiment id, created on first use and set to the model-training view."""
    name = f"aloop/{campaign}"
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = Path(artifact_location).resolve().as_uri() if "://" not in artifact_location else artifact_location
        experiment_id = client.create_experiment(name, artifact_location=f"{location}/{campaign}")
    else:
        experiment_id = experiment.experiment_id
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_VIEW)
    return experiment_id


def start_round_run(client: MlflowClient, experiment_id: str, *, round_number: int,
                    config: Mapping[str, Any]) -> str:
    """Create the parent run of a round with the flattened config as params; returns its id."""
    run = client.create_run(experiment_id, run_name=f"round-{round_number}",
                            tags={ROUND_TAG: str(round_number), KIND_TAG: "round"})
    params = [Param(k, _param_value(v)) for k, v in sorted(_flatten(config).items())]
    for start in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[start:start + 100])
    return run.info.run_id


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float], *, step: int = 0) -> None:
    """Log finite scalar metrics in one batch (NaN/inf are skipped: MLflow rejects them in SQL stores)."""
    now = _now_ms()
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(float(v))]
    for start in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[start:start + 1000])


def log_curve(client: MlflowClient, run_id: str, key: str, values: Sequence[float]) -> None:
    """Log a curve (e.g. the GFlowNet loss per step) as one metric with steps."""
    now = _now_ms()
    batch = [Metric(key, float(v), now, i) for i, v in enumerate(values) if math.isfinite(float(v))]
    for start in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[start:start + 1000])


def log_figure(client: MlflowClient, run_id: str, figure: Figure, name: str) -> None:
    """Save a matplotlib figure as a PNG artifact under ``plots/`` and close it."""
    client.log_figure(run_id, figure, f"plots/{name}.png")
    plt.close(figure)


def log_dict(client: MlflowClient, run_id: str, data: Any, path: str) -> None:
    client.log_dict(run_id, data, path)


def log_candidates(client: MlflowClient, experiment_id: str, parent_run_id: str, *,
                   round_number: int, candidates: Iterable[CandidateView]) -> dict[str, str]:
    """One child run per candidate (params, metrics, tags, CIF and picture); idempotent.

    Returns:
        candidate id -> child run id. Candidates that already have a child run under this
        parent (a resumed round) keep it and are not logged twice.
    """
    existing = child_runs(client, experiment_id, parent_run_id)
    run_ids = dict(existing)
    for view in candidates:
        if view.candidate_id in run_ids:
            continue
        run_ids[view.candidate_id] = _log_candidate(client, experiment_id, parent_run_id,
                                                    round_number=round_number, view=view)
    return run_ids


def _log_candidate(client: MlflowClient, experiment_id: str, parent_run_id: str, *,
                   round_number: int, view: CandidateView) -> str:
    crystal = view.crystal
    run = client.create_run(
        experiment_id,
        run_name=f"{crystal.composition.reduced_formula}-sg{crystal.space_group}",
        tags={"mlflow.parentRunId": parent_run_id, ROUND_TAG: str(round_number), KIND_TAG: "candidate",
              CANDIDATE_TAG: view.candidate_id, REVIEW_TAG: view.review, STATE_TAG: view.state},
    )
    run_id = run.info.run_id
    params = {"formula": crystal.formula, "space_group": crystal.space_group,
              "crystal_system": space_group(crystal.space_group).crystal_system,
              **{k: round(v, 4) for k, v in zip(LATTICE_KEYS, crystal.lattice, strict=True)}}
    metrics = {"pred_mean": view.proxy_mean, "pred_std": view.proxy_std, "acquisition": view.acquisition}
    if view.nearest_known_distance is not None:
        metrics["nearest_known_distance"] = view.nearest_known_distance
    now = _now_ms()
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()],
                     metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if math.isfinite(v)])
    if view.structure is not None:
        with tempfile.TemporaryDirectory() as tmp:
            cif = Path(tmp) / f"{view.candidate_id}.cif"
            view.structure.to(filename=str(cif))
            client.log_artifact(run_id, str(cif))
        client.log_figure(run_id, plot_structure(view.structure, title=crystal.formula), "structure.png")
        plt.close("all")
    client.set_terminated(run_id)
    return run_id


def log_candidates_table(client: MlflowClient, run_id: str, views: Sequence[CandidateView]) -> None:
    """The batch as ``candidates.csv`` on the round run (one row per candidate)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["candidate_id", "formula", "space_group", *LATTICE_KEYS, "pred_mean", "pred_std",
                     "acquisition", "nearest_known_distance", "state", "review"])
    for v in views:
        writer.writerow([v.candidate_id, v.crystal.formula, v.crystal.space_group,
                         *(round(x, 4) for x in v.crystal.lattice), v.proxy_mean, v.proxy_std, v.acquisition,
                         v.nearest_known_distance, v.state, v.review])
    client.log_text(run_id, out.getvalue(), "candidates.csv")


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> dict[str, str]:
    """Candidate id -> run id of the child runs under a round run."""
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=50_000
    )
    return {r.data.tags[CANDIDATE_TAG]: r.info.run_id for r in runs if CANDIDATE_TAG in r.data.tags}


def set_state(client: MlflowClient, run_id: str, *, state: str, review: str | None = None) -> None:
    """Mirror a candidate's lifecycle state (and review) onto its child run."""
    tags = [RunTag(STATE_TAG, state)] + ([RunTag(REVIEW_TAG, review)] if review else [])
    client.log_batch(run_id, tags=tags)


def plot_structure(structure: Structure, *, title: str = "") -> Figure:
    """A picture of the unit cell with its atoms, drawn by ASE in two projections."""
    from ase.visualize.plot import plot_atoms
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    for ax, rotation in zip(axes, ("10x,20y,0z", "-80x,0y,0z"), strict=True):
        plot_atoms(atoms, ax, rotation=rotation, radii=0.4)
        ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text[:6000]


def _now_ms() -> int:
    return int(time.time() * 1000)
