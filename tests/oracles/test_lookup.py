"""Lookup oracle: labels from a table matched by reduced formula and space group."""

from __future__ import annotations

import pandas as pd
import pytest
from pymatgen.core import Composition

from aloop.oracle import Failed, Labelled, OracleError, load_oracle
from aloop.space import Crystal


@pytest.fixture
def table(tmp_path) -> str:
    path = tmp_path / "mp.csv.gz"
    pd.DataFrame({"material_id": ["mp-1", "mp-2", "mp-3"], "formula": ["NaCl", "Na2Cl2", "MgO"],
                  "spacegroup_number": [225, 225, 225], "formation_energy_per_atom": [-2.0, -2.1, -3.0],
                  "band_gap": [5.0, 5.2, float("nan")]}).to_csv(path, index=False)
    return str(path)


def test_matches_reduced_formula_and_space_group_preferring_the_lowest_energy(table, rock_salt):
    oracle = load_oracle("lookup", {"table": table}, executor=None)
    items = [rock_salt("Na", "Cl", 5.69, primitive=False), rock_salt("Mg", "O", 4.21)]
    results = oracle.poll(oracle.submit(items))
    nacl, mgo = results.values()
    assert isinstance(nacl, Labelled) and nacl.properties == {"formation_energy_per_atom": -2.1, "band_gap": 5.2}
    assert nacl.metadata["id"] == "mp-2"
    assert mgo.properties == {"formation_energy_per_atom": -3.0}  # NaN band gap is left out


def test_no_match_is_a_failed_label(table, rock_salt):
    oracle = load_oracle("lookup", {"table": table}, executor=None)
    item = rock_salt("Na", "Cl", 5.69)
    other_group = type(item)(item.candidate_id, Crystal(221, Composition("NaCl"), item.crystal.lattice), item.structure)
    [job_id] = oracle.submit([other_group])
    result = oracle.poll([job_id])[job_id]
    assert isinstance(result, Failed) and "NaCl in space group 221" in result.reason and result.kind == "unsupported"


def test_each_submission_is_a_new_job(table, rock_salt):
    oracle = load_oracle("lookup", {"table": table}, executor=None)
    item = rock_salt("Mg", "O", 4.21)
    first, again = oracle.submit([item]) + oracle.submit([item])  # a retried candidate keeps its first job
    assert first != again and first.startswith(f"lookup-{item.candidate_id}-")
    assert oracle.poll([first, again]) == {first: oracle.poll([first])[first], again: oracle.poll([first])[first]}


def test_missing_table_or_column_is_a_clear_error(table, tmp_path):
    with pytest.raises(OracleError, match=r"oracle.settings.table='nope.csv' .*no such file"):
        load_oracle("lookup", {"table": "nope.csv"}, executor=None)
    with pytest.raises(ValueError, match=r"missing columns \['gap'\]"):
        load_oracle("lookup", {"table": table, "properties": ["gap"]}, executor=None)
