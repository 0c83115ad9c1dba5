"""Ion substitution: known structures of other chemistries with the space's ions swapped in."""

from __future__ import annotations

import gzip
import io
import json
import lzma
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Species, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from rich.console import Console
from sqlalchemy import select

from aloop.config import CONFIG_DIR, load_config
from aloop.round import run_round
from aloop.space import CrystalSpace
from aloop.space.validity import check_crystal
from aloop.store import Candidate, open_store
from aloop.store.models import Round
from aloop.substitution import SOURCE_PROPERTY, substitute, substitution_pool


def rocksalt(a: float, *elements: str) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), list(elements), [[0, 0, 0], [0.5, 0.5, 0.5]])


def rutile(a: float, c: float, cation: str) -> Structure:
    return Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(a, c), [cation, "O"],
                                     [[0, 0, 0], [0.305, 0.305, 0]])


def mp_folder(folder: Path, entries: dict[str, tuple[Structure, float]]) -> Path:
    """A local Materials Project folder (``mp_cgcnn36k``'s format) of ``{id: (structure, formation energy)}``."""
    rows = []
    for material_id, (structure, energy) in entries.items():
        analyzer = SpacegroupAnalyzer(structure)
        rows.append({"material_id": material_id, "formula": structure.composition.reduced_formula, "formula_full": structure.composition.formula.replace(" ", ""),
                     "elements": " ".join(sorted(el.symbol for el in structure.composition.elements)),
                     "nelements": len(structure.composition.elements), "nsites": len(structure),
                     "spacegroup_number": analyzer.get_space_group_number(),
                     "conv_nsites": len(analyzer.get_conventional_standard_structure()),
                     "formation_energy_per_atom": energy, "band_gap": 1.0, "e_above_hull_dataset": 0.0})
    folder.mkdir()
    with gzip.open(folder / "summary.csv.gz", "wt") as handle:
        pd.DataFrame(rows).to_csv(handle, index=False)
    with lzma.open(folder / "cifs.jsonl.xz", "wt") as handle:
        handle.writelines(json.dumps({"material_id": m, "cif": s.to(fmt="cif")}) + "\n" for m, (s, _) in entries.items())
    return folder


@pytest.fixture(scope="module")
def mn_o() -> CrystalSpace:
    return CrystalSpace.from_settings(load_config(CONFIG_DIR / "smoke.yaml", ["space.elements=[Mn,O]"]).space)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A local folder of two oxides of other metals and rock-salt MnO, and a cache folder the module shares (the
    pool is built once)."""
    root = tmp_path_factory.mktemp("substitution")
    folder = mp_folder(root / "mp", {"mp-1265": (rocksalt(4.21, "Mg", "O"), -3.0),
                                     "mp-2657": (rutile(4.59, 2.96, "Ti"), -3.3),
                                     "mp-19006": (rocksalt(4.45, "Mn", "O"), -2.0)})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALOOP_CACHE_DIR", str(root / "cache"))
        yield folder, root


def test_a_rocksalt_of_another_chemistry_becomes_the_space_s_rocksalt(mn_o: CrystalSpace) -> None:
    sources = [("mp-1265", rocksalt(4.21, "Mg", "O")), ("mp-2605", rocksalt(4.81, "Ca", "O")),
               ("mp-19006", rocksalt(4.45, "Mn", "O")), ("mp-22862", rocksalt(5.64, "Na", "Cl"))]
    found = substitute(mn_o, sources, threshold=1e-4, targets=[(Species("Mn", 2), Species("O", -2))])

    assert {s.source_id for s in found} == {"mp-1265", "mp-2605", "mp-22862"}  # not MnO itself
    probabilities = [s.probability for s in found]
    assert probabilities == sorted(probabilities, reverse=True) and min(probabilities) >= 1e-4
    assert found[-1].source_id == "mp-22862"  # swapping both ions of the chloride is the least likely
    for substituted in found:
        assert not check_crystal(substituted.crystal, mn_o)
        assert (substituted.crystal.space_group, substituted.crystal.formula) == (225, "Mn4 O4")
        assert substituted.structure.composition.reduced_formula == "MnO"
        assert substituted.structure.properties[SOURCE_PROPERTY] == substituted.source_id
    magnesia = next(s for s in found if s.source_id == "mp-1265")
    assert magnesia.structure.lattice.a == pytest.approx(4.21)  # the source's cell, relaxed by the oracle later


def test_the_pool_reads_the_configured_data_once(data: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    folder, root = data
    cfg = load_config(CONFIG_DIR / "smoke.yaml", ["space.elements=[Mn,O]", f"data.local_path={folder}",
                                                  f"data.mp.cache_dir={root / 'mp_cache'}"])
    space = CrystalSpace.from_settings(cfg.space)

    pool = substitution_pool(space, cfg.data, threshold=1e-4)
    monkeypatch.setattr("aloop.substitution.substitute", lambda *a, **k: pytest.fail("built twice"))
    again = substitution_pool(space, cfg.data, threshold=1e-4)

    found = {(s.crystal.formula, s.crystal.space_group, s.source_id) for s in pool}
    assert {("Mn4 O4", 225, "mp-1265"), ("Mn2 O4", 136, "mp-2657")} <= found
    assert all(not check_crystal(s.crystal, space) for s in pool)
    assert [s.as_dict() for s in again] == [s.as_dict() for s in pool]
    assert [s.structure.properties[SOURCE_PROPERTY] for s in again] == [s.source_id for s in pool]
    assert substitution_pool(space, cfg.data.model_copy(update={"local_path": None}), threshold=1e-4) == []


def test_a_round_ranks_substituted_structures_beside_the_generator_s(data: tuple[Path, Path]) -> None:
    """With ``selection.substitution`` the round's candidates include the substituted structures, chosen on the
    same acquisition, stored with their own atoms; one already known (rock-salt MnO) is passed over."""
    from round.conftest import smoke_config

    folder, root = data
    (root / "round").mkdir()
    cfg = smoke_config(root / "round", "space.elements=[Mn,O]", f"data.local_path={folder}", "review=manual",
                       "selection.substitution=true", "selection.batch_size=64")
    out = io.StringIO()
    run_round(cfg, progress=False, console=Console(file=out, width=200))

    pool = substitution_pool(CrystalSpace.from_settings(cfg.space), cfg.data, threshold=1e-4)  # from the cache
    assert f"ion substitution: {len(pool)} structures in the space" in out.getvalue()
    store = open_store(cfg.db_url)
    with store.session() as session:
        run_id = session.scalars(select(Round)).one().mlflow_run_id
        stored = [Structure.from_str(c.cif, fmt="cif") for c in session.scalars(select(Candidate))]
    store.close()
    matcher = StructureMatcher()
    substituted = [s for s in stored if any(matcher.fit(s, p.structure) and s.lattice.a == pytest.approx(
        p.structure.lattice.a, abs=1e-3) for p in pool)]
    metrics = MlflowClient(cfg.tracking_uri).get_run(run_id).data.metrics
    assert metrics["substituted"] == len(pool) and metrics["batch_substituted"] == len(substituted) >= 1
    # the first draw fills the batch of 64: no draw at a higher temperature (selection.fill_temperatures)
    assert metrics["batch_size"] == 64 and metrics["sample_draws"] == 1
    assert metrics["samples"] == cfg.selection.n_samples and "more at temperature" not in out.getvalue()
    assert any(s.composition.reduced_formula == "MnO2" and s.lattice.a == pytest.approx(4.59) for s in substituted)
    assert not any(s.composition.reduced_formula == "MnO" for s in substituted)  # the data's own MnO
