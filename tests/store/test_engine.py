"""Opening the database: migrations from empty, models and migrations agreeing, ``aloop db upgrade``."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import inspect, text

from aloop.cli import main
from aloop.store import Store, StoreError, get_or_create_campaign, open_store
from aloop.store.models import Base

TABLES = {"campaign", "round", "candidate", "material", "label", "oracle_job", "round_lock"}


def test_open_migrates_empty_database_to_models(store_url: str) -> None:
    store = open_store(store_url)
    try:
        assert store.revision() == "0004"
        with store.engine.connect() as connection:
            assert TABLES <= set(inspect(connection).get_table_names())
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        store.close()


def test_reopen_keeps_data(store_url: str) -> None:
    first = open_store(store_url)
    with first.session() as session:
        get_or_create_campaign(session, "kept")
    first.close()
    second = open_store(store_url)
    with second.session() as session:
        assert get_or_create_campaign(session, "kept").id == 1
    second.close()


def test_session_rolls_back_the_whole_transaction_on_error(store: Store) -> None:
    with pytest.raises(RuntimeError), store.session() as session:
        get_or_create_campaign(session, "lost")
        raise RuntimeError("boom")
    with store.session() as session:
        assert session.execute(text("SELECT count(*) FROM campaign")).scalar() == 0


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.close()


def test_a_sqlite_database_in_a_missing_folder_is_created_with_it(tmp_path) -> None:
    path = tmp_path / "campaigns" / "li-mn-o" / "aloop.db"
    store = open_store(f"sqlite:///{path}")
    with store.session() as session:
        get_or_create_campaign(session, "kept")
    store.close()
    assert path.is_file() and open_store(f"sqlite:///{path}").revision() == "0004"


def test_unreachable_database_raises_store_error_naming_it() -> None:
    with pytest.raises(StoreError, match="127.0.0.1:1/nowhere"):
        open_store("postgresql+psycopg://nobody@127.0.0.1:1/nowhere?connect_timeout=2")
    with pytest.raises(StoreError, match="not a database URL"):
        open_store("aloop.db")


def test_cli_db_upgrade_creates_the_schema(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALOOP_DB_URL", store_url)
    result = CliRunner().invoke(main, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "revision 0004" in result.output
    store = open_store(store_url)
    with store.engine.connect() as connection:
        assert TABLES <= set(inspect(connection).get_table_names())
    store.close()
