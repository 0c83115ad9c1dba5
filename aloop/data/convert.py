"""Materials Project entries into the crystal space, with every dropped entry counted by reason.

A source (``aloop.data.local``, ``aloop.data.mp``) yields ``Entries``: crystals in their
conventional standard cell (space group, counts, lattice) with their properties, plus
the entries it could not convert at all. ``to_training_set`` then drops entries without
the target value and, given a ``CrystalSpace``, entries beyond the ``scope`` (``SCOPES``):
in ``space`` every entry outside the space, under the first constraint it breaks
(``aloop.space.validity``, the one checker of the space); in ``neighbours`` the entries
sharing no element with it; in ``all`` none. Formation energy transfers across
chemistries, so the wide scopes train the proxy on entries outside the space too, each
still counted by the first constraint it breaks (``Conversion.outside``) and marked outside
(``TrainingSet.inside``).

Example:
    >>> conversion = to_training_set(read_local(path), target="formation_energy_per_atom", space=space)  # doctest: +SKIP
    >>> print(conversion.describe())  # doctest: +SKIP
    kept 1,204 of 33,063 entries (source mp_legacy); dropped: unknown_element 30,112, ...
    >>> wide = to_training_set(read_local(path), target="formation_energy_per_atom", space=space, scope="all")  # doctest: +SKIP
    >>> print(wide.describe())  # doctest: +SKIP
    kept 33,059 of 33,063 entries (source mp_legacy): 5 inside the space, 33,054 outside (unknown_element 33,004, ...); dropped: ef_outlier 4
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from aloop.data.training import TARGETS, TrainingSet
from aloop.space.cache import load_cached, save_cached
from aloop.space.crystal import CrystalBatch
from aloop.space.space import CrystalSpace
from aloop.space.validity import Constraint, broken_constraints

PROPERTIES = ("formation_energy_per_atom", "band_gap", "energy_above_hull", "energy_per_atom")
"""Entry properties (eV/atom, eV, eV/atom, eV/atom); NaN where a source lacks one."""
MISSING_TARGET = "missing_target"
SCOPES = ("space", "neighbours", "all")
"""Which entries train the proxy: those inside the space, those sharing an element with it, or every one."""
NO_SHARED_ELEMENT = "no_shared_element"
"""Why the ``neighbours`` scope drops an entry: none of its elements is one of the space's."""


@dataclass(frozen=True)
class Entries:
    """Materials Project entries converted to crystals, before any filtering.

    Attributes:
        source: name of the measurement, e.g. ``mp_legacy`` (pre-MP2020 corrections) or ``mp``.
        ids: ``N`` material ids.
        crystals: the ``N`` crystals.
        properties: property name (``PROPERTIES``) -> ``(N,)`` float64, NaN where missing.
        dropped: entries the source read but could not convert, by reason.
    """

    source: str
    ids: tuple[str, ...]
    crystals: CrystalBatch
    properties: dict[str, np.ndarray]
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Conversion:
    """A training set and what was left out of it.

    Attributes:
        training: the kept entries.
        read: entries the source read (kept + dropped).
        dropped: reason -> number of entries dropped for it (each entry counted once).
        broken: ``(len(training),)`` object array, the first constraint of the space each kept
            entry breaks (wide scopes), ``""`` for one inside it or without a space.
    """

    training: TrainingSet
    read: int
    dropped: dict[str, int]
    broken: np.ndarray

    @property
    def outside(self) -> dict[str, int]:
        """Kept entries outside the space, by the first constraint they break."""
        return dict(Counter(self.broken[self.broken != ""].tolist()))

    def describe(self) -> str:
        """One line for logs, e.g. ``kept 812 of 9,331 entries (source mp); dropped: too_many_atoms 8,519``;
        with entries kept from outside the space, how many came from inside and outside it."""
        sources = ", ".join(self.training.sources)
        outside = self.outside
        where = (f": {len(self.training) - sum(outside.values()):,} inside the space, "
                 f"{sum(outside.values()):,} outside ({by_reason(outside)})" if outside else "")
        return (f"kept {len(self.training):,} of {self.read:,} entries (source {sources}){where}; "
                f"dropped: {by_reason(self.dropped) or 'none'}")


