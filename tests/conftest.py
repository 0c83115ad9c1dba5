"""Fixtures shared by the whole suite: ``store_url``, an empty experiment database, ``shared_data``,
and ``smoke_problem`` (a proxy fitted on a synthetic target over the smoke space).

``store_url`` runs every test that uses it on SQLite (a file in ``tmp_path``) and, when
``ALOOP_TEST_POSTGRES_URL`` is set, on PostgreSQL too, in a fresh schema dropped after
the test (the URL sets ``search_path`` to it, so subprocesses see the same schema).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from aloop.config import CONFIG_DIR, Config, load_config
from aloop.data import TrainingSet
from aloop.gfn import CrystalEnv, build_policy, sample
from aloop.proxy import Proxy, fit_proxy
from aloop.space import CrystalSpace
from aloop.space.features import featurize
from aloop.store import Store, open_store

POSTGRES_ENV = "ALOOP_TEST_POSTGRES_URL"
SHARED_DATA = Path(os.environ.get("ALOOP_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
"""The shared Materials Project data (``$ALOOP_SHARED_DATA`` or ``<repo>/../shared/data``), never in the repository."""


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database: SQLite always, PostgreSQL when ``ALOOP_TEST_POSTGRES_URL`` is set."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'aloop.db'}"
        return
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    schema = f"aloop_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield make_url(base).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """The experiment database at ``store_url``, migrated, closed after the test."""
    opened = open_store(store_url)
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<repo>/../shared/data`` or ``$ALOOP_SHARED_DATA``; the test is skipped when absent."""
    if not (SHARED_DATA / "mp_cgcnn36k" / "summary.csv.gz").exists():
        pytest.skip(f"shared Materials Project data not found at {SHARED_DATA}")
    return SHARED_DATA


@dataclass(frozen=True)
class SmokeProblem:
    """The smoke config and space, 60 training and 20 test crystals of a synthetic target, a proxy of the 60."""

    cfg: Config
    env: CrystalEnv
    train: TrainingSet
    test: TrainingSet
    proxy: Proxy


@pytest.fixture(scope="session")
def smoke_problem() -> SmokeProblem:
    """80 uniform samples of the smoke space labelled by a smooth function of their features."""
    cfg = load_config(CONFIG_DIR / "smoke.yaml")
    env = CrystalEnv.from_space(CrystalSpace.from_settings(cfg.space), cfg.gfn)
    crystals = sample(env, build_policy(env, cfg.gfn), 80, seed=0)
    x = featurize(crystals)
    y = (x[:, :5].sum(dim=1) - x[:, :5].sum(dim=1).mean()).double()
    data = TrainingSet(target="formation_energy_per_atom", crystals=crystals, values=y,
                       source=torch.zeros(len(y), dtype=torch.long), sources=("synthetic",),
                       ids=tuple(map(str, range(len(y)))))
    train, test = data.subset(torch.arange(60)), data.subset(torch.arange(60, 80))
    return SmokeProblem(cfg, env, train, test, fit_proxy(train, cfg.proxy, seed=0, progress=False))
