"""Opening the experiment database: engine, migrations on open, one transaction per session.

SQLite (the default, a file in the working directory) runs in WAL mode with foreign keys
on and a busy timeout; each transaction starts with ``BEGIN IMMEDIATE`` so that two
processes writing at once queue up instead of failing half-way. Processes opening the same
SQLite file take turns (a lock on ``<file>.lock``) until its schema is migrated: two that
switched a new file to WAL at once could each wait for the other until the busy timeout.
PostgreSQL is used as is.

Example:
    >>> store = open_store("sqlite:///aloop.db")  # doctest: +SKIP
    >>> with store.session() as session:  # doctest: +SKIP
    ...     campaign = get_or_create_campaign(session, "default")
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30.0
MIGRATION_LOCK_KEY = 0x616C6F6F70  # "aloop": PostgreSQL advisory lock serialising migrations


class StoreError(RuntimeError):
    """The database cannot be opened or migrated; the message names the URL and the cause."""


@dataclass(frozen=True)
class Store:
    """An open experiment database.

    Attributes:
        url: the SQLAlchemy URL (password hidden in messages by ``display_url``).
        engine: the SQLAlchemy engine; sessions come from ``session()``.
    """

    url: str
    engine: Engine
    _sessions: sessionmaker[Session]

    @property
    def display_url(self) -> str:
        """The URL with any password masked, for messages."""
        return make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises.

        Objects stay readable after the block (``expire_on_commit=False``). On SQLite a
        session holds the database's write lock until it ends, so keep sessions short
        (never across model training or oracle waits).
        """
        with self._sessions.begin() as session:
            yield session

    def revision(self) -> str | None:
        """The Alembic revision the database is at (``None`` before the first migration)."""
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def open_store(url: str) -> Store:
    """Open (creating if needed) the database at ``url`` and bring its schema to the newest.

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:///aloop.db`` or
            ``postgresql+psycopg://user@host:5432/aloop``.

    Raises:
        StoreError: a malformed URL, an unreachable server or a failed migration.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise StoreError(f"store url {url!r} is not a database URL ({err}); "
                         "expected e.g. sqlite:///aloop.db or postgresql+psycopg://user@host/db") from None
    sqlite_file = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if sqlite_file is not None:
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        _configure_sqlite(engine)
    else:
        engine = create_engine(parsed, pool_pre_ping=True)
    store = Store(url, engine, sessionmaker(engine, expire_on_commit=False))
    try:
        with _opening(sqlite_file):
            upgrade(store)
    except OperationalError as err:
        engine.dispose()
        raise StoreError(f"{store.display_url}: cannot open the database ({err.orig})") from None
    return store


@contextmanager
def _opening(sqlite_file: str | None) -> Iterator[None]:
    """Hold an exclusive lock on ``<sqlite_file>.lock``, creating the file's folder (nothing for PostgreSQL or
    in-memory SQLite)."""
    if not sqlite_file or sqlite_file == ":memory:" or sqlite_file.startswith("file:"):
        yield
        return
    Path(sqlite_file).parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(f"{sqlite_file}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def upgrade(store: Store) -> None:
    """Apply every pending Alembic migration, one process at a time (locked)."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    if store.revision() == head:
        return
    with store.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def dialect_insert(bind: Session | Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """The dialect's ``INSERT`` with ``ON CONFLICT`` clauses (PostgreSQL or SQLite)."""
    dialect = (bind.get_bind() if isinstance(bind, Session) else bind).dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise StoreError(f"database dialect {dialect!r} is not supported; use sqlite or postgresql")


def _configure_sqlite(engine: Engine) -> None:
    """WAL, foreign keys, busy timeout, and ``BEGIN IMMEDIATE`` transactions on every connection."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite's own BEGIN is replaced below
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
