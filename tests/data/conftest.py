"""Fixtures of the data tests: no connection may leave 127.0.0.1, a fake Materials Project API."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from .mp_server import FakeMaterialsProject, fixture_documents, serve

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any connection to anything but 127.0.0.1 (mp-api must not reach the internet in tests)."""
    connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:  # type: ignore[index]
            raise AssertionError(f"test tried to connect to {address}")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("MP_API_KEY", raising=False)
    monkeypatch.delenv("PMG_MAPI_KEY", raising=False)


@pytest.fixture(scope="session")
def mp_documents() -> list[dict]:
    return fixture_documents()


@pytest.fixture
def fake_mp(mp_documents: list[dict]) -> Iterator[FakeMaterialsProject]:
    """The fake API with the fixture documents, on a free port of 127.0.0.1."""
    with serve(mp_documents) as state:
        yield state

