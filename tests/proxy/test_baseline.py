"""``proxy.baseline: hull``: the GP learns the distance above its rows' hull, and the hull is added back;
``proxy.hull_input``: the model reads that hull."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition

from aloop.config import ProxySettings, load_config
from aloop.data.training import TrainingSet
from aloop.proxy import Proxy, ProxyError, fit_proxy
from aloop.proxy.baseline import hull_input, leave_one_out_hull
from aloop.proxy.proxy import fit_set
from aloop.space.crystal import CrystalBatch
from aloop.thermo import FormationHull

from .conftest import ELEMENTS, SETTINGS, random_crystals, truth

HULL = SETTINGS.model_copy(update={"baseline": "hull", "hull_input": False})
INPUT = SETTINGS.model_copy(update={"baseline": "none", "hull_input": True})


def test_each_row_is_measured_from_the_hull_of_the_others() -> None:
    """Li-O: Li2O (-2.0) and Li2O2 (-1.8) are on the hull, LiO3 above it; by hand from the hull's lines."""
    rows = [Composition("Li2O"), Composition("Li2O2"), Composition("LiO3")]
    below, on_hull = leave_one_out_hull(rows, [-2.0, -1.8, -0.5])
    # Li2O without itself: the line Li (0) - Li2O2 (-1.8 at x_O = 1/2), at x_O = 1/3
    # Li2O2 without itself: Li2O (-2.0 at 1/3) - O (0), at 1/2; LiO3 at 3/4: Li2O2 - O
    torch.testing.assert_close(torch.from_numpy(below), torch.tensor([-1.2, -1.5, -0.9], dtype=torch.float64))
    assert on_hull.tolist() == [True, True, False]


LI_MN_O = {"Li2O": -2.07, "Li2O2": -1.65, "LiO3": -0.6, "MnO": -1.9, "Mn3O4": -2.0, "Mn2O3": -1.98, "MnO2": -1.7,
           "LiMnO2": -2.1, "Li2MnO3": -2.15, "LiMn2O4": -1.99, "Li4Mn5O12": -1.97, "LiMn": -0.05, "Li5MnO4": -2.05}
HASH_SEED_RUN = """
import sys
from pymatgen.core import Composition
from aloop.proxy.baseline import leave_one_out_hull
rows = {rows!r}
below, on_hull = leave_one_out_hull([Composition(f) for f in rows], list(rows.values()))
sys.stdout.write(below.tobytes().hex() + on_hull.tobytes().hex())
"""


def test_the_leave_one_out_hull_is_pymatgens_phase_separation_energy_and_hull() -> None:
    """Li-Mn-O with polymorphs and a row above the elements: an on-hull row's value is pymatgen's phase separation
    energy, any other row's the hull under it (E_f - e_above_hull); Li and Mn rows read 0."""
    rows = {**LI_MN_O, "Li": 0.1, "Mn": -0.01}
    compositions = [Composition(f) for f in rows] + [Composition("Li4O2"), Composition("Mn6O8"), Composition("LiMnO")]
    energies = [*rows.values(), -2.0, -2.1, 0.2]  # a polymorph above Li2O, one below Mn3O4, one above the elements
    entries = [PDEntry(c, e * c.num_atoms) for c, e in zip(compositions, energies, strict=True)]
    diagram = PhaseDiagram(entries + [PDEntry(Composition(el), 0.0) for el in ("Li", "Mn", "O")])
    below, on_hull = leave_one_out_hull(compositions, energies)
    expected_on = [diagram.get_e_above_hull(entry) < 1e-8 and len(entry.composition) > 1 for entry in entries]
    expected = [0.0 if len(entry.composition) == 1 else
                e - (diagram.get_phase_separation_energy(entry) if on else diagram.get_e_above_hull(entry))
                for entry, e, on in zip(entries, energies, expected_on, strict=True)]
    assert on_hull.tolist() == expected_on and sum(expected_on) >= 5
    torch.testing.assert_close(torch.from_numpy(below), torch.tensor(expected, dtype=torch.float64), atol=1e-4, rtol=0)


