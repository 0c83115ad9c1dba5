"""The reference hull of E_hull: known phases relaxed once by the oracle, kept in the experiment database.

A candidate's energy above the hull means something only against the known phases of its
chemical system on the same energy scale. ``known_phases`` picks Materials Project
structures of the space's chemical systems (local folder, mp-api cache) that lie near their
own data set's hull; ``relax_known_phases`` has a ``ThermoOracle`` relax those it has not
relaxed yet and stores each as a reference label (a material of source ``reference``,
property ``energy_per_atom``), reused by every later round and by ``aloop submit``.
Reference labels are never candidates; each known phase trains the proxy once, as a formation-energy row
of the oracle (``known_phase_entries``), so the proxy learns the oracle's scale from the first round.
``refresh_e_above_hull`` recomputes the stored E_hull of every label of the oracle against
the current hull (references, known phases and all labels), so no stored value is stale;
the value at labelling time stays in the label's metadata.

Example:
    >>> phases = known_phases(cfg.space, cfg.data, cfg.hull)  # doctest: +SKIP
    >>> relax_known_phases(store, campaign_id, oracle, phases)  # doctest: +SKIP
    12
"""

from __future__ import annotations

import hashlib
import json
import lzma
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Structure
from sqlalchemy import select
from sqlalchemy.orm import Session
from tqdm.auto import tqdm

from aloop.config import DataSettings, HullSettings, SpaceSettings
from aloop.data.convert import Entries
from aloop.data.local import CIFS, SUMMARY
from aloop.data.mp import MPQuery, cache_file, cache_records
from aloop.oracle import Failed, Labelled, OracleInput, ThermoOracle
from aloop.space.cache import load_cached, save_cached
from aloop.space.crystal import Crystal, CrystalBatch
from aloop.store import (
    REFERENCE_SOURCE,
    Campaign,
    Candidate,
    Label,
    Material,
    Store,
    get_or_create_material,
    stored_structure,
    upsert_label,
)
from aloop.thermo import FormationHull, formation_energy_per_atom

REFERENCE_PROPERTY = "reference_energy_per_atom"
"""Label property of an elemental reference energy."""
KNOWN_PHASE_PROPERTY = "energy_per_atom"
"""Label property of a known phase's relaxed energy."""
POLL_S = 0.2


@dataclass(frozen=True)
class KnownPhase:
    """A known structure for the hull: its id in its data set (``mp-1234``) and its atoms."""

    material_id: str
    structure: Structure


@dataclass(frozen=True)
class HullDescription:
    """What a hull is made of, for the round's summary and MLflow."""

    oracle: str
    references: int
    known_phases: int

    def describe(self) -> str:
        if not self.known_phases:
            return f"hull of labelled candidates only ({self.oracle} elemental references and labels)"
        return f"{self.oracle} hull: {self.known_phases} known phases, {self.references} elemental references, labels"


def known_phases(space: SpaceSettings, data: DataSettings, settings: HullSettings) -> list[KnownPhase]:
    """Materials Project structures of the space's chemical systems near their data set's hull.

    Chemical systems of the space: 2 to ``space.max_elements`` of its elements (elements alone
    are the oracle's own references). From the local folder (``e_above_hull_dataset``) and
    the mp-api cache (``energy_above_hull``), each at most ``settings.max_e_above_hull`` and
    ``settings.max_sites``; a material in both is taken once.
    """
    if not settings.known_phases:
        return []
    found: dict[str, KnownPhase] = {}
    cache = cache_file(MPQuery.from_settings(space, data.mp, scope=data.scope), Path(data.mp.cache_dir))
    if cache.exists():
        for record in cache_records(cache):
            e_hull = record.get("energy_above_hull")
            structure = record.get("structure")
            if e_hull is None or structure is None or e_hull > settings.max_e_above_hull:
                continue
            structure = Structure.from_dict(structure)
            if len(structure) <= settings.max_sites and _in_space(structure.composition, space):
                found[record["material_id"]] = KnownPhase(record["material_id"], structure)
    if data.local_path:
        found |= {p.material_id: p for p in _local_phases(Path(data.local_path), space, settings)
                  if p.material_id not in found}
    return sorted(found.values(), key=lambda p: p.material_id)


