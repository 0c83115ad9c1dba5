"""CrystalSpace tables: shapes, the presets' restrictions, dead-end freedom, errors at start-up."""

import pytest
import torch

from aloop.config import CONFIG_DIR, CRYSTAL_LATTICE_SYSTEMS, GFNSettings, SpaceSettings, load_config
from aloop.gfn import CrystalEnv, build_policy, sample
from aloop.space.composition import (
    charge_neutral,
    enumerate_counts,
    multiset_index,
    unique_rows,
    wyckoff_compatibility,
)
from aloop.space.validity import valid_mask
from aloop.space.groups import space_group_table
from aloop.space.space import CrystalSpace, SpaceError

PRESETS = ("fe-o", "li-mn-o", "cubic", "lattice-range")


@pytest.mark.parametrize("name", ("default", *PRESETS))
def test_tables_are_consistent_and_dead_end_free(spaces, name):
    space = spaces[name]
    settings = space.settings
    g, m, e = len(space.space_groups), len(space.compositions), len(space.elements)
    assert space.lattice_system.shape == space.point_symmetry.shape == (g,)
    assert space.compositions.shape == (m, e) and space.compositions.dtype == torch.long
    assert space.compatible.shape == (g, m) and space.compatible.dtype == torch.bool
    # every group hosts some composition and every composition some group: no dead ends
    assert space.compatible.any(dim=1).all() and space.compatible.any(dim=0).all()
    counts = space.compositions
    assert (counts <= settings.max_atoms_per_element).all() and (counts.sum(1) <= settings.max_atoms).all()
    assert ((counts > 0).sum(1) <= settings.max_elements).all() and (counts.sum(1) > 0).all()
    assert charge_neutral(counts, space.elements, settings.charge_rule).all()
    assert len(unique_rows(counts)[0]) == m  # no duplicates
    table = space_group_table()
    assert torch.equal(space.lattice_system, table.lattice_system[space.space_groups])
    assert torch.equal(space.compatible, space.wyckoff[space.composition_multiset][:, space.space_groups].T)


def test_presets_restrict_as_stated(spaces):
    fe_o, li_mn_o = spaces["fe-o"], spaces["li-mn-o"]
    assert fe_o.elements == ("Fe", "O") and int(fe_o.compositions.max()) == 10
    assert li_mn_o.elements == ("Li", "Mn", "O") and int(li_mn_o.compositions.max()) == 16
    formulas = {tuple(r) for r in fe_o.compositions.tolist()}
    assert {(1, 1), (3, 4), (2, 3), (4, 6), (6, 9)} <= formulas
    assert not {(8, 0), (0, 2)} & formulas  # elemental crystals are out (space.min_elements=2)
    assert (2, 4) not in formulas  # FeO2: no Fe(4+) among Fe's states
    cubic = spaces["cubic"]
    assert set(cubic.lattice_system.tolist()) == {CRYSTAL_LATTICE_SYSTEMS.index("cubic")}
    assert ((cubic.space_groups >= 195) & (cubic.space_groups <= 230)).all()
    default = spaces["default"]
    assert torch.equal(cubic.space_groups, default.space_groups[default.space_groups >= 195])
    ranged = spaces["lattice-range"]
    assert ranged.length_range == (10.0, 20.0) and ranged.angle_range == (75.0, 135.0)
    assert torch.equal(ranged.compositions, spaces["default"].compositions)


def test_small_counts_drop_groups_that_cannot_host_them(spaces):
    # Ia-3d (230) has no position of multiplicity below 16: more than 8 atoms of one element.
    assert 230 not in spaces["default"].space_groups.tolist()
    assert 230 in spaces["li-mn-o"].space_groups.tolist()


@pytest.mark.parametrize(("overrides", "names"), [
    (["space.space_groups=[230]"], ["space.max_atoms=20", "Wyckoff"]),
    (["space.lattice_systems=[hexagonal]", "space.lattice.angle={min: 60, max: 110}"],
     ["space.lattice_systems=['hexagonal']", "space.lattice.angle=[60.0, 110.0]"]),
    (["space.space_groups=[225]", "space.point_symmetries=[non_centrosymmetric_polar]"],
     ["space.point_symmetries=['non_centrosymmetric_polar']", "space.space_groups=[225]"]),
    (["space.lattice.length={min: -1, max: 5}"], ["space.lattice", "positive"]),
])
def test_restriction_leaving_nothing_raises_naming_it(overrides, names):
    settings = load_config(CONFIG_DIR / "fe-o.yaml", overrides).space
    with pytest.raises(SpaceError) as err:
        CrystalSpace.from_settings(settings, use_cache=False)
    for name in names:
        assert name in str(err.value)


