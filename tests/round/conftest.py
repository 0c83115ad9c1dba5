"""A finished smoke round (cold start, auto review, CHGNet), shared by the round tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from aloop.config import CONFIG_DIR, Config, load_config
from aloop.round import run_round
from aloop.summary import RoundSummary


def smoke_config(root: Path, *overrides: str) -> Config:
    """The smoke config with every store and folder under ``root``."""
    return load_config(CONFIG_DIR / "smoke.yaml", [
        f"store.url=sqlite:///{root / 'aloop.db'}", f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
        f"tracking.artifact_location={root / 'mlartifacts'}", f"workdir={root / 'work'}",
        f"data.mp.cache_dir={root / 'mp_cache'}", *overrides])


@pytest.fixture(autouse=True)
def _no_outside_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALOOP_DB_URL", "MLFLOW_TRACKING_URI", "MP_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@dataclass(frozen=True)
class FinishedRound:
    cfg: Config
    summary: RoundSummary


@pytest.fixture(scope="session")
def smoke_round(tmp_path_factory: pytest.TempPathFactory) -> FinishedRound:
    """One uninterrupted smoke round from an empty campaign (no Materials Project data)."""
    mp = pytest.MonkeyPatch()
    for name in ("ALOOP_DB_URL", "MLFLOW_TRACKING_URI", "MP_API_KEY"):
        mp.delenv(name, raising=False)
    cfg = smoke_config(tmp_path_factory.mktemp("smoke"))
    try:
        return FinishedRound(cfg, run_round(cfg, progress=False))
    finally:
        mp.undo()
