"""The CSV of ``aloop proxy fit/eval``: formula or CIF rows, the target column, errors by line."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

from aloop.data.table import TableError, read_table

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
