"""SevenNet oracle: real relaxations of small cells with the weights in the sevenn wheel, on CHGNet's scale."""

from __future__ import annotations

import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import sevenn
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor
from sevenn.calculator import SevenNetCalculator

from aloop.oracle import (
    Failed,
    Labelled,
    OracleError,
    OracleInput,
    installed_oracles,
    load_oracle,
)
from aloop.space.crystal import Crystal
from aloop.thermo import formation_energy_per_atom
from oracles import chgnet
from oracles.ase_relax import relax_candidate
from oracles.sevennet import (
    CHECKPOINTS,
    SevenNetOracle,
    SevenNetSettings,
    load_model,
    mp2020_energy,
    potential,
)

MP_CL_CORRECTION = -0.614
MP_OXIDE_CORRECTION = -0.687
"""MP2020 anion corrections, eV per Cl / O atom (pymatgen's MP2020Compatibility.yaml)."""


@pytest.fixture(scope="module")
def sevennet(executor) -> SevenNetOracle:
    return load_oracle("sevennet", {"max_steps": 200, "timeout_s": 120}, executor=executor)


def candidate(structure: Structure, candidate_id: str) -> OracleInput:
    return OracleInput(candidate_id, Crystal.from_structure(structure), structure)


def test_found_by_its_entry_point_name_with_weights_read_from_the_wheel_offline(sevennet, monkeypatch):
    assert "sevennet" in installed_oracles()
    assert isinstance(sevennet, SevenNetOracle) and sevennet.name == "sevennet-0"
    checkpoint = Path(sevenn.__file__).parent / CHECKPOINTS["7net-0"]
    assert checkpoint.is_file() and checkpoint.stat().st_size > 5e6

    def refuse(*args, **kwargs):
        raise AssertionError("SevenNet tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    model = load_model.__wrapped__("7net-0", "cpu")  # a fresh load, past the per-process cache
    assert model.cutoff == 5.0


def test_a_perturbed_cell_relaxes_lower_onto_the_mp2020_scale(sevennet, rock_salt, wait_for):
    squeezed = rock_salt("Li", "Cl", 5.0, primitive=False).structure  # 8 atoms; MP's LiCl has a = 5.13 A
    shifts = np.random.default_rng(0).normal(0.0, 0.05, (len(squeezed), 3))
    item = candidate(Structure(squeezed.lattice, squeezed.species, squeezed.cart_coords + shifts,
                               coords_are_cartesian=True), "LiCl-perturbed")
    atoms = AseAtomsAdaptor.get_atoms(item.structure)
    with warnings.catch_warnings():  # no tensor-product accelerator (CUDA only)
        warnings.simplefilter("ignore")
        atoms.calc = SevenNetCalculator(load_model("7net-0", "cpu"), file_type="model_instance", device="cpu")
    unrelaxed, _ = mp2020_energy(item.structure, atoms.get_potential_energy() / len(atoms))
    [job_id] = sevennet.submit([item])
    result = wait_for(sevennet, [job_id])[job_id]
    assert isinstance(result, Labelled), result
    assert result.metadata["converged"] and result.metadata["model"] == "sevennet-0"
    assert -4.5 < result.energy_per_atom < -3.5  # MP's LiCl: -3.99 eV/atom (corrected)
    assert result.energy_per_atom < unrelaxed - 0.01
    assert result.structure.volume > item.structure.volume
    assert result.metadata["correction_per_atom"] == pytest.approx(MP_CL_CORRECTION / 2)
    assert result.metadata["raw_energy_per_atom"] == pytest.approx(result.energy_per_atom - MP_CL_CORRECTION / 2)


def test_formation_energy_matches_materials_project_only_with_the_mp2020_correction(sevennet, rock_salt,
                                                                                   wait_for):
    references = sevennet.reference_energies(["Mg", "O"])
    assert set(references) == {"Mg", "O"}
    assert -2.0 < references["Mg"] < -1.2 and -5.5 < references["O"] < -4.5  # MP: -1.60, -4.95 eV/atom
    item = rock_salt("Mg", "O", 4.21)
    [job_id] = sevennet.submit([item])
    result = wait_for(sevennet, [job_id])[job_id]
    formation = formation_energy_per_atom(item.crystal.composition, result.energy_per_atom, references)
    assert formation == pytest.approx(-3.062, abs=0.1)  # mp-1265
    raw = formation_energy_per_atom(item.crystal.composition, result.metadata["raw_energy_per_atom"], references)
    assert raw - formation == pytest.approx(-MP_OXIDE_CORRECTION / 2)


def test_an_isolated_atom_fails_with_the_kind_chgnet_gives(sevennet, wait_for):
    lonely = candidate(Structure(Lattice.cubic(12.0), ["Na"], [[0, 0, 0]]), "lonely")
    [job_id] = sevennet.submit([lonely])
    result = wait_for(sevennet, [job_id])[job_id]
    assert isinstance(result, Failed) and "isolated" in result.reason and "at step 0" in result.reason
    assert result.kind == chgnet.relax_candidate(lonely, settings=chgnet.CHGNetSettings()).kind == "unsupported"


def test_atoms_crushed_together_fail_with_an_absurd_energy(executor, wait_for):
    """0.4 A apart, SevenNet pulls Na onto Cl at billions of eV below zero (CHGNet holds them 0.24 A
    apart at a sane energy: ``too_close``); neither gives a label."""
    oracle = load_oracle("sevennet", {"max_steps": 20}, executor=executor)
    crushed = candidate(Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.1, 0, 0]]), "crushed")
    [job_id] = oracle.submit([crushed])
    result = wait_for(oracle, [job_id])[job_id]
    assert isinstance(result, Failed) and result.kind == "absurd_energy" and "absurd energy" in result.reason


def test_an_element_sevennet_does_not_know_is_unsupported(rock_salt):
    result = relax_candidate(rock_salt("Po", "O", 5.0), potential=potential(SevenNetSettings()))
    assert isinstance(result, Failed) and result.kind == "unsupported"
    assert result.reason.startswith("SevenNet cannot evaluate the structure at step 0: Model do not know atomic number: 84")


def test_settings_name_the_weights_and_the_scale():
    assert potential(SevenNetSettings(correction="none")).name == "sevennet-0-uncorrected"
    assert potential(SevenNetSettings(model="7net-l3i5")).name == "sevennet-l3i5"
    with pytest.raises(OracleError, match=r"oracle.settings.model='7net-omni' \(oracle 'sevennet'\)"):
        load_oracle("sevennet", {"model": "7net-omni"}, executor=None)
