"""The uncertainty-aware proxy: a sparse variational GP on crystal features, and its calibration."""

from aloop.proxy.calibration import Calibration, calibration, calibration_metrics, plot_calibration
from aloop.proxy.proxy import Prediction, Proxy, ProxyError, fit_proxy

__all__ = ["Calibration", "Prediction", "Proxy", "ProxyError", "calibration", "calibration_metrics", "fit_proxy",
           "plot_calibration"]
