"""Round figures on degenerate data: every log reward at the floor, a proxy predicting one value."""

import numpy as np

from aloop.plots import plot_predicted_distribution, plot_reward_histogram


def test_histograms_of_values_spread_below_float_precision_still_draw():
    floor = np.repeat([-20.0, np.nextafter(-20.0, 0.0)], 100)  # numpy cannot make 40 bins of this range
    figure = plot_reward_histogram(floor)
    assert sum(p.get_height() for p in figure.axes[0].patches) == 200
    figure = plot_predicted_distribution(np.full(10, 1e3), np.array([1e3, 1e3]), target="formation_energy_per_atom")
    heights = [p.get_height() for p in figure.axes[0].patches]
    assert len(heights) == 80 and max(heights) > 0  # both histograms on the same 40 bins
