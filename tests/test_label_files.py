"""Labels import/export: per-row validation with line numbers, one transaction, exit codes, round trip."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from pymatgen.core import Composition, Element, Lattice, Structure
from sqlalchemy import func, select

from aloop.cli import main
from aloop.label_files import LabelsFileError, export_labels, import_labels, read_labels
from aloop.space import Crystal
from aloop.store import (
    Label,
    NewCandidate,
    Store,
    add_candidates,
    find_campaign,
    get_or_create_campaign,
    labelled_data,
    open_store,
    start_round,
    transition,
    upsert_label,
)

HEADER = ["formula", "cif", "space_group", "a", "b", "c", "alpha", "beta", "gamma", "property", "value",
          "uncertainty", "source"]
BROKEN_CIF = "data_broken\n_cell_length_a 5\nloop_\n_atom_site_label\n"  # 5 physical lines in the CSV


def nacl_cif() -> str:
    """Rock salt NaCl as a CIF of its primitive cell (2 atoms, a = 3.99 A)."""
    conventional = Structure.from_spacegroup(225, Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    return conventional.get_primitive_structure().to(fmt="cif")


def row(formula: str = "", *, cif: str = "", sg: str = "", lattice: str = ",,,,,", prop: str = "band_gap",
        value: str = "1.0", unc: str = "", source: str = "") -> list[str]:
    return [formula, cif, sg, *lattice.split(","), prop, value, unc, source]


def write_csv(path: Path, rows: list[list[str] | None], *, bom: bool = False) -> Path:
    """The header, then each row (``None``: an empty line)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    for cells in rows:
        if cells is None:
            buffer.write("\n")
        else:
            writer.writerow(cells)
    path.write_text(("\ufeff" if bom else "") + buffer.getvalue(), encoding="utf-8")
    return path


CUBIC = "5.64,5.64,5.64,90,90,90"
MIXED = [
    row("Na4Cl4", sg="225", lattice=CUBIC, prop="formation_energy_per_atom", value="-2.1", unc="0.05"),  # 2
    row("Fe2O3", value="2.0", source="lab"),                                  # 3: composition only
    None,                                                                     # 4: empty line
    row("MgO", value="abc"),                                                  # 5
    row("Xx2O"),                                                              # 6
    row("MgO", sg="225", lattice="-4.2,4.2,4.2,90,90,90"),                    # 7
    row("Fe2O3", value="2.5", source="lab"),                                  # 8: duplicate of 3
    row("MgO", sg="225", lattice="4.2,4.2,4.2,90,90,180"),                    # 9
    row("MgO", sg="225"),                                                     # 10
    row("", value="1.0"),                                                     # 11
    row("NaCl", prop="", value=""),                                           # 12
    row(cif=BROKEN_CIF),                                                      # 13-17
    row(cif=nacl_cif(), value="8.5"),                                         # 18-: crystal from the CIF
    row("MgO", value="1e400"),                                                # after the CIF
]
REJECTED = {
    5: "value 'abc' is not a number",
    6: "unknown element 'Xx' in formula 'Xx2O'",
    7: "lattice length a=-4.2 is outside 0.5-1000 Angstrom",
    8: "duplicate of line 3 (same material, source 'lab' and property 'band_gap')",
    9: "lattice angle gamma=180.0 is outside (0, 180)",
    10: "space_group and a, b, c, alpha, beta, gamma go together; missing a, b, c, alpha, beta, gamma",
    11: "missing formula or cif",
    12: "missing property, value",
    13: "broken CIF",
}


