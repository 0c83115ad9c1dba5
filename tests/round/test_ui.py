"""The MLflow UI, served by `aloop ui` on 127.0.0.1, shows the round's candidate runs in Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from aloop.config import CONFIG_DIR

CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_mlflow_ui_shows_candidate_runs(smoke_round, tmp_path):
    from playwright.sync_api import sync_playwright

    cfg = smoke_round.cfg
    client = MlflowClient(tracking_uri=cfg.tracking_uri)
    experiment = client.get_experiment_by_name(f"aloop/{cfg.campaign}")
    parent = client.search_runs([experiment.experiment_id], filter_string="tags.`aloop.kind` = 'round'",
                                order_by=["attributes.start_time ASC"])[0]
    children = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    names = sorted({r.info.run_name for r in children})
    port = _free_port()
    ui = subprocess.Popen([sys.executable, "-c", "from aloop.cli import main; main()", "ui",
                           "--config", str(CONFIG_DIR / "smoke.yaml"), "--set", f"tracking.uri={cfg.tracking_uri}",
                           "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/health", ui)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.goto(f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs")
            page.get_by_text(parent.info.run_name, exact=True).wait_for(timeout=60_000)
            expanders = page.locator("button[data-component-id*=runnamecellrenderer]")
            for i in range(expanders.count()):
                expanders.nth(i).click()
            for name in names:
                page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
            page.screenshot(path=str(tmp_path / "mlflow-ui.png"))
            browser.close()
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
    assert (tmp_path / "mlflow-ui.png").stat().st_size > 10_000
