"""A proxy reads the feature columns it was fitted on, by name: proxies saved before the Wyckoff-site
columns still load and predict, and one whose columns the featurizer no longer gives asks to be refitted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aloop.data.training import TrainingSet
from aloop.proxy import Proxy, ProxyError, fit_proxy
from aloop.proxy import proxy as proxy_module
from aloop.proxy.proxy import META, SCALE_FEATURES
from aloop.space.crystal import CrystalBatch
from aloop.space.features import SITE_FEATURES, feature_names

from .conftest import SETTINGS, random_crystals, saved_in_an_older_format


def small_training_set() -> TrainingSet:
    return TrainingSet("formation_energy_per_atom", random_crystals(40, seed=5), torch.linspace(-2.0, 0.0, 40),
                       torch.zeros(40, dtype=torch.long), ("dft",), tuple(map(str, range(40))))


def with_sites(batch: CrystalBatch) -> CrystalBatch:
    """``batch`` with one made-up orbit per element (letter index 0: the general position) on every crystal."""
    elements = torch.arange(len(batch.elements)).expand(len(batch), -1)
    sites = torch.stack([elements, torch.zeros_like(elements)], dim=2)
    return CrystalBatch(batch.elements, batch.space_group, batch.counts, batch.lattice, sites)


def test_a_fitted_proxy_records_and_reloads_its_columns(problem, tmp_path: Path) -> None:
    proxy, _, batch = problem
    assert proxy.features == feature_names() and set(SITE_FEATURES) <= set(proxy.features)
    proxy.save(tmp_path)
    assert json.loads((tmp_path / META).read_text())["features"] == list(feature_names())
    assert Proxy.load(tmp_path).features == proxy.features
    assert not torch.allclose(proxy.predict(batch).mean, proxy.predict(with_sites(batch)).mean)  # it sees the sites


@pytest.mark.parametrize("cell_scale", [True, False])
def test_a_proxy_saved_before_the_site_columns_still_loads_and_predicts(cell_scale: bool, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Fitted on the columns the featurizer had before (no site columns), saved without column names."""
    older = tuple(n for n in feature_names() if n not in SITE_FEATURES and (cell_scale or n not in SCALE_FEATURES))
    with monkeypatch.context() as patch:
        patch.setattr(proxy_module, "proxy_feature_names", lambda _cell_scale: older)
        proxy = fit_proxy(small_training_set(), SETTINGS.model_copy(update={"cell_scale": cell_scale}), seed=0)
    assert proxy.features == older
    loaded = saved_in_an_older_format(proxy, tmp_path, lambda meta: meta.pop("features"))
    assert loaded.features == older
    batch = with_sites(random_crystals(30, seed=6))
    a, b = loaded.predict(batch), proxy.predict(batch)
    torch.testing.assert_close((a.mean, a.std), (b.mean, b.std))


def test_a_proxy_reading_columns_the_featurizer_no_longer_gives_asks_to_be_refitted(problem, tmp_path: Path) -> None:
    proxy, _, _ = problem

    def renamed(meta: dict) -> None:
        meta["features"][-1] = "a_column_since_removed"

    with pytest.raises(ProxyError, match="a_column_since_removed.*refit it"):
        saved_in_an_older_format(proxy, tmp_path / "renamed", renamed)

    # without names it would have read the columns before the site columns: not the ones it was fitted on
    with pytest.raises(ProxyError, match=f"fitted on {len(feature_names())} features.*refit it"):
        saved_in_an_older_format(proxy, tmp_path / "unnamed", lambda meta: meta.pop("features"))
