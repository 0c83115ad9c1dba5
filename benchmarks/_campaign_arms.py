"""The four proposers of the campaign simulation, each choosing one round's batch for the oracle.

- ``aloop``: the round's own pieces: ``fit_proxy`` on the starting data plus the arm's
  CHGNet labels, ``log_reward_fn`` (UCB), ``train`` of the Crystal-GFN warm-started from the
  previous round, ``sample``, then ``select_diverse`` ranked by ``acquisition_values``.
- ``mean``: the same with acquisition ``mean`` (the proxy's posterior mean, no uncertainty).
- ``random``: the uniform Crystal-GFN sampler (every allowed action equally likely, lattice
  coordinates uniform: ``rollout`` with ``epsilon = 1``), valid samples in random order
  through the same novelty and deduplication filters, without diversity penalties.
- ``substitution``: ion substitution on known structures (``_campaign_substitution``),
  drawn by probability, skipping structures known or already proposed.

Every arm gets the same known materials for novelty: the starting data's (composition,
space group) pairs, the stored and relaxed structures of the known entries of the searched
chemical systems, and every structure the arm sent to the oracle before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Structure

from aloop.acquisition import acquisition_values, log_reward_fn
from aloop.config import Config
from aloop.data import TrainingSet
from aloop.gfn import CrystalEnv, build_policy, load_checkpoint, sample, save_checkpoint, train
from aloop.gfn.sampler import rollout
from aloop.proxy import Proxy, fit_proxy
from aloop.selection import KnownMaterials, placed_structure, select_diverse, structure_matcher
from aloop.space import Crystal, CrystalBatch, CrystalSpace, valid_mask
from benchmarks._campaign_substitution import SubstitutedStructure, seeded_order

ARMS = ("aloop", "random", "mean", "substitution")
ACQUISITION = {"aloop": None, "mean": "mean"}
"""Acquisition kind of the proxy-guided arms (``None``: the config's, UCB by default)."""


@dataclass(frozen=True)
class Setup:
    """What every arm shares: config, space, environment, starting data and known materials."""

    cfg: Config
    space: CrystalSpace
    env: CrystalEnv
    start: TrainingSet
    known: tuple[Structure, ...]
    pool: tuple[SubstitutedStructure, ...]
    label_source: str


@dataclass(frozen=True)
class Proposal:
    """One round's batch: the crystals, the atoms sent to the oracle and, for proxy arms, predictions.

    ``proxy_mean``/``proxy_std`` are the proxy's predictive distribution of the new label
    (eV/atom, observation noise included) before the label is seen.
    """

    crystals: list[Crystal]
    structures: list[Structure]
    proxy_mean: list[float] | None = None
    proxy_std: list[float] | None = None


def known_materials(setup: Setup, data: TrainingSet, proposed: Sequence[Structure]) -> KnownMaterials:
    """Known for novelty: the data's (formula, group), the known entries' and the arm's earlier structures."""
    known = KnownMaterials()
    known.add_crystals(data.crystals.to_crystals())
    for structure in (*setup.known, *proposed):
        known.add(structure)
    return known


def training_set(setup: Setup, labels: Sequence[dict]) -> TrainingSet:
    """The starting data plus the arm's CHGNet formation energies (on the proposed crystals, as the round does)."""
    ok = [label for label in labels if label.get("ok")]
    if not ok:
        return setup.start
    new = TrainingSet.from_crystals([Crystal.from_dict(label["crystal"]) for label in ok],
                                    [label["formation_energy_per_atom"] for label in ok],
                                    sources=[setup.label_source] * len(ok), ids=[label["id"] for label in ok],
                                    target=setup.start.target)
    return TrainingSet.concat([setup.start, new])


def propose_guided(setup: Setup, labels: Sequence[dict], proposed: Sequence[Structure], *, arm: str, seed: int,
                   size: int, workdir: Path, previous: Path | None) -> Proposal:
    """A round of the proxy-guided arms: proxy, reward, warm-started GFN, samples, diverse novel batch."""
    cfg = setup.cfg
    acquisition = cfg.acquisition.model_copy(update={"kind": ACQUISITION[arm] or cfg.acquisition.kind})
    data = training_set(setup, labels)
    proxy = fit_proxy(data, cfg.proxy, seed=seed)
    best_f = float(data.values.min())
    reward = log_reward_fn(proxy, acquisition, target=cfg.proxy.target, best_f=best_f)
    policy = load_checkpoint(previous, setup.env, settings=cfg.gfn) if previous else build_policy(setup.env, cfg.gfn)
    torch.manual_seed(seed)
    train(setup.env, policy, reward, steps=cfg.gfn.train_steps, settings=cfg.gfn, progress=False)
    save_checkpoint(workdir / "gfn.pt", setup.env, policy, cfg.gfn)
    samples = sample(setup.env, policy, cfg.selection.n_samples, seed=seed, threads=cfg.gfn.threads).to("cpu")
    samples = samples[valid_mask(samples, setup.space)]
    scores = acquisition_values(proxy, acquisition, samples, target=cfg.proxy.target, best_f=best_f).numpy()
    crystals = samples.to_crystals()
    selection = select_diverse(crystals, scores, size=size, known=known_materials(setup, data, proposed),
                               to_structure=placed_structure, chemsys_penalty=cfg.selection.chemsys_penalty,
                               space_group_penalty=cfg.selection.space_group_penalty)
    chosen = [crystals[i] for i in selection.indices]
    mean, std = predict_label(proxy, chosen, setup)
    return Proposal(chosen, selection.structures, mean, std)


def predict_label(proxy: Proxy, crystals: Sequence[Crystal], setup: Setup) -> tuple[list[float], list[float]]:
    """The proxy's prediction of CHGNet labels (its reference source until it has seen one), noise included."""
    if not crystals:
        return [], []
    source = setup.label_source if setup.label_source in proxy.sources else proxy.reference_source
    batch = CrystalBatch.from_crystals(list(crystals), setup.space.elements)
    mean, std = proxy.predict(batch, source=proxy.source_index([source]).expand(len(batch)))
    return mean.tolist(), std.tolist()


def propose_random(setup: Setup, labels: Sequence[dict], proposed: Sequence[Structure], *, seed: int,
                   size: int) -> Proposal:
    """Valid crystals from the uniform sampler, in random order, novel and distinct."""
    cfg = setup.cfg
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        pool = setup.env.to_batch(rollout(setup.env, build_policy(setup.env, cfg.gfn), cfg.selection.n_samples,
                                          epsilon=1.0)).to("cpu")
    pool = pool[valid_mask(pool, setup.space)]
    crystals = pool.to_crystals()
    scores = np.random.default_rng(seed).random(len(crystals))
    selection = select_diverse(crystals, scores, size=size,
                               known=known_materials(setup, training_set(setup, labels), proposed),
                               to_structure=placed_structure, chemsys_penalty=0.0, space_group_penalty=0.0)
    return Proposal([crystals[i] for i in selection.indices], selection.structures)


def propose_substitution(setup: Setup, proposed: Sequence[Structure], *, seed: int, size: int) -> Proposal:
    """The next substituted structures in the seed's probability-weighted order, novel and not yet proposed."""
    known = known_materials(setup, setup.start, proposed)
    matcher = structure_matcher()
    crystals, structures = [], []
    for index in seeded_order([p.probability for p in setup.pool], seed=seed):
        if len(structures) == size:
            break
        candidate = setup.pool[index]
        if known.is_novel(candidate.structure, space_group=candidate.crystal.space_group, matcher=matcher):
            crystals.append(candidate.crystal)
            structures.append(candidate.structure)
            known.add(candidate.structure)
    return Proposal(crystals, structures)