def _in_space(composition: Composition, space: SpaceSettings) -> bool:
    elements = {el.symbol for el in composition.elements}
    return 2 <= len(elements) <= space.max_elements and elements <= set(space.elements)


def _local_phases(folder: Path, space: SpaceSettings, settings: HullSettings) -> list[KnownPhase]:
    summary = pd.read_csv(folder / SUMMARY, usecols=["material_id", "formula", "nsites", "e_above_hull_dataset"])
    near = summary[(summary.e_above_hull_dataset <= settings.max_e_above_hull) & (summary.nsites <= settings.max_sites)]
    wanted = {m for m, f in zip(near.material_id, near.formula, strict=True) if _in_space(Composition(f), space)}
    phases = []
    with lzma.open(folder / CIFS, "rt") as lines:
        for line in lines:
            if wanted and '"material_id"' in line:
                record = json.loads(line)
                if record["material_id"] in wanted:
                    with warnings.catch_warnings():  # pymatgen rounds coordinates of every other CIF, and says so
                        warnings.simplefilter("ignore", UserWarning)
                        structure = Structure.from_str(record["cif"], fmt="cif")
                    phases.append(KnownPhase(record["material_id"], structure))
                    wanted.discard(record["material_id"])
    return phases


def relax_known_phases(store: Store, campaign_id: int, oracle: ThermoOracle, phases: Sequence[KnownPhase], *,
                       progress: bool = False) -> int:
    """Relax the phases the campaign has no reference label of yet (this oracle); returns how many were relaxed.

    Each result is stored as it arrives, so a killed round keeps what was relaxed. A failed
    relaxation is stored as a failed reference label and not tried again.
    """
    with store.session() as session:
        done = {m.key for m in _known_materials(session, campaign_id, oracle.name, status=None)}
    todo = [p for p in phases if _key(p) not in done]
    if not todo:
        return 0
    inputs = [OracleInput(f"known-{p.material_id}", Crystal.from_structure(p.structure), p.structure) for p in todo]
    jobs = dict(zip(oracle.submit(inputs), todo, strict=True))
    bar = tqdm(total=len(todo), desc=f"relaxing known phases with {oracle.name}", unit="phase", disable=not progress)
    while jobs:
        finished = {j: r for j, r in oracle.poll(list(jobs)).items() if isinstance(r, Labelled | Failed)}
        for job_id, result in finished.items():
            _store_known(store, campaign_id, oracle, jobs.pop(job_id), result)
        bar.update(len(finished))
        if jobs and not finished:
            time.sleep(POLL_S)
    bar.close()
    return len(todo)


def _key(phase: KnownPhase) -> str:
    return f"known:{phase.material_id}"


def _store_known(store: Store, campaign_id: int, oracle: ThermoOracle, phase: KnownPhase,
                 result: Labelled | Failed) -> None:
    with store.session() as session:
        campaign = session.get_one(Campaign, campaign_id)
        material = get_or_create_material(session, campaign, composition=phase.structure.composition,
                                          source=REFERENCE_SOURCE, key=_key(phase))
        metadata = {"known_phase": phase.material_id, "relaxed_by": oracle.name, **dict(result.metadata)}
        if isinstance(result, Labelled) and result.energy_per_atom is not None:
            structure = result.structure.to(fmt="cif") if result.structure is not None else None
            upsert_label(session, material_id=material.id, oracle=oracle.name, fidelity=oracle.fidelity,
                         property=KNOWN_PHASE_PROPERTY, value=result.energy_per_atom, structure=structure,
                         metadata=metadata)
        else:
            reason = result.reason if isinstance(result, Failed) else "the oracle gave no energy"
            kind = result.kind if isinstance(result, Failed) else "oracle_error"
            upsert_label(session, material_id=material.id, oracle=oracle.name, fidelity=oracle.fidelity,
                         property=KNOWN_PHASE_PROPERTY, value=None, status="failed", reason=reason, kind=kind,
                         metadata=metadata)


