"""Oracle registry: entry points, import paths, settings validation, an installed plug-in."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

from aloop.oracle import (
    FAILURE_KINDS,
    TRANSIENT_KINDS,
    Failed,
    Labelled,
    Oracle,
    OracleError,
    OracleInput,
    installed_oracles,
    load_oracle,
)
from aloop.space import Crystal

PLUGIN = Path(__file__).resolve().parent / "plugin"


def nacl() -> OracleInput:
    structure = Structure.from_spacegroup(225, Lattice.cubic(5.69), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    return OracleInput("7", Crystal.from_structure(structure), structure)


def test_a_failure_has_a_kind_oracle_error_unless_told():
    assert Failed("segfault").kind == "oracle_error"  # a third-party plug-in written before kinds
    assert Failed("walltime", {"queue": "short"}, kind="timeout") == Failed("walltime", {"queue": "short"},
                                                                           kind="timeout")
    with pytest.raises(TypeError):
        Failed("walltime", {}, "timeout")  # keyword only: never mistaken for metadata
    with pytest.raises(ValueError, match=r"kind='timed_out' is not one of \['placement', .*'lost'\]"):
        Failed("walltime", kind="timed_out")


def test_transient_kinds_are_failure_kinds():
    assert {"placement", "not_converged", "too_close", "absurd_energy", "exploded", "timeout", "non_finite",
            "oracle_error", "lost"} <= set(FAILURE_KINDS)
    assert set(TRANSIENT_KINDS) == {"timeout", "lost", "oracle_error"}


def test_shipped_oracles_are_installed_entry_points():
    assert {"chgnet", "atomate2", "lookup"} <= set(installed_oracles())


def test_an_unknown_oracle_name_lists_the_installed_ones():
    with pytest.raises(OracleError, match=r"oracle.name='chgnett' is not an installed oracle") as err:
        load_oracle("chgnett", {}, executor=None)
    assert "'chgnet'" in str(err.value) and "'lookup'" in str(err.value)


def test_a_bad_setting_names_key_value_oracle_and_rule():
    with pytest.raises(OracleError, match=r"oracle.settings.fmax=-1 \(oracle 'chgnet'\): Input should be greater than 0"):
        load_oracle("chgnet", {"fmax": -1}, executor=None)


def test_an_unknown_setting_lists_the_valid_keys():
    with pytest.raises(OracleError, match=r"unknown key 'steps' for oracle 'chgnet' \(valid keys: .*'max_steps'"):
        load_oracle("chgnet", {"steps": 30}, executor=None)


def test_a_missing_required_setting_is_named(tmp_path):
    with pytest.raises(OracleError, match=r"oracle.settings.table is required by oracle 'lookup'"):
        load_oracle("lookup", {}, executor=None)


def test_an_import_path_loads_a_class_and_a_bad_one_says_what_failed(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("material_id,formula,spacegroup_number,formation_energy_per_atom,band_gap\nmp-1,NaCl,225,-2.1,5\n")
    oracle = load_oracle("oracles.lookup:LookupOracle", {"table": str(table)}, executor=None)
    assert isinstance(oracle, Oracle) and oracle.name == "lookup-t"
    with pytest.raises(OracleError, match=r"cannot import 'Nope' from 'oracles.lookup'"):
        load_oracle("oracles.lookup:Nope", {}, executor=None)


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """The test plug-in pip-installed into a fresh target folder (its dist-info included)."""
    source, target = tmp_path_factory.mktemp("plugin") / "src", tmp_path_factory.mktemp("site")
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True)
    return target


def test_an_installed_plugin_is_found_by_its_entry_point_and_labels(plugin_path, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_path))
    assert "ewald" in installed_oracles()
    oracle = load_oracle("ewald", {"accuracy": 5}, executor=None)
    [job_id] = oracle.submit([nacl()])
    result = oracle.poll([job_id])[job_id]
    assert isinstance(result, Labelled)
    assert result.properties["ewald_energy_per_atom"] < -4.0  # Madelung energy of NaCl, about -4.3 eV/atom
    with pytest.raises(OracleError, match=r"oracle.settings.accuracy=0 \(oracle 'ewald'\)"):
        load_oracle("ewald", {"accuracy": 0}, executor=None)


def test_the_plugin_fails_a_candidate_without_balanced_charges(plugin_path, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_path))
    structure = Structure(Lattice.cubic(3.0), ["Na", "Na"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    item = OracleInput("8", Crystal.from_structure(structure), structure)
    oracle = load_oracle("ewald", {}, executor=None)
    result = oracle.poll(oracle.submit([item]))["ewald-8"]
    assert isinstance(result, Failed) and result.kind == "unsupported"


def test_a_plugin_that_fails_to_import_names_its_entry_point(tmp_path, monkeypatch):
    dist = tmp_path / "broken_oracle-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-oracle\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[aloop.oracles]\nbroken = broken_oracle_missing:Oracle\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(OracleError, match=r"oracle entry point 'broken' \(broken_oracle_missing:Oracle\) "
                                          r"failed to load: ModuleNotFoundError"):
        load_oracle("broken", {}, executor=None)