def test_the_leave_one_out_hull_is_the_same_under_any_hash_seed(tmp_path: Path) -> None:
    """pymatgen's phase separation energy changed in its last bits with Python's hash seed, and the fit would
    amplify such changes: each process (its own seed, its own cache) must compute the same targets to the bit."""
    outputs = {subprocess.run([sys.executable, "-c", HASH_SEED_RUN.format(rows=LI_MN_O)], check=True,
                              capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": str(seed),
                                   "ALOOP_CACHE_DIR": str(tmp_path / str(seed))}).stdout for seed in range(1, 5)}
    assert len(outputs) == 1 and len(next(iter(outputs))) > 0


def test_the_hull_is_the_same_to_the_bit_each_time_it_is_built() -> None:
    """LAPACK's default least squares (gelsy) gave each facet's plane different last bits from call to call as
    memory moved: every hull built anew (the proxy's inputs, the reward's hull) differed, and the fit amplified it."""
    counts = random_crystals(300, seed=41).counts
    hulls = []
    for size in range(1, 9):
        padding = torch.empty(size * 13, dtype=torch.float64)  # what else the process holds moves the solver's buffers
        hulls.append(FormationHull(ELEMENTS, [(Composition(f), e) for f, e in LI_MN_O.items()])(counts))
        del padding
    assert all(torch.equal(hull, hulls[0]) for hull in hulls) and bool((hulls[0] < -1.0).any())

def hull_rows(batch: CrystalBatch, *, seed: int) -> TrainingSet:
    """Rows whose energies lie 0-0.2 eV/atom above a deep hull of three phases (far from a smooth function)."""
    hull = FormationHull(batch.elements, [(Composition("Li2O"), -2.0), (Composition("MnO"), -1.9),
                                          (Composition("LiMnO2"), -2.3)])
    g = torch.Generator().manual_seed(seed)
    values = hull(batch.counts) + 0.2 * torch.rand(len(batch), generator=g, dtype=torch.float64)
    return TrainingSet("formation_energy_per_atom", batch, values, torch.zeros(len(batch), dtype=torch.long), ("dft",),
                       tuple(map(str, range(len(batch)))))


def rows_hull(proxy: Proxy, batch: CrystalBatch) -> torch.Tensor:
    """The hull of the proxy's training rows at each crystal's composition."""
    return proxy.model.baseline.hull(0).at(batch.elements, batch.counts)


@pytest.fixture(scope="module")
def fitted() -> tuple[Proxy, TrainingSet]:
    return fit_proxy(hull_rows(random_crystals(1200, seed=30), seed=31), HULL, seed=0), \
        hull_rows(random_crystals(400, seed=32), seed=33)


def test_new_crystals_are_predicted_above_the_hull_of_the_rows(fitted: tuple[Proxy, TrainingSet]) -> None:
    proxy, heldout = fitted
    prediction = proxy.predict(heldout.crystals)
    hull = rows_hull(proxy, heldout.crystals).to(prediction.mean.dtype)
    above = prediction.mean - hull
    assert 0.0 < float(above.mean()) < 0.2  # the rows' spread above it, learned as the GP's target
    assert float((prediction.mean - heldout.values).abs().mean()) < 0.1
    low, high = prediction.interval(0.9)
    assert 0.8 <= float(((heldout.values >= low) & (heldout.values <= high)).double().mean()) <= 1.0


def test_the_hull_is_added_to_joint_and_marginal_posteriors_alike(fitted: tuple[Proxy, TrainingSet]) -> None:
    proxy, heldout = fitted
    batch = heldout.crystals[:6]
    joint = proxy.posterior(batch)  # q = 6: gpytorch's joint path
    marginal = proxy.predict(batch, observation_noise=False)
    torch.testing.assert_close(joint.mean.squeeze(-1), marginal.mean, rtol=1e-6, atol=1e-6)
    without = proxy.model.baseline
    proxy.model.baseline = None
    try:
        residual = proxy.predict(batch, observation_noise=False).mean
    finally:
        proxy.model.baseline = without
    torch.testing.assert_close(marginal.mean - residual, rows_hull(proxy, batch).to(residual.dtype))


