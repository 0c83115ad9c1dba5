"""`aloop ui` prints the link to the latest round's candidate runs and serves the MLflow UI on 127.0.0.1,
where Chromium shows them with their formulas and review tags; it exits 1 when it cannot serve."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from aloop.config import CONFIG_DIR
from aloop.tracking import (
    CANDIDATE_TAG,
    KIND_TAG,
    REVIEW_TAG,
    ROUND_TAG,
    SHARED_VIEW_TAG,
    candidates_url,
    child_runs,
    client_for,
    ensure_experiment,
    find_experiment,
    start_round_run,
)

from .conftest import smoke_overrides

CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ui_command(overrides: list[str], port: int) -> list[str]:
    return [sys.executable, "-c", "from aloop.cli import main; main()", "ui", "--config", str(CONFIG_DIR / "smoke.yaml"),
            *(arg for override in overrides for arg in ("--set", override)), "--port", str(port)]


def _wait_until_up(url: str, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"`aloop ui` exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


def _stop(process: subprocess.Popen) -> int:
    """SIGTERM to `aloop ui` alone (it passes it on to the server); its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def _add_candidate_run(client, experiment_id: str, parent_run_id: str, *, round_number: int, candidate_id: str) -> str:
    return client.create_run(experiment_id, tags={"mlflow.parentRunId": parent_run_id, ROUND_TAG: str(round_number),
                                                  KIND_TAG: "candidate", CANDIDATE_TAG: candidate_id}).info.run_id


def test_candidates_url_opens_a_saved_view_of_the_rounds_candidate_runs(tmp_path):
    client = client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = ensure_experiment(client, "c", artifact_location=str(tmp_path))
    rounds = {n: start_round_run(client, experiment_id, round_number=n, round_key=f"k{n}", config={}) for n in (1, 2)}
    _add_candidate_run(client, experiment_id, rounds[1], round_number=1, candidate_id="1")
    candidates = [_add_candidate_run(client, experiment_id, rounds[2], round_number=2, candidate_id=str(i))
                  for i in (2, 3)]

    url = candidates_url(client, experiment_id, round_number=2, port=5001)

    assert url == (f"http://127.0.0.1:5001/#/experiments/{experiment_id}/runs"
                   "?workflowType=machine_learning&viewStateShareKey=aloop-round-2")
    tag = client.get_experiment(experiment_id).tags[f"{SHARED_VIEW_TAG}aloop-round-2"]
    view = json.loads(tag)
    state = json.loads(view["state"])
    assert view["name"] == "round 2 candidates"
    assert {"params.`formula`", "params.`space_group`", "params.`origin`", f"tags.`{REVIEW_TAG}`",
            "metrics.`pred_mean`", "metrics.`pred_std`", "metrics.`acquisition`",
            "metrics.`nearest_known_feature_distance`"} <= set(state["selectedColumns"])
    found = client.search_runs([experiment_id], filter_string=state["searchFilter"])
    assert sorted(r.info.run_id for r in found) == sorted(candidates)  # not the round run, not round 1
    assert candidates_url(client, experiment_id, round_number=2, port=5001) == url
    assert client.get_experiment(experiment_id).tags[f"{SHARED_VIEW_TAG}aloop-round-2"] == tag  # saved once


def test_only_the_latest_rounds_keep_their_saved_view(tmp_path):
    client = client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = ensure_experiment(client, "c", artifact_location=str(tmp_path))
    client.set_experiment_tag(experiment_id, f"{SHARED_VIEW_TAG}someone-elses", "{}")
    for n in (1, 2, 3, 12):
        candidates_url(client, experiment_id, round_number=n)
    views = {k for k in client.get_experiment(experiment_id).tags if k.startswith(SHARED_VIEW_TAG)}
    assert views == {f"{SHARED_VIEW_TAG}{key}" for key in ("aloop-round-3", "aloop-round-12", "someone-elses")}


def test_ui_exits_1_when_its_port_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(_ui_command(smoke_overrides(tmp_path), port), capture_output=True, text=True,
                                timeout=120)
    assert result.returncode == 1
    assert f"cannot serve the MLflow UI on 127.0.0.1:{port}: Address already in use" in result.stderr


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_the_printed_link_shows_the_candidates_formulas_and_review_tags(smoke_round, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    cfg = smoke_round.cfg
    client = client_for(cfg.tracking_uri)
    experiment_id = find_experiment(client, cfg.campaign)
    [parent] = client.search_runs([experiment_id], filter_string=f"tags.`{KIND_TAG}` = 'round'")
    candidates = child_runs(client, experiment_id, parent.info.run_id)
    port = _free_port()
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        ui = subprocess.Popen(_ui_command([f"store.url={cfg.db_url}", f"tracking.uri={cfg.tracking_uri}"], port),
                              stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/health", ui)
        [link] = re.findall(r"^round 1's candidates: (\S+)$", log.read_text(), flags=re.MULTILINE)
        assert link == smoke_round.report.review_url.replace("127.0.0.1:5000/", f"127.0.0.1:{port}/")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(link)
            for run in candidates:
                row = page.locator(f'.ag-row[row-id="{run.info.run_id}"]')
                expect(row.locator('.ag-cell[col-id="params.`formula`"]')).to_have_text(
                    run.data.params["formula"], timeout=60_000)
                expect(row.locator(f'.ag-cell[col-id="tags.`{REVIEW_TAG}`"]')).to_have_text(run.data.tags[REVIEW_TAG])
                expect(row.locator(f'.ag-cell[col-id="tags.`{REVIEW_TAG}`"]')).to_be_in_viewport()
            expect(page.locator(f'.ag-row[row-id="{parent.info.run_id}"]')).to_have_count(0)  # candidates only
            page.screenshot(path=str(tmp_path / "mlflow-ui.png"))
            browser.close()
    finally:
        status = _stop(ui)
    assert status == 0, log.read_text()[-2000:]
    assert (tmp_path / "mlflow-ui.png").stat().st_size > 10_000
