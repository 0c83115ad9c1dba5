"""The campaign's reference hull: CHGNet energies of the known entries of the searched chemical systems.

Every known entry of ``mp_cgcnn36k`` whose elements lie inside the searched element set
(elements, binaries, ternaries) is relaxed once from its stored cell with the oracle's
own CHGNet settings, and each element's reference is the oracle's
(``CHGNetOracle.reference_energies``). The hull is pymatgen's ``PhaseDiagram`` of those
energies only: no DFT number and no correction is mixed in (CHGNet energies are already
on the MP2020-corrected scale). Results are cached per entry under the cache folder, keyed
by the CHGNet settings, so a killed build continues.
"""

from __future__ import annotations

import functools
import hashlib
import json
import lzma
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Structure
from tqdm import tqdm

from aloop.executor import run_with_timeout
from aloop.files import write_atomic
from aloop.oracle import Failed, Labelled, OracleInput
from aloop.space import Crystal
from aloop.thermo import formation_energy_per_atom
from oracles.chgnet import HARD_TIMEOUT_GRACE_S, CHGNetOracle, CHGNetSettings, relax_candidate


@dataclass(frozen=True)
class KnownEntry:
    """A Materials Project entry of the searched chemical systems, as stored and as CHGNet relaxed it."""

    material_id: str
    structure: Structure
    energy_per_atom: float | None
    relaxed: Structure | None
    reason: str = ""
    kind: str | None = None
    """The failure's ``FAILURE_KINDS`` entry; ``None`` when relaxed, or cached before kinds were recorded."""


@dataclass(frozen=True)
class ReferenceHull:
    """CHGNet elemental references (eV/atom) and the phase diagram of the relaxed known entries."""

    references: dict[str, float]
    entries: tuple[KnownEntry, ...]
    diagram: PhaseDiagram

    def e_above_hull(self, composition: Composition, energy_per_atom: float) -> float:
        """Energy above the hull in eV/atom; negative when the entry lies below it."""
        entry = PDEntry(composition, energy_per_atom * composition.num_atoms)
        return float(self.diagram.get_decomp_and_e_above_hull(entry, allow_negative=True)[1])

    def formation_energy(self, composition: Composition, energy_per_atom: float) -> float:
        """Formation energy per atom (eV/atom) against the CHGNet elemental references."""
        return formation_energy_per_atom(composition, energy_per_atom, self.references)

    @property
    def known_structures(self) -> list[Structure]:
        """Stored and relaxed structures of every known entry (novelty is checked against both)."""
        return [s for e in self.entries for s in (e.structure, e.relaxed) if s is not None]


def relax(item: OracleInput, settings: CHGNetSettings) -> Labelled | Failed:
    """One CHGNet oracle evaluation as the oracle's job pool runs it: exceptions and overruns become ``Failed``."""
    return run_with_timeout(functools.partial(relax_candidate, settings=settings), item,
                            timeout_s=settings.timeout_s + HARD_TIMEOUT_GRACE_S)


def settings_key(settings: CHGNetSettings) -> str:
    """A short hash of the relaxer settings: cached energies are only reused under the same ones."""
    return hashlib.sha1(settings.model_dump_json().encode()).hexdigest()[:12]


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


def build_hull(structures: dict[str, Structure], elements: Sequence[str], settings: CHGNetSettings, *,
               cache_dir: Path, progress: bool = True) -> ReferenceHull:
    """Relax (or read from the cache) every known structure and the elemental references; build the hull."""
    folder = cache_dir / f"hull-{settings_key(settings)}"
    folder.mkdir(parents=True, exist_ok=True)
    entries = [_relaxed_entry(mid, s, settings, folder)
               for mid, s in tqdm(sorted(structures.items(), key=lambda kv: len(kv[1])), desc="reference hull",
                                  disable=not progress)]
    references = _references(elements, settings, folder)
    points = [PDEntry(Composition(el), energy, name=f"chgnet-reference-{el}") for el, energy in references.items()]
    points += [PDEntry(e.structure.composition, e.energy_per_atom * e.structure.composition.num_atoms,
                       name=e.material_id) for e in entries if e.energy_per_atom is not None]
    return ReferenceHull(references=references, entries=tuple(entries), diagram=PhaseDiagram(points))


def _relaxed_entry(material_id: str, structure: Structure, settings: CHGNetSettings, folder: Path) -> KnownEntry:
    path = folder / f"{material_id}.json"
    if not path.exists():
        result = relax(OracleInput(material_id, Crystal.from_structure(structure), structure), settings)
        record = {"energy_per_atom": result.energy_per_atom, "relaxed_cif": result.structure.to(fmt="cif"),
                  "reason": "", "kind": None} if isinstance(result, Labelled) else \
            {"energy_per_atom": None, "relaxed_cif": None, "reason": result.reason, "kind": result.kind}
        write_atomic(path, json.dumps(record | {"metadata": dict(result.metadata)}, default=str))
    record = json.loads(path.read_text())
    relaxed = Structure.from_str(record["relaxed_cif"], fmt="cif") if record["relaxed_cif"] else None
    return KnownEntry(material_id, structure, record["energy_per_atom"], relaxed, record["reason"], record.get("kind"))


def _references(elements: Sequence[str], settings: CHGNetSettings, folder: Path) -> dict[str, float]:
    path = folder / f"references-{'-'.join(sorted(elements))}.json"
    if not path.exists():
        with ThreadPoolExecutor(1) as executor:
            references = CHGNetOracle(settings, executor=executor).reference_energies(list(elements))
            write_atomic(path, json.dumps(references, default=str))
    return json.loads(path.read_text())
