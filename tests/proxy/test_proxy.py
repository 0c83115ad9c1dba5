"""The proxy on a synthetic function with known noise: calibration, per-source noise and fidelity, shapes, save/load."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from scipy.stats import norm, t

from aloop.config import ProxySettings
from aloop.data.training import TrainingSet
from aloop.proxy import Proxy, ProxyError, calibration, fit_proxy
from aloop.proxy.proxy import GAUSSIAN, MIN_QUANTILE_ROWS, QUANTILE_LEVELS, ResidualQuantiles, recalibrate
from aloop.space.crystal import CrystalBatch

from .conftest import NOISE, OFFSET, SETTINGS, labelled, random_crystals, saved_in_an_older_format, truth


def test_held_out_intervals_cover_close_to_nominal(problem) -> None:
    proxy, heldout, _ = problem
    train = labelled(random_crystals(2800, seed=0)[:1800], ["dft"] * 1200 + ["chgnet"] * 600, seed=1)
    results = [calibration(proxy, heldout)] + [calibration(fit_proxy(train, SETTINGS, seed=seed), heldout)
                                               for seed in (1, 2)]
    assert all(r.n == 1000 for r in results)
    # one fit's 90% coverage moves by about 0.03 with its seed (the noise is estimated on 360 validation
    # rows; on an AMD EPYC seed 0 gave 0.852 and seeds 1-4 0.889-0.929): the mean of three fits is held, with
    # the binomial standard deviation of 1,000 points (0.0095 at 90%, 0.016 at 50%) about 4 times either side
    coverage_90 = sum(r.coverage_90 for r in results) / 3
    coverage_50 = sum(r.coverage_50 for r in results) / 3
    assert 0.86 <= coverage_90 <= 0.94 and 0.44 <= coverage_50 <= 0.56
    assert all(r.coverage_90 > 0.8 for r in results)
    assert max(r.mae for r in results) < 0.06  # noise 0.05 (mean absolute noise 0.04): the mean is close to the truth


def test_each_source_gets_its_own_noise_and_offset(problem) -> None:
    proxy, _, batch = problem
    noise = proxy.noise_std
    assert 0.04 < noise["dft"] < 0.065 and 0.24 < noise["chgnet"] < 0.36  # true: 0.05 and 0.3
    chgnet = proxy.posterior(batch, fidelity="chgnet").mean
    dft = proxy.posterior(batch, fidelity="dft").mean
    assert float((chgnet - dft).detach().mean()) == pytest.approx(OFFSET["chgnet"] - OFFSET["dft"], abs=0.08)
    assert proxy.reference_source == "dft"
    torch.testing.assert_close(proxy.posterior(batch).mean, dft)


def test_posterior_shapes_and_marginals_match_the_joint(problem) -> None:
    proxy, _, batch = problem
    x = proxy.inputs(batch[:7])
    joint = proxy.model.posterior(x)
    marginal = proxy.model.posterior(x.unsqueeze(-2))  # (7, 1, D + K): how analytic acquisitions ask
    assert joint.mean.shape == (7, 1) and marginal.mean.shape == (7, 1, 1)
    torch.testing.assert_close(marginal.mean.reshape(7), joint.mean.reshape(7))
    torch.testing.assert_close(marginal.variance.reshape(7), torch.diagonal(joint.covariance_matrix), rtol=1e-6,
                               atol=1e-10)
    prediction = proxy.predict(batch[:7], observation_noise=False)
    mean, std = prediction.mean, prediction.std
    torch.testing.assert_close(mean, joint.mean.reshape(7))
    torch.testing.assert_close(std**2, joint.variance.reshape(7))


def test_fast_marginals_equal_gpytorchs_predictive(problem) -> None:
    proxy, _, batch = problem
    x = proxy.inputs(batch[:50], fidelity="chgnet")
    with torch.no_grad():
        mean, variance = proxy.model.marginals(x)
        latent = proxy.model.model(x)
    torch.testing.assert_close(mean, latent.mean)
    torch.testing.assert_close(variance, latent.variance, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize(("scale", "noise"), [(4.0, 0.01), (0.5, 0.05)])
def test_recalibration_recovers_a_known_variance_scale_and_noise(problem, scale: float, noise: float,
                                                                  tmp_path: Path) -> None:
    """Labels drawn with variance ``scale * latent variance + noise``; a scale below 1 is floored at 1."""
    proxy, _, _ = problem
    proxy.save(tmp_path)
    model = Proxy.load(tmp_path).model  # a copy to recalibrate
    inside = proxy.inputs(random_crystals(1000, seed=7), fidelity="dft")
    g = torch.Generator().manual_seed(3)
    outside = inside.clone()  # features far from the training data: a larger latent variance
    outside[:, : -len(proxy.sources)] += 2.0 * torch.randn(outside[:, : -len(proxy.sources)].shape, generator=g,
                                                           dtype=outside.dtype)
    x = torch.cat([inside, outside])
    with torch.no_grad():
        mean, variance = model.marginals(x)
    y = mean + (scale * variance + noise).sqrt() * torch.randn(len(x), generator=g, dtype=x.dtype)
    dft = proxy.source_index(["dft"])
    recalibrate(model, x, y, dft.expand(len(x)))
    assert float(model.variance_scale) == pytest.approx(max(scale, 1.0), rel=0.15)
    noises = model.likelihood.noise.detach()
    assert float(noises[dft]) == pytest.approx(noise, rel=0.15)
    other = 1 - dft  # a source without validation rows keeps its noise
    assert float(noises[other]) == pytest.approx(float(proxy.model.likelihood.noise.detach()[other]))


def test_observation_noise_adds_the_source_noise(problem) -> None:
    proxy, _, batch = problem
    latent = proxy.posterior(batch[:5], fidelity="chgnet").variance
    noisy = proxy.posterior(batch[:5], fidelity="chgnet", observation_noise=True).variance
    torch.testing.assert_close(noisy - latent, torch.full_like(latent, proxy.noise_std["chgnet"] ** 2))


def test_save_and_load_give_the_same_predictions(problem, tmp_path: Path) -> None:
    proxy, _, batch = problem
    proxy.save(tmp_path / "proxy")
    loaded = Proxy.load(tmp_path / "proxy")
    assert (loaded.target, loaded.sources, loaded.reference_source) == (proxy.target, proxy.sources, "dft")
    assert loaded.quantiles == proxy.quantiles and not loaded.quantiles.gaussian
    a, b = loaded.predict(batch), proxy.predict(batch)
    torch.testing.assert_close((a.mean, a.std, *a.interval(0.9)), (b.mean, b.std, *b.interval(0.9)))
    with pytest.raises(ProxyError, match="not a saved proxy"):
        Proxy.load(tmp_path)


def test_a_proxy_saved_before_hidden_dims_was_recorded_still_loads(problem, tmp_path: Path) -> None:
    """Earlier rounds' proxies (and their MLflow models) always used the settings' extractor widths."""
    proxy, _, batch = problem
    popped = []
    loaded = saved_in_an_older_format(proxy, tmp_path, lambda meta: popped.append(meta.pop("hidden_dims")))
    assert popped == [proxy.hidden_dims] and proxy.hidden_dims == SETTINGS.hidden_dims
    a, b = loaded.predict(batch), proxy.predict(batch)
    torch.testing.assert_close((a.mean, a.std), (b.mean, b.std))


def test_a_proxy_saved_before_its_quantiles_loads_with_gaussian_intervals(problem, tmp_path: Path) -> None:
    """Earlier rounds' proxies keep the means, standard deviations and Gaussian intervals they had."""
    proxy, _, batch = problem
    loaded = saved_in_an_older_format(proxy, tmp_path, lambda meta: meta.pop("quantiles"))
    assert loaded.quantiles.gaussian
    a, b = loaded.predict(batch), proxy.predict(batch)
    torch.testing.assert_close((a.mean, a.std), (b.mean, b.std))
    low, high = a.interval(0.9)
    torch.testing.assert_close(high - a.mean, norm.ppf(0.95) * a.std)
    torch.testing.assert_close(a.mean - low, norm.ppf(0.95) * a.std)


