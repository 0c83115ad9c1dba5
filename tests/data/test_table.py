"""The CSV of ``aloop proxy fit/eval``: formula or CIF rows, the target column, errors by line."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymatgen.core import Composition, Lattice, Structure

from aloop.data.table import CRYSTAL_TABLE_COLUMNS, TableError, crystal_table, read_table
from aloop.space import Crystal

HEADER = "material_id,formula,space_group,a,b,c,alpha,beta,gamma,cif,formation_energy_per_atom,source\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(text)
    return path


def test_formula_and_cif_rows(tmp_path: Path) -> None:
    cif = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.25), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(fmt="cif")
    text = HEADER + "mp-22862,Na4Cl4,225,5.64,5.64,5.64,90,90,90,,-2.11,\n" + f'mp-1265,,,,,,,,,"{cif}",-3.05,mp\n'
    data = read_table(write(tmp_path, text))
    assert data.target == "formation_energy_per_atom" and data.ids == ("mp-22862", "mp-1265")
    assert [c.formula for c in data.crystals.to_crystals()] == ["Na4 Cl4", "Mg4 O4"]
    assert data.values.tolist() == [-2.11, -3.05] and data.row_sources() == ["csv", "mp"]


def test_crystal_table_reads_back_as_the_same_crystals(tmp_path: Path) -> None:
    crystals = [Crystal(225, Composition("Na4Cl4"), (5.64, 5.64, 5.64, 90.0, 90.0, 90.0)),
                Crystal(167, Composition("Fe12O18"), (5.03, 5.03, 13.75, 90.0, 90.0, 120.0))]
    table = crystal_table(crystals)
    assert list(table.columns) == list(CRYSTAL_TABLE_COLUMNS) and table.formula.tolist() == ["Na4 Cl4", "Fe12 O18"]
    assert list(crystal_table([]).columns) == list(CRYSTAL_TABLE_COLUMNS)
    table.assign(material_id=["x", "y"], band_gap=[5.0, 2.0]).to_csv(tmp_path / "data.csv", index=False)
    assert read_table(tmp_path / "data.csv").crystals.to_crystals() == crystals


def test_bad_rows_are_listed_by_line(tmp_path: Path) -> None:
    text = (HEADER + "a,Na4Cl4,225,5.64,5.64,5.64,90,90,90,,abc,\n" + "b,Na4Cl4,,,,,,,,,-1,\n"
            + "c,Xx2O,225,5.64,5.64,5.64,90,90,90,,-1,\n")
    with pytest.raises(TableError, match="3 bad rows") as err:
        read_table(write(tmp_path, text))
    message = str(err.value)
    assert "line 2: value 'abc' is not a number" in message
    assert "line 3: formula needs space_group" in message
    assert "line 4: unknown element 'Xx'" in message


def test_unusable_files(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="cannot read as CSV"):
        read_table(tmp_path / "absent.csv")
    with pytest.raises(TableError, match="lack \\['band_gap'\\]"):
        read_table(write(tmp_path, HEADER + "a,Na4Cl4,225,5.64,5.64,5.64,90,90,90,,-1,\n"), target="band_gap")
    with pytest.raises(TableError, match="no rows"):
        read_table(write(tmp_path, HEADER))
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TableError, match="cannot read as CSV"):
        read_table(tmp_path / "binary.csv")
