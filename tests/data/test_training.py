"""TrainingSet: construction checks, reproducible splits, concatenation of elements and sources."""

from __future__ import annotations

import pytest
import torch
from pymatgen.core import Composition

from aloop.data.training import TrainingSet
from aloop.space.crystal import Crystal

NACL = Crystal(225, Composition("Na4Cl4"), (5.64,) * 3 + (90.0,) * 3)
MGO = Crystal(225, Composition("Mg4O4"), (4.25,) * 3 + (90.0,) * 3)
FEO = Crystal(225, Composition("Fe4O4"), (4.3,) * 3 + (90.0,) * 3)


def make(crystals, values, sources, target="formation_energy_per_atom") -> TrainingSet:
    return TrainingSet.from_crystals(crystals, values, sources=sources, ids=[c.formula for c in crystals],
                                     target=target)


def test_from_crystals_orders_elements_by_z_and_indexes_sources() -> None:
    data = make([NACL, MGO], [-2.1, -3.0], ["mp", "chgnet"])
    assert data.crystals.elements == ("O", "Na", "Mg", "Cl")
    assert data.sources == ("mp", "chgnet") and data.row_sources() == ["mp", "chgnet"]
    assert data.crystals.to_crystals() == [NACL, MGO]


def test_split_is_reproducible_disjoint_and_complete() -> None:
    data = make([NACL, MGO, FEO] * 10, list(range(30)), ["mp"] * 30)
    rest, held = data.split(fraction=0.2, seed=3)
    again, _ = data.split(fraction=0.2, seed=3)
    other, _ = data.split(fraction=0.2, seed=4)
    assert (len(rest), len(held)) == (24, 6)
    assert sorted(rest.values.tolist() + held.values.tolist()) == list(range(30))
    assert torch.equal(rest.values, again.values) and not torch.equal(rest.values, other.values)


def test_concat_unions_elements_and_remaps_sources() -> None:
    a = make([NACL], [-2.1], ["mp"])
    b = make([FEO, MGO], [-1.5, -3.0], ["chgnet", "mp"])
    both = TrainingSet.concat([a, b])
    assert both.sources == ("mp", "chgnet") and both.row_sources() == ["mp", "chgnet", "mp"]
    assert both.crystals.to_crystals() == [NACL, FEO, MGO]
    assert both.values.tolist() == [-2.1, -1.5, -3.0] and both.source_names == ("mp", "chgnet")
    assert both.subset(torch.tensor([1])).source_names == ("chgnet",)


def test_rows_inside_the_space_follow_subset_split_and_concat() -> None:
    a = make([NACL, MGO, FEO] * 4, list(range(12)), ["mp"] * 12)
    assert a.inside.tolist() == [True] * 12  # no space known: every row inside
    marked = TrainingSet(a.target, a.crystals, a.values, a.source, a.sources, a.ids, a.values % 3 == 0)
    rest, held = marked.split(fraction=0.25, seed=0)
    for part in (rest, held, marked.subset(torch.tensor([0, 1, 3]))):
        assert part.inside.tolist() == [v % 3 == 0 for v in part.values.tolist()]
    assert TrainingSet.concat([marked, a]).inside.tolist() == marked.inside.tolist() + [True] * 12


def test_campaign_labels_are_marked_and_follow_subset_split_and_concat() -> None:
    a = make([NACL, MGO, FEO] * 4, list(range(12)), ["mp"] * 12)
    assert not a.campaign_label.any()  # nothing says so: none is the campaign's
    own = make([FEO, MGO], [-1.5, -3.0], ["chgnet"] * 2).as_campaign_labels()
    both = TrainingSet.concat([a, own])
    assert both.campaign_label.tolist() == [False] * 12 + [True] * 2
    rest, held = both.split(fraction=0.5, seed=0)
    for part in (rest, held, both.subset(torch.tensor([0, 12, 13]))):
        assert part.campaign_label.tolist() == [s == "chgnet" for s in part.row_sources()]


def test_mismatches_are_refused() -> None:
    with pytest.raises(ValueError, match="different targets"):
        TrainingSet.concat([make([NACL], [1.0], ["mp"]), make([MGO], [1.0], ["mp"], target="band_gap")])
    data = make([NACL], [1.0], ["mp"])
    with pytest.raises(ValueError, match="1 crystals but values \\(2,\\)"):
        TrainingSet(data.target, data.crystals, torch.zeros(2, dtype=torch.float64), data.source, data.sources, data.ids)
    with pytest.raises(ValueError, match="inside \\(2,\\)"):
        TrainingSet(data.target, data.crystals, data.values, data.source, data.sources, data.ids,
                    torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="target 'density'"):
        TrainingSet("density", data.crystals, data.values, data.source, data.sources, data.ids)
