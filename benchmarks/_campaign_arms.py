"""The four proposers of the campaign simulation, each choosing one round's batch for the oracle.

- ``aloop``: the round's own proposal path: ``fit_proxy`` on the starting data plus the
  arm's CHGNet labels, then ``aloop.proposal``'s ``train_generator`` on ``generator_reward``
  (UCB), warm-started from the previous round, and ``propose_batch``, exactly as ``run_round``.
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

from aloop.config import Config
from aloop.data import TrainingSet
from aloop.gfn import CrystalEnv, build_policy, save_checkpoint
from aloop.gfn.sampler import rollout
from aloop.proposal import generator_reward, propose_batch, train_generator
from aloop.proxy import Proxy, fit_proxy
from aloop.selection import KnownMaterials, select_diverse, structure_matcher
from aloop.space import Crystal, CrystalBatch, CrystalSpace, placed_structure, valid_mask
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
class ArmBatch:
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
    return KnownMaterials.from_sources(crystals=data.crystals.to_crystals(), structures=(*setup.known, *proposed))


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
                   size: int, workdir: Path, previous: Path | None) -> ArmBatch:
    """A round of the proxy-guided arms, through the round's own functions: proxy, ``train_generator``
    (warm-started from ``previous``), ``propose_batch``."""
    cfg = setup.cfg
    acquisition = cfg.acquisition.model_copy(update={"kind": ACQUISITION[arm] or cfg.acquisition.kind})
    selection = cfg.selection.model_copy(update={"batch_size": size})
    data = training_set(setup, labels)
    proxy = fit_proxy(data, cfg.proxy, seed=seed)
    torch.manual_seed(seed)
    generator = train_generator(setup.env, generator_reward(proxy, data, acquisition), cfg.gfn, warm_start=previous)
    save_checkpoint(workdir / "gfn.pt", setup.env, generator.policy, cfg.gfn)
    proposal = propose_batch(data, proxy, setup.env, generator.policy, known_materials(setup, data, proposed),
                             acquisition=acquisition, selection=selection, seed=seed, threads=cfg.gfn.threads)
    batch = proposal.batch
    mean, std = predict_label(proxy, batch, setup)
    return ArmBatch(batch, list(proposal.structures), mean, std)


def predict_label(proxy: Proxy, crystals: Sequence[Crystal], setup: Setup) -> tuple[list[float], list[float]]:
    """The proxy's prediction of CHGNet labels (its reference source until it has seen one), noise included."""
    if not crystals:
        return [], []
    source = setup.label_source if setup.label_source in proxy.sources else proxy.reference_source
    batch = CrystalBatch.from_crystals(list(crystals), setup.space.elements)
    prediction = proxy.predict(batch, source=proxy.source_index([source]).expand(len(batch)))
    return prediction.mean.tolist(), prediction.std.tolist()


def propose_random(setup: Setup, labels: Sequence[dict], proposed: Sequence[Structure], *, seed: int,
                   size: int) -> ArmBatch:
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
    return ArmBatch([crystals[i] for i in selection.indices], selection.structures)


def propose_substitution(setup: Setup, proposed: Sequence[Structure], *, seed: int, size: int) -> ArmBatch:
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
    return ArmBatch(crystals, structures)
