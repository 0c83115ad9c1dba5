"""Hits of a discovery campaign: labels near the hull, unique among themselves, novel against known entries.

A hit is a relaxed candidate whose energy above the reference hull is at or below a
threshold (``THRESHOLDS``). It is unique when it matches no earlier hit and novel when,
in addition, it matches no known structure of its chemical system (pymatgen's
``StructureMatcher``). The hit rate is novel hits per oracle call, and the acceleration
factor compares it with a baseline's, such as random search. A hit is *confirmed* when a
second, independent model, relaxing the hit's relaxed structure again, also puts it at or
below the threshold on its own hull of the same known phases.

A label is one oracle call's result as a plain dict: ``ok`` (relaxed), ``relaxed_cif``,
``e_above_hull`` (eV/atom, negative below the hull) and ``formula`` (reduced); a second
model's result sits under its own key (e.g. ``"sevennet"``) as a dict with ``ok`` and
``e_above_hull``. These are pure functions of such records, so the counting is testable
without an oracle.

Example:
    >>> hits = hit_mask([{"ok": True, "e_above_hull": 0.05}, {"ok": False}], threshold=0.1)
    >>> hits
    [True, False]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure

from aloop.selection import structure_matcher

THRESHOLDS = (0.1, 0.0)
"""Hit thresholds on the energy above the reference hull, eV/atom (MatterGen, matbench-discovery)."""


def hit_mask(labels: Sequence[dict], *, threshold: float) -> list[bool]:
    """Which labels are hits: relaxed (``ok``) with ``e_above_hull <= threshold``."""
    return [bool(label.get("ok")) and label["e_above_hull"] <= threshold for label in labels]


def confirmed_mask(labels: Sequence[dict], *, threshold: float, by: str) -> list[bool]:
    """Which labels are hits under both models: ``hit_mask`` and the second model's record ``label[by]``
    relaxed (``ok``) with its own ``e_above_hull <= threshold``; a label without that record is not confirmed.

    Example:
        >>> confirmed_mask([{"ok": True, "e_above_hull": 0.05, "sevennet": {"ok": True, "e_above_hull": 0.12}},
        ...                 {"ok": True, "e_above_hull": 0.0, "sevennet": {"ok": True, "e_above_hull": 0.02}},
        ...                 {"ok": True, "e_above_hull": 0.0}], threshold=0.1, by="sevennet")
        [False, True, False]
    """
    second = [label.get(by) or {} for label in labels]
    return [hit and bool(other.get("ok")) and other["e_above_hull"] <= threshold
            for hit, other in zip(hit_mask(labels, threshold=threshold), second, strict=True)]


def first_occurrences(structures: Sequence[Structure]) -> list[bool]:
    """For each structure, True unless it matches an earlier one in the list.

    Matching is pymatgen's ``StructureMatcher(ltol=0.2, stol=0.3, angle_tol=5)``, tried only
    between structures of the same reduced formula.
    """
    matcher = structure_matcher()
    seen: dict[str, list[Structure]] = {}
    first = []
    for structure in structures:
        same = seen.setdefault(structure.composition.reduced_formula, [])
        is_new = not any(matcher.fit(structure, other) for other in same)
        first.append(is_new)
        if is_new:
            same.append(structure)
    return first


@dataclass(frozen=True)
class HitCounts:
    """Hits among some oracle calls (a campaign, or one arm and seed of a benchmark), at one threshold.

    Attributes:
        calls: oracle calls (failed relaxations included).
        hits: labels at or below the threshold.
        unique: hits matching no earlier hit among the same calls.
        novel: unique hits matching no known entry of the searched chemical systems.
        formulas: distinct reduced formulas among the novel hits (diversity; labels carry ``formula``).
        confirmed: novel hits the second model confirms (0 when none was asked for).
    """

    calls: int
    hits: int
    unique: int
    novel: int
    formulas: int
    confirmed: int = 0

    @property
    def hit_rate(self) -> float:
        """Novel unique hits per oracle call."""
        return self.novel / self.calls if self.calls else math.nan


def hit_flags(labels: Sequence[dict], *, threshold: float, known: Sequence[Structure],
              confirm_by: str | None = None) -> dict[str, np.ndarray]:
    """Per label, in call order: ``hit``, ``unique`` (a hit matching no earlier hit) and ``novel``
    (a unique hit matching no ``known`` structure), each ``(len(labels),)`` bool; with ``confirm_by``
    also ``confirmed``: a novel hit that the second model's record ``label[confirm_by]`` confirms
    (``confirmed_mask``)."""
    hit = np.array(hit_mask(labels, threshold=threshold), dtype=bool)
    rows = np.flatnonzero(hit)
    structures = [Structure.from_str(labels[i]["relaxed_cif"], fmt="cif") for i in rows]
    first = np.array(first_occurrences(structures), dtype=bool)
    unique, novel = np.zeros_like(hit), np.zeros_like(hit)
    unique[rows[first]] = True
    novel[rows[first][_novel([s for s, f in zip(structures, first, strict=True) if f], known)]] = True
    flags = {"hit": hit, "unique": unique, "novel": novel}
    if confirm_by is not None:
        flags["confirmed"] = novel & np.array(confirmed_mask(labels, threshold=threshold, by=confirm_by), dtype=bool)
    return flags


def count_hits(labels: Sequence[dict], *, threshold: float, known: Sequence[Structure],
               confirm_by: str | None = None) -> HitCounts:
    """Hits, unique hits, novel hits and their distinct formulas among ``labels`` (in call order), and the
    novel hits the second model ``confirm_by`` confirms."""
    flags = hit_flags(labels, threshold=threshold, known=known, confirm_by=confirm_by)
    formulas = {labels[i]["formula"] for i in np.flatnonzero(flags["novel"])}
    return HitCounts(calls=len(labels), hits=int(flags["hit"].sum()), unique=int(flags["unique"].sum()),
                     novel=int(flags["novel"].sum()), formulas=len(formulas),
                     confirmed=int(flags["confirmed"].sum()) if confirm_by is not None else 0)


def _novel(structures: Sequence[Structure], known: Sequence[Structure]) -> np.ndarray:
    """``(len(structures),)`` bool: matches none of ``known`` (they are not compared with each other)."""
    matcher = structure_matcher()
    by_formula: dict[str, list[Structure]] = {}
    for structure in known:
        by_formula.setdefault(structure.composition.reduced_formula, []).append(structure)
    return np.array([not any(matcher.fit(s, k) for k in by_formula.get(s.composition.reduced_formula, []))
                     for s in structures], dtype=bool)


def acceleration_factor(hit_rate: float, random_hit_rate: float) -> float:
    """Discovery acceleration factor: hit rate over a random search's (``inf`` when random found none)."""
    if math.isnan(hit_rate) or math.isnan(random_hit_rate):
        return math.nan
    if random_hit_rate == 0:
        return math.inf if hit_rate > 0 else math.nan
    return hit_rate / random_hit_rate


def spread(values: Sequence[float]) -> tuple[float, float, float, float]:
    """Mean, sample standard deviation, min and max of the finite values (NaN when none)."""
    finite = np.array([v for v in values if math.isfinite(v)], dtype=float)
    if not len(finite):
        return (math.nan,) * 4
    std = float(finite.std(ddof=1)) if len(finite) > 1 else 0.0
    return float(finite.mean()), std, float(finite.min()), float(finite.max())
