"""A finished smoke round (cold start, auto review, CHGNet), shared by the round tests."""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import select

from aloop.config import CONFIG_DIR, Config, load_config
from aloop.round import run_round
from aloop.store import Candidate, Label, open_store
from aloop.store.models import Round
from aloop.report import RoundReport


def smoke_overrides(root: Path, *overrides: str) -> list[str]:
    """``--set`` overrides that put every store and folder of the smoke config under ``root``."""
    return [f"store.url=sqlite:///{root / 'aloop.db'}", f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
            f"tracking.artifact_location={root / 'mlartifacts'}", f"workdir={root / 'work'}",
            f"data.mp.cache_dir={root / 'mp_cache'}", *overrides]


def smoke_config(root: Path, *overrides: str) -> Config:
    """The smoke config with every store and folder under ``root``."""
    return load_config(CONFIG_DIR / "smoke.yaml", smoke_overrides(root, *overrides))


@pytest.fixture(autouse=True)
def _no_outside_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALOOP_DB_URL", "MLFLOW_TRACKING_URI", "MP_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@dataclass(frozen=True)
class Outcome:
    """What a campaign's store holds, by crystal: comparable between two campaigns with the same seed."""

    candidates: list[tuple[str, str]]
    """(canonical hash, state) of every candidate."""
    labels: list[tuple[str, str, str]]
    """(canonical hash, property, status) of every candidate label."""
    stages: list[str | None]
    """Stage of every round."""


def outcome(cfg: Config) -> Outcome:
    store = open_store(cfg.db_url)
    with store.session() as session:
        candidates = sorted((c.canonical_hash, c.state) for c in session.scalars(select(Candidate)))
        labels = sorted((c.canonical_hash, lab.property, lab.status) for lab, c in
                        session.execute(select(Label, Candidate).join(Candidate)).tuples())
        stages = [r.stage for r in session.scalars(select(Round).order_by(Round.number))]
    store.close()
    return Outcome(candidates, labels, stages)


@dataclass(frozen=True)
class FinishedRound:
    cfg: Config
    report: RoundReport
    outcome: Outcome
    """The store right after the round (later tests may run more rounds on ``cfg``)."""
    terminal: str
    """What reached the terminal: the round's console, stderr and Python warnings as Python shows them."""


@pytest.fixture(scope="session")
def smoke_round(tmp_path_factory: pytest.TempPathFactory) -> FinishedRound:
    """One uninterrupted smoke round from an empty campaign (no Materials Project data)."""
    mp = pytest.MonkeyPatch()
    for name in ("ALOOP_DB_URL", "MLFLOW_TRACKING_URI", "MP_API_KEY"):
        mp.delenv(name, raising=False)
    cfg = smoke_config(tmp_path_factory.mktemp("smoke"))
    try:
        terminal = io.StringIO()
        mp.setattr(warnings, "showwarning", lambda message, category, filename, lineno, file=None, line=None:
                   terminal.write(warnings.formatwarning(message, category, filename, lineno, line)))
        with contextlib.redirect_stderr(terminal):
            report = run_round(cfg, progress=False, console=Console(file=terminal, width=200))
        return FinishedRound(cfg, report, outcome(cfg), terminal.getvalue())
    finally:
        mp.undo()
