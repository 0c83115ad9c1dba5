"""mp-api, the real client, against a local stand-in of the Materials Project API on 127.0.0.1."""

from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path

import pytest

from aloop.config import MPSettings, SpaceSettings, load_config
from aloop.data.convert import to_training_set
from aloop.data.mp import MPError, MPQuery, cache_file, load_cache, pull
from aloop.space import CrystalSpace
from .mp_server import VALID_KEY, FakeMaterialsProject

ELEMENTS = ["Li", "Na", "Mg", "Si", "O", "Cl", "Fe", "Zn"]


def query_for(url: str, *, max_sites: int = 20) -> MPQuery:
    return MPQuery.from_settings(SpaceSettings(elements=ELEMENTS, max_elements=3),
                                 MPSettings(endpoint=url, max_sites=max_sites))


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MP_API_KEY", VALID_KEY)
    return VALID_KEY


def test_pull_caches_the_space_entries_as_conventional_cells(fake_mp: FakeMaterialsProject, key: str,
                                                             tmp_path: Path) -> None:
    report = pull(query_for(fake_mp.url), cache_dir=tmp_path, progress=False)
    entries = load_cache(query_for(fake_mp.url), cache_dir=tmp_path)

    assert report.entries == 6 and report.db_version == "2025.09.25" and report.unconverted == 0
    assert entries is not None and entries.source == "mp"
    assert set(entries.ids) == {"mp-22862", "mp-1265", "mp-1960", "mp-149", "mp-19770", "mp-2534"}  # no Cs, no deprecated
    crystals = dict(zip(entries.ids, entries.crystals.to_crystals(), strict=True))
    expected = {  # conventional standard cells: space group, cell formula, a, c
        "mp-22862": (225, "Na4 Cl4", 5.69, 5.69), "mp-1960": (225, "Li8 O4", 4.65, 4.65),
        "mp-149": (227, "Si8", 5.47, 5.47), "mp-19770": (167, "Fe12 O18", 5.04, 13.75),
        "mp-2534": (186, "Zn2 O2", 3.25, 5.21),
    }
    for material_id, (group, formula, a, c) in expected.items():
        crystal = crystals[material_id]
        assert (crystal.space_group, crystal.formula) == (group, formula)
        assert crystal.lattice[0] == pytest.approx(a, abs=1e-3) and crystal.lattice[2] == pytest.approx(c, abs=1e-3)
    row = entries.ids.index("mp-1265")
    assert entries.properties["formation_energy_per_atom"][row] == pytest.approx(-3.05)
    assert entries.properties["band_gap"][row] == pytest.approx(4.45)


def test_the_request_restricts_elements_sites_and_fields_and_the_key_stays_out_of_the_cache(
        fake_mp: FakeMaterialsProject, key: str, tmp_path: Path) -> None:
    pull(query_for(fake_mp.url, max_sites=12), cache_dir=tmp_path, progress=False)

    summary = [r for r in fake_mp.requests if r["path"].startswith("/materials/summary")]
    params = summary[0]["params"]
    excluded = set(params["exclude_elements"].split(","))
    assert "Cs" in excluded and not excluded & set(ELEMENTS)
    assert (params["nelements_max"], params["nsites_max"]) == ("3", "12")
    assert set(params["_fields"].split(",")) >= {"material_id", "structure", "formation_energy_per_atom", "band_gap"}
    assert all(r["key"] == key for r in summary)
    assert key.encode() not in gzip.decompress(cache_file(query_for(fake_mp.url, max_sites=12), tmp_path).read_bytes())


def test_pagination_fetches_every_page(fake_mp: FakeMaterialsProject, key: str, tmp_path: Path) -> None:
    report = pull(query_for(fake_mp.url), cache_dir=tmp_path, chunk_size=2, progress=False)

    pages = [r["params"] for r in fake_mp.requests if r["path"].startswith("/materials/summary")]
    assert report.entries == 6
    assert sorted(int(p.get("_skip", 0)) for p in pages) == [0, 2, 4]
    assert all(int(p["_limit"]) == 2 for p in pages)


def test_an_error_response_raises_a_clear_message_and_keeps_the_cache(fake_mp: FakeMaterialsProject, key: str,
                                                                     tmp_path: Path) -> None:
    query = query_for(fake_mp.url)
    pull(query, cache_dir=tmp_path, progress=False)
    before = cache_file(query, tmp_path).read_bytes()
    fake_mp.mode = "error"

    with pytest.raises(MPError, match=r"HTTP 500 \(.*database unavailable.*cache was left as it was"):
        pull(query, cache_dir=tmp_path, progress=False)
    assert cache_file(query, tmp_path).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [cache_file(query, tmp_path).name]  # no temporary file left


