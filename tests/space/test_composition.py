"""Charge neutrality (against pymatgen) and Wyckoff compatibility (against pyxtal)."""

import itertools
import random

import pytest
import torch
from pymatgen.core import Composition
from pyxtal.symmetry import Group

from aloop.config import SpaceSettings
from aloop.space.composition import (
    charge_neutral,
    enumerate_counts,
    exempt_from_charge,
    is_wyckoff_compatible,
    multiset,
    oxidation_states,
    multiset_index,
    unique_rows,
    wyckoff_compatibility,
)

ELEMENTS = tuple(SpaceSettings().elements) + ("V", "Cr", "N", "Ba")


def as_composition(row: list[int]) -> Composition:
    return Composition({el: n for el, n in zip(ELEMENTS, row, strict=True) if n})


@pytest.mark.parametrize("rule", ["per_atom_common", "per_atom_icsd"])
def test_charge_neutral_agrees_with_pymatgen_oxi_state_guesses(rule):
    rng = random.Random(0)
    rows = []
    for _ in range(200):
        row = [0] * len(ELEMENTS)
        for column in rng.sample(range(len(ELEMENTS)), rng.choice([1, 2, 2, 3, 3, 3, 4])):
            row[column] = rng.randint(1, 6)
        rows.append(row)
    ours = charge_neutral(torch.tensor(rows), ELEMENTS, (rule,))
    states = {el: list(oxidation_states(el, rule)) for el in ELEMENTS}
    theirs = torch.tensor([bool(as_composition(r).oxi_state_guesses(oxi_states_override=states)) for r in rows])
    assert ours.shape == (200,)
    assert torch.equal(ours, theirs)
    assert 0.1 < ours.float().mean() < 0.9  # the sample has both kinds


def test_oxidation_states_of_each_rule():
    assert oxidation_states("Cu", "per_atom_common") == (2,)
    assert oxidation_states("Cu", "per_atom_icsd") == (1, 2, 3)  # ICSD adds Cu(+), Cu(3+)
    assert oxidation_states("Cl", "per_atom_icsd") == (-1, 1, 3, 5, 7)  # union: ICSD lists only -1
    with pytest.raises(ValueError, match="per_atom_common"):
        oxidation_states("Cu", "common")


RULES = [("per_atom_common",), ("per_atom_icsd",), ("per_atom_common", "alloys"), ("per_atom_icsd", "alloys"),
         ("per_atom_common", "intermetallics"), ("per_atom_icsd", "intermetallics")]


@pytest.mark.parametrize(("formula", "valid_under"), [
    # the spinel's conventional cell: mixed Mn valence balances under every rule (12 Mn(4+) + 4 Mn(2+))
    ("Li8Mn16O32", set(range(6))),
    # one formula unit needs Mn(3+) + Mn(4+): Mn(3+) is an ICSD state, not a common one
    ("Li1Mn2O4", {1, 3, 5}),
    ("Cu2O", {1, 3, 5}),  # Cu(+) only among the ICSD states
    ("Mg1Zn2", {2, 3, 4, 5}),  # Laves phase: metals only, no anion under any per-atom rule
    ("Ti1Fe2Si1", {4, 5}),  # Heusler silicide: metals with a metalloid
    ("Fe3O4", set(range(6))), ("Na1Cl1", set(range(6))), ("Si5", set(range(6))),  # an element alone: state 0
    ("Na1Cl2", set()), ("Li2O3", set()), ("Mg1F1", set()),
    ("Si1P1", {1, 3, 5}),  # no metal, so never exempt; Si(4-) + P(4+) with P's ICSD state
])
def test_hand_checked_compositions_under_each_rule(formula, valid_under):
    comp = Composition(formula)
    counts = torch.tensor([[int(comp[el]) for el in ELEMENTS]] * len(RULES))
    got = {i for i, rule in enumerate(RULES) if charge_neutral(counts[i:i + 1], ELEMENTS, rule).item()}
    assert got == valid_under, [RULES[i] for i in got ^ valid_under]


def test_exemptions_need_a_metal_and_no_non_metal():
    counts = torch.tensor([[1, 2, 0, 0], [1, 0, 1, 0], [0, 0, 1, 1], [1, 0, 0, 1], [0, 0, 0, 0]])
    elements = ("Mg", "Zn", "Si", "O")
    assert exempt_from_charge(counts, elements, "alloys").tolist() == [True, False, False, False, False]
    assert exempt_from_charge(counts, elements, "intermetallics").tolist() == [True, True, False, False, False]
    assert not exempt_from_charge(counts, elements, None).any()


def test_empty_and_zero_rows():
    rule = ("per_atom_icsd", "alloys")
    assert charge_neutral(torch.zeros(0, 3, dtype=torch.long), ("Fe", "O", "Li"), rule).shape == (0,)
    assert charge_neutral(torch.tensor([[0, 0, 0], [1, 1, 0]]), ("Fe", "O", "Li"), rule).tolist() == [False, True]


def test_enumerate_counts_matches_brute_force():
    counts = enumerate_counts(4, max_per_element=3, max_atoms=6, max_elements=2)
    brute = {row for row in itertools.product(range(4), repeat=4)
             if 1 <= sum(x > 0 for x in row) <= 2 and sum(row) <= 6}
    assert counts.shape == (len(brute), 4)
    assert {tuple(r) for r in counts.tolist()} == brute


def test_wyckoff_compatibility_agrees_with_pyxtal_check_compatible():
    rng = random.Random(1)
    multisets = sorted({multiset(rng.randint(1, 12) for _ in range(rng.randint(1, 3))) for _ in range(16)})
    table = wyckoff_compatibility(multisets)
    assert table.shape == (len(multisets), 231) and not table[:, 0].any()
    for number in range(1, 231):
        group = Group(number)
        expected = [group.check_compatible(list(m))[0] for m in multisets]
        assert table[:, number].tolist() == expected, number


@pytest.mark.parametrize(("number", "counts", "fits"), [
    (225, (4, 4), True),     # rock salt: 4a + 4b
    (225, (4, 5), False),
    (229, (3,), False),      # Im-3m has no 3-fold position
    (221, (1, 1, 3), True),  # perovskite ABX3: 1a, 1b, 3c/3d
    (1, (7, 5, 3), True),    # P1 hosts anything
    (1, (5000,), True),      # a large cell: no recursion limit
    (229, (4001,), False),   # 2a, 6b, 8c, ... are all even
])
def test_is_wyckoff_compatible(number, counts, fits):
    assert is_wyckoff_compatible(number, counts) is fits


def test_multiset_index_and_unique_rows():
    counts = torch.tensor([[4, 0, 2], [2, 4, 0], [0, 0, 3], [4, 2, 0]])
    multisets, index = multiset_index(counts)
    assert [multisets[i] for i in index.tolist()] == [(4, 2), (4, 2), (3,), (4, 2)]
    rows = torch.randint(0, 6, (300, 4), generator=torch.Generator().manual_seed(2))
    distinct, inverse = unique_rows(rows)
    expected, expected_inverse = torch.unique(rows, dim=0, return_inverse=True)
    assert torch.equal(distinct, expected) and torch.equal(inverse, expected_inverse)
