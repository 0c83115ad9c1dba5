"""Materials Project rows get their Wyckoff sites from their structures, converted once and cached."""

from __future__ import annotations

import gzip
import json
import lzma
import warnings
from pathlib import Path

import pytest
import torch
from pymatgen.core import Lattice, Structure

from aloop.config import MPSettings, SpaceSettings
from aloop.data.local import read_local
from aloop.data.mp import MPQuery, cache_file, load_cache
from aloop.space import Crystal
from aloop.space.wyckoff import site_errors

from .test_local import write_folder

ROCK_SALT = Structure.from_spacegroup(225, Lattice.cubic(4.25), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
ZINC_BLENDE = Structure.from_spacegroup(216, Lattice.cubic(4.25), ["Mg", "O"], [[0, 0, 0], [0.25, 0.25, 0.25]])


def summary_row(material_id: str) -> dict:
    """A summary row of rock-salt MgO with exact conventional-cell columns."""
    return {"material_id": material_id, "formula_full": "Mg1 O1", "nsites": 2, "spacegroup_number": 225,
            "conv_a": 4.25, "conv_b": 4.25, "conv_c": 4.25, "conv_alpha": 90, "conv_beta": 90, "conv_gamma": 90,
            "conv_nsites": 8, "formation_energy_per_atom": -3.0}


def test_summary_rows_take_their_sites_from_their_cifs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALOOP_CACHE_DIR", str(tmp_path / "cache"))
    folder = write_folder(tmp_path / "dump", [summary_row("mp-1265"), summary_row("mp-other"),
                                              {"material_id": "mp-cif-only", "formation_energy_per_atom": -1.0}], [
        {"material_id": "mp-1265", "cif": ROCK_SALT.get_primitive_structure().to(fmt="cif")},
        {"material_id": "mp-other", "cif": ZINC_BLENDE.to(fmt="cif")},  # not the summary's crystal: no sites
        {"material_id": "mp-cif-only", "cif": ZINC_BLENDE.to(fmt="cif")}])

    entries = read_local(folder)
    again = read_local(folder)  # from the cache

    crystals = dict(zip(entries.ids, entries.crystals.to_crystals(), strict=True))
    assert {i: c.wyckoff for i, c in crystals.items()} == {
        "mp-1265": "Mg:4a O:4b", "mp-other": "", "mp-cif-only": "Mg:4a O:4c"}
    assert crystals["mp-other"].space_group == 225  # the summary's crystal is kept, only its sites are left out
    assert again.crystals.to_crystals() == entries.crystals.to_crystals()
    [cache] = [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("local-cifs-")]
    assert json.loads(cache.read_text())["mp-1265"]["wyckoff"] == "Mg:4a O:4b"


def test_a_cache_pulled_before_sites_is_converted_again_once(tmp_path: Path) -> None:
    query = MPQuery.from_settings(SpaceSettings(elements=["Mg", "O"], max_elements=2), MPSettings())
    structure = ROCK_SALT.get_primitive_structure()
    old_crystal = {"space_group": 225, "formula": "Mg4 O4", "a": 4.25, "b": 4.25, "c": 4.25, "alpha": 90.0,
                   "beta": 90.0, "gamma": 90.0}  # as version 1 wrote it: no wyckoff key
    records = [{"material_id": "mp-1265", "formation_energy_per_atom": -3.0, "structure": structure.as_dict(),
                "crystal": old_crystal},
               {"material_id": "mp-none", "formation_energy_per_atom": -1.0, "structure": None, "crystal": None}]
    path = cache_file(query, tmp_path)
    path.write_bytes(gzip.compress(json.dumps({"db_version": "old", "records": records}).encode()))

    entries = load_cache(query, cache_dir=tmp_path)

    assert entries.ids == ("mp-1265",) and entries.crystals.to_crystals()[0].wyckoff == "Mg:4a O:4b"
    payload = json.loads(gzip.decompress(path.read_bytes()))
    assert payload["crystals_version"] == 4 and payload["db_version"] == "old"
    assert payload["records"][0]["crystal"]["wyckoff"] == "Mg:4a O:4b"
    assert load_cache(query, cache_dir=tmp_path).crystals.to_crystals() == entries.crystals.to_crystals()


def test_shared_data_rows_have_the_sites_of_their_cifs(shared_data: Path) -> None:
    """At most 1% of mp_cgcnn36k lacks sites (spglib finds another group in pyxtal's setting); a sample of
    rows has the sites ``Crystal.from_structure`` gives its CIF, and they fit the row's group and counts."""
    entries = read_local(shared_data / "mp_cgcnn36k")
    sited = (entries.crystals.sites[:, :, 0] >= 0).any(dim=1)
    assert sited.float().mean() > 0.99
    rows = torch.arange(0, len(entries), 1000)
    crystals = dict(zip((entries.ids[i] for i in rows.tolist()), entries.crystals[rows].to_crystals(), strict=True))
    with lzma.open(shared_data / "mp_cgcnn36k" / "cifs.jsonl.xz", "rt") as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = {r["material_id"]: Crystal.from_structure(Structure.from_str(r["cif"], fmt="cif"))
                    for r in map(json.loads, handle) if r["material_id"] in crystals}
    assert sum(bool(c.sites) for c in crystals.values()) >= len(crystals) - 1
    for material_id, crystal in crystals.items():
        assert crystal.sites == expected[material_id].sites, material_id
        assert site_errors(crystal.sites, crystal.space_group,
                           {el.symbol: int(n) for el, n in crystal.composition.items()}) == []
