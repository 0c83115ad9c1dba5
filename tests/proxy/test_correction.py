"""The campaign's correction: its own labels, offset from what the rest of the data says, move the predictions of
new crystals of their chemistry onto them; without enough labels, or with labels only, there is none."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aloop.data.training import TrainingSet
from aloop.proxy import Prediction, Proxy, fit_proxy
from aloop.proxy.correction import MIN_LABELS
from aloop.space.crystal import CrystalBatch

from .conftest import SETTINGS, random_crystals, truth

OFFSET = 0.6
"""How far (eV/atom) the campaign's labels sit above what the Materials Project-like rows say."""
LABEL_NOISE = 0.1


def rows(batch: CrystalBatch, source: str, *, offset: float = 0.0, noise: float = 0.05, seed: int) -> TrainingSet:
    g = torch.Generator().manual_seed(seed)
    values = truth(batch) + offset + noise * torch.randn(len(batch), generator=g, dtype=torch.float64)
    return TrainingSet("formation_energy_per_atom", batch, values, torch.zeros(len(batch), dtype=torch.long),
                       (source,), tuple(f"{source}-{i}" for i in range(len(batch))))


def campaign(n_labels: int) -> TrainingSet:
    """1,000 Materials Project-like rows and ``n_labels`` campaign labels, ``OFFSET`` higher, of an oracle."""
    labels = rows(random_crystals(n_labels, seed=11), "oracle", offset=OFFSET, noise=LABEL_NOISE, seed=12)
    return TrainingSet.concat([rows(random_crystals(1000, seed=10), "dft", seed=13), labels.as_campaign_labels()])


def with_sodium(batch: CrystalBatch) -> CrystalBatch:
    """The crystals with one Na atom added to every other one: an element the campaign never labelled."""
    sodium = torch.arange(len(batch)).remainder(2).unsqueeze(1)
    return CrystalBatch((*batch.elements, "Na"), batch.space_group, torch.cat([batch.counts, sodium], dim=1),
                        batch.lattice)


@pytest.fixture(scope="module")
def corrected() -> Proxy:
    return fit_proxy(campaign(40), SETTINGS.model_copy(update={"hidden_dims": []}), seed=0)


def shared_prediction(proxy: Proxy, batch: CrystalBatch) -> Prediction:
    """What ``proxy`` predicts of ``batch`` without its correction: the shared model alone."""
    correction, proxy.model.correction = proxy.model.correction, None
    try:
        return proxy.predict(batch)
    finally:
        proxy.model.correction = correction


def test_the_campaign_labels_move_predictions_of_new_crystals_onto_them(corrected: Proxy) -> None:
    fresh = random_crystals(300, seed=14)
    expected = truth(fresh) + OFFSET  # what the oracle would say of them
    with_correction, shared = corrected.predict(fresh), shared_prediction(corrected, fresh)
    assert float((shared.mean - expected).mean()) < -0.3  # 40 labels among 1,040 rows: the shared model misses them
    assert abs(float((with_correction.mean - expected).mean())) < 0.1
    assert float((with_correction.mean - expected).abs().mean()) < 0.5 * float((shared.mean - expected).abs().mean())
    observed = expected + LABEL_NOISE * torch.randn(len(fresh), generator=torch.Generator().manual_seed(15),
                                                    dtype=torch.float64)
    low, high = with_correction.interval(0.9)
    assert 0.8 <= float(((observed >= low) & (observed <= high)).double().mean()) <= 1.0
    assert bool((with_correction.std > shared.std).all())  # its own uncertainty adds to the shared model's


def test_crystals_of_other_chemistries_keep_the_shared_prediction(corrected: Proxy) -> None:
    """An element no label has (Na) puts a crystal outside what the correction learned."""
    batch = with_sodium(random_crystals(20, seed=20))
    with_correction, shared = corrected.predict(batch), shared_prediction(corrected, batch)
    sodium = batch.counts[:, 3] > 0
    torch.testing.assert_close(with_correction.mean[sodium], shared.mean[sodium])
    torch.testing.assert_close(with_correction.std[sodium], shared.std[sodium])
    assert bool((with_correction.mean[~sodium] - shared.mean[~sodium] > 0.2).all())


def test_the_proxy_says_what_its_correction_learned(corrected: Proxy) -> None:
    assert corrected.correction is not None
    labels, offset = corrected.correction
    assert labels == 40 and abs(offset - OFFSET) < 0.15  # the shared model fits few of them: most of the offset


def test_the_correction_is_saved_with_the_proxy(corrected: Proxy, tmp_path: Path) -> None:
    corrected.save(tmp_path)
    loaded = Proxy.load(tmp_path)
    assert loaded.model.correction is not None
    batch = random_crystals(50, seed=16)
    a, b = loaded.predict(batch), corrected.predict(batch)
    torch.testing.assert_close((a.mean, a.std), (b.mean, b.std))


def test_joint_posteriors_carry_the_correction(corrected: Proxy) -> None:
    """q > 1 (a joint posterior) and q = 1 (marginals, the reward's path) agree on means and variances."""
    x = corrected.inputs(with_sodium(random_crystals(6, seed=17)))
    for noise in (False, True):
        joint = corrected.model.posterior(x, observation_noise=noise)
        marginal = corrected.model.posterior(x.unsqueeze(-2), observation_noise=noise)
        torch.testing.assert_close(joint.mean.reshape(-1), marginal.mean.reshape(-1))
        torch.testing.assert_close(joint.variance.reshape(-1), marginal.variance.reshape(-1))


def test_the_closed_form_marginals_are_the_exact_gps(corrected: Proxy) -> None:
    """The reward's path (one cached solve) gives gpytorch's exact predictive."""
    correction = corrected.model.correction
    assert correction is not None
    x = corrected.inputs(random_crystals(40, seed=21))
    mean, variance, noise = correction.marginals(x)
    fractions, _ = correction.read(x)
    posterior = correction.gp.posterior(fractions.unsqueeze(-2))
    torch.testing.assert_close(mean, posterior.mean.reshape(-1))
    torch.testing.assert_close(variance, posterior.variance.reshape(-1), rtol=1e-4, atol=1e-8)
    noisy = correction.gp.posterior(fractions.unsqueeze(-2), observation_noise=True).variance.reshape(-1)
    torch.testing.assert_close(variance + noise, noisy, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("case", ["too few labels", "labels only", "switched off"])
def test_no_correction_without_enough_labels_or_other_rows(case: str) -> None:
    train = {"too few labels": campaign(MIN_LABELS - 1),
             "labels only": rows(random_crystals(30, seed=18), "dft", seed=19).as_campaign_labels(),
             "switched off": campaign(40)}[case]
    settings = SETTINGS.model_copy(update={"hidden_dims": [], "min_steps": 50, "correction": case != "switched off"})
    assert fit_proxy(train, settings, seed=0).model.correction is None
