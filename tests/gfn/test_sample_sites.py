"""`aloop sample` writes the Wyckoff sites as a `wyckoff` column that `aloop labels import` reads back."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from pymatgen.core import Composition
from sqlalchemy import select

from aloop.cli import main
from aloop.space import Crystal, CrystalBatch
from aloop.space.wyckoff import parse_sites, site_errors
from aloop.store import Material, open_store

from .test_cli_sample import _config

SITED = [Crystal(225, Composition("Na4F4"), (4.6, 4.6, 4.6, 90.0, 90.0, 90.0), (("Na", "a"), ("F", "b"))),
         Crystal(221, Composition("Na1F1"), (2.9, 2.9, 2.9, 90.0, 90.0, 90.0), (("Na", "a"), ("F", "b"))),
         Crystal(221, Composition("Na3F3"), (4.0, 4.0, 4.0, 90.0, 90.0, 90.0))]


def sample_csv(tmp_path: Path, n: int) -> pd.DataFrame:
    out = tmp_path / "samples.csv"
    result = CliRunner().invoke(main, ["sample", "--config", str(_config(tmp_path)), "--n", str(n), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return pd.read_csv(out, keep_default_na=False)


def test_every_sampled_wyckoff_cell_parses_and_fits_its_row(tmp_path: Path) -> None:
    table = sample_csv(tmp_path, 40)
    assert table.columns[-1] == "wyckoff" and len(table) == 40
    for row in table.itertuples():  # empty until the generator decides sites; then every one must fit
        sites = parse_sites(row.wyckoff, row.space_group)
        counts = {el.symbol: int(n) for el, n in Composition(row.formula).items()}
        assert not sites or site_errors(sites, row.space_group, counts) == [], row


def test_sampled_sites_are_written_and_imported_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aloop.gfn.export.sample",  # a generator that decides sites (or none, the third)
                        lambda env, policy, n, **kwargs: CrystalBatch.from_crystals(SITED, ["Na", "F"]))
    table = sample_csv(tmp_path, 3)
    assert table.wyckoff.tolist() == ["Na:4a F:4b", "Na:1a F:1b", ""]

    labels = tmp_path / "labels.csv"
    table.assign(property="band_gap", value=6.0).to_csv(labels, index=False)
    url = f"sqlite:///{tmp_path / 'aloop.db'}"
    monkeypatch.setenv("ALOOP_DB_URL", url)
    result = CliRunner().invoke(main, ["labels", "import", str(labels)])
    assert result.exit_code == 0, result.output
    store = open_store(url)
    with store.session() as session:
        assert sorted((m.crystal for m in session.scalars(select(Material))), key=str) == sorted(SITED, key=str)
    store.close()
