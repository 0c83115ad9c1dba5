"""Confirmation of the campaign's hits by a second model: SevenNet-0 relaxes every novel CHGNet hit again.

A hit found with CHGNet (energy above the CHGNet hull at most 0.1 eV/atom, unique within its
arm and seed and matching no known entry: ``aloop.hits.hit_flags``) is relaxed once more with
the ``sevennet`` oracle, starting from the CHGNet-relaxed structure, with the same relaxation
settings (FIRE, fmax, steps, time limit), and placed on the SevenNet hull of the same known
entries (``_campaign_hull``). A hit is *confirmed* when it is within 0.1 eV/atom of both hulls
(``aloop.hits.confirmed_mask``). The SevenNet result is kept in the label under ``"sevennet"``,
so the report counts confirmed hits from the records alone.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

from pymatgen.core import Structure

from aloop.files import write_atomic
from aloop.hits import THRESHOLDS, hit_flags
from aloop.oracle import Labelled, OracleInput
from aloop.selection import structure_matcher
from aloop.space import Crystal
from benchmarks._campaign_hull import EnergyModel, ReferenceHull, relax_all

CONFIRM_BY = "sevennet"
"""The label key of the second model's result, and its oracle's entry-point name."""
SHARED_SETTINGS = ("optimizer", "fmax", "max_steps", "relax_cell", "timeout_s", "device", "torch_threads")
"""Relaxation settings the second model takes from the campaign's oracle."""


def confirmer(oracle: EnergyModel) -> EnergyModel:
    """The second model: the ``sevennet`` oracle (SevenNet-0, MP2020-corrected) with the oracle's relaxation
    settings; the CHGNet-only ones (weights, batch size) are left out."""
    settings = {k: v for k, v in oracle.settings.items() if k in SHARED_SETTINGS}
    return EnergyModel(CONFIRM_BY, settings)


def to_confirm(history: Sequence[dict], labels: Sequence[dict], *, known: Sequence[Structure]) -> list[int]:
    """Indices into ``labels`` (one round, after the arm's ``history``) of its novel unique hits at the
    widest threshold, in call order: what the report will count as novel."""
    flags = hit_flags([*history, *labels], threshold=max(THRESHOLDS), known=known)
    return [i for i, novel in enumerate(flags["novel"][len(history):]) if novel]


def confirm(labels: list[dict], indices: Sequence[int], *, model: EnergyModel, hull: ReferenceHull,
            folder: Path) -> None:
    """Relax ``labels[i]``'s CHGNet-relaxed structure with ``model`` for each ``i`` and store the result
    under ``labels[i][CONFIRM_BY]`` (each cached as ``confirm-<i>.json`` in ``folder`` as it arrives)."""
    todo = []
    for i in indices:
        path = folder / f"confirm-{i}.json"
        if path.exists():
            labels[i][CONFIRM_BY] = json.loads(path.read_text())
        else:
            structure = _structure(labels[i]["relaxed_cif"])
            todo.append(OracleInput(str(i), Crystal.from_dict(labels[i]["crystal"]), structure))

    def keep(item: OracleInput, result: object) -> None:
        record = second_opinion(item.structure, result, hull=hull)
        write_atomic(folder / f"confirm-{item.candidate_id}.json", json.dumps(record))
        labels[int(item.candidate_id)][CONFIRM_BY] = record

    relax_all(model, todo, on_result=keep)


def second_opinion(start: Structure, result: object, *, hull: ReferenceHull) -> dict:
    """The second model's record of one hit: energy, formation energy and energy above its own hull when
    relaxed (and whether it kept the CHGNet structure, ``StructureMatcher``), else why not."""
    meta = dict(getattr(result, "metadata", {}) or {})
    record = {"model": hull.model, "ok": isinstance(result, Labelled), "steps": meta.get("steps"),
              "seconds": meta.get("seconds")}
    if not isinstance(result, Labelled):
        return record | {"reason": getattr(result, "reason", ""), "kind": getattr(result, "kind", None)}
    composition = result.structure.composition
    return record | {"energy_per_atom": result.energy_per_atom,
                     "correction_per_atom": meta.get("correction_per_atom"),
                     "formation_energy_per_atom": hull.formation_energy(composition, result.energy_per_atom),
                     "e_above_hull": hull.e_above_hull(composition, result.energy_per_atom),
                     "same_structure": bool(structure_matcher().fit(start, result.structure)),
                     "relaxed_cif": result.structure.to(fmt="cif")}


def _structure(cif: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_str(cif, fmt="cif")