def test_mixed_csv_stores_good_rows_and_reports_bad_ones_by_line(store: Store, tmp_path: Path) -> None:
    report = import_labels(store, write_csv(tmp_path / "labels.csv", MIXED, bom=True), campaign="test")
    assert (report.stored, report.exit_code) == (3, 1)
    last_line = 18 + nacl_cif().count("\n") + 1
    errors = {e.line: e.reason for e in report.rejected}
    assert sorted(errors) == [*REJECTED, last_line]
    for line, reason in REJECTED.items():
        assert errors[line].startswith(reason), errors[line]
    assert errors[last_line] == "value '1e400' is not finite"
    assert str(report.rejected[0]) == "line 5: value 'abc' is not a number"
    with store.session() as session:
        points = {(p.composition.reduced_formula, p.property): p
                  for p in labelled_data(session, find_campaign(session, "test"))}
    assert set(points) == {("NaCl", "formation_energy_per_atom"), ("Fe2O3", "band_gap"), ("NaCl", "band_gap")}
    from_params = points["NaCl", "formation_energy_per_atom"]
    assert from_params.crystal == Crystal(225, Composition("Na4Cl4"), (5.64, 5.64, 5.64, 90.0, 90.0, 90.0))
    assert (from_params.value, from_params.uncertainty, from_params.oracle, from_params.fidelity) == (
        -2.1, 0.05, "import", 1.0)
    assert (points["Fe2O3", "band_gap"].crystal, points["Fe2O3", "band_gap"].oracle) == (None, "lab")
    from_cif = points["NaCl", "band_gap"].crystal  # the primitive CIF comes back as the conventional cell
    assert (from_cif.space_group, from_cif.composition) == (225, Composition("Na4Cl4"))
    assert from_cif.lattice == pytest.approx((5.64, 5.64, 5.64, 90.0, 90.0, 90.0), abs=1e-3)


def test_json_lines_are_checked_per_line(store: Store, tmp_path: Path) -> None:
    records = [json.dumps({"formula": "LiF", "property": "band_gap", "value": 13.6, "fidelity": 0.9}), "",
               "{not json", json.dumps([1, 2]), json.dumps({"formula": "LiF", "property": "band_gap", "value": 1,
                                                            "colour": "red"}),
               json.dumps({"cif": nacl_cif(), "formula": "MgO", "property": "band_gap", "value": 1.0}),
               json.dumps({"formula": "LiF", "space_group": 225.5, "a": 4, "b": 4, "c": 4, "alpha": 90,
                           "beta": 90, "gamma": 90, "property": "band_gap", "value": 1.0}),
               json.dumps({"formula": "Li4F4", "space_group": 225, "a": 4.03, "b": 4.03, "c": 4.03, "alpha": 90,
                           "beta": 90, "gamma": 90, "property": "band_gap", "value": 13.6, "uncertainty": -1}),
               json.dumps({"formula": "LiF", "property": "band_gap", "value": True})]
    path = tmp_path / "labels.jsonl"
    path.write_text("\n".join(records) + "\n")
    report = import_labels(store, path, campaign="test")
    assert report.stored == 1
    assert [str(e) for e in report.rejected] == [
        "line 3: not valid JSON (Expecting property name enclosed in double quotes at column 2)",
        "line 4: expected a JSON object, got list",
        "line 5: unknown fields ['colour']; fields: ['formula', 'cif', 'space_group', 'a', 'b', 'c', 'alpha', "
        "'beta', 'gamma', 'wyckoff', 'property', 'value', 'uncertainty', 'source', 'fidelity']",
        "line 6: formula 'MgO' disagrees with the CIF's 'NaCl'",
        "line 7: space_group 225.5 is not an integer in 1-230",
        "line 8: uncertainty -1.0 is negative",
        "line 9: value True is not a number",
    ]
    with store.session() as session:
        [point] = labelled_data(session, find_campaign(session, "test"))
    assert (point.composition, point.value, point.fidelity) == (Composition("LiF"), 13.6, 0.9)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("labels.csv", bytes(range(256)), "not a text file"),
    ("labels.csv", b"This is a lab notebook, not a table.\nNaCl was white.\n", "line 1: not a labels CSV header"),
    ("labels.csv", b"formula,value\nNaCl,1\n", "not a labels CSV header"),
    ("labels.jsonl", b"formula: NaCl\n", "line 1: not JSON"),
    ("labels.csv", b"\n\n", "the file is empty"),
    ("missing.csv", None, "cannot read (No such file or directory)"),
])
def test_unreadable_file_stores_nothing(store: Store, tmp_path: Path, name: str, content: bytes | None,
                                        message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(LabelsFileError) as caught:
        import_labels(store, path, campaign="test")
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Label)) == 0