def _known_materials(session: Session, campaign_id: int, oracle: str, *, status: str | None = "ok") -> list[Material]:
    query = (select(Material).join(Label, Label.material_id == Material.id)
             .where(Material.campaign_id == campaign_id, Material.source == REFERENCE_SOURCE,
                    Label.oracle == oracle, Label.property == KNOWN_PHASE_PROPERTY))
    if status is not None:
        query = query.where(Label.status == status)
    return list(session.scalars(query))


def references(session: Session, campaign_id: int, oracle: str) -> dict[str, float]:
    """The oracle's elemental reference energies (eV/atom) cached for the campaign."""
    rows = session.execute(select(Material.formula, Label.value).join(Label, Label.material_id == Material.id).where(
        Material.campaign_id == campaign_id, Label.oracle == oracle, Label.property == REFERENCE_PROPERTY))
    return {Composition(formula).elements[0].symbol: value for formula, value in rows}


def hull_entries(session: Session, campaign_id: int, oracle: str) -> list[tuple[Composition, float, int | None]]:
    """(composition, energy per atom, candidate id or None) of every compound on the oracle's scale:
    relaxed known phases and the campaign's candidates' ``energy_per_atom`` labels."""
    rows = session.execute(
        select(Material.formula, Label.value).join(Label, Label.material_id == Material.id).where(
            Material.campaign_id == campaign_id, Material.source == REFERENCE_SOURCE, Label.oracle == oracle,
            Label.property == KNOWN_PHASE_PROPERTY, Label.status == "ok"))
    entries: list[tuple[Composition, float, int | None]] = [(Composition(f), v, None) for f, v in rows]
    rows = session.execute(
        select(Candidate.formula, Label.value, Candidate.id).join(Label, Label.candidate_id == Candidate.id).where(
            Candidate.campaign_id == campaign_id, Label.oracle == oracle, Label.property == "energy_per_atom",
            Label.status == "ok"))
    entries += [(Composition(f), v, i) for f, v, i in rows]
    return entries


def known_phase_entries(store: Store, campaign_id: int, elements: Sequence[str]) -> list[Entries]:
    """The relaxed known phases as formation-energy rows of each energy oracle (its source, its references, its
    relaxed structures): the proxy learns the oracle's scale from them before the oracle has labelled anything.

    Each phase is one row per oracle, however many rounds ran; phases whose relaxation failed, or with an
    element the oracle has no reference for, are left out.
    """
    entries = []
    with store.session() as session:
        for oracle in _energy_oracles(session, campaign_id):
            refs = references(session, campaign_id, oracle)
            rows = session.execute(
                select(Material.key, Material.formula, Label.value, Label.structure)
                .join(Label, Label.material_id == Material.id)
                .where(Material.campaign_id == campaign_id, Material.source == REFERENCE_SOURCE,
                       Label.oracle == oracle, Label.property == KNOWN_PHASE_PROPERTY, Label.status == "ok",
                       Label.structure.is_not(None))
                .order_by(Material.key)).all()
            rows = [r for r in rows if all(el.symbol in refs for el in Composition(r.formula).elements)]
            if not rows:
                continue
            crystals = known_crystals([r.structure for r in rows])
            kept = tuple(dict.fromkeys([*elements, *(el.symbol for c in crystals for el in c.composition)]))
            entries.append(Entries(
                source=oracle, ids=tuple(f"{oracle}-{r.key}" for r in rows),
                crystals=CrystalBatch.from_crystals(crystals, kept),
                properties={"formation_energy_per_atom": np.array(
                    [formation_energy_per_atom(Composition(r.formula), r.value, refs) for r in rows])}))
    return entries


