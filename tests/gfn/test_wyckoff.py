"""The Wyckoff stage's masks: exactly the valid assignments, no dead end, checked exhaustively on small groups."""

import itertools

import pytest
import torch

from aloop.gfn.wyckoff import OrbitState, WyckoffTables, _build, all_assignments, letter_prior
from aloop.space.composition import is_wyckoff_compatible
from aloop.space.groups import space_group

GROUPS = (2, 12, 62, 166, 208, 221, 225)
"""Triclinic with eight fixed inversion centres, monoclinic, orthorhombic, rhombohedral, and cubic groups with
one, two and three capped multiplicities (208: the largest usage state space of all 230 groups)."""
MAX_COUNT = 3


def _brute_force(number: int, counts: tuple[int, ...]) -> set[tuple[tuple[int, ...], ...]]:
    """Every assignment by enumeration on the group's positions alone: per element a multiset of letter
    indices whose multiplicities sum to its count; fixed positions at most once over all elements."""
    wps = space_group(number).wyckoff_positions

    def per_element(n: int, start: int = 0):
        if n == 0:
            yield ()
            return
        for i in range(start, len(wps)):
            if wps[i].multiplicity <= n:
                for rest in per_element(n - wps[i].multiplicity, i if wps[i].free else i + 1):
                    yield (i, *rest)

    found = set()
    for combo in itertools.product(*(list(per_element(n)) for n in counts)):
        fixed = [i for letters in combo for i in letters if not wps[i].free]
        if len(fixed) == len(set(fixed)):
            found.add(tuple(tuple(sorted(letters)) for letters in combo))
    return found


@pytest.fixture(scope="module")
def tables() -> WyckoffTables:
    return _build(GROUPS, MAX_COUNT)


def _cases():
    for k in (1, 2, 3):
        for counts in itertools.product(range(1, MAX_COUNT + 1), repeat=k):
            if sum(counts) <= 6:
                yield counts


def test_masks_give_exactly_the_valid_assignments_and_never_dead_end(tables):
    cases = list(_cases())
    for row, number in enumerate(GROUPS):
        for counts in cases:
            expected = _brute_force(number, counts)
            assert bool(expected) == is_wyckoff_compatible(number, counts)
            if not expected:
                continue
            group, matrix = torch.tensor([row]), torch.tensor([counts])
            state = OrbitState.start(tables, group, matrix, sum(counts))
            assert bool(state.good[0, 0, 0])  # nothing used yet: the composition can be placed
            frontier = [state]
            while frontier:  # every reachable partial assignment has an allowed letter
                state = frontier.pop()
                active = (state.remaining > 0).nonzero().squeeze(1)
                if not active.numel():
                    continue
                mask = state.mask(tables, active)
                assert mask.any(dim=1).all(), (number, counts, state.sites)
                parent, letter = mask.nonzero(as_tuple=True)
                child = state.take(active[parent])
                child.advance(tables, torch.arange(len(parent)), letter)
                frontier.append(child)
            crystal, sites = all_assignments(tables, group, matrix, sum(counts))
            got = {tuple(tuple(sorted(int(w) for e, w in orbits.tolist() if e == element and w >= 0))
                         for element in range(len(counts))) for orbits in sites}
            assert got == expected, (number, counts)
            assert len(got) == len(crystal)  # one trajectory per assignment


def test_replay_flags_assignments_the_masks_forbid():
    tables, row = _build((225,), 4), 0
    counts = torch.tensor([[4, 4]])
    letters = {w.letter: i for i, w in enumerate(space_group(225).wyckoff_positions)}
    good = torch.tensor([[[0, letters["a"]], [1, letters["b"]]]])
    twice = torch.tensor([[[0, letters["a"]], [1, letters["a"]]]])  # 4a holds two orbits
    short = torch.tensor([[[0, letters["a"]], [-1, -1]]])  # oxygen never placed
    over = torch.tensor([[[0, letters["a"]], [1, letters["c"]]]])  # 8c holds 8 atoms, not 4
    replayed = tables.replay(torch.tensor([row] * 4), counts.expand(4, -1), torch.cat([good, twice, short, over]))
    assert replayed.complete.tolist() == [True, False, False, False]


def test_the_prior_follows_known_crystals():
    prior = letter_prior((225,), 12).exp()
    letters = [w.letter for w in space_group(225).wyckoff_positions]
    assert torch.isclose(prior.sum(), torch.tensor(1.0))
    # rock salt, fluorite and spinel-like oxides put most orbits of Fm-3m on 4a, 4b, 8c, not on the general 192l
    assert prior[0, letters.index("a")] > 100 * prior[0, letters.index("l")]
