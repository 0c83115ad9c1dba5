"""Entries into the crystal space: every drop counted under the first constraint the space's checker names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Composition

from aloop.config import CONFIG_DIR, load_config
from aloop.data.convert import Entries, first_broken_constraint, to_training_set
from aloop.space import CrystalSpace, check_crystal
from aloop.space.crystal import Crystal, CrystalBatch

CRYSTALS = [
    Crystal(225, Composition("Fe4O4"), (4.3,) * 3 + (90.0,) * 3),            # valid in Fe-O
    Crystal(167, Composition("Fe12O18"), (5.04, 5.04, 13.75, 90.0, 90.0, 120.0)),  # 12 Fe > 10
    Crystal(225, Composition("Na4Cl4"), (5.64,) * 3 + (90.0,) * 3),          # unknown elements
    Crystal(221, Composition("Fe1O1"), (3.0, 3.0, 3.0, 90.0, 90.0, 90.0)),    # Pm-3m FeO: valid
    Crystal(225, Composition("Fe4O4"), (4.3, 4.3, 4.4, 90.0, 90.0, 90.0)),    # cubic group, tetragonal cell
    Crystal(225, Composition("Fe4O4"), (4.3,) * 3 + (90.0,) * 3),            # valid, but no label
]


@pytest.fixture(scope="module")
def fe_o() -> CrystalSpace:
    return CrystalSpace.from_settings(load_config(CONFIG_DIR / "fe-o.yaml").space)


def entries() -> Entries:
    batch = CrystalBatch.from_crystals(CRYSTALS, ("O", "Na", "Cl", "Fe"))
    values = np.array([-1.0, -1.7, -2.1, -0.5, -1.1, np.nan])
    return Entries(source="mp", ids=tuple(f"mp-{i}" for i in range(len(CRYSTALS))), crystals=batch,
                   properties={"formation_energy_per_atom": values}, dropped={"symmetry_failed": 2})


def test_first_reason_agrees_with_the_space_checker(fe_o: CrystalSpace) -> None:
    reasons = first_broken_constraint(CrystalBatch.from_crystals(CRYSTALS, ("O", "Na", "Cl", "Fe")), fe_o)
    expected = [(check_crystal(c, fe_o) or [None])[0] for c in CRYSTALS]
    assert reasons.tolist() == [v.constraint.value if v else "" for v in expected]
    assert reasons.tolist() == ["", "too_many_atoms_of_element", "unknown_element", "", "lattice_system_rule", ""]


def test_conversion_keeps_valid_labelled_entries_and_counts_the_rest(fe_o: CrystalSpace) -> None:
    conversion = to_training_set(entries(), target="formation_energy_per_atom", space=fe_o)
    assert conversion.training.ids == ("mp-0", "mp-3")
    assert conversion.training.values.tolist() == [-1.0, -0.5]
    assert conversion.training.sources == ("mp",)
    assert conversion.dropped == {"symmetry_failed": 2, "missing_target": 1, "too_many_atoms_of_element": 1,
                                  "unknown_element": 1, "lattice_system_rule": 1}
    assert conversion.read == 8 and len(conversion.training) + sum(conversion.dropped.values()) == conversion.read


def test_without_a_space_only_missing_labels_are_dropped() -> None:
    conversion = to_training_set(entries(), target="formation_energy_per_atom")
    assert len(conversion.training) == 5 and conversion.dropped == {"symmetry_failed": 2, "missing_target": 1}
    band_gap = to_training_set(entries(), target="band_gap")  # a property the entries lack
    assert len(band_gap.training) == 0 and band_gap.dropped["missing_target"] == 6
    with pytest.raises(ValueError, match="target 'density'"):
        to_training_set(entries(), target="density")


def test_reasons_are_cached_by_crystals_and_space(fe_o: CrystalSpace, monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path) -> None:
    monkeypatch.setenv("ALOOP_CACHE_DIR", str(tmp_path))
    batch = CrystalBatch.from_crystals(CRYSTALS, ("O", "Na", "Cl", "Fe"))
    first = first_broken_constraint(batch, fe_o)
    monkeypatch.setattr("aloop.data.convert.broken_constraints", lambda *a: pytest.fail("cache not used"))
    assert first_broken_constraint(batch, fe_o).tolist() == first.tolist()
    moved = CrystalBatch(batch.elements, batch.space_group, batch.counts, batch.lattice + 0.5)
    with pytest.raises(pytest.fail.Exception, match="cache not used"):
        first_broken_constraint(moved, fe_o)
    assert torch.equal(batch.counts, CrystalBatch.from_crystals(CRYSTALS, ("O", "Na", "Cl", "Fe")).counts)
