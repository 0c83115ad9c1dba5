"""Novelty against known materials and the greedy diverse batch."""

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from aloop.selection import KnownMaterials, nearest_distance, select_diverse
from aloop.space import Crystal


def rocksalt(a: float = 5.64, species=("Na", "Cl")) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), list(species), [[0, 0, 0], [0.5, 0.5, 0.5]])


def cscl(a: float = 3.3, species=("Na", "Cl")) -> Structure:
    return Structure.from_spacegroup("Pm-3m", Lattice.cubic(a), list(species), [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_novelty_uses_composition_then_structure_matcher():
    known = KnownMaterials.from_records([("NaCl", rocksalt()), ("LiF", None)])
    assert not known.is_novel(rocksalt(5.70))  # same structure, 1% strain: matched
    assert known.is_novel(cscl())  # same composition, different structure
    assert known.is_novel(rocksalt(4.2, ("K", "Br")))  # composition nobody has
    assert not known.is_novel(rocksalt(4.0, ("Li", "F")))  # composition known without structure
    known.add_crystals([Crystal.from_structure(cscl(3.0, ("Mg", "O")))])
    assert not known.is_novel(cscl(3.1, ("Mg", "O")), space_group=221)  # same formula and group, no atoms
    assert known.is_novel(rocksalt(4.2, ("Mg", "O")), space_group=225)


def _pool():
    structures = [rocksalt(5.64), rocksalt(5.65), cscl(), rocksalt(4.2, ("K", "Br")),
                  rocksalt(4.6, ("Mg", "O")), cscl(3.0, ("Mg", "O"))]
    crystals = [Crystal.from_structure(s) for s in structures]
    return structures, crystals


def test_select_skips_duplicates_known_and_unplaceable():
    structures, crystals = _pool()
    by_hash = {c.canonical_hash: s for c, s in zip(crystals, structures)}
    unplaceable = crystals[4].canonical_hash
    known = KnownMaterials.from_records([("KBr", rocksalt(4.2, ("K", "Br")))])
    acquisition = np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    selection = select_diverse(
        crystals, acquisition, size=10, known=known,
        to_structure=lambda c: None if c.canonical_hash == unplaceable else by_hash[c.canonical_hash],
        chemsys_penalty=0.0, space_group_penalty=0.0,
    )
    assert selection.indices == [0, 2, 5]
    assert selection.skipped == {"duplicate": 1, "known": 1, "no_structure": 1}
    assert [s.composition.reduced_formula for s in selection.structures] == ["NaCl", "NaCl", "MgO"]


def test_select_passes_over_sites_that_force_a_higher_group():
    structures, crystals = _pool()
    by_hash = {c.canonical_hash: s for c, s in zip(crystals, structures)}
    forced = np.array([True, False, False, False, True, False])
    selection = select_diverse(crystals, np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0]), size=10, known=KnownMaterials(),
                               to_structure=lambda c: by_hash[c.canonical_hash], chemsys_penalty=0.0,
                               space_group_penalty=0.0, forced=forced)
    assert not forced[selection.indices].any() and selection.indices == [1, 2, 3, 5]
    assert selection.skipped == {"forced_group": 2}


def test_two_crystals_placed_as_the_same_atoms_are_one_candidate():
    # different groups and sites (distinct diversity keys), but both placed as rock salt (e.g. two templates)
    crystals = [Crystal.from_structure(rocksalt()), Crystal.from_structure(cscl()), Crystal.from_structure(cscl(2.9))]
    placed = [rocksalt(), rocksalt(5.66), cscl(2.9)]
    by_hash = {c.canonical_hash: s for c, s in zip(crystals, placed)}
    selection = select_diverse(crystals, np.array([3.0, 2.0, 1.0]), size=3, known=KnownMaterials(),
                               to_structure=lambda c: by_hash[c.canonical_hash], chemsys_penalty=0.0,
                               space_group_penalty=0.0)
    assert selection.indices == [0, 2] and selection.skipped == {"duplicate": 1}


@pytest.mark.parametrize("penalty, expected", [(0.0, [0, 2]), (5.0, [0, 3])])
def test_chemical_system_penalty_spreads_the_batch(penalty, expected):
    structures, crystals = _pool()
    by_hash = {c.canonical_hash: s for c, s in zip(crystals, structures)}
    acquisition = np.array([6.0, 5.0, 5.5, 3.0, 2.0, 1.0])
    selection = select_diverse(
        crystals, acquisition, size=2, known=KnownMaterials(), to_structure=lambda c: by_hash[c.canonical_hash],
        chemsys_penalty=penalty, space_group_penalty=0.0,
    )
    assert selection.indices == expected


@pytest.mark.parametrize("reserved, reserved_size, expected", [
    ([False, False, False, True, True, True], 2, [0, 3, 4]),  # the reserved side's best two, however low
    ([False, False, False, False, False, True], 2, [0, 2, 5, 3]),  # one reserved candidate: its other place goes back
    ([True, True, True, True, True, True], 4, [0, 2, 3, 4]),  # nobody on the other side
])
def test_reserved_places_go_to_their_side_first(reserved, reserved_size, expected):
    structures, crystals = _pool()
    by_hash = {c.canonical_hash: s for c, s in zip(crystals, structures)}
    selection = select_diverse(crystals, np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0]), size=len(expected),
                               known=KnownMaterials(), to_structure=lambda c: by_hash[c.canonical_hash],
                               chemsys_penalty=0.0, space_group_penalty=0.0, reserved=np.array(reserved),
                               reserved_size=reserved_size)
    assert selection.indices == expected


def test_nearest_distance_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    reference = torch.randn(50, 4, generator=gen) * torch.tensor([1.0, 10.0, 0.1, 2.0])
    features = torch.randn(7, 4, generator=gen)
    scale = torch.cat([features, reference]).std(dim=0)
    brute = torch.stack([((f / scale - reference / scale).norm(dim=1)).min() for f in features])
    got = nearest_distance(features, reference, chunk=3)
    assert got.shape == (7,)
    torch.testing.assert_close(got, brute)
    assert torch.isinf(nearest_distance(features, reference[:0])).all()


def test_nearest_distance_ignores_columns_constant_among_few_known_materials():
    reference = torch.tensor([[0.0, 1.0], [1.0, 1.0]])  # second column constant among the known
    features = torch.tensor([[0.0, 2.0], [0.0, 1.0]])
    got = nearest_distance(features, reference)
    assert got[1] == 0 and 0 < got[0] < 10
    assert nearest_distance(torch.tensor([[0.0, 1.0]]), reference)[0] == 0  # identical constant column


def test_farthest_point_design_is_maximin_greedy():
    from aloop.selection import farthest_point_indices

    gen = torch.Generator().manual_seed(1)
    features = torch.randn(200, 3, generator=gen)
    chosen = farthest_point_indices(features, 10, seed=3)
    assert chosen.shape == (10,) and len(set(chosen.tolist())) == 10
    scaled = features / features.std(dim=0)
    # brute force: each pick maximises its distance to the ones before it
    for k in range(1, 10):
        before = scaled[chosen[:k]]
        gaps = torch.cdist(scaled, before).min(dim=1).values
        assert gaps[chosen[k]] == pytest.approx(float(gaps.max()))
    # a design spreads out: its smallest pairwise gap beats a random subset's
    random_subset = scaled[torch.randperm(200, generator=gen)[:10]]
    pairwise = lambda x: torch.pdist(x).min()  # noqa: E731
    assert pairwise(scaled[chosen]) > pairwise(random_subset)
    assert torch.equal(farthest_point_indices(features, 500, seed=0), torch.arange(200))
