"""atomate2 oracle: jobflow Flows into persistent JobStores; CHGNet Maker in place of VASP."""

from __future__ import annotations

import sys

import pytest
from monty.json import jsanitize
from pymatgen.core import Lattice, Structure
from pymatgen.entries.computed_entries import ComputedEntry
from emmet.core.tasks import OutputDoc, TaskDoc

from aloop.oracle import Failed, Labelled, Lost, OracleError, Pending, load_oracle
from oracles.atomate2 import Atomate2Settings, make_flow, parse_task_document

FORCE_FIELD = {"maker": "atomate2.forcefields.jobs:ForceFieldRelaxMaker",
               "maker_settings": {"force_field_name": "CHGNet", "steps": 100}, "correction": "none",
               "references": "maker"}


@pytest.fixture
def settings(tmp_path) -> dict:
    return {**FORCE_FIELD, "jobstore": str(tmp_path / "jobstore")}


def test_a_flow_result_is_read_back_from_the_jobstore_by_a_later_process(executor, settings, rock_salt, wait_for):
    oracle = load_oracle("atomate2", settings, executor=executor)
    item = rock_salt("Mg", "O", 4.3)
    [job_id] = oracle.submit([item])
    result = wait_for(oracle, [job_id])[job_id]
    assert isinstance(result, Labelled), result
    assert result.energy_per_atom == pytest.approx(-6.31, abs=0.03)  # CHGNet's MgO, uncorrected
    assert result.structure.lattice.a < item.structure.lattice.a  # 4.3 A relaxes towards 4.25
    later = load_oracle("atomate2", settings, executor=executor)  # knows no running job
    again = later.poll([job_id, "0000-not-a-flow"])
    assert again[job_id] == result or again[job_id].energy_per_atom == result.energy_per_atom
    assert isinstance(again["0000-not-a-flow"], Lost)


def test_an_unconverged_force_field_relaxation_is_a_failed_label(executor, settings, rock_salt, wait_for):
    settings["maker_settings"] = {"force_field_name": "CHGNet", "steps": 1, "relax_kwargs": {"fmax": 1e-4}}
    oracle = load_oracle("atomate2", settings, executor=executor)
    item = rock_salt("Mg", "O", 4.21, primitive=False)
    item.structure.perturb(0.2)  # off the symmetric sites, so atoms feel forces
    [job_id] = oracle.submit([item])
    result = wait_for(oracle, [job_id])[job_id]
    assert isinstance(result, Failed) and "did not converge" in result.reason and result.kind == "not_converged"


def test_references_relaxed_with_the_same_maker(executor, settings):
    oracle = load_oracle("atomate2", settings, executor=executor)
    assert oracle.reference_energies(["Na"])["Na"] == pytest.approx(-1.30, abs=0.03)  # CHGNet bcc Na


def test_the_default_vasp_flow_is_mp_double_relax_then_static(rock_salt):
    flow = make_flow(rock_salt("Mg", "O", 4.21).structure, Atomate2Settings(), name="c1")
    names = [job.name for job, _ in flow.iterflow()]
    assert names == ["MP GGA relax 1", "MP GGA relax 2", "MP GGA static"]
    static = next(job for job, _ in flow.iterflow() if job.name == "MP GGA static")
    assert flow.output.uuid == static.uuid


def hematite_task(state: str = "successful") -> dict:
    """A VASP TaskDoc of Fe2O3 (GGA+U) as the JobStore holds it, with a made-up raw energy."""
    structure = Structure.from_spacegroup(167, Lattice.hexagonal(5.03, 13.75), ["Fe", "O"],
                                          [[0, 0, 0.3553], [0.3059, 0, 0.25]])
    energy = -6.9 * len(structure)
    entry = ComputedEntry(structure.composition, energy, data={"oxide_type": "oxide"}, parameters={
        "run_type": "GGA+U", "is_hubbard": True, "hubbards": {"Fe": 5.3, "O": 0.0},
        "potcar_spec": [{"titel": "PAW_PBE Fe_pv 06Sep2000", "hash": None},
                        {"titel": "PAW_PBE O 08Apr2002", "hash": None}]})
    doc = TaskDoc(structure=structure, entry=entry, state=state, task_label="MP GGA static",
                  output=OutputDoc(structure=structure, energy=energy, energy_per_atom=-6.9, bandgap=2.1))
    return jsanitize(doc, strict=True, allow_bson=True, enum_values=True)


