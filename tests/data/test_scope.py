"""``data.scope``: which Materials Project entries and labels train the proxy (space, neighbours, all), each
kept row counted inside or outside the space, and the mp-api query following the scope."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.core import Composition

from aloop.config import CONFIG_DIR, load_config
from aloop.data import TrainingSet
from aloop.data.assembly import assemble_training_set
from aloop.data.convert import Entries, to_training_set
from aloop.data.mp import FIELDS, MPQuery, load_cache, pull
from aloop.space import Crystal, CrystalBatch, CrystalSpace
from aloop.space.features import featurize
from aloop.store import Store, get_or_create_campaign, get_or_create_material, upsert_label

from .mp_server import VALID_KEY, FakeMaterialsProject

ENTRIES = {  # Fe-O (configs/fe-o.yaml): material id -> crystal, formation energy
    "in": (Crystal(225, Composition("Fe4O4"), (4.3,) * 3 + (90.0,) * 3), -1.0),
    "crowded": (Crystal(167, Composition("Fe12O18"), (5.04, 5.04, 13.75, 90.0, 90.0, 120.0)), -1.7),  # 12 Fe > 10
    "neighbour": (Crystal(225, Composition("Mg4O4"), (4.25,) * 3 + (90.0,) * 3), -3.0),  # shares O
    "far": (Crystal(225, Composition("Na4Cl4"), (5.64,) * 3 + (90.0,) * 3), -2.1),
    "unlabelled": (Crystal(221, Composition("Fe1O1"), (3.0,) * 3 + (90.0,) * 3), np.nan),
}
EXPECTED = {  # scope -> kept ids, dropped, kept outside the space
    "space": (["in"], {"too_many_atoms_of_element": 1, "unknown_element": 2, "missing_target": 1}, {}),
    "neighbours": (["in", "crowded", "neighbour"], {"no_shared_element": 1, "missing_target": 1},
                   {"too_many_atoms_of_element": 1, "unknown_element": 1}),
    "all": (["in", "crowded", "neighbour", "far"], {"missing_target": 1},
            {"too_many_atoms_of_element": 1, "unknown_element": 2}),
}


@pytest.fixture(scope="module")
def fe_o() -> CrystalSpace:
    return CrystalSpace.from_settings(load_config(CONFIG_DIR / "fe-o.yaml").space)


@pytest.mark.parametrize("scope", list(EXPECTED))
def test_each_scope_keeps_exactly_its_entries_and_counts_those_outside_the_space(fe_o: CrystalSpace,
                                                                                 scope: str) -> None:
    crystals, values = zip(*ENTRIES.values(), strict=True)
    entries = Entries("mp", tuple(ENTRIES), CrystalBatch.from_crystals(list(crystals), ("Fe", "O", "Mg", "Na", "Cl")),
                      {"formation_energy_per_atom": np.array(values)})
    conversion = to_training_set(entries, target="formation_energy_per_atom", space=fe_o, scope=scope)
    ids, dropped, outside = EXPECTED[scope]
    assert list(conversion.training.ids) == ids
    assert conversion.dropped == dropped and conversion.outside == outside
    assert conversion.training.crystals.to_crystals() == [ENTRIES[i][0] for i in ids]
    assert conversion.training.inside.tolist() == [i == "in" for i in ids]
    if outside:
        assert f"1 inside the space, {len(ids) - 1} outside" in conversion.describe()
    else:
        assert "inside" not in conversion.describe()
    with pytest.raises(ValueError, match="scope 'near'"):
        to_training_set(entries, target="formation_energy_per_atom", space=fe_o, scope="near")


LI_O = Crystal(225, Composition("Li8O4"), (4.6,) * 3 + (90.0,) * 3)
LABELS = {  # the campaign's band gaps, in a Li-O space
    LI_O: 5.0,                                                              # inside
    Crystal(225, Composition("Mn4O4"), (4.44,) * 3 + (90.0,) * 3): 3.6,     # neighbour
    Crystal(1, Composition("Li300O150"), (40.0,) * 3 + (90.0,) * 3): 5.1,   # neighbour, too many atoms
    Crystal(225, Composition("Na4Cl4"), (5.52,) * 3 + (90.0,) * 3): 4.1,    # far
    Composition("Li2O"): 5.2,                                               # a formula only
}
MP_KEPT = {  # the fake API's materials (tests/data/mp_server.py) kept in a Li-O space
    "space": ["mp-1960"],
    "neighbours": ["mp-1265", "mp-1960", "mp-19770", "mp-2534"],
    "all": ["mp-1265", "mp-149", "mp-1960", "mp-19770", "mp-22862", "mp-2534", "mp-573697"],
}
LABELS_KEPT = {"space": 1, "neighbours": 3, "all": 4}


def assemble(store: Store, fake_mp: FakeMaterialsProject, cache: Path, monkeypatch: pytest.MonkeyPatch, scope: str,
             *overrides: str):
    cfg = load_config(None, [f"data.mp.endpoint={fake_mp.url}", f"data.mp.cache_dir={cache}", f"data.scope={scope}",
                             "space.elements=[Li, O]", *overrides])
    monkeypatch.setenv("MP_API_KEY", VALID_KEY)
    pull(MPQuery.from_settings(cfg.space, cfg.data.mp, scope=scope), cache_dir=cache, progress=False)
    with store.session() as session:
        campaign = get_or_create_campaign(session, "test")
        for subject, value in LABELS.items():
            crystal = subject if isinstance(subject, Crystal) else None
            material = get_or_create_material(session, campaign, composition=getattr(subject, "composition", subject),
                                              crystal=crystal, source="import")
            upsert_label(session, material_id=material.id, oracle="import", fidelity=1.0, property="band_gap",
                         value=value)
        campaign_id = campaign.id
    return assemble_training_set(store, campaign_id, space=CrystalSpace.from_settings(cfg.space), settings=cfg.data,
                                 target="band_gap", seed=0)


@pytest.mark.parametrize("scope", list(MP_KEPT))
def test_the_round_keeps_the_scope_of_materials_project_and_of_the_labels(
        scope: str, store: Store, fake_mp: FakeMaterialsProject, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    assembly = assemble(store, fake_mp, tmp_path / "mp", monkeypatch, scope)
    training = assembly.training
    assert training is not None
    mp = sorted(i for i, s in zip(training.ids, training.row_sources(), strict=True) if s == "mp")
    assert mp == MP_KEPT[scope]  # the pull fetched the scope; the conversion kept it
    assert training.row_sources().count("import") == LABELS_KEPT[scope] and assembly.labels_read == 5
    assert LI_O in training.crystals.to_crystals()  # the label inside the space, in every scope
    assert assembly.dropped == {}  # each scope's query fetched only that scope
    inside = 2
    marked = [c for c, i in zip(training.crystals.to_crystals(), training.inside.tolist(), strict=True) if i]
    assert len(marked) == inside and LI_O in marked  # mp-1960 and the campaign's label inside the space
    assert [i for i, s, m in zip(training.ids, training.row_sources(), training.inside.tolist(), strict=True)
            if s == "mp" and m] == ["mp-1960"]
    text = assembly.describe()
    if scope == "space":
        assert assembly.outside == {} and "inside" not in text
        assert assembly.labels_dropped == {"no_crystal": 1, "unknown_element": 2, "too_many_atoms_of_element": 1}
    else:
        outside = len(training) - inside
        assert sum(assembly.outside.values()) == outside and assembly.outside["too_many_atoms_of_element"] == 1
        assert f": {inside} inside the space, {outside} outside (unknown_element {outside - 1}, " \
               f"too_many_atoms_of_element 1)" in text
        assert assembly.labels_dropped == ({"no_crystal": 1, "no_shared_element": 1} if scope == "neighbours"
                                           else {"no_crystal": 1})


def test_max_entries_keeps_materials_inside_the_space_first_and_every_label(
        store: Store, fake_mp: FakeMaterialsProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assembly = assemble(store, fake_mp, tmp_path / "mp", monkeypatch, "all", "data.max_entries=2")
    training = assembly.training
    assert training is not None
    mp = [i for i, s in zip(training.ids, training.row_sources(), strict=True) if s == "mp"]
    assert len(mp) == 2 and "mp-1960" in mp
    assert training.row_sources().count("import") == 4
    assert sum(assembly.outside.values()) == len(training) - 2


def test_neighbour_searches_are_disjoint_and_cover_every_element(fake_mp: FakeMaterialsProject, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(None, [f"data.mp.endpoint={fake_mp.url}", "space.elements=[O, Li, Cl]"])
    queries = {s: MPQuery.from_settings(cfg.space, cfg.data.mp, scope=s) for s in ("space", "neighbours", "all")}
    assert len({q.key for q in queries.values()}) == 3
    before_scopes = {"elements": ["Li", "O", "Cl"], "max_elements": 3, "max_sites": 20, "endpoint": fake_mp.url,
                     "fields": list(FIELDS), "version": 1}  # a space cache pulled before scopes keeps its file
    assert queries["space"].key == hashlib.sha1(json.dumps(before_scopes, sort_keys=True).encode()).hexdigest()[:16]
    assert [(k.get("elements"), k.get("exclude_elements")) for k in queries["neighbours"].searches()] == [
        (["Li"], None), (["O"], ["Li"]), (["Cl"], ["Li", "O"])]
    assert "elements" not in queries["all"].searches()[0] and "exclude_elements" not in queries["all"].searches()[0]
    monkeypatch.setenv("MP_API_KEY", VALID_KEY)
    pull(queries["neighbours"], cache_dir=tmp_path, progress=False)
    entries = load_cache(queries["neighbours"], cache_dir=tmp_path)
    assert entries is not None  # NaCl, MgO, Li2O, Fe2O3, ZnO, CsCl share an element, Si does not; none twice
    assert sorted(entries.ids) == ["mp-1265", "mp-1960", "mp-19770", "mp-22862", "mp-2534", "mp-573697"]


def test_features_do_not_depend_on_the_other_rows_elements() -> None:
    inside = TrainingSet.from_crystals([LI_O], [-2.0], sources=["mp"], ids=["a"], target="formation_energy_per_atom")
    far = TrainingSet.from_crystals([Crystal(221, Composition("Cs1Cl1"), (4.12,) * 3 + (90.0,) * 3)], [-2.2],
                                    sources=["mp"], ids=["b"], target="formation_energy_per_atom")
    both = TrainingSet.concat([inside, far])
    assert both.crystals.elements == ("Li", "O", "Cl", "Cs")
    assert torch.equal(featurize(both.crystals), torch.cat([featurize(inside.crystals), featurize(far.crystals)]))