def test_cli_exit_codes_and_idempotent_reimport(store_url: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALOOP_DB_URL", raising=False)
    runner = CliRunner()
    settings = ["--set", f"store.url={store_url}", "--set", "campaign=lab"]
    good = write_csv(tmp_path / "good.csv", MIXED[:2])
    for _ in range(2):
        result = runner.invoke(main, ["labels", "import", str(good), *settings])
        assert result.exit_code == 0, result.output
        assert "stored 2 labels, rejected 0 rows (campaign 'lab'" in result.output
    mixed = runner.invoke(main, ["labels", "import", str(write_csv(tmp_path / "mixed.csv", MIXED[:5])), *settings])
    assert mixed.exit_code == 1
    assert "line 5: value 'abc' is not a number" in mixed.output
    binary = tmp_path / "image.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    unreadable = runner.invoke(main, ["labels", "import", str(binary), *settings])
    assert unreadable.exit_code == 2
    assert "image.csv: not a text file" in unreadable.output
    store = open_store(store_url)
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Label)) == 2
    store.close()


def test_export_round_trips_through_import(store: Store, store_url: str, tmp_path: Path) -> None:
    import_labels(store, write_csv(tmp_path / "in.csv", [r for r in MIXED if r and r[0] != "MgO"]), campaign="test")
    with store.session() as session:  # a labelled candidate and a failed one (not exported)
        round_ = start_round(session, get_or_create_campaign(session, "test"), config={}, seed=0)
        ok, failed = add_candidates(session, round_, [
            NewCandidate(Crystal(194, Composition("Zn2O2"), (3.25, 3.25, 5.2, 90.0, 90.0, 120.0))),
            NewCandidate(Crystal(221, Composition("SrTiO3"), (3.9, 3.9, 3.9, 90.0, 90.0, 90.0)))])
        for candidate in (ok, failed):
            transition(candidate, "approved")
            transition(candidate, "submitted")
        upsert_label(session, candidate_id=ok.id, oracle="chgnet", fidelity=0.5, property="formation_energy_per_atom",
                     value=-1.7234567891234567, uncertainty=0.03)
        upsert_label(session, candidate_id=failed.id, oracle="chgnet", fidelity=0.5, property="*", value=None,
                     status="failed", reason="did not converge")
    first = io.StringIO()
    assert export_labels(store, first, campaign="test") == 4
    exported = tmp_path / "exported.csv"
    exported.write_text(first.getvalue())
    copy = open_store(f"sqlite:///{tmp_path / 'copy.db'}")
    report = import_labels(copy, exported, campaign="test")
    assert (report.stored, report.rejected) == (4, ())
    second = io.StringIO()
    export_labels(copy, second, campaign="test")
    assert second.getvalue() == first.getvalue()
    with copy.session() as session:
        values = sorted((p.oracle, p.property, p.value, p.uncertainty, p.crystal.space_group if p.crystal else None)
                        for p in labelled_data(session, find_campaign(session, "test")))
    assert values == [("chgnet", "formation_energy_per_atom", -1.7234567891234567, 0.03, 194),
                      ("import", "band_gap", 8.5, None, 225),
                      ("import", "formation_energy_per_atom", -2.1, 0.05, 225),
                      ("lab", "band_gap", 2.0, None, None)]
    copy.close()


