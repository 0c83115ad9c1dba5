"""The local source: summary-derived conventional cells (checked against the CIFs), CIF fallback, errors."""

from __future__ import annotations

import gzip
import json
import lzma
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from pymatgen.core import Lattice, Structure

from aloop.data.local import LocalDataError, read_local
from aloop.space.spacing import crowded
from aloop.space.crystal import Crystal


@pytest.fixture(scope="module")
def shared_entries(shared_data: Path):
    return read_local(shared_data / "mp_cgcnn36k")


def test_shared_data_reads_every_entry_but_the_outliers(shared_entries) -> None:
    assert len(shared_entries) == 33_059 and shared_entries.dropped == {"ef_outlier": 4}
    assert shared_entries.source == "mp_legacy"
    assert (shared_entries.crystals.counts.sum(dim=1) > 0).all()


def test_every_known_structure_has_room_for_its_atoms_on_its_sites(shared_entries) -> None:
    """The necessary condition of ``aloop.space.spacing`` holds for real crystals (every third entry), which
    also needs lattice and sites in one setting: the summary's cells, axes sorted by length, broke it 17 times."""
    sample = shared_entries.crystals[torch.arange(0, len(shared_entries), 3)]
    assert (sample.sites[..., 1] >= 0).any(dim=1).float().mean() > 0.9
    assert not crowded(sample).any()


def test_summary_cells_equal_the_conventional_cells_of_the_cifs(shared_data: Path, shared_entries) -> None:
    """Each row's cell is what ``Crystal.from_structure`` derives from its CIF (a sample of 40 rows): the summary's
    group and counts, and the lattice in the setting of the sites."""
    wanted = set(shared_entries.ids[::827])
    cifs = {}
    with lzma.open(shared_data / "mp_cgcnn36k" / "cifs.jsonl.xz", "rt") as handle:
        for line in handle:
            record = json.loads(line)
            if record["material_id"] in wanted:
                cifs[record["material_id"]] = record["cif"]
    crystals = dict(zip(shared_entries.ids, shared_entries.crystals.to_crystals(), strict=True))
    assert len(cifs) == len(wanted) == 40
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for material_id, cif in cifs.items():
            expected = Crystal.from_structure(Structure.from_str(cif, fmt="cif"))
            got = crystals[material_id]
            assert (got.space_group, got.composition) == (expected.space_group, expected.composition), material_id
            assert got.lattice == pytest.approx(expected.lattice, abs=1e-3), material_id


def write_folder(folder: Path, rows: list[dict], cifs: list[dict]) -> Path:
    folder.mkdir()
    with gzip.open(folder / "summary.csv.gz", "wt") as handle:
        pd.DataFrame(rows).to_csv(handle, index=False)
    with lzma.open(folder / "cifs.jsonl.xz", "wt") as handle:
        handle.writelines(json.dumps(c) + "\n" for c in cifs)
    return folder


def test_rows_without_conventional_columns_are_read_from_their_cifs(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALOOP_CACHE_DIR", str(tmp_path / "cache"))
    rocksalt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.25), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    rows = [{"material_id": "mp-1265", "formation_energy_per_atom": -3.05, "band_gap": 4.45},
            {"material_id": "mp-bad", "formation_energy_per_atom": -1.0, "band_gap": 0.0}]
    cifs = [{"material_id": "mp-1265", "cif": rocksalt.get_primitive_structure().to(fmt="cif")},
            {"material_id": "mp-bad", "cif": "data_broken\n_cell_length_a 3\n"}]
    folder = write_folder(tmp_path / "dump", rows, cifs)

    entries = read_local(folder, source="mp_offline")
    again = read_local(folder, source="mp_offline")  # from the cache of parsed CIFs

    assert entries.ids == ("mp-1265",) and entries.dropped == {"cif_unreadable": 1}
    assert entries.source == "mp_offline" and entries.properties["band_gap"].tolist() == [4.45]
    crystal = entries.crystals.to_crystals()[0]
    assert (crystal.space_group, crystal.formula) == (225, "Mg4 O4")
    assert again.crystals.to_crystals() == entries.crystals.to_crystals()
    assert any(p.name.startswith("local-cifs-") for p in (tmp_path / "cache").iterdir())


def test_missing_files_and_columns_are_named(tmp_path: Path) -> None:
    with pytest.raises(LocalDataError, match="summary.csv.gz: cannot read"):
        read_local(tmp_path)
    folder = write_folder(tmp_path / "no_ids", [{"formula": "NaCl"}], [])
    with pytest.raises(LocalDataError, match="no material_id column"):
        read_local(folder)
