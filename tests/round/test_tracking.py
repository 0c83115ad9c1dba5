"""MLflow stores: a new SQLite store starts from the cached schema and never replaces an existing one."""

from __future__ import annotations

from aloop.space.cache import cache_path
from aloop.tracking import client_for, ensure_experiment, log_curve, log_metrics


def test_a_new_sqlite_store_is_a_working_mlflow_store(tmp_path):
    client = client_for(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")
    [default] = client.search_experiments()  # created by this store, not copied from the cached schema
    assert default.name == "Default" and str(cache_path("x", "").parent) not in default.artifact_location
    experiment_id = ensure_experiment(client, "c", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment_id).info.run_id
    log_metrics(client, run_id, {"x": 1.0})
    assert client.get_run(run_id).data.metrics == {"x": 1.0}


def test_an_existing_store_is_opened_as_it_is(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = ensure_experiment(client_for(uri), "c", artifact_location=str(tmp_path / "artifacts"))
    assert client_for(uri).get_experiment_by_name("aloop/c").experiment_id == experiment_id


def test_metrics_and_curves_logged_again_keep_one_value_per_step(tmp_path):
    client = client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(ensure_experiment(client, "c", artifact_location=str(tmp_path))).info.run_id
    for _ in range(2):  # a stage redone after a crash
        log_metrics(client, run_id, {"mae": 0.5, "nan": float("nan")})
        log_curve(client, run_id, "loss", [3.0, 2.0, 1.0])
    assert [m.value for m in client.get_metric_history(run_id, "mae")] == [0.5]
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [0, 1, 2]
    assert "nan" not in client.get_run(run_id).data.metrics