@pytest.fixture(scope="module")
def heavy_tailed() -> tuple[Proxy, TrainingSet]:
    """A proxy fitted on 1,200 labels with Student-t noise (3 degrees of freedom, scale 0.3 eV/atom), 480 of
    them for validation; 2,000 fresh held-out labels of the same kind."""
    batch = random_crystals(3200, seed=10)
    noise = t.rvs(3, size=len(batch), random_state=0)
    values = truth(batch) + 0.3 * torch.as_tensor(noise)
    rows = TrainingSet("formation_energy_per_atom", batch, values, torch.zeros(len(batch), dtype=torch.long), ("dft",),
                       tuple(map(str, range(len(batch)))))
    train, heldout = rows.subset(torch.arange(1200)), rows.subset(torch.arange(1200, 3200))
    return fit_proxy(train, SETTINGS.model_copy(update={"validation_fraction": 0.4}), seed=0), heldout


def test_calibrated_intervals_cover_nominal_under_heavy_tailed_noise(heavy_tailed) -> None:
    """The validation rows' residual quantiles give held-out coverage near nominal; Gaussian intervals on the
    same means and standard deviations are too wide at 50% (about 0.6: t noise has most of its mass close in)."""
    proxy, heldout = heavy_tailed
    assert not proxy.quantiles.gaussian
    result = calibration(proxy, heldout)
    # 2,000 held-out rows: binomial sd 0.011 at 50%, 0.007 at 90%; 480 validation rows: about 0.023 and 0.014
    assert 0.44 <= result.coverage_50 <= 0.56 and 0.86 <= result.coverage_90 <= 0.94
    gaussian = replace(result, quantiles=GAUSSIAN)
    assert gaussian.coverage(0.5) > 0.56


