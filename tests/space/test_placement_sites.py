"""Placement on a crystal's Wyckoff sites, sites through a saved proposal, and sites in batch diversity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Composition, Lattice, Structure

from aloop.proposal import Proposal
from aloop.proxy import Prediction
from aloop.selection import KnownMaterials, diversity_key, select_diverse
from aloop.space.crystal import Crystal, CrystalBatch
from aloop.space.structure import StructureError, place

CRYSTALS = [
    Crystal(62, Composition("Li4Mn4O8"), (10.0, 6.0, 5.0, 90.0, 90.0, 90.0),
            (("Li", "a"), ("Mn", "c"), ("O", "c"), ("O", "c"))),
    Crystal(166, Composition("Li3Co3O6"), (2.8, 2.8, 14.0, 90.0, 90.0, 120.0), (("Li", "b"), ("Co", "a"), ("O", "c"))),
    Crystal(14, Composition("Li4Mn4O8"), (5.0, 6.0, 7.0, 90.0, 100.0, 90.0),
            (("Li", "e"), ("Mn", "e"), ("O", "e"), ("O", "e"))),
]


@pytest.mark.parametrize("crystal", CRYSTALS, ids=lambda c: f"{c.space_group}-{c.wyckoff}")
@pytest.mark.parametrize("seed", [0, 1])
def test_atoms_sit_on_exactly_the_crystals_sites(crystal: Crystal, seed: int) -> None:
    structure = place(crystal, seed=seed)
    found = Crystal.from_structure(structure)
    assert (found.space_group, found.sites) == (crystal.space_group, crystal.sites)
    # read back in the sites' setting: Pnma keeps a = 10, b = 6, c = 5 (pymatgen's conventional cell sorts them)
    assert found.lattice == pytest.approx(crystal.lattice, abs=1e-3)


def test_sites_that_do_not_fit_are_refused() -> None:
    crystal = Crystal(62, Composition("Li4Mn4O8"), (10.0, 6.0, 5.0, 90.0, 90.0, 90.0),
                      (("Li", "a"), ("Mn", "a"), ("O", "d")))  # 4a holds one orbit only
    with pytest.raises(StructureError):
        place(crystal, seed=0)


def test_a_pyxtal_type_error_is_a_failed_attempt_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyxtal 1.1.5 sometimes compares a distance with a missing tolerance on given sites (TypeError): the
    attempt fails, the next one runs, and a crystal whose every attempt fails is a StructureError, not a crash."""
    from pyxtal import pyxtal

    calls = []
    original = pyxtal.from_random

    def flaky(self, *args, **kwargs):  # noqa: ANN001, ANN202
        calls.append(1)
        if len(calls) == 1:
            raise TypeError("'<' not supported between instances of 'float' and 'NoneType'")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pyxtal, "from_random", flaky)
    structure = place(CRYSTALS[0], seed=0)
    assert len(calls) == 2 and Crystal.from_structure(structure).sites == CRYSTALS[0].sites

    monkeypatch.setattr(pyxtal, "from_random", lambda self, *a, **k: (_ for _ in ()).throw(TypeError("tolerance")))
    with pytest.raises(StructureError, match="distance check"):
        place(CRYSTALS[0], seed=0)


def test_same_group_composition_and_sites_are_near_duplicates() -> None:
    base = CRYSTALS[0]
    stretched = Crystal(base.space_group, base.composition, (10.5, 6.1, 5.2, 90.0, 90.0, 90.0), base.sites)
    other_sites = Crystal(base.space_group, base.composition, base.lattice,
                          (("Li", "b"), ("Mn", "c"), ("O", "c"), ("O", "c")))
    assert diversity_key(base) == diversity_key(stretched) != diversity_key(other_sites)
    cesium_chloride = Structure(Lattice.cubic(4.0), ["Li", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    rock_salt = Structure.from_spacegroup(225, Lattice.cubic(4.6), ["Li", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    choice = select_diverse([base, stretched, other_sites], np.array([3.0, 2.0, 1.0]), size=3,
                            known=KnownMaterials(),
                            to_structure=lambda c: rock_salt if c.sites == other_sites.sites else cesium_chloride,
                            chemsys_penalty=0.0, space_group_penalty=0.0)
    assert choice.indices == [0, 2]
    assert choice.skipped == {"duplicate": 1}


def test_a_saved_proposal_keeps_the_sites(tmp_path) -> None:  # noqa: ANN001
    samples = CrystalBatch.from_crystals(CRYSTALS, ("Li", "Co", "Mn", "O"))
    n = len(samples)
    proposal = Proposal(samples, torch.zeros(n), torch.ones(n, dtype=torch.bool), torch.zeros(n),
                        Prediction(torch.zeros(n), torch.ones(n)), (2, 0), (place(CRYSTALS[2], seed=0),) * 2, {})
    proposal.save(tmp_path / "proposal.pt")
    assert [c.sites for c in Proposal.load(tmp_path / "proposal.pt").batch] == [CRYSTALS[2].sites, CRYSTALS[0].sites]
