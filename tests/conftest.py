"""Fixtures shared by the whole suite: ``store_url``, an empty experiment database, and ``shared_data``.

``store_url`` runs every test that uses it on SQLite (a file in ``tmp_path``) and, when
``ALOOP_TEST_POSTGRES_URL`` is set, on PostgreSQL too, in a fresh schema dropped after
the test (the URL sets ``search_path`` to it, so subprocesses see the same schema).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from aloop.store import Store, open_store
from benchmarks import SHARED_DATA

POSTGRES_ENV = "ALOOP_TEST_POSTGRES_URL"


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
