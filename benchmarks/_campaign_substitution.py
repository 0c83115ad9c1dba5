"""Ion substitution baseline: known Materials Project structures with ions swapped into the searched space.

pymatgen's data-mined substitution model (Hautier et al., Inorg. Chem. 50, 656 (2011)):
for every combination of the searched elements' ionic species (one species per element,
``min_elements`` to ``max_elements`` elements, and, with ``MIXED_VALENCE``, also two
oxidation states of one cation, e.g. Fe2+ Fe3+ O2-), ``SubstitutionPredictor`` names the
likely source chemistries, the ``mp_cgcnn36k`` structures of those chemistries are decorated
with oxidation states, and ``Substitutor.pred_from_structures`` applies each substitution
above the probability threshold (``SubstitutionTransformation``, charge balance checked). Only
substituted structures inside the crystal space (its own checker) are kept, with their
probability. The pool is built once and cached.

**Widened in campaign v2** so that the arm does not run dry at 4 rounds of 16 calls: v1's pool
(threshold 1e-3, one species per element) held 234 Li-Mn-O structures of which 89 are novel and
distinct from each other, and for Fe-O only 71 (38 novel and distinct, all FeO and Fe2O3).
Lowering the threshold alone brings more copies of the same prototypes (Fe-O at 1e-5: 259
structures, 39 novel and distinct); v2 lowers it to ``THRESHOLD`` = 1e-4 and adds the
mixed-valence targets, whose ternary sources (A2+ B3+ oxides) give the mixed-valence
compositions (Fe3O4, Fe4O5, Li-Mn-O with Mn3+ and Mn4+) that one species per element cannot reach.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import lzma
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.analysis.structure_prediction.substitution_probability import (
    SubstitutionPredictor,
    SubstitutionProbability,
)
from pymatgen.analysis.structure_prediction.substitutor import Substitutor
from pymatgen.core import Species, Structure
from tqdm import tqdm

from aloop.files import write_atomic
from aloop.space import Crystal, CrystalSpace
from aloop.space.validity import check_crystal

THRESHOLD = 1e-4
"""Probability threshold of the substitution model (pymatgen's default is 1e-3, campaign v1's)."""
MIXED_VALENCE = True
"""Also target one cation in two adjacent oxidation states, e.g. Fe2+ Fe3+ (campaign v2)."""


@dataclass(frozen=True)
class SubstitutedStructure:
    """One substituted structure: its probability, where it came from, its atoms and crystal."""

    probability: float
    source_id: str
    structure: Structure
    crystal: Crystal


def target_species(space: CrystalSpace, *, mixed_valence: bool = MIXED_VALENCE) -> list[tuple[Species, ...]]:
    """Every choice of one ionic species per element, for each allowed number of elements, with cations and
    anions; with ``mixed_valence`` also every choice where one element is a cation in two adjacent oxidation
    states (Fe2+ Fe3+, Mn3+ Mn4+)."""
    known = SubstitutionProbability().species
    by_element = {el: [sp for sp in known if sp.symbol == el] for el in space.elements}
    settings = space.settings
    out = []
    for size in range(settings.min_elements, settings.max_elements + 1):
        for subset in itertools.combinations(space.elements, size):
            choices = [[(sp,) for sp in by_element[el]] for el in subset]
            out += [combo for combo in _combinations(choices) if _ionic(combo)]
            if not mixed_valence:
                continue
            for k, el in enumerate(subset):
                pairs = [pair for pair in itertools.combinations(by_element[el], 2)
                         if min(sp.oxi_state for sp in pair) > 0 and abs(pair[0].oxi_state - pair[1].oxi_state) == 1]
                mixed = [*choices[:k], pairs, *choices[k + 1:]]
                out += [combo for combo in _combinations(mixed) if _ionic(combo)]
    return out


def _combinations(choices: list[list[tuple[Species, ...]]]) -> list[tuple[Species, ...]]:
    return [tuple(sp for part in combo for sp in part) for combo in itertools.product(*choices)]


def _ionic(species: tuple[Species, ...]) -> bool:
    return min(sp.oxi_state for sp in species) < 0 < max(sp.oxi_state for sp in species)


def substitution_pool(space: CrystalSpace, data_dir: Path, *, cache_dir: Path, progress: bool = True
                      ) -> list[SubstitutedStructure]:
    """The substituted structures inside ``space``, highest probability first (cached on disk)."""
    key = hashlib.sha1(f"{space.settings.model_dump_json()}|{THRESHOLD}|mixed-adjacent-{MIXED_VALENCE}".encode()).hexdigest()[:12]
    path = cache_dir / f"substitution-pool-{key}.json"
    if not path.exists():
        pool = _build_pool(space, data_dir, progress=progress)
        records = [{"probability": p.probability, "source_id": p.source_id, "cif": p.structure.to(fmt="cif"),
                    "crystal": p.crystal.as_dict()} for p in pool]
        write_atomic(path, json.dumps(records))
    return [SubstitutedStructure(r["probability"], r["source_id"], Structure.from_str(r["cif"], fmt="cif"),
                                 Crystal.from_dict(r["crystal"])) for r in json.loads(path.read_text())]


def _build_pool(space: CrystalSpace, data_dir: Path, *, progress: bool) -> list[SubstitutedStructure]:
    targets = target_species(space)
    predictor = SubstitutionPredictor(threshold=THRESHOLD)
    source_systems = {frozenset(sp.symbol for sp in prediction["substitutions"])
                      for target in targets for prediction in predictor.list_prediction(list(target))}
    sources = _decorated_sources(data_dir, source_systems, max_sites=space.settings.max_atoms)
    substitutor = Substitutor(threshold=THRESHOLD)
    found: dict[str, SubstitutedStructure] = {}
    for target in tqdm(targets, desc="ion substitution", disable=not progress):
        chemsys = {sp.symbol for sp in target}
        candidates = [s for s in sources if len(s["structure"].elements) == len(target)
                      and {el.symbol for el in s["structure"].composition.elements} != chemsys]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            transformed = substitutor.pred_from_structures(list(target), candidates, remove_duplicates=False)
        for item in transformed:
            structure = item.final_structure.copy()
            structure.remove_oxidation_states()
            crystal = Crystal.from_structure(structure)
            if check_crystal(crystal, space):
                continue
            probability = float(item.other_parameters["proba"])
            key = crystal.canonical_hash
            if key not in found or found[key].probability < probability:
                found[key] = SubstitutedStructure(probability, item.history[0]["source"], structure, crystal)
    return sorted(found.values(), key=lambda s: -s.probability)


def _decorated_sources(data_dir: Path, systems: set[frozenset[str]], *, max_sites: int) -> list[dict]:
    """Oxidation-decorated ``{"structure", "id"}`` of the entries whose element set is one of ``systems``."""
    summary = pd.read_csv(data_dir / "summary.csv.gz")
    elements = summary["elements"].astype(str).str.split().map(frozenset)
    wanted = set(summary.loc[elements.isin(systems) & (summary["nsites"] <= max_sites), "material_id"].astype(str))
    sources = []
    with lzma.open(data_dir / "cifs.jsonl.xz", "rt") as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for line in handle:
            record = json.loads(line)
            if record["material_id"] not in wanted:
                continue
            structure = Structure.from_str(record["cif"], fmt="cif")
            guesses = structure.composition.oxi_state_guesses(max_sites=-1)
            if guesses:
                structure.add_oxidation_state_by_element(guesses[0])
                sources.append({"structure": structure, "id": record["material_id"]})
    return sources


def seeded_order(probabilities: Sequence[float], *, seed: int) -> np.ndarray:
    """A seeded ranking drawn without replacement with weights proportional to ``probabilities``.

    Gumbel top-k: ``argsort(-(log p + Gumbel noise))``; the most probable substitutions tend
    to come first, and seeds differ where probabilities are close.
    """
    rng = np.random.default_rng(seed)
    keys = np.log(np.asarray(probabilities, dtype=float)) + rng.gumbel(size=len(probabilities))
    return np.argsort(-keys, kind="stable")
