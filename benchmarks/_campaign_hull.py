"""The campaign's reference hulls: one per energy model (CHGNet, SevenNet), of the same known entries.

Every known entry of ``mp_cgcnn36k`` whose elements lie inside the searched element set
(elements, binaries, ternaries, whatever their size) is relaxed once from its stored cell by
the model's own oracle, built by name as the round builds it (``aloop.oracle.load_oracle``:
``chgnet`` batches its relaxations, ``sevennet`` relaxes one at a time), and each element's
reference is the oracle's ``reference_energies``. The hull is pymatgen's ``PhaseDiagram`` of
those energies only: no DFT number is mixed in. Both models' energies are on the
MP2020-corrected scale: CHGNet's as trained, SevenNet-0's corrected by its oracle
(``oracles.sevennet``). Results are cached per entry under the cache folder, in one folder
per model and settings (``hull-<label source>-<settings hash>``), so a killed build continues
and the two models never share a file.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import lzma
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Structure
from tqdm import tqdm

from aloop.files import write_atomic
from aloop.oracle import (
    Failed,
    Labelled,
    Lost,
    OracleInput,
    ThermoOracle,
    load_oracle,
    validate_settings,
)
from aloop.space import Crystal
from aloop.thermo import formation_energy_per_atom

POLL_S = 0.2
"""Pause between polls of an oracle that found nothing finished."""


@dataclass(frozen=True)
class EnergyModel:
    """An energy oracle as the campaign uses it: its entry-point name and settings (``oracle.settings``)."""

    oracle: str
    settings: Mapping[str, Any]

    def build(self, executor: ThreadPoolExecutor) -> ThermoOracle:
        return load_oracle(self.oracle, self.settings, executor=executor)  # type: ignore[return-value]

    @functools.cached_property
    def source(self) -> str:
        """The oracle's label source, e.g. ``chgnet-0.3.0`` or ``sevennet-0``: labels of one source share a scale."""
        with ThreadPoolExecutor(1) as executor:
            return self.build(executor).name

    @functools.cached_property
    def key(self) -> str:
        """The label source and a short hash of the validated settings: energies are reused only under both."""
        settings = validate_settings(self.oracle, self.settings).model_dump_json()
        return f"{self.source}-{hashlib.sha1(settings.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class KnownEntry:
    """A Materials Project entry of the searched chemical systems, as stored and as the model relaxed it."""

    material_id: str
    structure: Structure
    energy_per_atom: float | None
    relaxed: Structure | None
    reason: str = ""
    kind: str | None = None
    """The failure's ``FAILURE_KINDS`` entry; ``None`` when relaxed."""


@dataclass(frozen=True)
class ReferenceHull:
    """One model's elemental references (eV/atom) and the phase diagram of its relaxed known entries."""

    model: str
    """The label source of the model's oracle, e.g. ``chgnet-0.3.0`` or ``sevennet-0``."""
    references: dict[str, float]
    entries: tuple[KnownEntry, ...]
    diagram: PhaseDiagram

    def e_above_hull(self, composition: Composition, energy_per_atom: float) -> float:
        """Energy above the hull in eV/atom; negative when the entry lies below it."""
        entry = PDEntry(composition, energy_per_atom * composition.num_atoms)
        return float(self.diagram.get_decomp_and_e_above_hull(entry, allow_negative=True)[1])

    def formation_energy(self, composition: Composition, energy_per_atom: float) -> float:
        """Formation energy per atom (eV/atom) against the model's elemental references."""
        return formation_energy_per_atom(composition, energy_per_atom, self.references)

    @property
    def known_structures(self) -> list[Structure]:
        """Stored and relaxed structures of every known entry (novelty is checked against both)."""
        return [s for e in self.entries for s in (e.structure, e.relaxed) if s is not None]

    def formation_entries(self, material_ids: Sequence[str]) -> list[tuple[Composition, float]]:
        """(composition, formation energy per atom) of the relaxed entries among ``material_ids``."""
        wanted = set(material_ids)
        return [(e.structure.composition, self.formation_energy(e.structure.composition, e.energy_per_atom))
                for e in self.entries if e.material_id in wanted and e.energy_per_atom is not None]


def relax_all(model: EnergyModel, inputs: Sequence[OracleInput], *,
              on_result: Callable[[OracleInput, Labelled | Failed], None] = lambda item, result: None,
              progress: str | None = None) -> dict[str, Labelled | Failed]:
    """Every input through the model's oracle (submit, then poll until all are done), on one worker thread.

    ``on_result`` sees each result as it arrives (to cache it); a job the oracle lost is a ``Failed``
    of kind ``lost``. Returns the results by ``candidate_id``.
    """
    results: dict[str, Labelled | Failed] = {}
    if not inputs:
        return results
    bar = tqdm(total=len(inputs), desc=progress, disable=progress is None)
    with ThreadPoolExecutor(1) as executor:
        oracle = model.build(executor)
        jobs = dict(zip(oracle.submit(list(inputs)), inputs, strict=True))
        while jobs:
            finished = {}
            for job_id, result in oracle.poll(list(jobs)).items():
                if isinstance(result, Lost):
                    result = Failed(f"the oracle lost job {job_id}", kind="lost")
                if isinstance(result, Labelled | Failed):
                    finished[job_id] = result
            for job_id, result in finished.items():
                item = jobs.pop(job_id)
                results[item.candidate_id] = result
                on_result(item, result)
            bar.update(len(finished))
            if jobs and not finished:
                time.sleep(POLL_S)
    bar.close()
    return results


