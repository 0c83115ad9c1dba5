"""Diversity report: uniqueness and category counts of a sample set, and its figure."""

import pytest
import torch
from matplotlib.figure import Figure
from pymatgen.core import Composition

from aloop.space.crystal import Crystal, CrystalBatch
from aloop.space.diversity import diversity_report, plot_diversity

CRYSTALS = [
    Crystal(225, Composition("Fe4O4"), (4.30, 4.30, 4.30, 90.0, 90.0, 90.0)),
    Crystal(225, Composition("Fe4O4"), (4.301, 4.301, 4.301, 90.0, 90.0, 90.0)),  # same after rounding
    Crystal(225, Composition("Fe4O4"), (4.50, 4.50, 4.50, 90.0, 90.0, 90.0)),     # other lattice
    Crystal(167, Composition("Fe12O18"), (5.0, 5.0, 13.7, 90.0, 90.0, 120.0)),
    Crystal(186, Composition("Fe2O2"), (3.0, 3.0, 5.0, 90.0, 90.0, 120.0)),
    Crystal(1, Composition("O2"), (3.0, 4.0, 5.0, 80.0, 85.0, 95.0)),
]


def test_report_counts(fe_o):
    report = diversity_report(CRYSTALS, fe_o)
    assert report.n == 6
    assert report.unique_fraction == pytest.approx(5 / 6)
    assert report.unique_composition_fraction == pytest.approx(4 / 6)
    assert report.crystal_systems == {"triclinic": 1, "monoclinic": 0, "orthorhombic": 0, "tetragonal": 0,
                                      "trigonal": 1, "hexagonal": 1, "cubic": 3}
    assert report.lattice_systems["trigonal_rhombohedral"] == 1 and report.lattice_systems["trigonal_hexagonal"] == 0
    assert report.point_symmetries == {"centrosymmetric": 4, "non_centrosymmetric_polar": 2,
                                       "non_centrosymmetric_non_polar": 0}
    assert report.space_groups == {1: 1, 167: 1, 186: 1, 225: 3}
    assert report.elements == {"Fe": 5, "O": 6}
    for counts in (report.crystal_systems, report.lattice_systems, report.point_symmetries):
        assert sum(counts.values()) == report.n


def test_batch_and_list_give_the_same_report(fe_o):
    batch = CrystalBatch.from_crystals(CRYSTALS, fe_o.elements)
    assert diversity_report(batch, fe_o) == diversity_report(CRYSTALS, fe_o)
    assert diversity_report(batch, fe_o).as_dict()["space_groups"] == {1: 1, 167: 1, 186: 1, 225: 3}


def test_large_batch_from_the_tables(fe_o):
    g = torch.arange(len(fe_o.space_groups)).repeat(20)
    m = fe_o.compatible[g].float().multinomial(1, generator=torch.Generator().manual_seed(0)).squeeze(1)
    lattice = torch.tensor([[5.0, 6.0, 7.0, 90.0, 90.0, 90.0]], dtype=torch.float64).expand(len(g), 6)
    report = diversity_report(CrystalBatch(fe_o.elements, fe_o.space_groups[g], fe_o.compositions[m], lattice), fe_o)
    assert report.n == len(g) and len(report.space_groups) == len(fe_o.space_groups)
    assert set(report.space_groups.values()) == {20}


def test_plot_has_one_panel_per_category(fe_o):
    fig = plot_diversity(diversity_report(CRYSTALS, fe_o))
    assert isinstance(fig, Figure)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:3] == ["lattice system", "point symmetry", "crystal system"]
    assert "space group (4 distinct)" in titles and "uniqueness (n = 6)" in titles
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [1, 0, 0, 0, 1, 0, 1, 3]
