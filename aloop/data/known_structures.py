"""Known structures as placement templates: Materials Project entries of the round's sources that fit the space.

Each source (the local folder's CIFs, the mp-api cache) is indexed once by
``aloop.space.templates.cached_templates`` and cached on disk under a key of the file's
path, size and modification time, so later rounds load the pool in seconds.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import warnings
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from pymatgen.core import Composition, Structure

from aloop.config import DataSettings
from aloop.data.local import CIFS, SUMMARY
from aloop.data.mp import MPQuery, cache_file, cache_records
from aloop.space.space import CrystalSpace
from aloop.space.templates import Template, cached_templates


def known_templates(space: CrystalSpace, data: DataSettings) -> list[Template]:
    """Templates from the Materials Project sources of ``data`` (local folder, mp-api cache) whose conventional
    cell could hold a crystal of ``space`` (allowed group, at most ``max_atoms`` atoms and ``max_elements``
    elements); each source indexed once and cached (``cached_templates``)."""
    groups, settings = set(space.space_groups.tolist()), space.settings
    templates = []
    if data.local_path:
        folder = Path(data.local_path)
        summary = pd.read_csv(folder / SUMMARY, usecols=["material_id", "nelements", "spacegroup_number",
                                                         "conv_nsites"])
        fits = (summary.spacegroup_number.isin(groups) & (summary.conv_nsites <= settings.max_atoms)
                & (summary.nelements <= settings.max_elements))
        templates += cached_templates(f"local-{file_key(folder / CIFS)}", set(summary.material_id[fits].astype(str)),
                                      lambda ids: local_structures(folder / CIFS, ids))
    cache = cache_file(MPQuery.from_settings(settings, data.mp, scope=data.scope), Path(data.mp.cache_dir))
    if cache.exists():
        records = {r["material_id"]: r for r in cache_records(cache)
                   if r.get("structure") and r.get("crystal")}
        cells = {m: Composition(r["crystal"]["formula"]) for m, r in records.items()}
        wanted = {m for m, r in records.items() if r["crystal"]["space_group"] in groups
                  and cells[m].num_atoms <= settings.max_atoms and len(cells[m]) <= settings.max_elements}
        templates += cached_templates(f"mp-{file_key(cache)}", wanted,
                                      lambda ids: ((m, Structure.from_dict(records[m]["structure"])) for m in ids))
    return templates


def file_key(path: Path) -> str:
    """Names a file's cache by its path, size and modification time."""
    stat = path.stat()
    return hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]


def local_structures(file: Path, ids: set[str]) -> Iterator[tuple[str, Structure]]:
    """(material id, structure) of ``ids`` from a ``cifs.jsonl.xz`` file."""
    with lzma.open(file, "rt") as lines, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen's CIF parser warns about rounded coordinates
        for line in lines:
            record = json.loads(line)
            if record["material_id"] in ids:
                yield record["material_id"], Structure.from_str(record["cif"], fmt="cif")