def test_cached_space_equals_a_fresh_build(spaces):
    cached = CrystalSpace.from_settings(spaces["li-mn-o"].settings)
    fresh = CrystalSpace.from_settings(spaces["li-mn-o"].settings, use_cache=False)
    for field in ("space_groups", "compositions", "compatible", "composition_multiset", "wyckoff"):
        assert torch.equal(getattr(cached, field), getattr(fresh, field)), field
    assert cached.multisets == fresh.multisets


def test_composition_index_finds_rows_and_misses_others(fe_o):
    last = len(fe_o.compositions) - 1
    probe = torch.cat([fe_o.compositions[[5, 0, last]], torch.tensor([[2, 4], [11, 0], [0, 0]])])
    assert fe_o.composition_index(probe).tolist() == [5, 0, last, -1, -1, -1]


def test_composition_index_without_packed_keys():
    # 30 elements x 65 values per count do not fit one int64 key: the unique-based path runs.
    elements = ["H", "Li", "Be", "B", "C", "N", "O", "F", "Na", "Mg", "Al", "Si", "P", "S", "Cl",
                "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As"]
    space = CrystalSpace.from_settings(SpaceSettings(elements=elements, max_atoms_per_element=64, max_atoms=2,
                                                     max_elements=2), use_cache=False)
    probe = torch.cat([space.compositions[[3, 1]], torch.zeros(1, 30, dtype=torch.long)])
    assert space.composition_index(probe).tolist() == [3, 1, -1]


@pytest.mark.parametrize("rule", [["per_atom_common"], ["per_atom_icsd"], ["per_atom_common", "alloys"],
                                  ["per_atom_icsd", "intermetallics"]])
def test_each_charge_rule_gives_exactly_its_compositions_and_no_dead_end(rule):
    settings = SpaceSettings(elements=["Li", "Mg", "Cu", "Si", "O"], max_atoms_per_element=4, max_atoms=8,
                             charge_rule=rule)
    space = CrystalSpace.from_settings(settings, use_cache=False)
    assert space.compatible.any(dim=1).all() and space.compatible.any(dim=0).all()
    every = enumerate_counts(5, max_per_element=4, max_atoms=8, max_elements=3, min_elements=2)
    hosted = wyckoff_compatibility(multiset_index(every)[0])[multiset_index(every)[1]][:, space.space_groups].any(1)
    expected = every[charge_neutral(every, settings.elements, rule) & hosted]
    assert {tuple(r) for r in space.compositions.tolist()} == {tuple(r) for r in expected.tolist()}
    rows = {tuple(r) for r in space.compositions.tolist()}  # counts of Li, Mg, Cu, Si, O
    assert ((0, 0, 2, 0, 1) in rows) == (rule[0] == "per_atom_icsd")  # Cu2O: Cu(+) is an ICSD state only
    assert ((0, 1, 2, 0, 0) in rows) == (len(rule) == 2)  # MgCu2, a Laves phase: exempt metals only
    assert (0, 2, 0, 1, 0) in rows  # Mg2Si, Zintl: Mg(2+), Si(4-) under every rule
    assert ((0, 0, 1, 1, 0) in rows) == (rule[-1] == "intermetallics")  # CuSi: a metal and a metalloid
    env = CrystalEnv.from_space(space, GFNSettings())
    batch = sample(env, build_policy(env, GFNSettings()), 2000, seed=0)
    assert valid_mask(batch, space).all()  # the masks reach no composition outside the rule


def test_charge_rule_is_one_state_rule_and_at_most_one_exemption():
    assert SpaceSettings(charge_rule="per_atom_common").charge_rule == ("per_atom_common",)
    assert SpaceSettings(charge_rule=["alloys", "per_atom_icsd"]).charge_rule == ("per_atom_icsd", "alloys")
    for bad in (["alloys"], ["per_atom_common", "per_atom_icsd"], ["per_atom_icsd", "alloys", "intermetallics"]):
        with pytest.raises(ValueError, match="name one of"):
            SpaceSettings(charge_rule=bad)
    with pytest.raises(ValueError, match="charge_rule"):
        load_config(CONFIG_DIR / "fe-o.yaml", ["space.charge_rule=ionic"])
