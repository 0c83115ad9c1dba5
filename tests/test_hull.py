"""The reference hull: known phases relaxed once by the oracle, E_hull against them, kept up to date."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from pymatgen.core import Lattice, Structure
from sqlalchemy import func, select

from aloop.config import DataSettings, HullSettings, SpaceSettings
from aloop.data.assembly import assemble_training_set
from aloop.executor import open_executor
from aloop.hull import (
    KNOWN_PHASE_PROPERTY,
    KnownPhase,
    describe_hull,
    formation_hull,
    known_crystals,
    known_phase_entries,
    known_phases,
    relax_known_phases,
)
from aloop.labelling import label_candidates
from aloop.oracle import Labelled, OracleInput, Result, load_oracle
from aloop.space import Crystal, CrystalSpace
from aloop.store import Candidate, Label, Material, Store, labelled_data, open_store
from test_labelling import approve, campaign_id, cubic, labels

REFERENCES = {"Na": -1.0, "Cl": -2.0, "Li": -2.0, "O": -5.0}
"""Made-up elemental energies (eV/atom) of the fake oracle."""


class TableOracle:
    """A ``ThermoOracle`` answering energies per atom from a table keyed by (formula, space group)."""

    name, fidelity, cost = "table", 1.0, 0.0

    def __init__(self, energies: dict[str, float]) -> None:
        self.energies = energies
        self.jobs: dict[str, str] = {}
        self.submitted: list[str] = []

    def _key(self, structure: Structure) -> str:
        return f"{structure.composition.reduced_formula}/{structure.get_space_group_info()[1]}"

    def submit(self, inputs: Sequence[OracleInput]) -> list[str]:
        ids = [f"job-{item.candidate_id}" for item in inputs]
        self.jobs |= {j: self._key(item.structure) for j, item in zip(ids, inputs, strict=True)}
        self.submitted += [item.candidate_id for item in inputs]
        return ids

    def poll(self, job_ids: Sequence[str]) -> dict[str, Result]:
        return {j: Labelled(self.energies[self.jobs[j]], metadata={"model": "table"}) for j in job_ids}

    def reference_energies(self, elements: Sequence[str]) -> dict[str, float]:
        return {el: REFERENCES[el] for el in elements}


def rock_salt() -> KnownPhase:
    return KnownPhase("mp-22862", Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"],
                                                            [[0, 0, 0], [0.5, 0.5, 0.5]]))


@pytest.fixture
def store(tmp_path: Path):
    opened = open_store(f"sqlite:///{tmp_path / 'aloop.db'}")
    yield opened
    opened.close()


def reference_rows(store: Store) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(Label).join(Material).where(
            Label.property == KNOWN_PHASE_PROPERTY))


def test_a_known_phase_sets_the_hull_and_is_relaxed_once(store):
    # rock salt (known) at -2.0 eV/atom, a CsCl-type candidate at -1.8: 0.2 above the known phase,
    # though it would be on a hull of the candidates alone
    oracle = TableOracle({"NaCl/225": -2.0, "NaCl/221": -1.8})
    [cesium] = approve(store, [cubic("Na1Cl1", 3.4, space_group=221)])
    report = label_candidates(store, campaign_id(store), oracle, known=[rock_salt()])
    assert report.known_relaxed == 1 and "1 known phases" in report.hull
    assert labels(store)[(cesium, "e_above_hull")].value == pytest.approx(0.2)
    assert labels(store)[(cesium, "formation_energy_per_atom")].value == pytest.approx(-1.8 + 1.5)
    # a later call (next round, aloop submit) reuses the stored relaxation
    approve(store, [cubic("Na4Cl4", 5.69)])
    again = label_candidates(store, campaign_id(store), oracle, known=[rock_salt()])
    assert again.known_relaxed == 0 and oracle.submitted.count("known-mp-22862") == 1
    assert reference_rows(store) == 1


def test_a_candidate_equal_to_a_known_phase_is_on_the_hull(store):
    oracle = TableOracle({"NaCl/225": -2.0})
    [salt] = approve(store, [cubic("Na4Cl4", 5.69)])
    label_candidates(store, campaign_id(store), oracle, known=[rock_salt()])
    assert labels(store)[(salt, "e_above_hull")].value == pytest.approx(0.0, abs=1e-9)


def test_stored_e_hull_is_recomputed_when_a_new_phase_joins_the_hull(store):
    oracle = TableOracle({"NaCl/225": -2.0, "NaCl/221": -1.8})
    [cesium] = approve(store, [cubic("Na1Cl1", 3.4, space_group=221)])
    label_candidates(store, campaign_id(store), oracle)
    assert labels(store)[(cesium, "e_above_hull")].value == pytest.approx(0.0, abs=1e-9)  # alone on its hull
    approve(store, [cubic("Na4Cl4", 5.69)])  # the next round finds the lower polymorph
    label_candidates(store, campaign_id(store), oracle)
    updated = labels(store)[(cesium, "e_above_hull")]
    assert updated.value == pytest.approx(0.2)
    assert updated.meta["e_above_hull_at_labelling"] == pytest.approx(0.0, abs=1e-9)


def test_reference_labels_are_neither_candidates_nor_training_data(store):
    oracle = TableOracle({"NaCl/225": -2.0, "NaCl/221": -1.8})
    approve(store, [cubic("Na1Cl1", 3.4, space_group=221)])
    label_candidates(store, campaign_id(store), oracle, known=[rock_salt()])
    with store.session() as session:
        from aloop.store import Campaign

        campaign = session.get_one(Campaign, campaign_id(store))
        points = labelled_data(session, campaign)
        n_candidates = session.scalar(select(func.count()).select_from(Candidate))
    assert n_candidates == 1
    assert {p.composition.reduced_formula for p in points} == {"NaCl"} and len(points) == 3  # E, E_f, E_hull
    assert all(p.property != "reference_energy_per_atom" for p in points)
    assert describe_hull(store, campaign_id(store), "table").known_phases == 1


def test_without_known_phases_the_hull_says_labelled_candidates_only(store):
    oracle = TableOracle({"NaCl/221": -1.8})
    approve(store, [cubic("Na1Cl1", 3.4, space_group=221)])
    report = label_candidates(store, campaign_id(store), oracle)
    assert report.hull.startswith("hull of labelled candidates only")


def test_the_local_data_gives_the_stable_phases_and_chgnet_puts_them_on_the_hull(store, shared_data):
    space = SpaceSettings(elements=["Li", "O"], max_atoms_per_element=8, max_atoms=16)
    data = DataSettings(local_path=str(shared_data / "mp_cgcnn36k"))
    phases = {p.material_id: p for p in known_phases(space, data, HullSettings())}
    formulas = {p.structure.composition.reduced_formula for p in phases.values()}
    assert {"Li2O", "Li2O2"} <= formulas  # the data set's stable Li-O phases are all there
    [oxide] = [p for p in phases.values() if p.structure.composition.reduced_formula == "Li2O"]
    [li2o] = approve(store, [Crystal.from_structure(oxide.structure)])  # the known phase, proposed as a candidate
    with store.session() as session:  # with its own atoms, not pyxtal's
        session.get_one(Candidate, li2o).cif = oxide.structure.to(fmt="cif")
    with open_executor() as executor:
        oracle = load_oracle("chgnet", {"max_steps": 200}, executor=executor)
        report = label_candidates(store, campaign_id(store), oracle, known=[oxide], poll_interval_s=0.1)
    assert report.known_relaxed == 1
    assert labels(store)[(li2o, "e_above_hull")].value == pytest.approx(0.0, abs=0.01)
    assert relax_known_phases(store, campaign_id(store), oracle, [oxide]) == 0


def test_the_stability_hull_is_the_formation_energy_hull_of_the_oracle(store):
    oracle = TableOracle({"NaCl/225": -2.0, "NaCl/221": -1.8})
    approve(store, [cubic("Na1Cl1", 3.4, space_group=221)])
    assert formation_hull(store, campaign_id(store), ("Na", "Cl")).entries == []  # nothing labelled: E_f itself
    label_candidates(store, campaign_id(store), oracle, known=[rock_salt()])
    hull = formation_hull(store, campaign_id(store), ("Na", "Cl"))
    # rock salt: -2.0 - (-1.0 - 2.0) / 2 = -0.5 eV/atom, the lowest of the two NaCl entries
    assert hull(torch.tensor([[1, 1], [4, 4], [1, 0]])).tolist() == pytest.approx([-0.5, -0.5, 0.0])


def test_known_crystals_are_analysed_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALOOP_CACHE_DIR", str(tmp_path))
    texts = [rock_salt().structure.to(fmt="cif"), Structure(Lattice.cubic(3.4), ["Na", "Cl"],
                                                           [[0, 0, 0], [0.5, 0.5, 0.5]]).to(fmt="cif")]
    first = known_crystals(texts)
    assert [(c.space_group, c.wyckoff) for c in first] == [(225, "Na:4a Cl:4b"), (221, "Na:1a Cl:1b")]

    def analyse(*args, **kwargs):
        raise AssertionError("symmetry analysed again")

    monkeypatch.setattr(Crystal, "from_structure", analyse)
    assert known_crystals(texts) == first
    with pytest.raises(AssertionError, match="analysed again"):  # another set of phases is another entry
        known_crystals(texts[:1])


class RelaxingTableOracle(TableOracle):
    """``TableOracle`` that hands back each structure as its relaxed one, as a relaxing oracle does."""

    def submit(self, inputs: Sequence[OracleInput]) -> list[str]:
        self.structures = getattr(self, "structures", {}) | {f"job-{i.candidate_id}": i.structure for i in inputs}
        return super().submit(inputs)

    def poll(self, job_ids: Sequence[str]) -> dict[str, Result]:
        return {j: Labelled(self.energies[self.jobs[j]], structure=self.structures[j]) for j in job_ids}


def test_known_phases_train_the_proxy_once_on_the_oracles_scale(store):
    oracle = RelaxingTableOracle({"NaCl/225": -2.0, "NaCl/221": -1.8})
    approve(store, [cubic("Na1Cl1", 3.4, space_group=221)])
    label_candidates(store, campaign_id(store), oracle, known=[rock_salt()])
    approve(store, [cubic("Na4Cl4", 5.69)])  # a second round: the phase is not relaxed again
    label_candidates(store, campaign_id(store), oracle, known=[rock_salt()])
    [entries] = known_phase_entries(store, campaign_id(store), ("Na", "Cl"))
    assert entries.source == "table" and len(entries) == 1
    [crystal] = entries.crystals.to_crystals()
    assert (crystal.space_group, crystal.composition.reduced_formula) == (225, "NaCl")
    # E_f on the oracle's scale: -2.0 - (-1.0 - 2.0) / 2
    assert entries.properties["formation_energy_per_atom"].tolist() == pytest.approx([-0.5])

    space = CrystalSpace.from_settings(SpaceSettings(elements=["Na", "Cl"], max_atoms_per_element=4, max_atoms=8))
    assembly = assemble_training_set(store, campaign_id(store), space=space, settings=DataSettings(),
                                     target="formation_energy_per_atom", seed=0)
    training = assembly.training
    assert assembly.known_phases == 1 and "1 of them known phases" in assembly.describe()
    # the two candidates' labels and the known phase once, all from the oracle; no reference energy is a row
    assert sorted(training.values.tolist()) == pytest.approx([-0.5, -0.5, -0.3])
    assert set(training.row_sources()) == {"table"}
