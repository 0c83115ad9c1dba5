"""MLflow tracking: one experiment per campaign, a parent run per round, a child run per
batch candidate carrying the review tag a person edits in the MLflow UI, and the round's
proxy as an MLflow (pyfunc) model.

Everything goes through ``MlflowClient`` (no fluent global state), so a resumed round
finds its runs again by id and tag instead of creating duplicates.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow.pyfunc  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric, Param, Run, RunTag  # noqa: E402
from mlflow.models import Model, ModelSignature  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.types import ColSpec, Schema  # noqa: E402
from pymatgen.core import Composition, Structure  # noqa: E402
from sqlalchemy import create_engine  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from aloop.data.table import crystal_table  # noqa: E402
from aloop.proxy import Proxy  # noqa: E402
from aloop.space import LATTICE_KEYS, Crystal, CrystalBatch, space_group  # noqa: E402
from aloop.space.cache import cache_path  # noqa: E402
from aloop.space.wyckoff import parse_sites  # noqa: E402

REVIEW_TAG = "aloop.review"
STATE_TAG = "aloop.state"
CANDIDATE_TAG = "aloop.candidate_id"
ROUND_TAG = "aloop.round"
ROUND_KEY_TAG = "aloop.round_key"
KIND_TAG = "aloop.kind"
REVIEW_STATES = ("pending", "approved", "rejected")
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_VIEW = "custom_model_development"
PROXY_MODEL = "proxy"
"""Name of the round's logged proxy model."""
PROXY_SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "formula"), ColSpec("long", "space_group"),
                   *(ColSpec("double", k) for k in LATTICE_KEYS), ColSpec("string", "wyckoff", required=False)]),
    outputs=Schema([ColSpec("double", "mean"), ColSpec("double", "std")]))
PROXY_REQUIREMENTS = ("torch", "botorch", "gpytorch", "pymatgen", "pyxtal", "mlflow")
"""Packages the proxy model imports (and aloop itself, installed from its repository)."""
PROXY_MODEL_CODE = "import mlflow\nfrom aloop.tracking import ProxyModel\n\nmlflow.models.set_model(ProxyModel())\n"
"""The model's code (MLflow's models from code: no pickle)."""
UI_PORT = 5000
"""Port of the MLflow UI that ``aloop ui`` (``make ui``) serves on 127.0.0.1 unless told ``--port``."""
SHARED_VIEW_TAG = "mlflow.sharedViewState."
"""Prefix of the experiment tags that hold the MLflow UI's shared views (opened by ``?viewStateShareKey=``)."""
CANDIDATE_VIEW_KEY = "aloop-round-"
"""Share key of a round's candidates view, without the round number."""
CANDIDATE_VIEW_ROUNDS = 10
"""Rounds whose candidates view stays saved on the experiment (the MLflow UI lets a person save
views only while an experiment holds fewer than 40)."""


@dataclass(frozen=True)
class CandidateView:
    """What a reviewer sees of one batch candidate."""

    candidate_id: str
    crystal: Crystal
    proxy_mean: float
    proxy_std: float
    acquisition: float
    nearest_known_feature_distance: float | None
    """Distance to the nearest training crystal (Materials Project and labels) in standardised feature
    space (``aloop.selection.nearest_distance``): Materials Project entries come without atoms, so
    it is not a structural distance."""
    state: str
    review: str
    origin: str | None
    """Where its atoms came from (``aloop.proposal.origin``); ``None`` when not recorded."""
    structure: Structure | None


def client_for(tracking_uri: str) -> MlflowClient:
    """An MLflow client bound to one tracking store (no global ``set_tracking_uri``).

    A SQLite store that does not exist yet starts as a copy of an empty one with MLflow's
    schema, built once per MLflow version in aloop's cache: running MLflow's schema
    migrations on every new file took 4-8 s of each fresh round on the 2-core machine.
    """
    url = make_url(tracking_uri) if tracking_uri.startswith("sqlite:///") else None
    if url is not None and url.database and not Path(url.database).exists():
        _copy_new(_schema_template(), Path(url.database))
    return MlflowClient(tracking_uri=tracking_uri)