def known_structures(data_dir: Path, elements: Sequence[str]) -> dict[str, Structure]:
    """``material_id -> Structure`` of every entry made only of ``elements`` (ef outliers dropped)."""
    summary = pd.read_csv(data_dir / "summary.csv.gz")
    inside = summary["elements"].astype(str).str.split().map(lambda els: set(els) <= set(elements))
    inside &= ~summary["ef_outlier"].astype(str).str.lower().eq("true")
    wanted = set(summary.loc[inside, "material_id"].astype(str))
    found = {}
    with lzma.open(data_dir / "cifs.jsonl.xz", "rt") as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for line in handle:
            record = json.loads(line)
            if record["material_id"] in wanted:
                found[record["material_id"]] = Structure.from_str(record["cif"], fmt="cif")
    return found


def load_hull(structures: dict[str, Structure], elements: Sequence[str], model: EnergyModel, *, cache_dir: Path,
              record: Path, progress: bool = True) -> ReferenceHull:
    """The model's hull from its committed record (``<record>/hull-<model key>.json.gz``) when that holds every
    known entry, else built (``build_hull``) and recorded, so a clean clone rebuilds the report without relaxing."""
    path = record / f"hull-{model.key}.json.gz"
    if path.exists():
        saved = json.loads(gzip.decompress(path.read_bytes()))
        if set(structures) <= set(saved["entries"]):
            entries = [_entry(mid, s, saved["entries"][mid]) for mid, s in sorted(structures.items())]
            return _hull(model.source, saved["references"], entries)
    hull = build_hull(structures, elements, model, cache_dir=cache_dir, progress=progress)
    entries = {e.material_id: {"energy_per_atom": e.energy_per_atom, "reason": e.reason, "kind": e.kind,
                               "relaxed_cif": e.relaxed.to(fmt="cif") if e.relaxed is not None else None}
               for e in hull.entries}
    record.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"model": hull.model, "references": hull.references, "entries": entries}, sort_keys=True)
    write_atomic(path, gzip.compress(text.encode(), mtime=0))
    return hull


def build_hull(structures: dict[str, Structure], elements: Sequence[str], model: EnergyModel, *,
               cache_dir: Path, progress: bool = True) -> ReferenceHull:
    """Relax (or read from the cache) every known structure and the elemental references; build the hull."""
    folder = cache_dir / f"hull-{model.key}"
    folder.mkdir(parents=True, exist_ok=True)
    todo = [OracleInput(mid, Crystal.from_structure(s), s)
            for mid, s in sorted(structures.items(), key=lambda kv: (len(kv[1]), kv[0]))
            if not (folder / f"{mid}.json").exists()]
    relax_all(model, todo, on_result=lambda item, result: _cache_entry(folder, item.candidate_id, result),
              progress=f"reference hull ({model.source})" if progress else None)
    entries = [_entry(mid, s, json.loads((folder / f"{mid}.json").read_text()))
               for mid, s in sorted(structures.items())]
    return _hull(model.source, _references(elements, model, folder), entries)


def _hull(source: str, references: dict[str, float], entries: list[KnownEntry]) -> ReferenceHull:
    points = [PDEntry(Composition(el), energy, name=f"{source}-reference-{el}") for el, energy in references.items()]
    points += [PDEntry(e.structure.composition, e.energy_per_atom * e.structure.composition.num_atoms,
                       name=e.material_id) for e in entries if e.energy_per_atom is not None]
    return ReferenceHull(model=source, references=references, entries=tuple(entries), diagram=PhaseDiagram(points))


def _cache_entry(folder: Path, material_id: str, result: Labelled | Failed) -> None:
    record = {"energy_per_atom": result.energy_per_atom, "relaxed_cif": result.structure.to(fmt="cif"),
              "reason": "", "kind": None} if isinstance(result, Labelled) else \
        {"energy_per_atom": None, "relaxed_cif": None, "reason": result.reason, "kind": result.kind}
    write_atomic(folder / f"{material_id}.json", json.dumps(record | {"metadata": dict(result.metadata)}, default=str))


def _entry(material_id: str, structure: Structure, record: dict) -> KnownEntry:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        relaxed = Structure.from_str(record["relaxed_cif"], fmt="cif") if record["relaxed_cif"] else None
    return KnownEntry(material_id, structure, record["energy_per_atom"], relaxed, record["reason"], record.get("kind"))


def _references(elements: Sequence[str], model: EnergyModel, folder: Path) -> dict[str, float]:
    path = folder / f"references-{'-'.join(sorted(elements))}.json"
    if not path.exists():
        with ThreadPoolExecutor(1) as executor:
            references = model.build(executor).reference_energies(list(elements))
        write_atomic(path, json.dumps(references, default=str))
    return json.loads(path.read_text())
