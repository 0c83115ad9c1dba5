"""The featurizer's Wyckoff-site columns: hand-checked values, independence from the batch's layout, the fill
for crystals without sites, and that different assignments of one group, composition and lattice differ."""

from __future__ import annotations

import math

import pytest
import torch
from pymatgen.core import Composition, Element, Lattice, Structure

from aloop.space.crystal import Crystal, CrystalBatch
from aloop.space.features import SITE_FEATURES, feature_names, featurize, wyckoff_dof
from aloop.space.groups import space_group_table
from aloop.space.wyckoff import letter_index

CUBIC = (5.64, 5.64, 5.64, 90.0, 90.0, 90.0)
MONOCLINIC = (5.1, 6.2, 7.3, 90.0, 101.0, 90.0)
NACL = Crystal(225, Composition("Na4Cl4"), CUBIC, (("Na", "a"), ("Cl", "b")))
# P2_1/c: general position 4e (x, y, z), special positions 2a-2d (inversion centres, no free parameter)
CAOF = Crystal(14, Composition("Ca2O4F4"), MONOCLINIC, (("Ca", "a"), ("O", "e"), ("F", "e")))
SITES = slice(len(feature_names()) - len(SITE_FEATURES), None)


def column(name: str) -> int:
    return feature_names().index(name)


def features_of(crystal: Crystal) -> torch.Tensor:
    elements = tuple(el.symbol for el in crystal.composition)
    return featurize(CrystalBatch.from_crystals([crystal], elements))[0]


def test_site_columns_are_the_last_ones_and_named_once() -> None:
    assert feature_names()[SITES] == SITE_FEATURES and len(set(feature_names())) == len(feature_names())


def test_degrees_of_freedom_agree_with_the_group_tables() -> None:
    dof, groups = wyckoff_dof(), space_group_table()
    assert dof.shape == groups.wyckoff_multiplicity.shape
    assert torch.equal(dof > 0, groups.wyckoff_free)
    index = letter_index(225)
    # Fm-3m: 192l (x, y, z), 96k (x, x, z), 24e (x, 0, 0), 24d and 4a fixed
    assert [int(dof[225, index[letter]]) for letter in ("l", "k", "e", "d", "a")] == [3, 2, 1, 0, 0]
    assert int(dof[1, 0]) == 3 and int(dof[0].abs().sum()) == 0


def test_hand_checked_rock_salt() -> None:
    """Na on 4a, Cl on 4b of Fm-3m (general position 192l): both site symmetry m-3m, order 48, no free parameter."""
    f = features_of(NACL)
    assert f[column("has_sites")] == 1
    assert f[column("orbits_per_atom")] == pytest.approx(2 / 8)
    for stat in ("mean", "min", "max"):
        assert f[column(f"log_site_symmetry_{stat}")] == pytest.approx(math.log(48))
    assert f[column("fixed_position_fraction")] == 1 and f[column("general_position_fraction")] == 0
    assert f[column("free_parameters_per_atom")] == 0
    for prop in ("X", "atomic_radius"):  # every atom on a special position: its statistics are the composition's
        assert f[column(f"special_min_{prop}")] == pytest.approx(float(f[column(f"min_{prop}")]))
        assert f[column(f"special_max_{prop}")] == pytest.approx(float(f[column(f"max_{prop}")]))
        assert f[column(f"special_mean_{prop}")] == pytest.approx(float(f[column(f"mean_{prop}")]), abs=1e-6)
        for stat in ("mean", "min", "max"):
            assert f[column(f"general_{stat}_{prop}")] == 0


def test_hand_checked_general_position() -> None:
    """Ca on 2a (site symmetry -1, order 2), O and F each on the general position 4e (order 1, x y z free)."""
    f = features_of(CAOF)
    assert f[column("orbits_per_atom")] == pytest.approx(3 / 10)
    assert f[column("log_site_symmetry_mean")] == pytest.approx(2 * math.log(2) / 10)
    assert (f[column("log_site_symmetry_min")], f[column("log_site_symmetry_max")]) == (0, pytest.approx(math.log(2)))
    assert f[column("fixed_position_fraction")] == pytest.approx(2 / 10)
    assert f[column("general_position_fraction")] == pytest.approx(8 / 10)
    assert f[column("free_parameters_per_atom")] == pytest.approx(6 / 10)
    # electronegativity Ca < O < F: Ca alone on the special position, O and F (4 atoms each) on the general one
    assert Element("Ca").X < Element("O").X < Element("F").X
    x_ca, x_f = float(f[column("min_X")]), float(f[column("max_X")])
    x_o = (10 * float(f[column("mean_X")]) - 2 * x_ca - 4 * x_f) / 4
    for stat in ("mean", "min", "max"):
        assert f[column(f"special_{stat}_X")] == pytest.approx(x_ca)
    assert f[column("general_min_X")] == pytest.approx(x_o, abs=1e-5)
    assert f[column("general_max_X")] == pytest.approx(x_f)
    assert f[column("general_mean_X")] == pytest.approx((x_o + x_f) / 2, abs=1e-5)
    assert Element("Ca").atomic_radius > max(Element("O").atomic_radius, Element("F").atomic_radius)
    assert f[column("special_mean_atomic_radius")] == pytest.approx(float(f[column("max_atomic_radius")]))
    assert f[column("general_max_atomic_radius")] < f[column("special_min_atomic_radius")]


