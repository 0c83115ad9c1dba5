"""Batched CHGNet relaxation: the same labels as one at a time, failures kept to their own structure."""

from __future__ import annotations

import itertools
import time
from types import SimpleNamespace

import pytest
from pymatgen.core import Lattice, Structure

from aloop.executor import open_executor
from aloop.oracle import Failed, Labelled, Lost, OracleInput, Pending, load_oracle
from aloop.space.crystal import Crystal
from oracles import batched_relax
from oracles.chgnet import CHGNetSettings, relax_candidate, relax_candidates, split_groups

SETTINGS = CHGNetSettings(max_steps=60, batch_size=4)
"""Small cells that converge within 60 steps: a test of the batched path, not of CHGNet."""


def candidate(structure: Structure, candidate_id: str) -> OracleInput:
    return OracleInput(candidate_id, Crystal.from_structure(structure), structure)


def rock_salt(cation: str, anion: str, a: float, *, primitive: bool = True) -> OracleInput:
    structure = Structure.from_spacegroup(225, Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]])
    return candidate(structure.get_primitive_structure() if primitive else structure, f"{cation}{anion}-{a}")


@pytest.fixture(scope="module")
def small() -> list[OracleInput]:
    """Four small real cells: squeezed, stretched, a conventional 8-atom cell and a sheared CsCl-type cell."""
    sheared = Structure(Lattice.from_parameters(3.3, 3.4, 3.5, 88, 92, 91), ["Cs", "Br"],
                        [[0, 0, 0], [0.52, 0.48, 0.5]])
    return [rock_salt("Mg", "O", 4.0), rock_salt("Na", "Cl", 5.9), rock_salt("Li", "F", 4.1, primitive=False),
            candidate(sheared, "CsBr")]


@pytest.fixture(scope="module")
def one_at_a_time(small) -> list[Labelled | Failed]:
    return [relax_candidate(item, settings=SETTINGS) for item in small]


def test_batched_energies_match_one_at_a_time(small, one_at_a_time):
    batched = relax_candidates(small, settings=SETTINGS)
    for single, together in zip(one_at_a_time, batched, strict=True):
        assert isinstance(single, Labelled) and isinstance(together, Labelled), (single, together)
        assert together.energy_per_atom == pytest.approx(single.energy_per_atom, abs=0.005)
        assert together.metadata.keys() == single.metadata.keys()
        assert together.structure.site_properties.keys() == single.structure.site_properties.keys()
        assert together.structure.composition == single.structure.composition


def test_a_batch_of_one_is_the_single_path(small, one_at_a_time):
    [together] = relax_candidates(small[:1], settings=SETTINGS)
    single = one_at_a_time[0]
    assert together.metadata["steps"] == single.metadata["steps"]
    assert together.energy_per_atom == pytest.approx(single.energy_per_atom, abs=1e-5)
    assert together.structure.lattice.abc == pytest.approx(single.structure.lattice.abc, abs=1e-4)


def test_failures_stay_with_their_structure(small, one_at_a_time):
    """An isolated atom (refused at step 0), atoms on top of each other and a cell that cannot converge in
    time fail in the batch as they do alone, and the others relax as they do alone."""
    lonely = Structure(Lattice.cubic(12.0), ["Na"], [[0, 0, 0]])
    crushed = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.1, 0, 0]])
    items = [small[0], candidate(lonely, "lonely"), small[1], candidate(crushed, "crushed")]
    batched = relax_candidates(items, settings=SETTINGS)
    assert isinstance(batched[1], Failed) and batched[1].kind == "unsupported" and "at step 0" in batched[1].reason
    assert isinstance(batched[3], Failed) and batched[3].kind == "not_converged"
    assert batched[3].kind == relax_candidate(items[3], settings=SETTINGS).kind
    for together, single in [(batched[0], one_at_a_time[0]), (batched[2], one_at_a_time[1])]:
        assert isinstance(together, Labelled)
        assert together.energy_per_atom == pytest.approx(single.energy_per_atom, abs=1e-5)
        assert together.metadata["steps"] == single.metadata["steps"]


def test_a_batch_past_its_timeout_fails_every_structure_with_timeout(small):
    results = relax_candidates(small[:2], settings=SETTINGS.model_copy(update={"timeout_s": 1e-6}))
    assert [(r.kind, "at step 0" in r.reason) for r in results] == [("timeout", True)] * 2


def test_a_structure_in_a_batch_is_charged_its_share_of_the_batch_time(small, monkeypatch):
    # a clock that moves one second per evaluation: alone, a structure times out at step 3 of a 3 s limit; in a
    # batch of four each is charged a quarter of every step, so one that has not converged stops at step 12
    ticks = itertools.count()
    monkeypatch.setattr(batched_relax, "time", SimpleNamespace(monotonic=lambda: float(next(ticks))))
    settings = SETTINGS.model_copy(update={"timeout_s": 3.0, "fmax": 1e-4})
    [alone] = relax_candidates(small[:1], settings=settings)
    assert alone.kind == "timeout" and "at step 3" in alone.reason, alone
    together = relax_candidates(small, settings=settings)
    assert [(r.kind, "at step 12" in r.reason) for r in together] == [("timeout", True)] * 4, together


def test_the_oracle_relaxes_groups_and_answers_per_candidate(small):
    with open_executor(kind="local", max_workers=2) as executor:
        oracle = load_oracle("chgnet", {"max_steps": 60, "batch_size": 2}, executor=executor)
        job_ids = oracle.submit(small[:3])
        assert [j.rsplit("-", 1)[0] for j in job_ids] == [f"chgnet-{item.candidate_id}" for item in small[:3]]
        deadline = time.monotonic() + 120
        results = oracle.poll(job_ids)
        while any(isinstance(r, Pending) for r in results.values()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
            results = oracle.poll(job_ids)
    assert all(isinstance(results[j], Labelled) for j in job_ids), results
    assert isinstance(oracle.poll(["chgnet-x-00000000"])["chgnet-x-00000000"], Lost)


def test_groups_are_even_and_at_most_the_batch_size(small):
    items = small * 5  # 20 candidates
    assert [len(g.items) for g in split_groups(items, 8)] == [7, 7, 6]
    assert [len(g.items) for g in split_groups(items[:3], 8)] == [3]
    assert split_groups([], 8) == []


def test_batched_relaxation_needs_fire():
    with pytest.raises(ValueError, match="FIRE only"):
        CHGNetSettings(optimizer="BFGS", batch_size=8)
    assert CHGNetSettings(optimizer="BFGS", batch_size=1).optimizer == "BFGS"
