"""The round lock: a lease in the database so that one round per campaign runs at a time.

The holder renews the lease with a heartbeat (a daemon thread every ``ttl_s / 3``
seconds, or explicit ``heartbeat()`` calls); a holder that crashed stops renewing, and
once ``expires_at`` has passed the next ``acquire`` takes the lease over. Expiry compares
wall clocks of the machines involved, so they should agree to well within ``ttl_s``. A
holder that was a process of this host which no longer exists (a killed round) is taken
over at once.

Example:
    >>> with RoundLock.acquire(store, "default", ttl_s=120):  # doctest: +SKIP
    ...     run_round(...)
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import datetime, timedelta
from types import TracebackType

from typing import Any

from sqlalchemy import Connection, Row, delete, or_, select, update

from aloop.store.engine import Store, dialect_insert
from aloop.store.models import RoundLease, utcnow

log = logging.getLogger(__name__)


class LockHeld(RuntimeError):
    """Another holder has a live lease; the message says who, since when, until when."""


class LockLost(RuntimeError):
    """This holder's lease expired and was taken over by another."""


class RoundLock:
    """A held lease on a campaign's round lock; get one with ``RoundLock.acquire``."""

    def __init__(self, store: Store, campaign: str, *, holder: str, token: str, ttl_s: float,
                 expires_at: datetime) -> None:
        self.store = store
        self.campaign = campaign
        self.holder = holder
        self.ttl_s = ttl_s
        self.expires_at = expires_at
        self._token = token
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: LockLost | None = None

    @classmethod
    def acquire(cls, store: Store, campaign: str, *, holder: str | None = None, ttl_s: float = 120.0,
                heartbeat: bool = True) -> RoundLock:
        """Take the campaign's lock, or raise ``LockHeld`` at once if someone else holds it.

        Args:
            holder: who is asking, shown to others (default ``host pid N``).
            ttl_s: seconds the lease lasts without a heartbeat.
            heartbeat: renew from a daemon thread every ``ttl_s / 3`` seconds.
        """
        holder = holder or f"{socket.gethostname()} pid {os.getpid()}"
        token = uuid.uuid4().hex
        now = utcnow()
        expires_at = now + timedelta(seconds=ttl_s)
        lease = dict(holder=holder, token=token, acquired_at=now, heartbeat_at=now, expires_at=expires_at)
        for _ in range(3):  # the holder may release between our insert and select: then insert again
            with store.engine.begin() as connection:
                if _try_take(connection, campaign, lease, now=now, display_url=store.display_url):
                    break
        else:
            raise LockHeld(f"campaign {campaign!r} in {store.display_url}: the round lock changed hands "
                           "three times while acquiring it; another round is starting")
        lock = cls(store, campaign, holder=holder, token=token, ttl_s=ttl_s, expires_at=expires_at)
        if heartbeat:
            lock._thread = threading.Thread(target=lock._beat, daemon=True, name=f"aloop-lock-{campaign}")
            lock._thread.start()
        return lock

    def heartbeat(self) -> datetime:
        """Extend the lease by ``ttl_s`` from now and return the new expiry.

        Raises:
            LockLost: the lease expired and another holder took it over.
        """
        now = utcnow()
        expires_at = now + timedelta(seconds=self.ttl_s)
        table = RoundLease.__table__
        with self.store.engine.begin() as connection:
            renewed = connection.execute(update(table).where(table.c.campaign == self.campaign,
                                                             table.c.token == self._token)
                                         .values(heartbeat_at=now, expires_at=expires_at)).rowcount
        if not renewed:
            raise LockLost(f"the round lock of campaign {self.campaign!r} held by {self.holder} was taken over "
                           f"after it expired at {self.expires_at.isoformat(timespec='seconds')}")
        self.expires_at = expires_at
        return expires_at

    def check(self) -> None:
        """Raise ``LockLost`` if the heartbeat thread found the lease taken over."""
        if self._lost is not None:
            raise self._lost

    def release(self) -> None:
        """Stop the heartbeat and delete the lease (a no-op if it was taken over)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        table = RoundLease.__table__
        with self.store.engine.begin() as connection:
            connection.execute(delete(table).where(table.c.campaign == self.campaign, table.c.token == self._token))

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.heartbeat()
            except LockLost as err:
                self._lost = err
                log.error("%s", err)
                return
            except Exception:  # a database hiccup: the lease lasts ttl_s, try again next beat
                log.exception("round lock heartbeat failed; retrying in %.0f s", self.ttl_s / 3)

    def __enter__(self) -> RoundLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _try_take(connection: Connection, campaign: str, lease: dict[str, Any], *, now: datetime,
              display_url: str) -> bool:
    """Insert the lease, or take over an expired one; ``False`` if the row vanished meanwhile."""
    table = RoundLease.__table__
    inserted = connection.execute(dialect_insert(connection, table).values(campaign=campaign, **lease)
                                  .on_conflict_do_nothing().returning(table.c.campaign)).first()
    if inserted is not None:
        return True
    previous = connection.execute(select(table).where(table.c.campaign == campaign)).first()
    if previous is None:
        return False
    stale = or_(table.c.expires_at < now, table.c.token == previous.token) if _dead_here(previous.holder) \
        else table.c.expires_at < now
    if not connection.execute(update(table).where(table.c.campaign == campaign, stale).values(**lease)).rowcount:
        raise LockHeld(_held_message(display_url, campaign, previous))
    log.warning("took over the round lock of campaign %r from %s (expires %s)",
                campaign, previous.holder, previous.expires_at.isoformat(timespec="seconds"))
    return True


def _dead_here(holder: str) -> bool:
    """True when ``holder`` (``host pid N``) is a process of this host that no longer exists."""
    host, _, pid = holder.rpartition(" pid ")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _held_message(display_url: str, campaign: str, lease: Row[Any]) -> str:
    def when(t: datetime) -> str:
        return t.isoformat(timespec="seconds")

    return (f"campaign {campaign!r} in {display_url} is locked by {lease.holder} since {when(lease.acquired_at)} "
            f"(last heartbeat {when(lease.heartbeat_at)}, expires {when(lease.expires_at)} unless renewed): "
            "another round is running. If its process died, wait until the lease expires and start again.")