def known_crystals(structures: Sequence[str]) -> list[Crystal]:
    """``Crystal.from_structure`` of stored structures, cached on disk under a hash of their text: the known phases
    are the same every round, and symmetry analysis takes 36 ms each (664 phases of the default space)."""
    name = f"known-phase-crystals-{hashlib.sha256(chr(0).join(structures).encode()).hexdigest()[:16]}"
    if (cached := load_cached(name)) is not None:
        return [Crystal.from_dict(d) for d in cached]
    crystals = [Crystal.from_structure(stored_structure(s)) for s in structures]
    save_cached(name, [c.as_dict() for c in crystals])
    return crystals


def describe_hull(store: Store, campaign_id: int, oracle: str) -> HullDescription:
    """How many known phases and elemental references the oracle's hull has in this campaign."""
    with store.session() as session:
        return HullDescription(oracle, len(references(session, campaign_id, oracle)),
                               len(_known_materials(session, campaign_id, oracle)))


def refresh_e_above_hull(store: Store, campaign_id: int, oracle: str) -> int:
    """Recompute the stored ``e_above_hull`` of every candidate labelled by ``oracle`` against the current
    hull, one ``PhaseDiagram`` per chemical system; returns how many values changed (by > 1e-6 eV/atom).

    The value at labelling time stays in the label's metadata (``e_above_hull_at_labelling``).
    """
    changed = 0
    with store.session() as session:
        refs = references(session, campaign_id, oracle)
        entries = hull_entries(session, campaign_id, oracle)
        labels = {label.candidate_id: label for label in session.scalars(select(Label).join(
            Candidate, Label.candidate_id == Candidate.id).where(
            Candidate.campaign_id == campaign_id, Label.oracle == oracle, Label.property == "e_above_hull",
            Label.status == "ok"))}
        systems: dict[frozenset[str], list[int]] = defaultdict(list)
        for k, (composition, _, candidate) in enumerate(entries):
            if candidate in labels:
                systems[frozenset(el.symbol for el in composition.elements)].append(k)
        for system, members in systems.items():
            if not system <= set(refs):
                continue
            pool = [PDEntry(Composition(el), refs[el]) for el in system]
            inside = [(c, e, i) for c, e, i in entries if {el.symbol for el in c.elements} <= system]
            pd_entries = [PDEntry(c, e * c.num_atoms) for c, e, _ in inside]
            diagram = PhaseDiagram(pool + pd_entries)
            for k in members:
                composition, energy, candidate = entries[k]
                value = float(diagram.get_e_above_hull(PDEntry(composition, energy * composition.num_atoms)))
                label = labels[candidate]
                if abs(value - label.value) > 1e-6:
                    label.meta = {"e_above_hull_at_labelling": label.value, **label.meta}
                    label.value = value
                    changed += 1
    return changed


def formation_hull(store: Store, campaign_id: int, elements: Sequence[str]) -> FormationHull:
    """The formation-energy hull over ``elements`` of the campaign's energy oracle (the one with elemental
    references and the most labelled compounds): its known phases and candidates, on its own scale.

    With no such oracle yet (nothing labelled), the hull is the elements' (0 everywhere): the energy
    above it is the formation energy.
    """
    with store.session() as session:
        best: list[tuple[Composition, float]] = []
        for oracle in _energy_oracles(session, campaign_id):
            refs = references(session, campaign_id, oracle)
            entries = [(c, formation_energy_per_atom(c, e, refs))
                       for c, e, _ in hull_entries(session, campaign_id, oracle)
                       if all(el.symbol in refs for el in c.elements)]
            if len(entries) > len(best):
                best = entries
    return FormationHull(elements, best)


def campaign_hull(store: Store, campaign_id: int) -> str:
    """One line on the hull of the campaign's energy oracles (those with elemental references)."""
    with store.session() as session:
        oracles = _energy_oracles(session, campaign_id)
    return "; ".join(describe_hull(store, campaign_id, oracle).describe() for oracle in oracles)


def _energy_oracles(session: Session, campaign_id: int) -> list[str]:
    """Label sources with elemental references in the campaign: the oracles that have a hull."""
    return sorted(session.execute(select(Label.oracle).join(Material).where(
        Material.campaign_id == campaign_id, Label.property == REFERENCE_PROPERTY).distinct()).scalars())
