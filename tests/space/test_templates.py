"""Template placement: a known structure's coordinates on a crystal with the same group and anonymous Wyckoff set."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Composition, Lattice, Structure

from aloop.selection import KnownMaterials, select_diverse, structure_matcher
from aloop.space.crystal import Crystal, CrystalBatch
from aloop.space.structure import TEMPLATE_PROPERTY, Placement, place, placed_structure, to_structure
from aloop.space.templates import TemplatePool, anonymous_set, cached_templates, template_of


def layered(alkali: str, metal: str, a: float = 2.82, c: float = 14.05) -> Structure:
    """The alpha-NaFeO2 (R-3m) structure of LiCoO2: alkali on 3b, metal on 3a, O on 6c."""
    return Structure.from_spacegroup(166, Lattice.hexagonal(a, c), [alkali, metal, "O"],
                                     [[0, 0, 0.5], [0, 0, 0], [0, 0, 0.26]])


def crystal_of(structure: Structure, lattice: tuple[float, ...] | None = None) -> Crystal:
    """The crystal of ``structure`` with its sites in pyxtal's setting, in ``lattice`` when given."""
    crystal = Crystal.from_structure(structure)
    return Crystal(crystal.space_group, crystal.composition, lattice or crystal.lattice,  # type: ignore[arg-type]
                   template_of(structure, "probe").sites)


@pytest.fixture(scope="module")
def pool() -> TemplatePool:
    rocksalt = Structure.from_spacegroup(225, Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    return TemplatePool.build([template_of(layered("Na", "Co", 2.89, 15.6), "NaCoO2"),
                               template_of(layered("Li", "Co"), "LiCoO2"), template_of(rocksalt, "NaCl")])


def test_anonymous_set_keeps_which_orbits_share_an_element() -> None:
    assert anonymous_set([("Li", "a"), ("O", "c"), ("Mn", "b"), ("O", "c")]) == (("a",), ("b",), ("c", "c"))
    assert anonymous_set([("Li", "a"), ("Mn", "c"), ("O", "b"), ("O", "c")]) == (("a",), ("b", "c"), ("c",))


def test_a_known_structure_gets_its_own_template_back(pool: TemplatePool) -> None:
    licoo2 = layered("Li", "Co")
    crystal = crystal_of(licoo2)
    best = pool.decorations(crystal)[0]
    assert (best.template.source, best.distance, best.same_elements) == ("LiCoO2", 0.0, True)
    structure = place(crystal, Placement(pool), seed=0)
    assert structure.properties[TEMPLATE_PROPERTY] == "LiCoO2"
    assert structure_matcher().fit(structure, licoo2)


def test_the_chemically_closest_template_is_chosen(pool: TemplatePool) -> None:
    nanio2 = crystal_of(layered("Na", "Ni", 2.96, 15.9))
    assert [d.template.source for d in pool.decorations(nanio2)] == ["NaCoO2", "LiCoO2"]
    assert place(nanio2, Placement(pool), seed=0).properties[TEMPLATE_PROPERTY] == "NaCoO2"


def test_a_template_lattice_is_rescaled_to_the_crystals_volume(pool: TemplatePool) -> None:
    crystal = crystal_of(layered("Li", "Ni"), lattice=(3.2, 3.2, 12.0, 90.0, 90.0, 120.0))
    volume = Lattice.from_parameters(*crystal.lattice).volume
    sampled = place(crystal, Placement(pool, lattice="sampled"), seed=0)
    templated = place(crystal, Placement(pool, lattice="template"), seed=0)
    assert sampled.lattice.abc == pytest.approx((3.2, 3.2, 12.0))
    assert templated.volume == pytest.approx(volume)
    assert templated.lattice.c / templated.lattice.a == pytest.approx(14.05 / 2.82)
    assert Crystal.from_structure(templated).sites == crystal.sites


def test_without_a_template_pyxtal_places_the_crystal(pool: TemplatePool) -> None:
    spinel = Crystal(227, Composition("Li8Mn16O32"), (8.2,) * 3 + (90.0,) * 3, (("Li", "a"), ("Mn", "d"), ("O", "e")))
    structure = placed_structure(spinel, Placement(pool))
    assert structure is not None and TEMPLATE_PROPERTY not in structure.properties
    assert placed_structure(spinel, Placement(pool)).frac_coords == pytest.approx(structure.frac_coords)


def test_templates_are_in_pyxtals_setting() -> None:
    """Fd-3m has two origin choices; spglib's default is 1, pyxtal's letters are of choice 2."""
    sites = (("Li", "a"), ("Mn", "d"), ("O", "e"))
    spinel = to_structure(Crystal(227, Composition("Li8Mn16O32"), (8.2,) * 3 + (90.0,) * 3, sites), seed=3)
    template = template_of(spinel, "spinel")
    assert template.sites == sites
    assert structure_matcher().fit(template.structure(), spinel)


def test_an_element_specific_copy_of_a_known_material_is_a_rediscovery(pool: TemplatePool) -> None:
    copy, new = crystal_of(layered("Li", "Co")), crystal_of(layered("Li", "Ni"))
    known = KnownMaterials.from_sources(structures=[layered("Li", "Co", 2.85, 14.2)])
    choice = select_diverse([copy, new], np.array([1.0, 0.0]), size=2, known=known,
                            to_structure=lambda c: placed_structure(c, Placement(pool)),
                            chemsys_penalty=0.0, space_group_penalty=0.0)
    assert choice.indices == [1]
    assert choice.skipped == {"rediscovery": 1}


def test_sources_are_indexed_once(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("ALOOP_CACHE_DIR", str(tmp_path))
    read: list[set[str]] = []

    def structures(ids: set[str]):  # noqa: ANN202
        read.append(set(ids))
        return [(i, layered("Li", "Co")) for i in sorted(ids)]

    first = cached_templates("probe", {"a", "b"}, structures)
    again = cached_templates("probe", {"a", "b", "c"}, structures)
    assert read == [{"a", "b"}, {"c"}]
    assert [t.source for t in first] == ["a", "b"] and [t.source for t in again] == ["a", "b", "c"]
    assert again[0] == first[0]


def test_prototypes_find_exactly_the_crystals_a_template_fits(pool: TemplatePool) -> None:
    prototypes = pool.prototypes()
    rock_salt = crystal_of(Structure.from_spacegroup(225, Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5] * 3]))
    swapped = Crystal(225, Composition("O4Mg4"), rock_salt.lattice, (("O", "a"), ("Mg", "b")))
    layered_oxide = crystal_of(layered("K", "Fe"))
    one_element_on_both = Crystal(225, Composition("Na8"), rock_salt.lattice, (("Na", "a"), ("Na", "b")))
    cesium_chloride = Crystal(221, Composition("CsCl"), (4.1,) * 3 + (90.0,) * 3, (("Cs", "a"), ("Cl", "b")))
    no_sites = Crystal(225, Composition("Mg4O4"), rock_salt.lattice)
    crystals = [rock_salt, swapped, layered_oxide, one_element_on_both, cesium_chloride, no_sites]
    batch = CrystalBatch.from_crystals(crystals, ("O", "Na", "Mg", "Cl", "K", "Fe", "Cs"))
    # the anonymous set keeps which orbits share an element: Na on a and b is not rock salt's (a) (b)
    assert prototypes.known(batch).tolist() == [bool(pool.decorations(c)) for c in crystals]
    assert prototypes.known(batch).tolist() == [True, True, True, False, False, False]