def test_a_bad_key_is_reported_without_showing_it(fake_mp: FakeMaterialsProject, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    bad = "b" * 32
    monkeypatch.setenv("MP_API_KEY", bad)

    with pytest.raises(MPError, match="rejected the API key in MP_API_KEY \\(HTTP 401\\)") as err:
        pull(query_for(fake_mp.url), cache_dir=tmp_path, progress=False)
    assert bad not in str(err.value)
    assert not any(tmp_path.iterdir())


def test_a_key_of_the_wrong_length_is_named(fake_mp: FakeMaterialsProject, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MP_API_KEY", "short")
    with pytest.raises(MPError, match="valid keys have 32 characters"):
        pull(query_for(fake_mp.url), cache_dir=tmp_path, progress=False)


def test_without_a_key_nothing_touches_the_network(fake_mp: FakeMaterialsProject, tmp_path: Path) -> None:
    with pytest.raises(MPError, match="MP_API_KEY is not set"):
        pull(query_for(fake_mp.url), cache_dir=tmp_path, progress=False)
    assert fake_mp.requests == []
    assert load_cache(query_for(fake_mp.url), cache_dir=tmp_path) is None


def test_an_unreachable_server_is_a_network_error(key: str, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(MPError, match="cannot reach http://127.0.0.1"):
        pull(query_for(f"http://127.0.0.1:{port}/"), cache_dir=tmp_path, progress=False)


def test_a_server_that_is_not_the_api_is_named(fake_mp: FakeMaterialsProject, key: str, tmp_path: Path) -> None:
    fake_mp.mode = "garbage"
    with pytest.raises(MPError, match="did not answer like the Materials Project API"):
        pull(query_for(fake_mp.url), cache_dir=tmp_path, progress=False)


def test_cached_entries_outside_the_space_are_dropped_with_counted_reasons(fake_mp: FakeMaterialsProject, key: str,
                                                                          tmp_path: Path) -> None:
    pull(query_for(fake_mp.url), cache_dir=tmp_path, progress=False)
    entries = load_cache(query_for(fake_mp.url), cache_dir=tmp_path)
    space = CrystalSpace.from_settings(load_config().space)  # at most 8 atoms of an element, 2 elements or more

    conversion = to_training_set(entries, target="band_gap", space=space)

    assert conversion.dropped == {"too_many_atoms_of_element": 1, "too_few_elements": 1}  # Fe12 O18; Si8
    assert sorted(conversion.training.ids) == ["mp-1265", "mp-1960", "mp-22862", "mp-2534"]
    assert conversion.read == 6 and "too_many_atoms_of_element 1" in conversion.describe()


def test_an_unreadable_cache_is_reported(tmp_path: Path) -> None:
    query = query_for("http://127.0.0.1:1/")
    cache_file(query, tmp_path).write_bytes(gzip.compress(json.dumps({"no": "records"}).encode()))
    with pytest.raises(MPError, match="unreadable Materials Project cache"):
        load_cache(query, cache_dir=tmp_path)


def test_cached_compounds_near_their_hull_become_known_phases_of_the_space(
        fake_mp: FakeMaterialsProject, key: str, tmp_path: Path) -> None:
    from aloop.config import DataSettings, HullSettings
    from aloop.hull import known_phases

    space = SpaceSettings(elements=ELEMENTS, max_elements=3)
    data = DataSettings(mp=MPSettings(endpoint=fake_mp.url, cache_dir=str(tmp_path)), scope="space")  # query_for's
    assert known_phases(space, data, HullSettings()) == []  # never pulled: no known phases
    pull(query_for(fake_mp.url), cache_dir=tmp_path, progress=False)
    entries = load_cache(query_for(fake_mp.url), cache_dir=tmp_path)
    phases = {p.material_id: p for p in known_phases(space, data, HullSettings())}
    compounds = {i for i, c in zip(entries.ids, entries.crystals.to_crystals(), strict=True)
                 if len(c.composition.elements) > 1}
    assert set(phases) == compounds  # every cached compound sits on its hull (E_hull 0); elements are references
    assert phases["mp-22862"].structure.composition.reduced_formula == "NaCl"
    assert known_phases(space, data, HullSettings(max_sites=1)) == []
    assert known_phases(space, data, HullSettings(known_phases=False)) == []
