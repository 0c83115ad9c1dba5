"""Novelty against known materials and greedy selection of a diverse, high-acquisition batch.

Novelty is decided cheaply first (a reduced composition that no known material has is
novel) and only then with pymatgen's ``StructureMatcher`` against the known structures of
the same composition, the convention of MatterGen and matbench-discovery.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

from aloop.space import Crystal
from aloop.space.structure import TEMPLATE_PROPERTY

MATCHER_SETTINGS = {"ltol": 0.2, "stol": 0.3, "angle_tol": 5.0}
def structure_matcher() -> StructureMatcher:
    """The matcher used for novelty and uniqueness everywhere in aloop."""
    return StructureMatcher(**MATCHER_SETTINGS)


@dataclass
class KnownMaterials:
    """Materials already known (Materials Project, the store), by reduced formula.

    ``structures`` hold known structures, matched with ``StructureMatcher``.
    ``groups`` hold (reduced formula, space group) of known materials whose atoms are not at
    hand (Materials Project entries read from a summary): the same composition in the
    same space group counts as known. ``formulas`` hold compositions known without any
    structure (labels imported by formula): every candidate of such a composition is known.
    """

    structures: dict[str, list[Structure]] = field(default_factory=lambda: defaultdict(list))
    groups: set[tuple[str, int]] = field(default_factory=set)
    formulas: set[str] = field(default_factory=set)

    @classmethod
    def from_records(cls, records: Iterable[tuple[str, Structure | None]]) -> KnownMaterials:
        """Build from (reduced formula, structure or None) pairs."""
        known = cls()
        for formula, structure in records:
            if structure is None:
                known.formulas.add(formula)
            else:
                known.structures[formula].append(structure)
        return known

    @classmethod
    def from_sources(cls, *, crystals: Iterable[Crystal] = (), structures: Iterable[Structure] = ()
                     ) -> KnownMaterials:
        """Known crystals without atoms (training data: by composition and group) and known structures."""
        known = cls()
        known.add_crystals(crystals)
        for structure in structures:
            known.add(structure)
        return known

    def add(self, structure: Structure) -> None:
        self.structures[structure.composition.reduced_formula].append(structure)

    def add_crystals(self, crystals: Iterable[Crystal]) -> None:
        """Known crystals without atoms: remembered by composition and space group."""
        self.groups.update((c.composition.reduced_formula, c.space_group) for c in crystals)

    def is_novel(self, structure: Structure, *, space_group: int | None = None,
                 matcher: StructureMatcher | None = None) -> bool:
        """True unless a known material has the same composition and a matching structure."""
        formula = structure.composition.reduced_formula
        if formula in self.formulas or (formula, space_group) in self.groups:
            return False
        same = self.structures.get(formula, [])
        if not same:
            return True
        matcher = matcher or structure_matcher()
        return not any(matcher.fit(structure, other) for other in same)


@dataclass(frozen=True)
class Selection:
    """The chosen batch: indices into the candidate list and their structures."""

    indices: list[int]
    structures: list[Structure]
    skipped: dict[str, int]
    """Why candidates above the cut were passed over: duplicate, forced_group, known, rediscovery, no_structure."""


def diversity_key(crystal: Crystal) -> str:
    """Near-duplicates share it: same space group, cell formula and Wyckoff sites (when it has sites)."""
    return f"{crystal.composition_key}|{crystal.wyckoff}"


def diversity_penalised_scores(
    scores: np.ndarray, chemical_systems: Sequence[str], space_groups: Sequence[int], *,
    chosen_chemsys: Counter, chosen_groups: Counter, chemsys_penalty: float, space_group_penalty: float,
) -> np.ndarray:
    """Scores minus a penalty per already chosen candidate sharing the chemical system or group."""
    chem = np.array([chosen_chemsys[c] for c in chemical_systems], dtype=float)
    group = np.array([chosen_groups[g] for g in space_groups], dtype=float)
    return scores - chemsys_penalty * chem - space_group_penalty * group


def select_diverse(
    crystals: Sequence[Crystal],
    acquisition: np.ndarray,
    *,
    size: int,
    known: KnownMaterials,
    to_structure: Callable[[Crystal], Structure | None],
    chemsys_penalty: float,
    space_group_penalty: float,
    forced: np.ndarray | None = None,
    reserved: np.ndarray | None = None,
    reserved_size: int = 0,
) -> Selection:
    """Greedy batch: repeatedly take the best penalised candidate that is new and novel.

    Acquisition values are standardised (z-scores) so the penalties are in units of the
    spread of the batch. At most one candidate per ``diversity_key`` (space group, cell
    formula, Wyckoff sites) is taken, and none whose structure matches one already taken
    (``duplicate`` too). A candidate placed on a template (``TEMPLATE_PROPERTY``)
    that is a known material is a ``rediscovery``; other known ones are ``known``.

    Args:
        crystals: the deduplicated-or-not sample set, length N.
        acquisition: ``(N,)`` acquisition values, higher is better.
        size: batch size wanted (fewer when the pool runs out).
        known: known materials for novelty.
        to_structure: places atoms (``aloop.space.structure.placed_structure``); ``None`` when that fails.
        forced: ``(N,)`` bool, Wyckoff sets that cannot have their own space group
            (``aloop.space.supergroup.forced_supergroup``): passed over as ``forced_group``, since their
            atoms would be another crystal than the one named.
        reserved: ``(N,)`` bool, candidates that take ``reserved_size`` places of the batch and no more, the
            others the rest; places one side has no candidates left for go to the other.
    """
    acquisition = np.asarray(acquisition, dtype=float)
    spread = acquisition.std() or 1.0
    scores = (acquisition - acquisition.mean()) / spread
    chemsys = [c.chemical_system for c in crystals]
    groups = [c.space_group for c in crystals]
    keys = [diversity_key(c) for c in crystals]
    available = np.ones(len(crystals), dtype=bool)
    chosen_chemsys: Counter = Counter()
    chosen_groups: Counter = Counter()
    taken_keys: set[str] = set()
    matcher = structure_matcher()
    batch = KnownMaterials()
    indices: list[int] = []
    structures: list[Structure] = []
    skipped: Counter = Counter()
    side = np.zeros(len(crystals), dtype=bool) if reserved is None else np.asarray(reserved, dtype=bool)
    places = {True: reserved_size, False: size - reserved_size}
    taken: Counter = Counter()
    while len(indices) < size and available.any():
        penalised = diversity_penalised_scores(
            scores, chemsys, groups, chosen_chemsys=chosen_chemsys, chosen_groups=chosen_groups,
            chemsys_penalty=chemsys_penalty, space_group_penalty=space_group_penalty,
        )
        open_side = {r: taken[r] < places[r] or not (available & (side != r)).any() for r in (True, False)}
        allowed = available & np.where(side, open_side[True], open_side[False])
        if not allowed.any():
            break
        best = int(np.argmax(np.where(allowed, penalised, -np.inf)))
        available[best] = False
        if keys[best] in taken_keys:
            skipped["duplicate"] += 1
            continue
        if forced is not None and forced[best]:
            skipped["forced_group"] += 1
            continue
        structure = to_structure(crystals[best])
        if structure is None:
            skipped["no_structure"] += 1
            continue
        if not known.is_novel(structure, space_group=groups[best], matcher=matcher):
            skipped["rediscovery" if TEMPLATE_PROPERTY in structure.properties else "known"] += 1
            continue
        if not batch.is_novel(structure, matcher=matcher):  # the same atoms by another route (e.g. two templates)
            skipped["duplicate"] += 1
            continue
        batch.add(structure)
        taken_keys.add(keys[best])
        chosen_chemsys[chemsys[best]] += 1
        chosen_groups[groups[best]] += 1
        taken[bool(side[best])] += 1
        indices.append(best)
        structures.append(structure)
    return Selection(indices=indices, structures=structures, skipped=dict(skipped))


def nearest_distance(features: torch.Tensor, reference: torch.Tensor, *, chunk: int = 4096) -> torch.Tensor:
    """Distance of each row to its nearest reference row, in standardised feature space.

    Every column is scaled by its std over features and reference together, so a column
    constant among few known materials does not blow the distance up; a column constant
    over both contributes nothing.

    Args:
        features: ``(N, D)`` candidate features.
        reference: ``(R, D)`` features of known materials.

    Returns:
        ``(N,)`` Euclidean distances of the scaled rows.
    """
    if reference.shape[0] == 0:
        return torch.full((features.shape[0],), float("inf"), dtype=features.dtype)
    both = torch.cat([features, reference])
    scale = both.std(dim=0).clamp_min(1e-6) if both.shape[0] > 1 else torch.ones(reference.shape[1])
    ref = reference / scale
    out = [torch.cdist(features[i:i + chunk] / scale, ref).min(dim=1).values
           for i in range(0, features.shape[0], chunk)]
    return torch.cat(out) if out else torch.empty(0, dtype=features.dtype)


def farthest_point_indices(features: torch.Tensor, size: int, *, seed: int) -> torch.Tensor:
    """Maximin (farthest-point) subset: a space-filling design in standardised feature space.

    Starts from a seeded random row, then repeatedly adds the row farthest from all chosen
    ones. Vectorised: one distance row per pick, ``O(size * N * D)``.

    Args:
        features: ``(N, D)`` features of the pool.
        size: rows wanted (all rows when ``size >= N``).

    Returns:
        ``(min(size, N),)`` long indices in pick order.
    """
    n = features.shape[0]
    if size >= n:
        return torch.arange(n)
    scaled = features / features.std(dim=0).clamp_min(1e-6)
    generator = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(n, (1,), generator=generator))]
    nearest = (scaled - scaled[chosen[0]]).norm(dim=1)
    for _ in range(size - 1):
        nxt = int(nearest.argmax())
        chosen.append(nxt)
        nearest = torch.minimum(nearest, (scaled - scaled[nxt]).norm(dim=1))
    return torch.tensor(chosen, dtype=torch.long)
