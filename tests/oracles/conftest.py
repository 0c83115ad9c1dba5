"""Shared fixtures of the oracle tests: an in-process executor and simple known crystals."""

from __future__ import annotations

import time

import pytest
from pymatgen.core import Lattice, Structure

from aloop.executor import open_executor
from aloop.oracle import Oracle, OracleInput, Pending, Result
from aloop.space.crystal import Crystal


def rock_salt(cation: str, anion: str, a: float, *, candidate_id: str | None = None,
              primitive: bool = True) -> OracleInput:
    """A rock-salt candidate (space group 225, lattice constant ``a`` in Angstrom)."""
    structure = Structure.from_spacegroup(225, Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]])
    crystal = Crystal.from_structure(structure)
    return OracleInput(candidate_id or f"{cation}{anion}", crystal,
                       structure.get_primitive_structure() if primitive else structure)


def wait_for(oracle: Oracle, job_ids: list[str], *, timeout_s: float = 120.0) -> dict[str, Result]:
    """Poll until no job is pending (fails the test past ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        results = oracle.poll(job_ids)
        if not any(isinstance(r, Pending) for r in results.values()):
            return results
        assert time.monotonic() < deadline, f"jobs still pending after {timeout_s} s: {results}"
        time.sleep(0.05)


@pytest.fixture(name="rock_salt", scope="session")
def _rock_salt():
    return rock_salt


@pytest.fixture(name="wait_for", scope="session")
def _wait_for():
    return wait_for


@pytest.fixture(scope="session")
def executor():
    with open_executor(kind="local", max_workers=1) as pool:
        yield pool