def test_a_student_t_fit_is_not_dragged_by_gross_outliers() -> None:
    """A tenth of the labels 2 eV/atom too high (a bad calculation, a wrong phase): the Gaussian fit's mean moves
    by about a tenth of that, the Student-t fit's stays on the other labels (measured: 0.015-0.021 against 0.18-0.21
    median error over seeds 0-2)."""
    batch = random_crystals(2200, seed=11)
    g = torch.Generator().manual_seed(0)
    outlier = torch.rand(len(batch), generator=g) < 0.1
    values = truth(batch) + 0.05 * torch.randn(len(batch), generator=g, dtype=torch.float64) + 2.0 * outlier
    rows = TrainingSet("formation_energy_per_atom", batch, values, torch.zeros(len(batch), dtype=torch.long),
                       ("dft",), tuple(map(str, range(len(batch)))))
    train, heldout = rows.subset(torch.arange(1200)), rows.subset(torch.arange(1200, 2200))
    error = {}
    for likelihood in ("gaussian", "student_t"):
        proxy = fit_proxy(train, SETTINGS.model_copy(update={"likelihood": likelihood}), seed=0)
        error[likelihood] = float((proxy.predict(heldout.crystals).mean - truth(heldout.crystals)).abs().median())
    assert error["student_t"] < 0.05 < 0.1 < error["gaussian"]


def test_residual_quantiles_of_student_t_residuals() -> None:
    """Widths match the t quantiles at recorded levels, rise monotonically, and follow the Gaussian's shape
    continuously outside the recorded levels."""
    z = torch.as_tensor(t.rvs(3, size=20_000, random_state=1))
    quantiles = ResidualQuantiles.from_residuals(z)
    for level in (0.5, 0.9):
        assert quantiles.width(level) == pytest.approx(t.ppf(0.5 + level / 2, 3), rel=0.03)
    grid = [0.001, 0.005, *torch.linspace(0.01, 0.99, 200).tolist(), 0.995, 0.999]
    widths = [quantiles.width(level) for level in grid]
    assert all(b > a for a, b in itertools.pairwise(widths))
    low, high = QUANTILE_LEVELS[0], QUANTILE_LEVELS[-1]
    assert quantiles.width(high + 1e-9) == pytest.approx(quantiles.width(high)) == pytest.approx(quantiles.widths[-1])
    assert quantiles.width(low - 1e-9) == pytest.approx(quantiles.width(low))
    assert quantiles.width(0.999) / quantiles.width(0.99) == pytest.approx(norm.ppf(0.9995) / norm.ppf(0.995))
    assert ResidualQuantiles(**quantiles.as_dict()) == quantiles