def test_vasp_output_gets_mp2020_corrections_and_band_gap():
    result = parse_task_document(hematite_task(), correction="mp2020")
    assert isinstance(result, Labelled)
    # MP2020: Fe U correction -2.256 eV per Fe, oxide correction -0.687 eV per O (Fe12 O18).
    assert result.energy_per_atom == pytest.approx(-6.9 + (12 * -2.256 + 18 * -0.687) / 30, abs=1e-3)
    assert result.metadata["raw_energy_per_atom"] == pytest.approx(-6.9)
    assert result.properties == {"band_gap": 2.1}
    uncorrected = parse_task_document(hematite_task(), correction="none")
    assert uncorrected.energy_per_atom == pytest.approx(-6.9)


def test_a_failed_vasp_task_is_a_failed_label():
    result = parse_task_document(hematite_task(state="failed"), correction="mp2020")
    assert isinstance(result, Failed) and "failed" in result.reason and result.kind == "oracle_error"


def test_an_entry_mp2020_cannot_correct_is_an_unsupported_failure():
    doc = hematite_task()
    doc["entry"]["parameters"]["run_type"] = "r2SCAN"  # MP2020 corrects GGA and GGA+U only
    result = parse_task_document(doc, correction="mp2020")
    assert isinstance(result, Failed) and "invalid run type r2SCAN" in result.reason and result.kind == "unsupported"


def test_maker_settings_are_checked_against_the_maker_fields():
    with pytest.raises(OracleError, match=r"maker_settings \['stepz'\] are not fields of .*ForceFieldRelaxMaker"):
        load_oracle("atomate2", {**FORCE_FIELD, "maker_settings": {"stepz": 3}}, executor=None)
    with pytest.raises(OracleError, match=r"maker 'atomate2.vasp.flows.mp:Nope' cannot be imported"):
        load_oracle("atomate2", {"maker": "atomate2.vasp.flows.mp:Nope"}, executor=None)


@pytest.fixture
def fireworks_settings(settings, tmp_path, monkeypatch) -> dict:
    """FireWorks in its own mongomock mode (a LaunchPad database in a JSON file, no MongoDB server)."""
    assert "fireworks.fw_config" not in sys.modules, "FireWorks was imported before its mongomock mode was set"
    server = tmp_path / "mongomock.json"
    server.write_text("{}")
    monkeypatch.setenv("MONGOMOCK_SERVERSTORE_FILE", str(server))
    return {**settings, "manager": "fireworks"}


def test_fireworks_workers_run_the_handed_flows_and_fizzles_are_failed_labels(fireworks_settings, executor,
                                                                             rock_salt, tmp_path):
    from fireworks import FWorker
    from fireworks.core.rocket_launcher import rapidfire

    oracle = load_oracle("atomate2", fireworks_settings, executor=executor)
    oracle.launchpad.reset("", require_password=False)  # `lpad reset`, as on a new FireWorks database
    good = rock_salt("Mg", "O", 4.3)
    beyond = rock_salt("Cf", "O", 4.9)  # californium (Z = 98) is outside CHGNet's 94 elements: the job raises
    defused = rock_salt("Ca", "O", 4.8)
    job_ids = oracle.submit([good, beyond, defused])
    assert len(set(job_ids)) == 3
    before = oracle.poll(job_ids)
    assert all(isinstance(before[j], Pending) and before[j].state == "ready" for j in job_ids), before
    oracle.launchpad.defuse_wf(oracle.launchpad.get_fw_ids({"name": {"$regex": ""}})[-1])

    rapidfire(oracle.launchpad, FWorker(), m_dir=str(tmp_path), strm_lvl="ERROR")  # a cluster worker's loop

    after = oracle.poll([*job_ids, "0000-not-a-flow"])
    assert isinstance(after[job_ids[0]], Labelled), after[job_ids[0]]
    assert after[job_ids[0]].energy_per_atom == pytest.approx(-6.31, abs=0.03)
    assert isinstance(after[job_ids[1]], Failed) and after[job_ids[1]].reason.startswith("FireWorks workflow fizzled: RuntimeError")
    assert isinstance(after[job_ids[2]], Failed) and "defused" in after[job_ids[2]].reason
    assert after[job_ids[1]].kind == after[job_ids[2]].kind == "oracle_error"
    assert isinstance(after["0000-not-a-flow"], Lost)
