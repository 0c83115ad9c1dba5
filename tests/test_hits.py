"""Hit counting: thresholds, uniqueness, novelty, acceleration, spread."""

from __future__ import annotations

import math

import pytest
from pymatgen.core import Lattice, Structure

from aloop.hits import (
    acceleration_factor,
    confirmed_mask,
    count_hits,
    first_occurrences,
    hit_mask,
    spread,
)


def rock_salt(a: float) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Li", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def zinc_blende(a: float) -> Structure:
    return Structure.from_spacegroup("F-43m", Lattice.cubic(a), ["Li", "O"], [[0, 0, 0], [0.25, 0.25, 0.25]])


def label(structure: Structure, e_hull: float) -> dict:
    return {"ok": True, "e_above_hull": e_hull, "relaxed_cif": structure.to(fmt="cif"),
            "formula": structure.composition.reduced_formula}


def test_hit_mask_applies_the_threshold_and_skips_failed_relaxations() -> None:
    labels = [{"ok": True, "e_above_hull": 0.1}, {"ok": True, "e_above_hull": 0.1001},
              {"ok": True, "e_above_hull": -0.02}, {"ok": False, "reason": "timed out"}]
    assert hit_mask(labels, threshold=0.1) == [True, False, True, False]
    assert hit_mask(labels, threshold=0.0) == [False, False, True, False]


def test_first_occurrences_matches_a_scaled_copy_but_not_another_prototype() -> None:
    # 1% larger cell: the same structure for StructureMatcher(ltol=0.2, stol=0.3, angle_tol=5)
    flags = first_occurrences([rock_salt(4.2), rock_salt(4.24), zinc_blende(4.6), rock_salt(4.2)])
    assert flags == [True, False, True, False]


def test_count_hits_separates_duplicates_known_entries_and_non_hits() -> None:
    labels = [label(rock_salt(4.2), 0.05), label(rock_salt(4.22), 0.0),  # the second repeats the first
              label(zinc_blende(4.6), -0.01),                             # new, but a known entry
              label(zinc_blende(5.5).copy(), 0.3),                        # above the threshold
              {"ok": False, "reason": "not converged"}]
    counts = count_hits(labels, threshold=0.1, known=[zinc_blende(4.65)])
    assert (counts.calls, counts.hits, counts.unique, counts.novel, counts.formulas) == (5, 3, 2, 1, 1)
    assert counts.hit_rate == pytest.approx(1 / 5)
    strict = count_hits(labels, threshold=0.0, known=[])
    assert (strict.hits, strict.unique, strict.novel) == (2, 2, 2)


def test_confirmed_mask_needs_a_hit_under_both_models() -> None:
    labels = [{"ok": True, "e_above_hull": 0.05, "sevennet": {"ok": True, "e_above_hull": 0.1}},
              {"ok": True, "e_above_hull": 0.05, "sevennet": {"ok": True, "e_above_hull": 0.12}},  # second says no
              {"ok": True, "e_above_hull": 0.2, "sevennet": {"ok": True, "e_above_hull": 0.0}},   # first says no
              {"ok": True, "e_above_hull": 0.0, "sevennet": {"ok": False, "reason": "not converged"}},
              {"ok": True, "e_above_hull": 0.0},                                                  # never re-relaxed
              {"ok": False, "reason": "timed out"}]
    assert confirmed_mask(labels, threshold=0.1, by="sevennet") == [True, False, False, False, False, False]
    assert confirmed_mask(labels, threshold=0.0, by="sevennet") == [False] * 6


def test_count_hits_confirms_only_novel_hits() -> None:
    second = {"ok": True, "e_above_hull": 0.03}
    labels = [label(rock_salt(4.2), 0.05) | {"sevennet": second},
              label(rock_salt(4.22), 0.0) | {"sevennet": second},    # a duplicate: not counted again
              label(zinc_blende(4.6), -0.01) | {"sevennet": second},  # known: not novel, so not confirmed
              label(zinc_blende(5.5).copy(), 0.3)]
    counts = count_hits(labels, threshold=0.1, known=[zinc_blende(4.65)], confirm_by="sevennet")
    assert (counts.novel, counts.confirmed) == (1, 1)
    assert count_hits(labels, threshold=0.1, known=[zinc_blende(4.65)]).confirmed == 0


def test_acceleration_factor_and_spread() -> None:
    assert acceleration_factor(0.3, 0.1) == pytest.approx(3.0)
    assert acceleration_factor(0.2, 0.0) == math.inf
    assert math.isnan(acceleration_factor(0.0, 0.0))
    mean, std, low, high = spread([1.0, 2.0, 3.0, math.nan])
    assert (mean, low, high) == (2.0, 1.0, 3.0) and std == pytest.approx(1.0)