def by_reason(counts: dict[str, int]) -> str:
    """``reason count, ...``, the most frequent first (ties by name)."""
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def to_training_set(entries: Entries, *, target: str, space: CrystalSpace | None = None,
                    scope: str = "space") -> Conversion:
    """Keep the entries with a ``target`` value within ``scope`` of ``space`` (all of them when ``None``).

    Raises:
        ValueError: ``target`` is not one of ``TARGETS``, or ``scope`` not one of ``SCOPES``.
    """
    if target not in TARGETS:
        raise ValueError(f"target {target!r} is not one of {list(TARGETS)}")
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r} is not one of {list(SCOPES)}")
    values = entries.properties.get(target, np.full(len(entries), np.nan))
    broken = (first_broken_constraint(entries.crystals, space) if space is not None
              else np.full(len(entries), "", dtype=object))
    if space is None or scope == "space":
        beyond = broken
    elif scope == "neighbours":
        beyond = np.where(_shares_element(entries.crystals, space), "", NO_SHARED_ELEMENT)
    else:
        beyond = np.full(len(entries), "", dtype=object)
    why = np.where(np.isnan(values), MISSING_TARGET, beyond).astype(object)
    keep = np.flatnonzero(why == "")
    dropped = Counter(entries.dropped)
    dropped.update(Counter(why[why != ""].tolist()))
    rows = torch.as_tensor(keep, dtype=torch.long)
    training = TrainingSet(
        target=target, crystals=entries.crystals[rows], values=torch.as_tensor(values[keep], dtype=torch.float64),
        source=torch.zeros(len(keep), dtype=torch.long), sources=(entries.source,),
        ids=tuple(entries.ids[i] for i in keep.tolist()), inside=torch.as_tensor(broken[keep] == "", dtype=torch.bool),
    )
    return Conversion(training=training, read=len(entries) + sum(entries.dropped.values()), dropped=dict(dropped),
                      broken=broken[keep])


def _shares_element(crystals: CrystalBatch, space: CrystalSpace) -> np.ndarray:
    """``(N,)`` bool: the crystal has at least one atom of an element of the space."""
    shared = [i for i, el in enumerate(crystals.elements) if el in space.elements]
    return (crystals.counts[:, shared] > 0).any(dim=1).numpy()


def first_broken_constraint(crystals: CrystalBatch, space: CrystalSpace) -> np.ndarray:
    """``(N,)`` object array: name of the first constraint of ``space`` each crystal breaks, ``""`` if none.

    Crystals with elements outside the space break ``unknown_element``, the first constraint,
    whatever else they break, and those of the space's elements with more atoms of one than
    ``space.max_atoms_per_element`` break ``too_many_atoms_of_element``, the first one after
    ``no_atoms``; only the others go through the full checker, over the space's elements (its
    Wyckoff test recurses too deep on hundreds of atoms). Its charge and Wyckoff tests of
    compositions outside the space's tables take tens of seconds on the 33k shared entries,
    so the result is cached on disk by crystals and space settings.
    """
    key = _reasons_key(crystals, space)
    cached = load_cached(key)
    if cached is not None and len(cached) == len(crystals):
        return np.array(cached, dtype=object)
    reasons = np.full(len(crystals), "", dtype=object)
    foreign = [i for i, el in enumerate(crystals.elements) if el not in space.elements]
    unknown = (crystals.counts[:, foreign] > 0).any(dim=1).numpy()
    reasons[unknown] = Constraint.UNKNOWN_ELEMENT.value
    crowded = ~unknown & (crystals.counts > space.settings.max_atoms_per_element).any(dim=1).numpy()
    reasons[crowded] = Constraint.TOO_MANY_ATOMS_OF_ELEMENT.value
    rest = np.flatnonzero(~unknown & ~crowded)
    if len(rest):
        inside = crystals[torch.as_tensor(rest)]
        counts = torch.zeros(len(inside), len(space.elements), dtype=torch.long)
        for column, el in enumerate(space.elements):
            if el in inside.elements:
                counts[:, column] = inside.counts[:, inside.elements.index(el)]
        broken = broken_constraints(CrystalBatch(space.elements, inside.space_group, counts, inside.lattice), space)
        names = np.array(["", *(c.value for c in broken)], dtype=object)
        stacked = torch.stack(list(broken.values()))  # (C, N)
        reasons[rest] = names[torch.where(stacked.any(dim=0), stacked.int().argmax(dim=0) + 1, 0).numpy()]
    save_cached(key, reasons.tolist())
    return reasons


def _reasons_key(crystals: CrystalBatch, space: CrystalSpace) -> str:
    digest = hashlib.sha1(space.settings.model_dump_json().encode())
    digest.update(",".join(crystals.elements).encode())
    for tensor in (crystals.space_group, crystals.counts, crystals.lattice):
        digest.update(tensor.cpu().contiguous().numpy().tobytes())
    return f"drop-reasons-{digest.hexdigest()[:20]}"
