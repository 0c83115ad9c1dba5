"""A local folder of Materials Project entries, in the format of ``mp_cgcnn36k``.

The folder holds ``summary.csv.gz`` (one row per entry) and ``cifs.jsonl.xz`` (one
``{"material_id", "cif"}`` object per line). Crystals are built from the summary's
conventional-cell columns (``spacegroup_number``, ``conv_a`` ... ``conv_gamma``,
``conv_nsites``, and ``formula_full`` of the stored cell with ``nsites`` atoms): the
conventional counts are the stored counts times ``conv_nsites / nsites``, exact whenever
that gives integers (every row of ``mp_cgcnn36k``; checked against the CIFs in the tests).
Rows without those columns, or with fractional counts, are read from their CIF with
``Crystal.from_structure``. The Wyckoff sites of every row come from its CIF too (a row whose
CIF gives another group or composition than the summary, or no assignment, has none).
Converting a CIF takes about 17 ms (4 of them the sites), so the CIFs are converted once per
file, in parallel processes when there are many, and the result is cached on disk.

The labels are their own measurement: ``mp_cgcnn36k`` carries legacy (pre-MP2020)
corrections, so its rows get the source ``mp_legacy`` by default. Rows flagged
``ef_outlier`` are dropped.

Example:
    >>> entries = read_local(Path("../shared/data/mp_cgcnn36k"))  # doctest: +SKIP
    >>> len(entries), entries.dropped  # doctest: +SKIP
    (33059, {'ef_outlier': 4})
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import lzma
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pymatgen.core import Element, Structure
from tqdm.auto import tqdm

from aloop.data.convert import PROPERTIES, Entries
from aloop.space.cache import load_cached, save_cached
from aloop.space.crystal import LATTICE_KEYS, Crystal, CrystalBatch

SUMMARY = "summary.csv.gz"
CIFS = "cifs.jsonl.xz"
CONVENTIONAL = ("formula_full", "nsites", "spacegroup_number", *(f"conv_{k}" for k in LATTICE_KEYS), "conv_nsites")
DEFAULT_SOURCE = "mp_legacy"
PARALLEL_CIFS = 500
"""From this many CIFs to convert on, conversion runs in one (forked) process per CPU."""
_CACHE_VERSION = 4
"""Version of the cached CIF conversions: 2 added the Wyckoff sites, 3 reads them in pyxtal's setting,
4 gives the lattice in that setting too."""
_FORMULA_TOKEN = r"([A-Z][a-z]?)(\d+(?:\.\d+)?)"


class LocalDataError(ValueError):
    """The folder is not in the expected format; the message names the file and what is missing."""


def read_local(path: Path, *, source: str = DEFAULT_SOURCE, progress: bool = False) -> Entries:
    """All entries of the folder ``path`` as crystals with their properties.

    Raises:
        LocalDataError: missing or unreadable files, or missing columns.
    """
    summary = _read_summary(path / SUMMARY)
    dropped: dict[str, int] = {}
    if "ef_outlier" in summary:
        outlier = summary["ef_outlier"].astype(str).str.lower().eq("true")
        if outlier.any():
            dropped["ef_outlier"] = int(outlier.sum())
        summary = summary[~outlier].reset_index(drop=True)
    elements, counts, exact = _conventional_counts(summary)
    material_ids = summary["material_id"].astype(str).to_numpy()
    parsed = _crystals_from_cifs(path / CIFS, material_ids.tolist(), progress=progress)
    rows = np.flatnonzero(exact)
    batches = [_with_sites(CrystalBatch(
        tuple(elements), torch.as_tensor(summary["spacegroup_number"].to_numpy()[rows], dtype=torch.long),
        torch.as_tensor(counts[rows], dtype=torch.long),
        torch.as_tensor(summary[[f"conv_{k}" for k in LATTICE_KEYS]].to_numpy(dtype=np.float64)[rows]),
    ), [parsed[i] for i in material_ids[rows]])] if len(rows) else []
    if not exact.all():
        ids = material_ids[~exact].tolist()
        ok = [i for i in ids if parsed[i] is not None]
        if len(ok) < len(ids):
            dropped["cif_unreadable"] = len(ids) - len(ok)
        if ok:
            batches.append(CrystalBatch.from_crystals([parsed[i] for i in ok], sorted(
                {el.symbol for i in ok for el in parsed[i].composition}, key=lambda e: Element(e).Z)))
        position = {m: k for k, m in enumerate(material_ids)}
        rows = np.concatenate([rows, np.array([position[i] for i in ok], dtype=np.int64)])
    properties = {name: pd.to_numeric(summary[name], errors="coerce").to_numpy(dtype=np.float64)[rows]
                  if name in summary else np.full(len(rows), np.nan) for name in PROPERTIES}
    return Entries(source=source, ids=tuple(material_ids[rows]),
                   crystals=CrystalBatch.concat(batches), properties=properties, dropped=dropped)


def _read_summary(file: Path) -> pd.DataFrame:
    try:
        summary = pd.read_csv(file)
    except (OSError, ValueError) as err:
        raise LocalDataError(f"{file}: cannot read the summary table ({err})") from None
    if "material_id" not in summary:
        raise LocalDataError(f"{file}: no material_id column; columns are {list(summary.columns)}")
    return summary


def _conventional_counts(summary: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Elements (by Z), ``(N, E)`` conventional-cell counts, ``(N,)`` bool: counts are exact from the summary."""
    if not set(CONVENTIONAL) <= set(summary.columns):
        return [], np.zeros((len(summary), 0), dtype=np.int64), np.zeros(len(summary), dtype=bool)
    tokens = summary["formula_full"].astype(str).str.extractall(_FORMULA_TOKEN)
    tokens.columns = ["element", "n"]
    row = tokens.index.get_level_values(0).to_numpy()
    elements = sorted(set(tokens["element"]), key=lambda s: Element(s).Z)
    stored = np.zeros((len(summary), len(elements)))
    np.add.at(stored, (row, tokens["element"].map({el: i for i, el in enumerate(elements)}).to_numpy()),
              tokens["n"].astype(float).to_numpy())
    ratio = (summary["conv_nsites"] / summary["nsites"]).to_numpy(dtype=np.float64)
    conventional = stored * ratio[:, None]
    rounded = np.rint(conventional)
    exact = (np.abs(conventional - rounded) < 1e-6).all(axis=1)
    exact &= summary[list(CONVENTIONAL[2:])].notna().all(axis=1).to_numpy()
    exact &= np.isclose(stored.sum(axis=1), summary["nsites"].to_numpy(dtype=np.float64))
    return elements, np.where(exact[:, None], rounded, 0).astype(np.int64), exact


