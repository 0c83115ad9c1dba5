"""Migrations of databases made by earlier aloop versions: data kept, schema equal to the models'."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.exc import IntegrityError

from aloop.store import Label, OracleJob, Store, open_store
from aloop.store.engine import MIGRATIONS
from aloop.store.models import Base

AT_0001 = [  # a campaign whose one candidate failed, as revision 0001 stored it
    "INSERT INTO campaign (id, name, created_at) VALUES (1, 'old', '2026-11-30 10:00:00')",
    ("INSERT INTO round (id, campaign_id, number, config, seed, started_at, updated_at) "
     "VALUES (1, 1, 1, '{}', 0, '2026-11-30 10:00:00', '2026-11-30 10:00:00')"),
    ("INSERT INTO candidate (id, campaign_id, round_id, space_group, formula, a, b, c, alpha, beta, gamma, "
     "canonical_hash, review, state, version, created_at, updated_at) VALUES (1, 1, 1, 225, 'Na4 Cl4', 5.6, 5.6, "
     "5.6, 90, 90, 90, 'h1', 'approved', 'failed', 3, '2026-11-30 10:00:00', '2026-11-30 10:00:00')"),
    ("INSERT INTO label (candidate_id, oracle, fidelity, property, metadata, status, reason, job_id, created_at, "
     "updated_at) VALUES (1, 'chgnet', 0.5, '*', '{}', 'failed', 'timed out after 600 s', 'j1', "
     "'2026-11-30 10:00:00', '2026-11-30 10:00:00')"),
    ("INSERT INTO oracle_job (candidate_id, oracle, job_id, status, reason, submitted_at, updated_at) "
     "VALUES (1, 'chgnet', 'j1', 'failed', 'timed out after 600 s', '2026-11-30 10:00:00', '2026-11-30 10:00:00')"),
]


def migrate(url: str, revision: str, *, down: bool = False) -> None:
    """Bring the database at ``url`` to ``revision`` with Alembic, as an earlier aloop would have."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)
    engine.dispose()


def upgraded_from(url: str, revision: str, statements: list[str]) -> Store:
    """A database written at ``revision`` (``statements`` run there) and opened by this aloop, which
    upgrades it: checked to be at the head with exactly the models' schema."""
    migrate(url, revision)
    engine = create_engine(url)
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))
    engine.dispose()
    store = open_store(url)
    assert store.revision() == "0004"
    with store.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    return store


def test_a_database_at_0001_is_upgraded_with_its_data(store_url: str) -> None:
    store = upgraded_from(store_url, "0001", AT_0001)
    try:
        with store.session() as session:
            label = session.scalars(select(Label)).one()
            job = session.scalars(select(OracleJob)).one()
            assert (label.status, label.reason, label.failure_kind) == ("failed", "timed out after 600 s", None)
            assert (job.status, job.failure_kind) == ("failed", None)
            label.status, job.failure_kind = "superseded", "timeout"  # the new status and column are usable
        with store.session() as session:
            assert session.scalars(select(Label.status)).one() == "superseded"
        with pytest.raises(IntegrityError), store.session() as session:  # ok still needs a value
            session.scalars(select(Label)).one().status = "ok"
        with pytest.raises(IntegrityError), store.session() as session:
            session.scalars(select(Label)).one().status = "retried"
    finally:
        store.close()


def test_downgrade_to_0001_restores_failed_labels(store_url: str) -> None:
    store = open_store(store_url)
    with store.engine.begin() as connection:
        for statement in AT_0001:
            connection.execute(text(statement))
        connection.execute(text("UPDATE label SET status = 'superseded', failure_kind = 'timeout'"))
    store.close()
    migrate(store_url, "0001", down=True)
    engine = create_engine(store_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT status FROM label")).scalar_one() == "failed"
        for table in ("label", "oracle_job"):
            assert "failure_kind" not in {column["name"] for column in inspect(connection).get_columns(table)}
    engine.dispose()