def test_independent_of_element_list_orbit_order_and_padding() -> None:
    wide = Crystal(14, Composition("Ca4O8F8"), MONOCLINIC,
                   (("Ca", "a"), ("Ca", "b"), ("O", "e"), ("O", "e"), ("F", "e"), ("F", "e")))
    alone = torch.stack([features_of(NACL), features_of(CAOF)])
    batch = CrystalBatch.from_crystals([NACL, wide, CAOF], ("K", "F", "Cl", "O", "Ca", "Na", "Li"))
    assert batch.sites.shape[1] == 6  # NaCl and CaOF padded to the widest
    together = featurize(batch)[[0, 2]]
    torch.testing.assert_close(together, alone)
    # the same rows with the orbits reversed and three more padding columns
    reversed_sites = torch.cat([batch.sites.flip(1), torch.full((3, 3, 2), -1, dtype=torch.long)], dim=1)
    shuffled = CrystalBatch(batch.elements, batch.space_group, batch.counts, batch.lattice, reversed_sites)
    torch.testing.assert_close(featurize(shuffled), featurize(batch))


def test_crystals_without_sites_get_zeros_and_leave_the_others_alone() -> None:
    bare = Crystal(NACL.space_group, NACL.composition, NACL.lattice)
    mixed = featurize(CrystalBatch.from_crystals([bare, CAOF, NACL], ("Na", "Cl", "Ca", "O", "F")))
    assert mixed[0, SITES].abs().sum() == 0 and mixed[0, column("has_sites")] == 0
    assert mixed[2, column("has_sites")] == 1 and mixed[2, SITES].abs().sum() > 0
    no_sites = CrystalBatch.from_crystals([bare], ("Na", "Cl"))
    assert no_sites.sites is None
    torch.testing.assert_close(featurize(no_sites)[0], mixed[0])
    torch.testing.assert_close(mixed[0, :SITES.start], mixed[2, :SITES.start])  # sites change only site columns
    torch.testing.assert_close(mixed[1:], torch.stack([features_of(CAOF), features_of(NACL)]))
    assert torch.isfinite(mixed).all()


def test_different_sites_of_one_group_composition_and_lattice_differ() -> None:
    general = Crystal(14, Composition("Ca4F8"), MONOCLINIC, (("Ca", "e"), ("F", "e"), ("F", "e")))
    special = Crystal(14, Composition("Ca4F8"), MONOCLINIC, (("Ca", "a"), ("Ca", "b"), ("F", "e"), ("F", "e")))
    f = featurize(CrystalBatch.from_crystals([general, special], ("Ca", "F")))
    torch.testing.assert_close(f[0, :SITES.start], f[1, :SITES.start])
    assert f[0, column("general_position_fraction")] == 1
    assert f[1, column("general_position_fraction")] == pytest.approx(8 / 12)
    assert f[1, column("special_mean_X")] != 0 and f[0, column("special_mean_X")] == 0
    assert f[0, column("free_parameters_per_atom")] > f[1, column("free_parameters_per_atom")]


def test_symmetry_equivalent_assignments_agree() -> None:
    """Na:4a Cl:4b and Na:4b Cl:4a are one rock salt structure with the origin moved by (1/2, 0, 0)."""
    swapped = Crystal(225, NACL.composition, CUBIC, (("Na", "b"), ("Cl", "a")))
    torch.testing.assert_close(features_of(swapped), features_of(NACL))


def test_same_site_features_from_a_materials_project_structure_and_a_gflownet_batch() -> None:
    """MP path: structure -> ``Crystal.from_structure`` (spglib's letters); GFN path: tensors over another list."""
    structure = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.25), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    mp = Crystal.from_structure(structure.get_primitive_structure())
    assert mp.sites and {letter for _, letter in mp.sites} == {"a", "b"}
    mp_path = featurize(CrystalBatch.from_crystals([mp], tuple(Element.from_Z(z).symbol for z in range(1, 95))))
    elements = ("O", "Li", "Mg")
    index = letter_index(225)
    sites = torch.tensor([[[elements.index(el), index[letter]] for el, letter in mp.sites] + [[-1, -1]]])
    gfn_path = featurize(CrystalBatch(elements, torch.tensor([225]), torch.tensor([[4, 0, 4]]),
                                      torch.tensor([[4.25, 4.25, 4.25, 90.0, 90.0, 90.0]], dtype=torch.float32), sites))
    torch.testing.assert_close(mp_path, gfn_path, rtol=1e-5, atol=1e-5)
    assert mp_path[0, column("has_sites")] == 1
