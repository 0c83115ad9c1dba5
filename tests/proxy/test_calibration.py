"""Calibration metrics against hand-computed values, and the figure."""

from __future__ import annotations

import math

import pytest
import torch

from aloop.proxy.calibration import calibration_metrics, plot_calibration
from aloop.proxy.proxy import ResidualQuantiles


def test_metrics_of_a_tiny_case_by_hand() -> None:
    result = calibration_metrics(torch.tensor([0.0, 1.0, 3.0]), torch.zeros(3), torch.ones(3), target="band_gap")
    assert result.n == 3
    assert result.mae == pytest.approx(4 / 3)
    assert result.rmse == pytest.approx(math.sqrt(10 / 3))
    assert result.nll == pytest.approx(0.5 * math.log(2 * math.pi) + (0 + 1 + 9) / 6)
    assert result.coverage_50 == pytest.approx(1 / 3)  # |error| <= 0.674: only the first
    assert result.coverage_90 == pytest.approx(2 / 3)  # |error| <= 1.645: the first two
    assert math.isnan(result.spearman_err_std)  # constant std: no ranking
    assert set(result.as_dict()) == {"n", "mae", "rmse", "nll", "coverage_50", "coverage_90", "spearman_err_std"}


def test_spearman_and_coverage_with_varying_std() -> None:
    observed = torch.tensor([0.1, 0.5, 0.2, -1.0])
    std = torch.tensor([0.1, 0.4, 0.2, 2.0])  # larger std where the error is larger: rank correlation 1
    result = calibration_metrics(observed, torch.zeros(4), std)
    assert result.spearman_err_std == pytest.approx(1.0)
    assert result.coverage_90 == 1.0 and result.coverage_50 == pytest.approx(0.25)  # 0.5 / 1.0 / 0.5 sigma
    assert result.coverage(0.99) == 1.0
    with pytest.raises(ValueError, match="at least one"):
        calibration_metrics(torch.zeros(0), torch.zeros(0), torch.zeros(0))


def test_coverage_uses_the_given_quantiles() -> None:
    """Half-widths 1 std at 50% and 2 std at 90% (1.5 at 70%, interpolated) instead of the Gaussian's."""
    quantiles = ResidualQuantiles(levels=(0.5, 0.9), widths=(1.0, 2.0))
    result = calibration_metrics(torch.tensor([0.0, 1.0, 1.8, 3.0]), torch.zeros(4), torch.ones(4), quantiles=quantiles)
    assert result.coverage_50 == pytest.approx(2 / 4) and result.coverage_90 == pytest.approx(3 / 4)
    assert result.coverage(0.7) == pytest.approx(2 / 4)
    assert result.quantiles == quantiles
    gaussian = calibration_metrics(torch.tensor([0.0, 1.0, 1.8, 3.0]), torch.zeros(4), torch.ones(4))
    assert gaussian.coverage_50 == pytest.approx(1 / 4) and gaussian.coverage_90 == pytest.approx(2 / 4)


def test_figure_has_parity_and_curve() -> None:
    result = calibration_metrics(torch.linspace(-1, 1, 20), torch.linspace(-1, 1, 20) + 0.1, torch.full((20,), 0.2),
                                 target="formation_energy_per_atom")
    figure = plot_calibration(result, title="round 3")
    parity, curve = figure.axes
    assert "eV/atom" in parity.get_xlabel() and "MAE 0.100" in parity.get_title()
    assert curve.get_xlabel().startswith("nominal coverage") and len(curve.lines[0].get_xdata()) == 19
    assert len(curve.lines) == 2  # Gaussian intervals: no second curve
    calibrated = plot_calibration(calibration_metrics(torch.linspace(-1, 1, 20), torch.zeros(20), torch.ones(20),
                                                      quantiles=ResidualQuantiles(levels=(0.5,), widths=(0.5,))))
    assert [line.get_label() for line in calibrated.axes[1].lines] == ["proxy", "Gaussian intervals", "ideal"]