def _schema_template() -> Path:
    """An empty SQLite tracking store with the installed MLflow's schema (no experiment yet)."""
    from mlflow.store.db.utils import _initialize_tables

    path = cache_path(f"mlflow{version('mlflow')}-schema", ".db")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            engine = create_engine(f"sqlite:///{Path(tmp) / 'schema.db'}")
            _initialize_tables(engine)
            engine.dispose()
            os.replace(Path(tmp) / "schema.db", path)
    return path


def _copy_new(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` unless ``target`` appeared meanwhile (never overwrites a store)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        shutil.copyfile(source, Path(tmp) / target.name)
        with contextlib.suppress(FileExistsError):
            os.link(Path(tmp) / target.name, target)


def experiment_name(campaign: str) -> str:
    """The name of a campaign's MLflow experiment, e.g. ``aloop/default``."""
    return f"aloop/{campaign}"


def find_experiment(client: MlflowClient, campaign: str) -> str | None:
    """The campaign's experiment id, ``None`` before its first round (nothing is created)."""
    experiment = client.get_experiment_by_name(experiment_name(campaign))
    return None if experiment is None else experiment.experiment_id


def ensure_experiment(client: MlflowClient, campaign: str, *, artifact_location: str) -> str:
    """The campaign's experiment id, created on first use and set to the model-training view."""
    name = experiment_name(campaign)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = Path(artifact_location).resolve().as_uri() if "://" not in artifact_location else artifact_location
        experiment_id = client.create_experiment(name, artifact_location=f"{location}/{campaign}")
    else:
        experiment_id = experiment.experiment_id
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_VIEW)
    return experiment_id


def experiment_url(experiment_id: str, *, port: int = UI_PORT, view: str | None = None) -> str:
    """The experiment's runs table in the model-training view of the MLflow UI served by ``aloop ui``.

    Args:
        port: the UI's port on 127.0.0.1.
        view: the key of a shared view saved on the experiment (``save_candidates_view``) to open.
    """
    query = {"workflowType": "machine_learning", **({"viewStateShareKey": view} if view else {})}
    return f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs?{urllib.parse.urlencode(query)}"


def candidates_url(client: MlflowClient, experiment_id: str, *, round_number: int, port: int = UI_PORT) -> str:
    """The link to a round's candidate runs in the MLflow UI, their review columns shown.

    Saves the round's view on the experiment first (``save_candidates_view``).

    Example:
        >>> candidates_url(client, "1", round_number=3)  # doctest: +SKIP
        'http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning&viewStateShareKey=aloop-round-3'
    """
    return experiment_url(experiment_id, port=port,
                          view=save_candidates_view(client, experiment_id, round_number=round_number))


def save_candidates_view(client: MlflowClient, experiment_id: str, *, round_number: int) -> str:
    """Save the MLflow UI view of a round's candidate runs on the experiment; returns its share key.

    The view, a saved view of MLflow 3.17 (experiment tag ``mlflow.sharedViewState.aloop-round-<n>``,
    listed under "Views" as "round <n> candidates"), lists the runs tagged ``aloop.kind =
    candidate`` and ``aloop.round = <n>``, highest acquisition first, as a flat list (the UI
    nests child runs under their round run only when sorted by creation time), with the columns
    formula, space group, Wyckoff sites, origin of the atoms, review tag, predicted mean and std, acquisition,
    feature distance to the nearest known crystal and state. The UI takes columns only from such a view: URL
    parameters set the filter and sort, not columns. The tag is written only when missing or
    different; the views of rounds ``CANDIDATE_VIEW_ROUNDS`` or more before this one are deleted.
    """
    key = f"{CANDIDATE_VIEW_KEY}{round_number}"
    columns = [_column("params", "formula"), _column("params", "space_group"), _column("params", "wyckoff"),
               _column("params", "origin"), _column("tags", REVIEW_TAG),
               _column("metrics", "pred_mean"), _column("metrics", "pred_std"), _column("metrics", "acquisition"),
               _column("metrics", "nearest_known_feature_distance"), _column("tags", STATE_TAG)]
    state = json.dumps({
        "searchFilter": f"tags.`{ROUND_TAG}` = '{round_number}' AND tags.`{KIND_TAG}` = 'candidate'",
        "orderByKey": _column("metrics", "acquisition"), "orderByAsc": False, "selectedColumns": columns,
        "columnOrder": [_column("attributes", "Run Name"), *columns, "runDateAndNestInfo", "duration"]})
    tags = client.get_experiment(experiment_id).tags
    saved = tags.get(SHARED_VIEW_TAG + key)
    if saved is None or json.loads(saved).get("state") != state:
        now = _now_ms()
        client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + key, json.dumps(
            {"name": f"round {round_number} candidates", "createdAt": now, "updatedAt": now, "state": state}))
    prefix = SHARED_VIEW_TAG + CANDIDATE_VIEW_KEY
    for tag in tags:
        view_round = tag[len(prefix):] if tag.startswith(prefix) else ""
        if view_round.isdigit() and int(view_round) <= round_number - CANDIDATE_VIEW_ROUNDS:
            client.delete_experiment_tag(experiment_id, tag)
    return key


def _column(kind: str, key: str) -> str:
    """The MLflow UI's id of a runs-table column, e.g. ``params.`formula```."""
    return f"{kind}.`{key}`"


def start_round_run(client: MlflowClient, experiment_id: str, *, round_number: int, round_key: str,
                    config: Mapping[str, Any]) -> str:
    """The parent run of a round, with the flattened config as params; returns its id.

    Args:
        round_key: identifies the round's row in the experiment database (tag ``aloop.round_key``):
            a run created for it by a process killed before it could store the run id is reused.
    """
    found = client.search_runs([experiment_id], filter_string=f"tags.`{ROUND_KEY_TAG}` = '{round_key}'",
                               max_results=1)
    if found:
        return found[0].info.run_id
    params = [Param(k, _param_value(v)) for k, v in sorted(_flatten(config).items())]
    run = client.create_run(experiment_id, run_name=f"round-{round_number}",
                            tags={ROUND_TAG: str(round_number), KIND_TAG: "round", ROUND_KEY_TAG: round_key})
    for start in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[start:start + 100])
    return run.info.run_id


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float]) -> None:
    """Log finite scalar metrics (step 0) in one batch; keys the run already has are kept as they are.

    NaN/inf are skipped (MLflow rejects them in SQL stores). A stage redone after a crash
    logs its metrics again: skipping those already there keeps one value per metric.
    """
    _log_metric_batch(client, run_id, _new_metrics(metrics, client.get_run(run_id).data.metrics))


def _new_metrics(metrics: Mapping[str, float], logged: Mapping[str, float]) -> list[Metric]:
    """The finite ``metrics`` not in ``logged``, as step-0 MLflow metrics."""
    now = _now_ms()
    return [Metric(k, float(v), now, 0) for k, v in metrics.items() if k not in logged and math.isfinite(float(v))]


def log_curve(client: MlflowClient, run_id: str, key: str, values: Sequence[float]) -> None:
    """Log a curve (e.g. the GFlowNet loss per step) as one metric with steps; steps already logged are kept."""
    logged = {m.step for m in client.get_metric_history(run_id, key)}
    now = _now_ms()
    _log_metric_batch(client, run_id, [Metric(key, float(v), now, i) for i, v in enumerate(values)
                                       if i not in logged and math.isfinite(float(v))])


def _log_metric_batch(client: MlflowClient, run_id: str, metrics: Sequence[Metric]) -> None:
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start:start + 1000])


def log_figure(client: MlflowClient, run_id: str, figure: Figure, name: str) -> None:
    """Save a matplotlib figure as a PNG artifact under ``plots/`` and close it."""
    client.log_figure(run_id, figure, f"plots/{name}.png")
    plt.close(figure)


def log_candidates(client: MlflowClient, experiment_id: str, parent_run_id: str, *,
                   round_number: int, candidates: Iterable[CandidateView]) -> dict[str, str]:
    """One child run per candidate (params, metrics, tags, CIF and picture); idempotent.

    Returns:
        candidate id -> child run id. A candidate whose child run under this parent is
        finished keeps it as it is; one whose logging was cut short (a killed round) has
        it completed in the same run, so no candidate ever gets two runs.
    """
    existing = {r.data.tags[CANDIDATE_TAG]: r for r in child_runs(client, experiment_id, parent_run_id)}
    run_ids = {candidate_id: run.info.run_id for candidate_id, run in existing.items()}
    for view in candidates:
        run = existing.get(view.candidate_id)
        if run is not None and run.info.status == "FINISHED":
            continue
        run_id = run.info.run_id if run is not None else _create_candidate_run(
            client, experiment_id, parent_run_id, round_number=round_number, view=view)
        _log_candidate(client, run_id, view, logged=run.data.metrics if run is not None else {})
        run_ids[view.candidate_id] = run_id
    return run_ids


def _create_candidate_run(client: MlflowClient, experiment_id: str, parent_run_id: str, *,
                          round_number: int, view: CandidateView) -> str:
    crystal = view.crystal
    return client.create_run(
        experiment_id,
        run_name=f"{crystal.composition.reduced_formula}-sg{crystal.space_group}",
        tags={"mlflow.parentRunId": parent_run_id, ROUND_TAG: str(round_number), KIND_TAG: "candidate",
              CANDIDATE_TAG: view.candidate_id, REVIEW_TAG: view.review, STATE_TAG: view.state},
    ).info.run_id


def _log_candidate(client: MlflowClient, run_id: str, view: CandidateView, *, logged: Mapping[str, float]) -> None:
    """Params (``wyckoff``: the sites as text, empty without; ``origin`` where recorded), metrics (those not
    ``logged`` yet), CIF and picture of one candidate, then mark its run finished."""
    crystal = view.crystal
    params = {"formula": crystal.formula, "space_group": crystal.space_group, "wyckoff": crystal.wyckoff,
              "crystal_system": space_group(crystal.space_group).crystal_system,
              **{k: round(v, 4) for k, v in zip(LATTICE_KEYS, crystal.lattice, strict=True)},
              **({"origin": view.origin} if view.origin else {})}
    metrics = {"pred_mean": view.proxy_mean, "pred_std": view.proxy_std, "acquisition": view.acquisition}
    if view.nearest_known_feature_distance is not None:
        metrics["nearest_known_feature_distance"] = view.nearest_known_feature_distance
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()],
                     metrics=_new_metrics(metrics, logged))
    if view.structure is not None:
        with tempfile.TemporaryDirectory() as tmp:
            cif = Path(tmp) / f"{view.candidate_id}.cif"
            view.structure.to(filename=str(cif))
            client.log_artifact(run_id, str(cif))
        client.log_figure(run_id, plot_structure(view.structure, title=crystal.formula), "structure.png")
        plt.close("all")
    client.set_terminated(run_id)


def log_candidates_table(client: MlflowClient, run_id: str, views: Sequence[CandidateView]) -> None:
    """The batch as ``candidates.csv`` on the round run (one row per candidate, ``wyckoff`` empty without sites,
    ``origin`` empty where not recorded)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["candidate_id", "formula", "space_group", *LATTICE_KEYS, "wyckoff", "pred_mean", "pred_std",
                     "acquisition", "nearest_known_feature_distance", "state", "review", "origin"])
    for v in views:
        writer.writerow([v.candidate_id, v.crystal.formula, v.crystal.space_group,
                         *(round(x, 4) for x in v.crystal.lattice), v.crystal.wyckoff, v.proxy_mean, v.proxy_std,
                         v.acquisition,
                         v.nearest_known_feature_distance, v.state, v.review, v.origin or ""])
    client.log_text(run_id, out.getvalue(), "candidates.csv")


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[Run]:
    """The candidate runs under a round run (deleted runs excluded)."""
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=50_000
    )
    return [r for r in runs if CANDIDATE_TAG in r.data.tags]


def set_state(client: MlflowClient, run_id: str, *, state: str, review: str | None = None) -> None:
    """Mirror a candidate's lifecycle state (and review) onto its child run."""
    tags = [RunTag(STATE_TAG, state)] + ([RunTag(REVIEW_TAG, review)] if review else [])
    client.log_batch(run_id, tags=tags)


class ProxyModel(mlflow.pyfunc.PythonModel):
    """The proxy as an MLflow pyfunc model: a table of crystals in, predicted mean and std out.

    Input columns: ``formula`` (atoms of the conventional cell, e.g. ``Li4 O2``), ``space_group``
    (1-230), ``a, b, c`` (Angstrom), ``alpha, beta, gamma`` (degrees), optionally ``wyckoff`` (the
    sites as text, e.g. ``Li:8c O:4a``; absent or empty: no sites). Output columns ``mean``
    and ``std`` of the target for the proxy's reference source, without label noise (the
    ``pred_mean`` and ``pred_std`` of the candidate runs).

    Example:
        >>> model = mlflow.pyfunc.load_model(f"models:/{model_id}")  # doctest: +SKIP
        >>> model.predict(pd.DataFrame({"formula": ["Li4 O2"], "space_group": [225], "a": [4.6], ...}))
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.proxy = Proxy.load(Path(context.artifacts["proxy"]))

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        return predict_table(self.proxy, model_input)


def predict_table(proxy: Proxy, table: pd.DataFrame) -> pd.DataFrame:
    """``mean`` and ``std`` (target units, no label noise) of the crystals in ``table`` (``ProxyModel``'s columns)."""
    crystals = [Crystal(int(row["space_group"]), Composition(row["formula"]),
                        tuple(float(row[k]) for k in LATTICE_KEYS),  # type: ignore[arg-type]
                        parse_sites(_text(row.get("wyckoff")), int(row["space_group"])))
                for _, row in table.iterrows()]
    elements = sorted({el.symbol for crystal in crystals for el in crystal.composition})
    prediction = proxy.predict(CrystalBatch.from_crystals(crystals, elements), observation_noise=False)
    return pd.DataFrame({"mean": prediction.mean.numpy(), "std": prediction.std.numpy()}, index=table.index)


def log_proxy_model(client: MlflowClient, experiment_id: str, run_id: str, proxy_dir: Path, *,
                    example: Sequence[Crystal]) -> str:
    """Log the proxy saved in ``proxy_dir`` as the round run's pyfunc model ``proxy``; returns its model id.

    Args:
        example: a few crystals, the model's input example.

    Idempotent: a round redoing the stage completes the model it started instead of adding one.
    """
    found = client.search_logged_models(
        [experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{PROXY_MODEL}'", max_results=1)
    model = found[0] if found else client.create_logged_model(experiment_id, name=PROXY_MODEL, source_run_id=run_id,
                                                             model_type="proxy")
    if model.status == LoggedModelStatus.READY:
        return model.model_id
    if not found:
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    metadata = Model(artifact_path=model.artifact_location, run_id=run_id, model_id=model.model_id,
                     model_uuid=model.model_id)
    requirements = [f"{name}=={version(name)}" for name in PROXY_REQUIREMENTS]
    with tempfile.TemporaryDirectory() as tmp:
        code, path = Path(tmp) / "proxy_model.py", Path(tmp) / "model"
        code.write_text(PROXY_MODEL_CODE)
        mlflow.pyfunc.save_model(path, python_model=str(code), artifacts={"proxy": str(proxy_dir)},
                                 signature=PROXY_SIGNATURE, input_example=crystal_table(example),
                                 pip_requirements=requirements, mlflow_model=metadata)
        client.log_model_artifacts(model.model_id, str(path))
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    return model.model_id


def plot_structure(structure: Structure, *, title: str = "") -> Figure:
    """A picture of the unit cell with its atoms, drawn by ASE in two projections.

    ASE's geometry (``PlottingVariables``: projection, depth order, cell edges) drawn as one matplotlib
    collection per view: ``plot_atoms`` adds each atom and edge as its own patch, 0.15 s per view of 16 atoms.
    """
    from ase.io.utils import PlottingVariables, make_patch_list
    from matplotlib.collections import PatchCollection
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    for ax, rotation in zip(axes, ("10x,20y,0z", "-80x,0y,0z"), strict=True):
        view = PlottingVariables(atoms, rotation=rotation, radii=0.4)
        ax.add_collection(PatchCollection(make_patch_list(view), match_original=True))
        ax.set(xlim=(0, view.w), ylim=(0, view.h), aspect="equal")
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


def _text(cell: Any) -> str:
    """A table cell as text: ``''`` for a missing one (``None``, NaN as pandas reads an empty CSV cell)."""
    return "" if cell is None or (isinstance(cell, float) and math.isnan(cell)) else str(cell)


def _now_ms() -> int:
    return int(time.time() * 1000)
