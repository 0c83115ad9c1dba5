"""Acquisition functions (botorch) on the proxy, and their mapping to a GFlowNet log reward.

Higher acquisition is always better. Formation energy is minimised (botorch's
``maximize=False``); a band gap is scored by closeness to ``band_gap_target`` through
the Monte-Carlo objective ``-|y - target|``, since no closed form gives UCB or EI of
a distance. Stability is the energy above the hull, ``E_f(x) - h(x)`` with ``h`` the hull's
formation energy at the crystal's composition (``aloop.thermo.FormationHull``): a known shift
of the proxy's Gaussian, so UCB and the mean are those of E_f plus ``h`` and EI compares E_f
with ``best_f + h``. The GFlowNet reward is ``log R = max(acquisition / temperature, log_reward_min)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from botorch.acquisition import (
    AcquisitionFunction,
    LogExpectedImprovement,
    PosteriorMean,
    UpperConfidenceBound,
    qLogExpectedImprovement,
    qSimpleRegret,
    qUpperConfidenceBound,
)
from botorch.acquisition.objective import GenericMCObjective
from botorch.sampling import SobolQMCNormalSampler

from aloop.config import AcquisitionSettings
from aloop.proxy import Proxy
from aloop.proxy.proxy import CHUNK
from aloop.space import CrystalBatch
from aloop.space.spacing import crowded
from aloop.space.supergroup import forced_supergroup
from aloop.space.templates import Prototypes
from aloop.thermo import FormationHull

MC_SAMPLES = 64


def gap_closeness(band_gap: torch.Tensor, target: float) -> torch.Tensor:
    """``-|gap - target|`` (eV): how a band gap is scored, higher is better."""
    return -(band_gap - target).abs()


def best_observed(values: torch.Tensor, settings: AcquisitionSettings, *, target: str) -> float:
    """The best label so far on the acquisition's scale (``best_f``).

    Args:
        values: ``(N,)`` labels of the training set (eV/atom or eV); for ``stability`` their
            energies above the hull (NaN where unknown).
        target: ``formation_energy_per_atom`` or ``stability`` (best: the lowest) or ``band_gap``
            (best: the largest ``gap_closeness`` to ``settings.band_gap_target``).
    """
    if target == "band_gap":
        return float(gap_closeness(values, settings.band_gap_target).max())
    finite = values[torch.isfinite(values)]
    return float(finite.min()) if len(finite) else 0.0


def acquisition_function(proxy: Proxy, settings: AcquisitionSettings, *, target: str,
                         best_f: float) -> AcquisitionFunction:
    """The configured botorch acquisition function on ``proxy.model`` (inputs: ``proxy.inputs``).

    Args:
        target: ``formation_energy_per_atom`` (minimised), ``stability`` (the same on E_f, shifted
            by ``stability_acquisition``) or ``band_gap`` (closeness to ``settings.band_gap_target``).
        best_f: best value so far on the acquisition's scale (``best_observed``).
    """
    model = proxy.model
    if target in ("formation_energy_per_atom", "stability"):
        if settings.kind == "ucb":
            return UpperConfidenceBound(model, beta=settings.beta, maximize=False)
        if settings.kind == "logei":
            return LogExpectedImprovement(model, best_f=best_f, maximize=False)
        return PosteriorMean(model, maximize=False)
    gap = settings.band_gap_target
    objective = GenericMCObjective(lambda samples, X=None: gap_closeness(samples[..., 0], gap))
    sampler = SobolQMCNormalSampler(torch.Size([MC_SAMPLES]), seed=0)
    if settings.kind == "ucb":
        return qUpperConfidenceBound(model, beta=settings.beta, sampler=sampler, objective=objective)
    if settings.kind == "logei":
        return qLogExpectedImprovement(model, best_f=best_f, sampler=sampler, objective=objective)
    return qSimpleRegret(model, sampler=sampler, objective=objective)


def acquisition_values(proxy: Proxy, settings: AcquisitionSettings, batch: CrystalBatch, *, target: str,
                       best_f: float, hull: FormationHull | None = None,
                       prototypes: Prototypes | None = None) -> torch.Tensor:
    """``(N,)`` acquisition value of each crystal (one at a time, q = 1), in chunks, on CPU.

    ``hull`` is required for the ``stability`` target (the hull the energies above it are taken from).
    With ``prototypes`` (the placement templates' keys), crystals without a template lose
    ``settings.untemplated_penalty``.
    """
    acqf = acquisition_function(proxy, settings, target=target, best_f=best_f)
    with torch.no_grad():
        values = [_acquire(acqf, proxy, settings, batch[i:i + CHUNK], best_f=best_f, hull=_hull_for(target, hull),
                           prototypes=prototypes)
                  for i in range(0, len(batch), CHUNK)]
    return torch.cat(values) if values else torch.empty(0)


def log_reward_fn(proxy: Proxy, settings: AcquisitionSettings, *, target: str, best_f: float,
                  hull: FormationHull | None = None,
                  prototypes: Prototypes | None = None) -> Callable[[CrystalBatch], torch.Tensor]:
    """A GFlowNet log reward ``CrystalBatch -> (N,)``: acquisition / temperature, floored.

    Crystals whose sites have no room for their atoms in the sampled lattice (``crowded``: pyxtal
    could never place them) or force a higher group than the sampled one at any coordinates
    (``forced_supergroup``: the placed structure would be another crystal) get the floor, so the
    generator learns to leave them, and the proxy is not asked about them (a third of an untrained
    generator's samples); with
    ``prototypes``, those without a placement template lose ``settings.untemplated_penalty``. The
    proxy runs on CPU (the GFlowNet may sample on a GPU); the result is on the batch's device and
    always finite.
    """
    acqf = acquisition_function(proxy, settings, target=target, best_f=best_f)
    shift = _hull_for(target, hull)

    def log_reward(batch: CrystalBatch) -> torch.Tensor:
        kept = ~(crowded(batch) | forced_supergroup(batch)).cpu()
        value = torch.full((len(batch),), -torch.inf, dtype=torch.float64)
        if kept.any():
            with torch.no_grad():
                value[kept] = _acquire(acqf, proxy, settings, batch[kept.to(batch.space_group.device)],
                                       best_f=best_f, hull=shift, prototypes=prototypes).cpu().double()
        return to_log_reward(value, settings).to(batch.space_group.device)

    return log_reward


def _hull_for(target: str, hull: FormationHull | None) -> FormationHull | None:
    if target == "stability" and hull is None:
        raise ValueError("the stability target needs the hull its energies above the hull are measured from")
    return hull if target == "stability" else None


def _acquire(acqf: AcquisitionFunction, proxy: Proxy, settings: AcquisitionSettings, batch: CrystalBatch, *,
             best_f: float, hull: FormationHull | None, prototypes: Prototypes | None = None) -> torch.Tensor:
    """``(N,)`` acquisition of a batch; with ``hull``, of the energy above it (``E_f - h``, minimised); with
    ``prototypes``, less ``settings.untemplated_penalty`` where the crystal has no template."""
    inputs = proxy.inputs(batch).unsqueeze(-2)
    if hull is None:
        value = acqf(inputs)
    elif settings.kind == "logei":
        height = hull.at(batch.elements, batch.counts.cpu()).to(torch.float64)
        value = LogExpectedImprovement(proxy.model, best_f=(best_f + height).unsqueeze(-1), maximize=False)(inputs)
    else:
        value = acqf(inputs) + hull.at(batch.elements, batch.counts.cpu()).to(torch.float64)
    if prototypes is None or not settings.untemplated_penalty:
        return value
    return value - settings.untemplated_penalty * (~prototypes.known(batch.to("cpu"))).to(value.dtype)


def to_log_reward(acquisition: torch.Tensor, settings: AcquisitionSettings) -> torch.Tensor:
    """``(N,)`` acquisition values -> ``(N,)`` float32 log rewards: / temperature, floored, always finite."""
    value = torch.nan_to_num(acquisition / settings.temperature, nan=settings.log_reward_min,
                             neginf=settings.log_reward_min)
    return value.clamp(min=settings.log_reward_min).to(torch.float32)