def test_residual_quantiles_need_enough_rows_and_valid_values() -> None:
    assert ResidualQuantiles.from_residuals(torch.randn(MIN_QUANTILE_ROWS - 1)).gaussian
    assert not ResidualQuantiles.from_residuals(torch.randn(MIN_QUANTILE_ROWS)).gaussian
    assert [GAUSSIAN.width(q) for q in (0.5, 0.9)] == pytest.approx(norm.ppf([0.75, 0.95]))
    with pytest.raises(ValueError, match="interval level=1.0 is not in"):
        GAUSSIAN.width(1.0)
    with pytest.raises(ValueError, match="nondecreasing widths"):
        ResidualQuantiles(levels=(0.5, 0.9), widths=(1.0, 0.5))


def test_prediction_intervals_are_batched(problem) -> None:
    proxy, _, batch = problem
    prediction = proxy.predict(batch[:11])
    low, high = prediction.interval(0.5)
    assert low.shape == high.shape == (11,)
    torch.testing.assert_close(high - low, 2 * proxy.quantiles.width(0.5) * prediction.std)


@pytest.fixture(scope="module")
def few_similar_labels() -> tuple[TrainingSet, CrystalBatch, Proxy]:
    """Six crystals labelled -2 +- 0.05 eV/atom (a small space's stable entries), 200 unlike them, and the
    proxy fitted on the six with the test settings."""
    batch = random_crystals(206, seed=7)
    values = -2.0 + 0.05 * torch.randn(6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    train = TrainingSet("formation_energy_per_atom", batch[:6], values, torch.zeros(6, dtype=torch.long), ("dft",),
                        tuple(map(str, range(6))))
    return train, batch[6:], fit_proxy(train, SETTINGS, seed=0)


def test_a_proxy_of_a_few_similar_labels_stays_uncertain_elsewhere(few_similar_labels, tmp_path: Path) -> None:
    """The prior scale, not the labels' own 0.05 eV/atom spread, sets the uncertainty about unlike crystals."""
    train, elsewhere, proxy = few_similar_labels
    assert proxy.hidden_dims == []  # 6 rows are far fewer than extractor_min_rows
    std = proxy.predict(elsewhere).std
    assert 0.5 * SETTINGS.prior_std < float(std.median()) < 1.5 * SETTINGS.prior_std
    narrow = fit_proxy(train, SETTINGS.model_copy(update={"prior_std": 0.01}), seed=0).predict(elsewhere).std
    assert float(narrow.median()) < float(std.median()) / 4
    proxy.save(tmp_path / "proxy")
    a, b = Proxy.load(tmp_path / "proxy").predict(elsewhere), proxy.predict(elsewhere)
    torch.testing.assert_close((a.mean, a.std), (b.mean, b.std))


def test_the_feature_extractor_needs_enough_rows(few_similar_labels) -> None:
    """On six rows an extractor maps every crystal next to them: the proxy would be sure of everything."""
    train, elsewhere, proxy = few_similar_labels
    with_extractor = fit_proxy(train, SETTINGS.model_copy(update={"extractor_min_rows": 6}), seed=0)
    assert with_extractor.hidden_dims == SETTINGS.hidden_dims
    collapsed = with_extractor.predict(elsewhere).std
    std = proxy.predict(elsewhere).std
    assert float(collapsed.median()) < float(std.median()) / 4


def test_misuse_is_explained(problem) -> None:
    proxy, _, batch = problem
    with pytest.raises(ProxyError, match="\\['oracle'\\] are unknown to this proxy; it was trained on"):
        proxy.posterior(batch, fidelity="oracle")
    train = labelled(random_crystals(20, seed=5), ["dft"] * 20, seed=0)
    with pytest.raises(ProxyError, match="empty training set"):
        fit_proxy(train.subset(torch.arange(0)), ProxySettings(), seed=0)
    with pytest.raises(ProxyError, match="reference_source='mp' is not among the training sources \\['dft'\\]"):
        fit_proxy(train, ProxySettings(reference_source="mp"), seed=0)
    with pytest.raises(ProxyError, match="differs from proxy.target='band_gap'"):
        fit_proxy(train, ProxySettings(target="band_gap"), seed=0)


def test_noise_levels_of_the_problem_are_distinct() -> None:
    """Guard of the fixture itself: the two sources must differ for the tests above to mean anything."""
    assert NOISE["chgnet"] > 4 * NOISE["dft"]