def test_a_saved_proxy_keeps_its_hull(fitted: tuple[Proxy, TrainingSet], tmp_path: Path) -> None:
    proxy, heldout = fitted
    proxy.save(tmp_path)
    loaded = Proxy.load(tmp_path)
    torch.testing.assert_close(loaded.predict(heldout.crystals).mean, proxy.predict(heldout.crystals).mean)
    torch.testing.assert_close(loaded.model.baseline.energies, proxy.model.baseline.energies)
    assert len(proxy.model.baseline.energies) < 100  # of 1,200 rows: only those on the hull are kept


def test_band_gap_has_no_hull() -> None:
    """A band-gap proxy reads no hull, whatever the settings say (the default config reads it as input); a copy of
    settings that skips their checks is refused by the fit."""
    assert (ProxySettings().baseline, ProxySettings().hull_input) == ("none", True)
    band_gap = load_config(overrides=["proxy.target=band_gap", "proxy.baseline=hull"]).proxy
    assert (band_gap.baseline, band_gap.hull_input) == ("none", False)
    batch = random_crystals(50, seed=40)
    train = TrainingSet("band_gap", batch, truth(batch), torch.zeros(50, dtype=torch.long), ("dft",),
                        tuple(map(str, range(50))))
    with pytest.raises(ProxyError, match="baseline=hull"):
        fit_proxy(train, HULL.model_copy(update={"target": "band_gap"}), seed=0)
    with pytest.raises(ProxyError, match="hull_input"):
        fit_proxy(train, INPUT.model_copy(update={"target": "band_gap"}), seed=0)


