"""Acquisition on the proxy posterior, and its mapping to a GFlowNet log reward."""

from __future__ import annotations

import math

import pytest
import torch
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Lattice, Structure

from aloop.acquisition import acquisition_values, log_reward_fn, to_log_reward
from aloop.config import AcquisitionSettings
from aloop.space import Crystal, CrystalBatch
from aloop.space.spacing import crowded
from aloop.space.supergroup import forced_supergroup
from aloop.space.templates import TemplatePool, template_of
from aloop.thermo import FormationHull


@pytest.fixture
def fitted(smoke_problem):
    """A proxy fitted on 60 crystals of the smoke space with a smooth synthetic target, and 20 test crystals."""
    return smoke_problem.proxy, smoke_problem.test


def test_ucb_is_the_optimistic_bound_of_the_posterior(fitted):
    proxy, test = fitted
    settings = AcquisitionSettings(kind="ucb", beta=4.0)
    values = acquisition_values(proxy, settings, test.crystals, target="formation_energy_per_atom", best_f=0.0)
    prediction = proxy.predict(test.crystals, observation_noise=False)
    mean, std = prediction.mean, prediction.std
    assert values.shape == (len(test),)
    torch.testing.assert_close(values, -mean + 2.0 * std, rtol=1e-4, atol=1e-5)


def test_log_ei_matches_its_closed_form(fitted):
    proxy, test = fitted
    best = -0.5
    values = acquisition_values(proxy, AcquisitionSettings(kind="logei"), test.crystals,
                                target="formation_energy_per_atom", best_f=best)
    prediction = proxy.predict(test.crystals, observation_noise=False)
    mean, std = prediction.mean, prediction.std
    normal = torch.distributions.Normal(0.0, 1.0)
    z = (best - mean) / std
    expected = torch.log(std * (z * normal.cdf(z) + normal.log_prob(z).exp()))
    finite = expected > -20  # far in the tail botorch's log-space formula is exact where this one underflows
    torch.testing.assert_close(values[finite], expected[finite], rtol=1e-3, atol=1e-3)


def test_band_gap_scores_closeness_to_the_target(fitted):
    proxy, test = fitted
    settings = AcquisitionSettings(kind="mean", band_gap_target=0.3)
    values = acquisition_values(proxy, settings, test.crystals, target="band_gap", best_f=0.0)
    prediction = proxy.predict(test.crystals, observation_noise=False)
    mean, std = prediction.mean, prediction.std
    # E|Y - t| under the Gaussian posterior, estimated by botorch's quasi-MC draws
    z = (mean - 0.3) / std
    normal = torch.distributions.Normal(0.0, 1.0)
    expected = -(std * math.sqrt(2 / math.pi) * torch.exp(-z**2 / 2) + (mean - 0.3) * (1 - 2 * normal.cdf(-z)))
    torch.testing.assert_close(values, expected, rtol=0.05, atol=0.02)


def test_reward_is_monotone_in_acquisition_and_clipped(fitted):
    proxy, test = fitted
    settings = AcquisitionSettings(kind="ucb", temperature=0.1, log_reward_min=-3.0)
    acquisition = acquisition_values(proxy, settings, test.crystals, target="formation_energy_per_atom", best_f=0.0)
    log_reward = log_reward_fn(proxy, settings, target="formation_energy_per_atom", best_f=0.0)(test.crystals)
    assert log_reward.shape == (len(test),) and torch.isfinite(log_reward).all()
    assert log_reward.min() >= -3.0
    room = ~(crowded(test.crystals) | forced_supergroup(test.crystals))  # unplaceable or another group: the floor
    assert (log_reward[~room] == -3.0).all()
    order = acquisition[room].argsort()
    assert (log_reward[room][order].diff() >= -1e-5).all()
    unclipped = room & (acquisition / 0.1 > -3.0)
    torch.testing.assert_close(log_reward[unclipped], (acquisition / 0.1)[unclipped].float(), rtol=1e-4, atol=1e-4)