def _with_sites(batch: CrystalBatch, from_cifs: list[Crystal | None]) -> CrystalBatch:
    """``batch`` with each row's sites, and lattice in their setting, taken from its CIF's crystal, where that
    has the row's group and counts (the summary's conventional lattice orders orthorhombic axes by length)."""
    return CrystalBatch.from_crystals([
        dataclasses.replace(crystal, lattice=cif.lattice, sites=cif.sites) if cif is not None and (cif.space_group, cif.composition)
        == (crystal.space_group, crystal.composition) else crystal
        for crystal, cif in zip(batch.to_crystals(), from_cifs, strict=True)], batch.elements)


def _crystals_from_cifs(file: Path, ids: list[str], *, progress: bool) -> dict[str, Crystal | None]:
    """``material_id -> Crystal`` with sites (``None`` where the CIF does not parse), cached by file and ids."""
    try:
        stat = file.stat()
    except OSError as err:
        raise LocalDataError(f"{file}: cannot read the CIFs ({err.strerror}), needed for the Wyckoff sites of "
                             f"{len(ids)} rows (and the crystals of rows whose summary lacks exact "
                             f"conventional-cell columns {list(CONVENTIONAL)})") from None
    key = hashlib.sha1(f"{_CACHE_VERSION}|{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{','.join(ids)}"
                       .encode()).hexdigest()
    cached = load_cached(f"local-cifs-{key[:16]}")
    if cached is not None:
        return {k: None if v is None else Crystal.from_dict(v) for k, v in cached.items()}
    wanted = set(ids)
    with lzma.open(file, "rt") as handle:
        cifs = {r["material_id"]: r["cif"] for r in map(json.loads, handle) if r["material_id"] in wanted}
    texts = [cifs.get(i) for i in ids]
    bar = {"desc": f"parsing CIFs of {file.parent.name}", "total": len(texts), "disable": not progress}
    if len(texts) < PARALLEL_CIFS:
        crystals = [_crystal_of_cif(text) for text in tqdm(texts, **bar)]
    else:
        workers = len(os.sched_getaffinity(0))
        with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
            crystals = list(tqdm(pool.map(_crystal_of_cif, texts, chunksize=max(1, len(texts) // (8 * workers))),
                                 **bar))
    result = dict(zip(ids, crystals, strict=True))
    save_cached(f"local-cifs-{key[:16]}", {k: None if v is None else v.as_dict() for k, v in result.items()})
    return result


def _crystal_of_cif(cif: str | None) -> Crystal | None:
    """The crystal, with sites, of one CIF; ``None`` when it is missing or does not parse."""
    if cif is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen's CIF parser warns about rounded coordinates
        try:
            return Crystal.from_structure(Structure.from_str(cif, fmt="cif"))
        except Exception:  # noqa: BLE001 - pymatgen raises many types for a broken CIF; counted as dropped
            return None
