"""The round lock: one holder per campaign, a clear refusal, heartbeat, expiry and takeover."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from aloop.store import LockHeld, LockLost, RoundLock, Store


def test_second_acquirer_is_refused_with_holder_and_times(store: Store) -> None:
    with RoundLock.acquire(store, "c", holder="laptop pid 1", ttl_s=60):
        with pytest.raises(LockHeld, match=r"campaign 'c' .* locked by laptop pid 1 since .*expires 20"):
            RoundLock.acquire(store, "c", holder="laptop pid 2", ttl_s=60)
        RoundLock.acquire(store, "other", ttl_s=60).release()  # campaigns are independent
    RoundLock.acquire(store, "c", holder="laptop pid 2", ttl_s=60).release()


def test_expired_lease_is_taken_over_and_the_old_holder_learns_it(store: Store) -> None:
    crashed = RoundLock.acquire(store, "c", holder="crashed", ttl_s=0.3, heartbeat=False)
    time.sleep(0.4)
    successor = RoundLock.acquire(store, "c", holder="successor", ttl_s=60, heartbeat=False)
    with pytest.raises(LockLost, match="held by crashed was taken over"):
        crashed.heartbeat()
    crashed.release()  # must not remove the successor's lease
    with pytest.raises(LockHeld, match="locked by successor"):
        RoundLock.acquire(store, "c", holder="third", ttl_s=60)
    successor.release()


def test_heartbeat_thread_keeps_the_lease_alive(store: Store) -> None:
    lock = RoundLock.acquire(store, "c", holder="alive", ttl_s=0.6)
    first_expiry = lock.expires_at
    time.sleep(1.0)
    with pytest.raises(LockHeld, match="locked by alive"):
        RoundLock.acquire(store, "c", holder="other", ttl_s=60)
    lock.check()
    assert lock.expires_at > first_expiry
    lock.release()
    RoundLock.acquire(store, "c", holder="other", ttl_s=60, heartbeat=False).release()


def test_a_lease_of_a_dead_process_of_this_host_is_taken_over_at_once(store: Store) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    RoundLock.acquire(store, "c", holder=f"{socket.gethostname()} pid {dead}", ttl_s=60, heartbeat=False)
    RoundLock.acquire(store, "c", ttl_s=60, heartbeat=False).release()
    with RoundLock.acquire(store, "c", ttl_s=60, heartbeat=False):  # this process is alive: refused
        with pytest.raises(LockHeld):
            RoundLock.acquire(store, "c", ttl_s=60, heartbeat=False)
