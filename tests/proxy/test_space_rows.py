"""What the proxy does with rows inside the space and with the cell's scale: the share of the minibatches the
inside rows get, validation by chemical system, a proxy blind to the cell's scale, and old proxies loading."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from aloop.data.training import TrainingSet
from aloop.proxy import Proxy, fit_proxy
from aloop.proxy.proxy import SCALE_FEATURES, row_weights, validation_rows
from aloop.space.crystal import CrystalBatch
from aloop.space.features import feature_names

from .conftest import SETTINGS, random_crystals, saved_in_an_older_format, truth

SHIFT = 1.0
"""How far (eV/atom) the rows inside the space lie above the rows outside it, on the same kind of crystals."""


def disagreeing_rows(n: int, n_inside: int) -> TrainingSet:
    """``n`` crystals labelled ``truth``, the first ``n_inside`` of them inside the space and ``SHIFT`` higher."""
    batch = random_crystals(n, seed=3)
    inside = torch.arange(n) < n_inside
    values = truth(batch) + SHIFT * inside
    return TrainingSet("formation_energy_per_atom", batch, values, torch.zeros(n, dtype=torch.long), ("dft",),
                       tuple(map(str, range(n))), inside)


@pytest.mark.parametrize(("share", "low", "high"), [(0.0, 0.0, 0.25), (0.8, 0.55, 0.95)])
def test_inside_rows_given_a_share_pull_the_fit_where_far_rows_disagree(share: float, low: float, high: float) -> None:
    """A tenth of the rows inside: alike they move the fit a tenth of the way, with a share of 0.8 most of it."""
    train = disagreeing_rows(1000, 100)
    proxy = fit_proxy(train, SETTINGS.model_copy(update={"space_share": share, "hidden_dims": []}), seed=0)
    fresh = random_crystals(300, seed=4)
    offset = float((proxy.predict(fresh).mean - truth(fresh)).mean())
    assert low < offset / SHIFT < high


def test_row_weights_give_the_inside_rows_their_share() -> None:
    inside = torch.tensor([True, False, False, False, True, False])
    weights = row_weights(inside, 0.25)
    assert weights is not None
    torch.testing.assert_close(weights[inside], torch.full((2,), 0.125, dtype=weights.dtype))
    torch.testing.assert_close(weights[~inside], torch.full((4,), 0.1875, dtype=weights.dtype))
    draws = torch.multinomial(weights, 20_000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert abs(float(inside[draws].float().mean()) - 0.25) < 0.02
    assert row_weights(inside, 0.0) is None  # every row alike
    assert row_weights(torch.ones(4, dtype=torch.bool), 0.5) is None and row_weights(~inside, 0.0) is None


def chemical_systems(sizes: list[int]) -> CrystalBatch:
    """Cubic binaries, ``sizes[i]`` of them in the i-th system of (Li, X) for X in Na, Mg, Al, ..."""
    partners = ("Na", "Mg", "Al", "Si", "P", "S", "Cl", "K")[: len(sizes)]
    elements = ("Li", *partners)
    counts = torch.zeros(sum(sizes), len(elements), dtype=torch.long)
    counts[:, 0] = 1
    counts[torch.arange(sum(sizes)), 1 + torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))] = 1
    lattice = torch.tensor([[4.0, 4.0, 4.0, 90.0, 90.0, 90.0]], dtype=torch.float64).expand(sum(sizes), 6)
    return CrystalBatch(elements, torch.full((sum(sizes),), 221), counts, lattice.clone())


def test_validation_rows_hold_out_whole_chemical_systems_that_fit() -> None:
    sizes = [3, 4, 5, 40, 2, 6]  # 60 rows; a system of 40 never fits in 10
    batch = chemical_systems(sizes)
    system = (batch.counts[:, 1:] > 0).long().argmax(dim=1)
    for seed in range(5):
        fit, held = validation_rows(batch, 10, by_system=True, generator=torch.Generator().manual_seed(seed))
        assert len(held) == 10 and sorted((*fit.tolist(), *held.tolist())) == list(range(60))
        whole = sum(size for s, size in enumerate(sizes) if int((system[held] == s).sum()) == size)
        assert whole >= 8  # whatever their order, whole small systems fill 8 of the 10 or more (random rows: ~1)
        assert int((system[held] == 3).sum()) < 40  # the big system stays in the fit
    fit, held = validation_rows(batch, 10, by_system=False, generator=torch.Generator().manual_seed(0))
    order = torch.randperm(60, generator=torch.Generator().manual_seed(0))
    assert torch.equal(held, order[:10]) and torch.equal(fit, order[10:])  # random rows: as before the option


def rescaled(batch: CrystalBatch, factor: float) -> CrystalBatch:
    lattice = batch.lattice.clone()
    lattice[:, :3] *= factor
    return replace(batch, lattice=lattice)


def test_a_proxy_without_the_cell_scale_ignores_it(tmp_path: Path) -> None:
    train = TrainingSet("formation_energy_per_atom", random_crystals(40, seed=5), torch.linspace(-2.0, 0.0, 40),
                        torch.zeros(40, dtype=torch.long), ("dft",), tuple(map(str, range(40))))
    batch = random_crystals(30, seed=6)
    blind = fit_proxy(train, SETTINGS.model_copy(update={"cell_scale": False}), seed=0)
    seeing = fit_proxy(train, SETTINGS, seed=0)
    assert len(blind.feature_mean) == len(feature_names()) - len(SCALE_FEATURES) == len(seeing.feature_mean) - 3
    a, b = blind.predict(batch), blind.predict(rescaled(batch, 1.3))
    torch.testing.assert_close((a.mean, a.std), (b.mean, b.std))
    assert not torch.allclose(seeing.predict(batch).mean, seeing.predict(rescaled(batch, 1.3)).mean)
    blind.save(tmp_path)
    c = Proxy.load(tmp_path).predict(batch)
    torch.testing.assert_close((c.mean, c.std), (a.mean, a.std))


def test_a_proxy_saved_before_the_space_settings_still_loads(problem, tmp_path: Path) -> None:
    """Proxies saved before ``cell_scale``, ``space_share`` and ``validation_split`` read every feature."""
    proxy, _, batch = problem

    def drop_space_settings(meta: dict) -> None:
        for key in ("cell_scale", "space_share", "validation_split"):
            del meta["settings"][key]

    loaded = saved_in_an_older_format(proxy, tmp_path, drop_space_settings)
    assert loaded.settings.cell_scale
    a, b = loaded.predict(batch), proxy.predict(batch)
    torch.testing.assert_close((a.mean, a.std, *a.interval(0.9)), (b.mean, b.std, *b.interval(0.9)))
