"""The protocol contract every shipped oracle keeps, loaded by its entry-point name."""

from __future__ import annotations

import math

import pytest

from aloop.oracle import Failed, Labelled, Lost, Oracle, ThermoOracle, load_oracle

SHIPPED = ["chgnet", "sevennet", "lookup", "atomate2"]


@pytest.fixture
def oracle(request, executor, tmp_path) -> Oracle:
    table = tmp_path / "table.csv"
    table.write_text("material_id,formula,spacegroup_number,formation_energy_per_atom,band_gap\n"
                     "mp-22862,NaCl,225,-2.105,5.1\nmp-1265,MgO,225,-3.062,4.4\n")
    settings = {
        "chgnet": {"max_steps": 100},
        "sevennet": {"max_steps": 100},
        "lookup": {"table": str(table)},
        "atomate2": {"maker": "atomate2.forcefields.jobs:ForceFieldRelaxMaker", "correction": "none",
                     "maker_settings": {"force_field_name": "CHGNet", "steps": 100}, "references": "maker",
                     "jobstore": str(tmp_path / "jobstore")},
    }[request.param]
    return load_oracle(request.param, settings, executor=executor)


@pytest.mark.parametrize("oracle", SHIPPED, indirect=True)
def test_every_shipped_oracle_keeps_the_protocol(oracle, rock_salt, wait_for):
    assert isinstance(oracle, Oracle)
    assert oracle.name and 0 < oracle.fidelity <= 1 and oracle.cost >= 0
    items = [rock_salt("Na", "Cl", 5.69, candidate_id="11"), rock_salt("Mg", "O", 4.21, candidate_id="12")]
    job_ids = oracle.submit(items)
    assert len(job_ids) == 2 and len(set(job_ids)) == 2 and all(isinstance(j, str) for j in job_ids)
    results = wait_for(oracle, job_ids)
    assert list(results) == job_ids
    for item, result in zip(items, results.values(), strict=True):
        assert isinstance(result, Labelled), result
        values = [result.energy_per_atom, *result.properties.values()]
        assert all(math.isfinite(v) for v in values if v is not None) and any(v is not None for v in values)
        if result.structure is not None:
            assert result.structure.composition.reduced_formula == item.crystal.composition.reduced_formula
    assert oracle.poll(job_ids) == results or [r.energy_per_atom for r in oracle.poll(job_ids).values()] == [
        r.energy_per_atom for r in results.values()]
    assert isinstance(oracle.poll(["no-such-job"])["no-such-job"], Lost | Failed)


@pytest.mark.parametrize("oracle", ["chgnet", "sevennet", "atomate2"], indirect=True)
def test_energy_oracles_give_elemental_references_on_their_own_scale(oracle):
    assert isinstance(oracle, ThermoOracle)
    references = oracle.reference_energies(["Na", "Cl"])
    assert set(references) == {"Na", "Cl"}
    assert -2.0 < references["Na"] < -1.0 and -2.5 < references["Cl"] < -1.5  # MP: -1.32, -1.85 eV/atom


def test_the_lookup_oracle_has_no_energy_scale(executor, tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("material_id,formula,spacegroup_number,formation_energy_per_atom,band_gap\nmp-1,NaCl,225,-2,5\n")
    assert not isinstance(load_oracle("lookup", {"table": str(table)}, executor=executor), ThermoOracle)