def test_a_crystal_whose_sites_have_no_room_gets_the_floor(fitted):
    proxy, test = fitted
    settings = AcquisitionSettings(kind="ucb", temperature=100.0, log_reward_min=-3.0)  # every value well above -3
    el = test.crystals.elements[0]
    on_a_line = [Crystal(99, Composition({el: 4}), (9.0, 9.0, c, 90.0, 90.0, 90.0), ((el, "a"),) * 4)
                 for c in (2.0, 15.0)]
    batch = CrystalBatch.from_crystals(on_a_line, test.crystals.elements)
    assert crowded(batch).tolist() == [True, False]
    acquisition = acquisition_values(proxy, settings, batch, target="formation_energy_per_atom", best_f=0.0)
    log_reward = log_reward_fn(proxy, settings, target="formation_energy_per_atom", best_f=0.0)(batch)
    assert (acquisition / 100.0 > -3.0).all()
    assert log_reward[0] == -3.0
    torch.testing.assert_close(log_reward[1], (acquisition[1] / 100.0).float())


def test_a_crystal_whose_sites_force_a_higher_group_gets_the_floor(fitted):
    proxy, test = fitted
    settings = AcquisitionSettings(kind="ucb", temperature=100.0, log_reward_min=-3.0)  # every value well above -3
    a, b = test.crystals.elements[:2]
    lattice = (4.0, 5.0, 6.0, 90.0, 90.0, 90.0)  # P222: orbits on the 2-fold axes alone are Pmmm, general ones P222
    axes = Crystal(16, Composition({a: 2, b: 2}), lattice, ((a, "i"), (b, "k")))
    general = Crystal(16, Composition({a: 4, b: 4}), lattice, ((a, "u"), (b, "u")))
    batch = CrystalBatch.from_crystals([axes, general], test.crystals.elements)
    assert forced_supergroup(batch).tolist() == [True, False] and not crowded(batch).any()
    acquisition = acquisition_values(proxy, settings, batch, target="formation_energy_per_atom", best_f=0.0)
    log_reward = log_reward_fn(proxy, settings, target="formation_energy_per_atom", best_f=0.0)(batch)
    assert (acquisition / 100.0 > -3.0).all()
    assert log_reward[0] == -3.0
    torch.testing.assert_close(log_reward[1], (acquisition[1] / 100.0).float())


def test_crystals_on_the_floor_are_not_sent_to_the_proxy(fitted, monkeypatch):
    """A third of an untrained generator's samples get the floor: the posterior is not computed for them."""
    proxy, test = fitted
    settings = AcquisitionSettings(kind="ucb", temperature=100.0, log_reward_min=-3.0)
    a, b = test.crystals.elements[:2]
    lattice = (4.0, 5.0, 6.0, 90.0, 90.0, 90.0)
    axes = Crystal(16, Composition({a: 2, b: 2}), lattice, ((a, "i"), (b, "k")))  # forces Pmmm
    general = Crystal(16, Composition({a: 4, b: 4}), lattice, ((a, "u"), (b, "u")))
    reward = log_reward_fn(proxy, settings, target="formation_energy_per_atom", best_f=0.0)
    alone = reward(CrystalBatch.from_crystals([general], test.crystals.elements))
    asked, inputs = [], type(proxy).inputs
    monkeypatch.setattr(type(proxy), "inputs", lambda self, batch: asked.append(len(batch)) or inputs(self, batch))
    mixed = reward(CrystalBatch.from_crystals([axes, general, axes], test.crystals.elements))
    assert asked == [1] and mixed[[0, 2]].tolist() == [-3.0, -3.0] and mixed[1] == alone[0]
    assert reward(CrystalBatch.from_crystals([axes], test.crystals.elements)).tolist() == [-3.0] and asked == [1]


def hand_hull() -> FormationHull:
    """Li-Mn-O with Li2O and MnO at -2.0 eV/atom and Li2MnO3 at -2.2 (made up)."""
    return FormationHull(("Li", "Mn", "O"), [(Composition("Li2O"), -2.0), (Composition("MnO"), -2.0),
                                             (Composition("Li2MnO3"), -2.2)])