def test_the_hull_input_of_a_row_is_the_hull_of_the_other_reference_rows() -> None:
    """Li-O as above (Li2O, Li2O2, LiO3 of the reference source), Li2O of another source, MnO alone in Mn-O: by hand,
    the reference rows read the others' hull, the other source all of them, MnO only its elements (no compound
    known); a new crystal reads the hull of every reference row, MnO's included."""
    counts = torch.tensor([[2, 0, 1], [2, 0, 2], [1, 0, 3], [2, 0, 1], [0, 1, 1]], dtype=torch.float64)
    fractions = counts / counts.sum(dim=1, keepdim=True)
    energies = torch.tensor([-2.0, -1.8, -0.5, -1.9, -1.0], dtype=torch.float64)
    module, columns, _ = hull_input(fractions, energies, torch.tensor([0, 0, 0, 1, 0]), 0, elements=ELEMENTS,
                                    cold=torch.zeros(5, dtype=torch.bool))
    torch.testing.assert_close(columns[:, 0] * module.std + module.mean,
                               torch.tensor([-1.2, -1.5, -0.9, -2.0, 0.0], dtype=torch.float64))
    assert columns[:, 1].tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]
    new = module(fractions[[0, 4]])
    torch.testing.assert_close(new[:, 0] * module.std + module.mean, torch.tensor([-2.0, -1.0], dtype=torch.float64))
    assert new[:, 1].tolist() == [1.0, 1.0]
    cold = torch.tensor([True, False, False, True, False])  # hull_dropout's rows: as if nothing were known
    module, columns, read = hull_input(fractions, energies, torch.tensor([0, 0, 0, 1, 0]), 0, elements=ELEMENTS,
                                       cold=cold)
    torch.testing.assert_close(columns[:, 0] * module.std + module.mean,
                               torch.tensor([0.0, -1.5, -0.9, 0.0, 0.0], dtype=torch.float64))
    assert columns[:, 1].tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    torch.testing.assert_close(read[:, 0] * module.std + module.mean,  # as the fitted model reads them
                               torch.tensor([-1.2, -1.5, -0.9, -2.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(module(fractions[[0]])[:, 0] * module.std + module.mean,
                               torch.tensor([-2.0], dtype=torch.float64))  # a new crystal reads the whole hull


def test_the_hull_dropout_rows_are_read_again_without_the_hull_or_only_without_it() -> None:
    """``copy`` (the default) keeps every row reading the hull and adds the cold rows once more without it;
    ``replace`` reads the cold rows only without it: half the rows then never learn where the hull is known."""
    cold = torch.tensor([True, False, False, True, False])
    rows, as_cold = fit_set(cold, "copy")
    assert rows.tolist() == [0, 1, 2, 3, 4, 0, 3]
    assert as_cold.tolist() == [False] * 5 + [True, True]
    rows, as_cold = fit_set(cold, "replace")
    assert rows.tolist() == [0, 1, 2, 3, 4] and as_cold.tolist() == cold.tolist()
    assert ProxySettings().hull_dropout_mode == "copy"


@pytest.fixture(scope="module")
def hull_read() -> tuple[Proxy, TrainingSet]:
    return fit_proxy(hull_rows(random_crystals(1200, seed=30), seed=31), INPUT, seed=0), \
        hull_rows(random_crystals(400, seed=32), seed=33)


def test_a_proxy_reads_the_hull_of_its_rows_and_keeps_it(hull_read: tuple[Proxy, TrainingSet], tmp_path: Path) -> None:
    proxy, heldout = hull_read
    inputs = proxy.inputs(heldout.crystals)
    hull = inputs[:, len(proxy.features)] * proxy.model.hull_input.std + proxy.model.hull_input.mean
    torch.testing.assert_close(hull, proxy.model.hull_input.hull.at(heldout.crystals.elements, heldout.crystals.counts))
    prediction = proxy.predict(heldout.crystals)
    assert float((prediction.mean - heldout.values).abs().mean()) < 0.1
    proxy.save(tmp_path)
    loaded = Proxy.load(tmp_path)
    torch.testing.assert_close(loaded.predict(heldout.crystals).mean, prediction.mean)
    assert len(loaded.model.hull_input.energies) < 100  # of 1,200 rows: only those on the hull are kept


def test_a_proxy_of_few_rows_reads_no_hull() -> None:
    """Without the learned extractor (fewer than ``extractor_min_rows`` rows) the model cannot tell where the hull is
    known: fitted on 5 entries with the hull it predicted campaign v3's first labels 1.5-1.9 eV/atom too low."""
    train = hull_rows(random_crystals(200, seed=34), seed=35)
    proxy = fit_proxy(train, SETTINGS.model_copy(update={"baseline": "hull", "hull_input": True}), seed=0)
    assert proxy.model.baseline is None and proxy.model.hull_input is None
    assert proxy.inputs(train.crystals).shape[1] == len(proxy.features) + 1


CAMPAIGN_OFFSET = 0.4
"""How far (eV/atom) the campaign's labels sit above the Materials Project-like rows (``test_correction``'s case)."""


def test_the_campaign_correction_reads_the_hull_as_a_new_crystal_does() -> None:
    """The correction learns the labels' residuals from the model's prediction; a label that the fit read as unknown
    (``hull_dropout``) must be predicted as a new crystal is, with the whole hull, or the correction learns the
    dropout's gap and moves every prediction by it."""
    labels = hull_rows(random_crystals(40, seed=36), seed=37)
    labels = TrainingSet(labels.target, labels.crystals, labels.values + CAMPAIGN_OFFSET, labels.source, ("oracle",),
                         tuple(f"label-{i}" for i in range(40))).as_campaign_labels()
    train = TrainingSet.concat([hull_rows(random_crystals(1200, seed=30), seed=31), labels])
    proxy = fit_proxy(train, SETTINGS.model_copy(update={"baseline": "hull", "hull_input": True, "hull_dropout": 0.5}),
                      seed=0)
    assert proxy.model.correction is not None
    fresh = hull_rows(random_crystals(300, seed=38), seed=39)
    error = proxy.predict(fresh.crystals).mean - (fresh.values + CAMPAIGN_OFFSET)
    assert abs(float(error.mean())) < 0.1
