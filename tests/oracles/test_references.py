"""Elemental references: structures for ML relaxations, MP's energies for DFT."""

from __future__ import annotations

import gzip
import json

import pytest
from pymatgen.entries.computed_entries import ComputedEntry

from oracles.references import mp_reference_energies, reference_structures


def test_sulfur_gets_the_s8_ring_that_the_delta_set_lacks():
    sizes = sorted(len(atoms) for atoms in reference_structures("S"))
    assert 8 in sizes
    with pytest.raises(ValueError, match="no reference structure for element 'Xx'"):
        reference_structures("Xx")


def test_mp_references_shipped_with_pymatgen_equal_mp_2023_elemental_entries(shared_data):
    path = shared_data / "mp_elemental_reference_entries_2023-02-07.json.gz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    mp2023 = {el: ComputedEntry.from_dict(d).energy_per_atom for el, d in json.loads(gzip.open(path).read()).items()}
    ours = mp_reference_energies(["O", "Fe", "Li", "Mn", "S", "Cl"])
    assert ours == pytest.approx({el: mp2023[el] for el in ours}, abs=2e-3)
    with pytest.raises(ValueError, match="no Materials Project reference entry"):
        mp_reference_energies(["Og"])
