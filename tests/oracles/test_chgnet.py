"""CHGNet oracle: real relaxations of small cells, formation energies against MP, failures as results."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pymatgen.core import Lattice, Structure

from aloop.oracle import Failed, Labelled, OracleInput, load_oracle
from aloop.space.crystal import Crystal
from aloop.thermo import e_above_hull, formation_energy_per_atom
from oracles.chgnet import CHGNetOracle, CHGNetSettings, relax_candidate

# Materials Project formation energies (eV/atom) of the rock-salt ground states:
# mp-22862 NaCl, mp-1265 MgO, mp-22905 LiCl.
MP_FORMATION = {("Na", "Cl", 5.69): -2.105, ("Mg", "O", 4.21): -3.062, ("Li", "Cl", 5.13): -2.107}


@pytest.fixture(scope="module")
def chgnet(executor) -> CHGNetOracle:
    return load_oracle("chgnet", {"max_steps": 200, "timeout_s": 120}, executor=executor)


@pytest.fixture(scope="module")
def references(chgnet) -> dict[str, float]:
    return chgnet.reference_energies(["Na", "Cl", "Mg", "O", "Li"])


@pytest.mark.parametrize("compound", list(MP_FORMATION), ids=lambda c: f"{c[0]}{c[1]}")
def test_formation_energy_of_known_compounds_matches_materials_project(chgnet, references, compound, rock_salt,
                                                                      wait_for):
    item = rock_salt(*compound)
    [job_id] = chgnet.submit([item])
    result = wait_for(chgnet, [job_id])[job_id]
    assert isinstance(result, Labelled), result
    assert result.metadata["converged"] and result.metadata["model"] == "chgnet-0.3.0"
    assert result.metadata["steps"] <= 200
    formation = formation_energy_per_atom(item.crystal.composition, result.energy_per_atom, references)
    assert formation == pytest.approx(MP_FORMATION[compound], abs=0.15)
    assert e_above_hull(item.crystal.composition, result.energy_per_atom, references=references) == 0.0


def test_a_compressed_cell_relaxes_to_the_same_energy(chgnet, rock_salt, wait_for):
    near, squeezed = rock_salt("Mg", "O", 4.21, candidate_id="a"), rock_salt("Mg", "O", 4.05, candidate_id="b")
    results = wait_for(chgnet, chgnet.submit([near, squeezed]))
    energies = [r.energy_per_atom for r in results.values()]
    assert energies[0] == pytest.approx(energies[1], abs=0.01)
    assert results[next(iter(results))].structure.volume != pytest.approx(near.structure.volume, rel=1e-6)


@pytest.mark.parametrize(("settings", "reason", "kind"), [
    ({"max_steps": 1, "fmax": 0.001}, "not converged after 1 steps", "not_converged"),
    ({"timeout_s": 1e-6}, "timed out", "timeout"),
])
def test_a_relaxation_that_fails_is_a_failed_result_with_its_reason(executor, settings, reason, kind, rock_salt,
                                                                    wait_for):
    oracle = load_oracle("chgnet", settings, executor=executor)
    [job_id] = oracle.submit([rock_salt("Mg", "O", 4.0)])
    result = wait_for(oracle, [job_id])[job_id]
    assert isinstance(result, Failed) and reason in result.reason and result.kind == kind, result


def test_an_isolated_atom_fails_instead_of_crashing(chgnet, wait_for):
    lonely = Structure(Lattice.cubic(12.0), ["Na"], [[0, 0, 0]])
    item = OracleInput("lonely", Crystal(221, lonely.composition, (12.0, 12.0, 12.0, 90.0, 90.0, 90.0)), lonely)
    [job_id] = chgnet.submit([item])
    result = wait_for(chgnet, [job_id])[job_id]
    assert isinstance(result, Failed) and "isolated" in result.reason.lower() and result.kind == "unsupported"
    direct = relax_candidate(item, settings=chgnet.settings)  # benchmarks call it outside the job pool
    assert isinstance(direct, Failed) and "isolated" in direct.reason and "at step 0" in direct.reason


def test_settings_reject_unknown_optimizer():
    with pytest.raises(ValueError, match="optimizer"):
        CHGNetSettings(optimizer="Adam")


@pytest.mark.parametrize("name, module", [("chgnet", "chgnet.model.dynamics"), ("sevennet", "sevenn.calculator")])
def test_the_oracle_imports_its_model_before_any_worker_thread_does(name, module):
    # two worker threads importing chgnet's circular modules at once raise _DeadlockError, and every job of
    # the batch failed with it (the smoke round's cold-start design, every other run): a fresh interpreter
    # must have the modules once the oracle is built, before a job runs
    code = ("import sys\nfrom concurrent.futures import ThreadPoolExecutor\nfrom aloop.oracle import load_oracle\n"
            f"load_oracle({name!r}, {{}}, executor=ThreadPoolExecutor(2))\n"
            f"assert {module!r} in sys.modules, sorted(m for m in sys.modules if m.startswith({module.split('.')[0]!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