def test_read_labels_accepts_unknown_suffix_by_content(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(json.dumps({"formula": "NaCl", "property": "band_gap", "value": 8.5}) + "\n")
    rows, errors = read_labels(path)
    assert errors == [] and [(r.composition, r.source, r.fidelity) for r in rows] == [(Composition("NaCl"),
                                                                                       "import", 1.0)]


ROCK_SALT = "5.64,5.64,5.64,90,90,90"
LONG_FORMULA = "".join(f"{el.symbol}{n}" for n, el in enumerate(
    [el for el in Element if not el.is_noble_gas][:40], start=101))
"""40 elements with three-digit counts: a cell formula of over 200 characters (``material.formula``)."""
PHYSICS = [
    row("Na4Cl4", sg="225", lattice=ROCK_SALT),                                     # 2: kept
    row("Na4Cl4", sg="225", lattice="3,4,5,80,90,100"),                             # 3
    row("Na3Cl4", sg="225", lattice=ROCK_SALT),                                     # 4
    row("NaCl", sg="1", lattice="5,5,5,10,10,170"),                                 # 5
    row("Na4Cl4", sg="225", lattice="0.3,0.3,0.3,90,90,90"),                        # 6
    row("Na4Cl4", sg="225", lattice="2000,2000,2000,90,90,90"),                     # 7
    row("NaCl", value="1e308"),                                                     # 8
    row("NaCl", prop="formation_energy_per_atom", value="-2", unc="1e300"),         # 9
    row("NaCl", prop="ewald_energy", value="1e6"),                                  # 10: kept (own bound)
    row("NaCl", source="x" * 101),                                                  # 11
    row("NaCl", prop="p" * 101),                                                    # 12
    row(LONG_FORMULA),                                                              # 13
    row("NaCl", sg="1", lattice="50,50,50,90,90,90", source="big-cell"),            # 14: kept, group 1 hosts any counts
    row("Na300Cl300", sg="1", lattice="50,50,50,90,90,90"),                         # 15: kept, beyond every space
    row("Na0"),                                                                     # 16
]
PHYSICS_REJECTED = {
    3: "lattice (3, 4, 5, 80, 90, 100) breaks the cubic rule of space group 225, which would make it "
       "(3, 3, 3, 90, 90, 90)",
    4: "counts [4, 3] of Na3 Cl4 do not fit the Wyckoff positions of space group 225",
    5: "lattice (5, 5, 5, 10, 10, 170) makes no cell of volume above 0.1 A^3",
    6: "lattice length a=0.3 is outside 0.5-1000 Angstrom",
    7: "lattice length a=2000 is outside 0.5-1000 Angstrom",
    8: "value 1e+308 is absurd for band_gap: |value| above 100 (a typo, another unit?)",
    9: "uncertainty 1e+300 is absurd for formation_energy_per_atom: |uncertainty| above 50",
    11: "source is 101 characters long; the database keeps at most 100 (label.oracle)",
    12: "property is 101 characters long; the database keeps at most 100 (label.property)",
    13: "cell formula is 2",
    16: "formula 'Na0' has no atoms",
}


def test_rows_a_round_would_drop_or_the_database_refuse_are_rejected_by_line(store: Store, tmp_path: Path) -> None:
    report = import_labels(store, write_csv(tmp_path / "labels.csv", PHYSICS), campaign="test")
    errors = {e.line: e.reason for e in report.rejected}
    assert sorted(errors) == sorted(PHYSICS_REJECTED), errors
    for line, reason in PHYSICS_REJECTED.items():
        assert errors[line].startswith(reason), errors[line]
    assert "characters long; the database keeps at most 200 (material.formula)" in errors[13]
    assert (report.stored, report.exit_code) == (4, 1)
    with store.session() as session:
        stored = sorted((p.composition.formula, p.property, p.oracle) for p in
                        labelled_data(session, find_campaign(session, "test")))
    assert stored == [("Na1 Cl1", "band_gap", "big-cell"), ("Na1 Cl1", "ewald_energy", "import"),
                      ("Na300 Cl300", "band_gap", "import"), ("Na4 Cl4", "band_gap", "import")]


def test_a_nul_character_is_a_rejected_row_not_a_lost_file(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text("\n".join(json.dumps({"formula": "NaCl", "property": "band_gap", "value": 8.5, "source": source})
                              for source in ("lab", "lab\x00two")) + "\n")
    report = import_labels(store, path, campaign="test")
    assert report.stored == 1
    assert [str(e) for e in report.rejected] == [
        "line 2: source contains a NUL character, which the database cannot store"]


def test_a_too_long_field_keeps_the_other_rows_on_every_backend(store_url: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL refuses text longer than its column (StringDataRightTruncation): the row is rejected first."""
    monkeypatch.delenv("ALOOP_DB_URL", raising=False)
    labels = write_csv(tmp_path / "labels.csv", [row("NaCl", source="s" * 150), row("MgO", value="7.8")])
    result = CliRunner().invoke(main, ["labels", "import", str(labels), "--set", f"store.url={store_url}"])
    assert result.exit_code == 1, result.output
    assert "line 2: source is 150 characters long; the database keeps at most 100" in result.output
    assert "stored 1 labels, rejected 1 rows" in result.output and "Traceback" not in result.output
    store = open_store(store_url)
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Label)) == 1
    store.close()
