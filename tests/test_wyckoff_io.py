"""Wyckoff sites as text: parsing and formatting, from structures, and through labels files and MLflow."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import lzma
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from pymatgen.core import Composition, Lattice, Structure

from aloop.label_files import export_labels, import_labels, read_labels
from aloop.space import LATTICE_KEYS, Crystal, CrystalBatch
from aloop.space.wyckoff import SitesError, format_sites, parse_sites, site_errors
from aloop.store import Store, find_campaign, labelled_data
from aloop.tracking import (
    CandidateView,
    client_for,
    ensure_experiment,
    log_candidates,
    log_candidates_table,
    predict_table,
)

NACL = Structure.from_spacegroup(225, Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
ROCK_SALT = Crystal(225, Composition("Na4Cl4"), (5.64, 5.64, 5.64, 90.0, 90.0, 90.0), (("Na", "a"), ("Cl", "b")))


@pytest.mark.parametrize(("text", "message"), [
    ("Na4a", "'Na4a' is not Element:<multiplicity><letter>"),
    ("Na:a", "'Na:a' is not Element:<multiplicity><letter>"),
    ("Xx:4a", "'Xx:4a': 'Xx' is not an element"),
    ("Na:4a Cl:4z", "'Cl:4z': space group 225 has no position 'z'"),
    ("Na:8a", "'Na:8a': position a of space group 225 has multiplicity 4, not 8"),
])
def test_a_malformed_token_is_named(text: str, message: str) -> None:
    with pytest.raises(SitesError, match=message):
        parse_sites(text, 225)


def test_text_is_canonical_and_round_trips() -> None:
    sites = parse_sites("O:24e Cl:4b O:24e Na:4a", 225)  # any order in, canonical order out (electronegativity)
    assert sites == (("Na", "a"), ("Cl", "b"), ("O", "e"), ("O", "e"))
    assert format_sites(reversed(sites), 225) == "Na:4a Cl:4b O:24e O:24e"
    assert parse_sites("", 225) == () and parse_sites("  ", 225) == ()


def test_site_errors_name_the_miscount_and_the_doubled_fixed_position() -> None:
    assert site_errors(ROCK_SALT.sites, 225, {"Na": 4, "Cl": 4}) == []
    assert site_errors((("Na", "a"), ("Cl", "a")), 225, {"Na": 4, "Cl": 4}) == [
        "position 4a has no free coordinate but holds 2 orbits"]
    assert site_errors((("Na", "a"),), 225, {"Na": 4, "Cl": 4}) == ["Cl: orbits hold 0 atoms, the composition has 4"]


def test_a_crystal_without_sites_reads_as_before() -> None:
    old = {"space_group": 225, "formula": "Na4 Cl4", "a": 5.64, "b": 5.64, "c": 5.64, "alpha": 90.0, "beta": 90.0,
           "gamma": 90.0}  # as_dict before sites existed (caches, MLflow inputs)
    bare = Crystal.from_dict(old)
    assert bare.sites == () and bare.wyckoff == "" and bare == dataclasses.replace(ROCK_SALT, sites=())
    assert Crystal.from_dict(ROCK_SALT.as_dict()) == ROCK_SALT and ROCK_SALT.as_dict()["wyckoff"] == "Na:4a Cl:4b"
    assert bare.canonical_hash != ROCK_SALT.canonical_hash


def test_structures_get_the_sites_of_their_conventional_cell(shared_data: Path) -> None:
    assert Crystal.from_structure(NACL.get_primitive_structure()).wyckoff == "Na:4a Cl:4b"
    with lzma.open(shared_data / "mp_cgcnn36k" / "cifs.jsonl.xz", "rt") as handle:
        cif = next(r["cif"] for r in map(json.loads, handle) if r["material_id"] == "mp-2657")  # rutile TiO2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rutile = Crystal.from_structure(Structure.from_str(cif, fmt="cif"))
    assert (rutile.space_group, rutile.formula, rutile.wyckoff) == (136, "Ti2 O4", "Ti:2a O:4f")


def labels_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


ROCK_SALT_ROW = {"formula": "Na4Cl4", "space_group": "225", "a": "5.64", "b": "5.64", "c": "5.64", "alpha": "90",
                 "beta": "90", "gamma": "90", "property": "band_gap", "value": "5.0"}


def test_labels_import_reads_the_wyckoff_column_and_rejects_bad_rows_only(store: Store, tmp_path: Path) -> None:
    rows = [
        {**ROCK_SALT_ROW, "wyckoff": "Cl:4b Na:4a"},
        {**ROCK_SALT_ROW, "formula": "K4Cl4", "wyckoff": ""},  # an empty cell: no sites
        {**ROCK_SALT_ROW, "formula": "Li4F4", "wyckoff": "Li:4a F:4q"},
        {**ROCK_SALT_ROW, "formula": "Na8Cl8", "a": "11.28", "b": "11.28", "c": "11.28", "wyckoff": "Na:4a Cl:4b"},
        {**ROCK_SALT_ROW, "space_group": "", **dict.fromkeys(("a", "b", "c", "alpha", "beta", "gamma"), ""),
         "formula": "MgO", "wyckoff": "Mg:4a O:4b"},
        {"cif": NACL.to(fmt="cif"), "property": "band_gap", "value": "5.0", "source": "cif", "wyckoff": "Na:4b Cl:4a"},
    ]
    report = import_labels(store, labels_csv(tmp_path / "labels.csv", rows), campaign="test")

    assert report.stored == 2
    assert [str(e) for e in report.rejected] == [
        "line 4: Wyckoff token 'F:4q': space group 225 has no position 'q' (it has a, b, c, d, e, f, g, h, i, j, k, l)",
        "line 5: wyckoff 'Na:4a Cl:4b' does not fit Na8 Cl8 in space group 225: Cl: orbits hold 4 atoms, the "
        "composition has 8; Na: orbits hold 4 atoms, the composition has 8",
        "line 6: wyckoff 'Mg:4a O:4b' needs space_group and a, b, c, alpha, beta, gamma (or a cif)",
        "line 7: wyckoff 'Na:4b Cl:4a' disagrees with the CIF's 'Na:4a Cl:4b'",
    ]
    with store.session() as session:
        sites = {p.crystal.formula: p.crystal.sites for p in labelled_data(session, find_campaign(session, "test"))}
    assert sites == {"Na4 Cl4": ROCK_SALT.sites, "K4 Cl4": ()}


def test_labels_without_a_wyckoff_column_have_no_sites_and_a_cif_gives_them(tmp_path: Path) -> None:
    rows, errors = read_labels(labels_csv(tmp_path / "labels.csv", [
        ROCK_SALT_ROW, {"cif": NACL.to(fmt="cif"), "property": "band_gap", "value": "5.0"}]))
    assert errors == [] and [r.crystal.wyckoff for r in rows] == ["", "Na:4a Cl:4b"]


def test_exported_labels_carry_their_sites_through_a_second_import(store: Store, tmp_path: Path) -> None:
    import_labels(store, labels_csv(tmp_path / "in.csv", [{**ROCK_SALT_ROW, "wyckoff": "Na:4a Cl:4b"},
                                                          {**ROCK_SALT_ROW, "formula": "K4Cl4"}]), campaign="test")
    out = io.StringIO()
    export_labels(store, out, campaign="test")
    exported = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["wyckoff"] for r in exported] == ["Na:4a Cl:4b", ""]
    (tmp_path / "out.csv").write_text(out.getvalue())
    rows, errors = read_labels(tmp_path / "out.csv")
    assert errors == [] and [r.crystal for r in rows] == [
        ROCK_SALT, Crystal(225, Composition("K4Cl4"), ROCK_SALT.lattice)]


def test_mlflow_candidate_runs_and_table_carry_the_sites(tmp_path: Path) -> None:
    client = client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = ensure_experiment(client, "c", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(experiment_id).info.run_id
    bare = Crystal(221, Composition("Cs1Cl1"), (4.1, 4.1, 4.1, 90.0, 90.0, 90.0))
    views = [CandidateView(str(i), crystal, -1.0, 0.1, 0.5, None, "proposed", "pending", origin, None)
             for i, (crystal, origin) in enumerate(((ROCK_SALT, "template mp-22862"), (bare, None)))]
    run_ids = log_candidates(client, experiment_id, parent, round_number=1, candidates=views)
    log_candidates_table(client, parent, views)

    assert [client.get_run(run_ids[v.candidate_id]).data.params.get("wyckoff", "") for v in views] == [
        "Na:4a Cl:4b", ""]
    assert [client.get_run(run_ids[v.candidate_id]).data.params.get("origin") for v in views] == [
        "template mp-22862", None]
    table = pd.read_csv(client.download_artifacts(parent, "candidates.csv"), keep_default_na=False)
    assert table["origin"].tolist() == ["template mp-22862", ""]
    rebuilt = [Crystal(int(r.space_group), Composition(r.formula), tuple(float(getattr(r, k)) for k in LATTICE_KEYS),
                       parse_sites(r.wyckoff, int(r.space_group))) for r in table.itertuples()]
    assert rebuilt == [ROCK_SALT, bare]


class RecordingProxy:
    """A stand-in proxy that keeps the batch it was asked about."""

    def predict(self, batch: CrystalBatch, *, observation_noise: bool):
        self.crystals = batch.to_crystals()
        return type("Prediction", (), {"mean": torch.zeros(len(batch)), "std": torch.ones(len(batch))})()


def test_the_proxy_model_reads_an_optional_wyckoff_column(tmp_path: Path) -> None:
    rows = [{**ROCK_SALT.as_dict(), "formula": "Na4 Cl4"}, {**ROCK_SALT.as_dict(), "formula": "K4 Cl4", "wyckoff": ""}]
    path = tmp_path / "in.csv"
    pd.DataFrame(rows).to_csv(path, index=False)  # the empty cell comes back as NaN
    proxy = RecordingProxy()
    predict_table(proxy, pd.read_csv(path))  # type: ignore[arg-type]
    assert [c.wyckoff for c in proxy.crystals] == ["Na:4a Cl:4b", ""]
    predict_table(proxy, pd.read_csv(path).drop(columns="wyckoff"))  # type: ignore[arg-type]
    assert [c.sites for c in proxy.crystals] == [(), ()]