def test_formation_hull_agrees_with_pymatgen_on_every_composition(fitted):
    _, test = fitted
    hull = hand_hull()
    diagram = PhaseDiagram([PDEntry(Composition(el), 0.0) for el in ("Li", "Mn", "O")]
                           + [PDEntry(c, e * c.num_atoms) for c, e in hull.entries])
    heights = hull.at(test.crystals.elements, test.crystals.counts)
    expected = [diagram.get_hull_energy_per_atom(c.composition) for c in test.crystals.to_crystals()]
    torch.testing.assert_close(heights, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-9)
    assert hull(torch.tensor([[2, 1, 3], [1, 1, 2], [1, 0, 0]])).tolist() == pytest.approx([-2.2, -2.15, 0.0])


@pytest.mark.parametrize("kind", ["ucb", "mean", "logei"])
def test_stability_is_the_acquisition_of_the_energy_above_the_hull(fitted, kind):
    proxy, test = fitted
    hull, best = hand_hull(), 0.05
    settings = AcquisitionSettings(kind=kind, beta=4.0)
    values = acquisition_values(proxy, settings, test.crystals, target="stability", best_f=best, hull=hull)
    prediction = proxy.predict(test.crystals, observation_noise=False)
    above = prediction.mean - hull.at(test.crystals.elements, test.crystals.counts)  # predicted E_hull
    if kind == "ucb":
        torch.testing.assert_close(values, -above + 2.0 * prediction.std, rtol=1e-4, atol=1e-5)
    elif kind == "mean":
        torch.testing.assert_close(values, -above, rtol=1e-4, atol=1e-5)
    else:
        normal = torch.distributions.Normal(0.0, 1.0)
        z = (best - above) / prediction.std
        expected = torch.log(prediction.std * (z * normal.cdf(z) + normal.log_prob(z).exp()))
        finite = expected > -20
        torch.testing.assert_close(values[finite], expected[finite], rtol=1e-3, atol=1e-3)
    reward = log_reward_fn(proxy, settings, target="stability", best_f=best, hull=hull)
    room = ~(crowded(test.crystals) | forced_supergroup(test.crystals))
    torch.testing.assert_close(reward(test.crystals)[room], to_log_reward(values, settings)[room])


def test_stability_needs_a_hull(fitted):
    proxy, test = fitted
    with pytest.raises(ValueError, match="hull"):
        acquisition_values(proxy, AcquisitionSettings(), test.crystals, target="stability", best_f=0.0)


def test_crystals_without_a_template_lose_the_untemplated_penalty(fitted):
    proxy, test = fitted
    el, other = test.crystals.elements[:2]
    pair = [Crystal(225, Composition({el: 4, other: 4}), (5.0,) * 3 + (90.0,) * 3, ((el, "a"), (other, "b"))),
            Crystal(221, Composition({el: 1, other: 1}), (3.0,) * 3 + (90.0,) * 3, ((el, "a"), (other, "b")))]
    batch = CrystalBatch.from_crystals(pair, test.crystals.elements)
    prototypes = TemplatePool.build([template_of(Structure.from_spacegroup(
        225, Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]), "NaCl")]).prototypes()
    settings = AcquisitionSettings(kind="ucb", untemplated_penalty=0.7, temperature=100.0, log_reward_min=-50.0)
    plain = acquisition_values(proxy, settings, batch, target="formation_energy_per_atom", best_f=0.0)
    penalised = acquisition_values(proxy, settings, batch, target="formation_energy_per_atom", best_f=0.0,
                                   prototypes=prototypes)
    torch.testing.assert_close(penalised, plain - torch.tensor([0.0, 0.7], dtype=plain.dtype))
    log_reward = log_reward_fn(proxy, settings, target="formation_energy_per_atom", best_f=0.0,
                               prototypes=prototypes)(batch)
    torch.testing.assert_close(log_reward, (penalised / 100.0).float())
