"""The round's training set: the campaign's own labels are marked, and its dropped ones counted apart from Materials
Project's."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymatgen.core import Composition

from aloop.config import load_config
from aloop.data.assembly import assemble_training_set
from aloop.data.mp import MPQuery, pull
from aloop.space import Crystal, CrystalSpace
from aloop.store import Store, get_or_create_campaign, get_or_create_material, upsert_label

from .mp_server import VALID_KEY, FakeMaterialsProject

TARGET = "band_gap"
LABELS = {  # what the campaign stored -> its band gap
    Crystal(225, Composition("Mn4O4"), (4.44,) * 3 + (90.0,) * 3): 3.6,          # inside the default space
    Crystal(225, Composition("Ba4O4"), (5.52,) * 3 + (90.0,) * 3): 4.1,          # Ba is not among its elements
    Crystal(1, Composition("Li300O150"), (40.0,) * 3 + (90.0,) * 3): 5.0,        # more atoms than any space holds
    Composition("Li2O"): 5.2,                                                    # a formula only
}


def store_labels(store: Store) -> int:
    with store.session() as session:
        campaign = get_or_create_campaign(session, "test")
        for subject, value in LABELS.items():
            crystal = subject if isinstance(subject, Crystal) else None
            composition = subject.composition if isinstance(subject, Crystal) else subject
            material = get_or_create_material(session, campaign, composition=composition, crystal=crystal,
                                              source="import")
            upsert_label(session, material_id=material.id, oracle="import", fidelity=1.0, property=TARGET,
                         value=value)
        return campaign.id


def test_labels_outside_the_space_or_without_a_crystal_are_counted_apart(store: Store, fake_mp: FakeMaterialsProject,
                                                                          tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    cfg = load_config(None, [f"data.mp.endpoint={fake_mp.url}", f"data.mp.cache_dir={tmp_path / 'mp'}",
                             "data.scope=space"])
    monkeypatch.setenv("MP_API_KEY", VALID_KEY)
    pull(MPQuery.from_settings(cfg.space, cfg.data.mp), cache_dir=tmp_path / "mp", progress=False)
    space = CrystalSpace.from_settings(cfg.space)
    assembly = assemble_training_set(store, store_labels(store), space=space, settings=cfg.data, target=TARGET,
                                     seed=0)
    assert assembly.training is not None and sorted(assembly.training.row_sources()) == ["import"] + ["mp"] * 4
    marked = [name for name, own in zip(assembly.training.row_sources(), assembly.training.campaign_label.tolist(),
                                        strict=True) if own]
    assert marked == ["import"]  # the campaign's label is its own; Materials Project's rows are not
    assert assembly.dropped == {"too_many_atoms_of_element": 1, "too_few_elements": 1}  # Fe12 O18; Si8
    assert assembly.labels_read == 4
    assert assembly.labels_dropped == {"no_crystal": 1, "unknown_element": 1, "too_many_atoms_of_element": 1}
    assert assembly.describe() == (
        "5 entries ({'mp': 4, 'import': 1}); dropped: Materials Project entries 2 (too_few_elements 1, "
        "too_many_atoms_of_element 1), campaign labels 3 of 4 (no_crystal 1, too_many_atoms_of_element 1, "
        "unknown_element 1)")
