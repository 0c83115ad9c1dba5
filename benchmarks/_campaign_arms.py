"""The five proposers of the campaign simulation, each choosing one round's batch for the oracle.

- ``aloop``: the round's own proposal path (``aloop.proposal``), built as ``aloop.round`` builds
  it: ``fit_proxy`` on the starting data plus the arm's CHGNet labels, ``generator_reward`` (UCB)
  on the stability target against the hull of the known phases and the arm's labels
  (``FormationHull``, as ``aloop.hull.formation_hull`` makes it from the store), ``train_generator``
  warm-started from the previous round, then ``propose_batch`` with the round's placement
  (``Placement.from_settings`` with the template pool: ``known_templates`` of the Materials Project
  data and every structure relaxed in the campaign so far).
- ``mean``: the same with acquisition ``mean`` (the proxy's posterior mean, no uncertainty).
- ``random``: the uniform Crystal-GFN sampler (every allowed action equally likely, lattice
  coordinates uniform: ``rollout`` with ``epsilon = 1``), valid samples in random order through the
  same novelty and deduplication filters, without diversity penalties; the sampled Wyckoff sites
  are dropped, so pyxtal places the atoms at random Wyckoff positions (campaign v1's placement).
- ``random-templates``: the same samples with their sampled sites, placed as the round places them
  (a template where one fits, else pyxtal on the sampled sites): what the placement gives without
  any guidance.
- ``substitution``: ion substitution on known structures (``_campaign_substitution``), drawn by
  probability, skipping structures known or already proposed.
- ``substitution-ucb``: the same substituted structures ranked by the ``aloop`` arm's acquisition instead of
  their probability: the proxy fitted as ``aloop``'s, UCB on the energy above the same hull, the batch chosen
  by ``select_diverse`` with the round's penalties. What the proxy adds to a generator without the Crystal-GFN.

Every arm gets the same known materials for novelty: the starting data's (composition, space
group) pairs, the stored and relaxed structures of the known entries of the searched chemical
systems, and every structure the arm sent to the oracle before (as proposed and as relaxed).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Composition, Structure

from aloop.acquisition import acquisition_values
from aloop.config import Config
from aloop.data import TrainingSet
from aloop.gfn import CrystalEnv, build_policy, save_checkpoint
from aloop.gfn.sampler import rollout
from aloop.proposal import generator_reward, objective, propose_batch, train_generator
from aloop.proxy import Proxy, fit_proxy
from aloop.selection import KnownMaterials, select_diverse, structure_matcher
from aloop.space import (
    Crystal,
    CrystalBatch,
    CrystalSpace,
    Placement,
    Template,
    TemplatePool,
    placed_structure,
    valid_mask,
)
from aloop.space.structure import TEMPLATE_PROPERTY
from aloop.substitution import SubstitutedStructure
from aloop.thermo import FormationHull
from benchmarks._campaign_substitution import seeded_order

ARMS = ("aloop", "mean", "random", "random-templates", "substitution", "substitution-ucb")
GUIDED = ("aloop", "mean")
"""Arms whose Crystal-GFN the proxy trains (``propose_guided``)."""
PROXY_ARMS = (*GUIDED, "substitution-ucb")
"""Arms that predict their labels before the oracle (the report's calibration)."""
ACQUISITION = {"aloop": None, "mean": "mean"}
"""Acquisition kind of the proxy-guided arms (``None``: the config's, UCB by default)."""


@dataclass(frozen=True)
class Setup:
    """What every arm of one system shares: config, space, environment, starting data, known materials,
    the known phases of the reward's hull and the placement templates of the Materials Project data.

    Attributes:
        known: stored and relaxed structures of every known entry (novelty).
        phases: (composition, CHGNet formation energy) of the known phases the round's hull holds
            (``aloop.hull.known_phases`` of the config), relaxed by the oracle.
        templates: ``known_templates`` of the data and the relaxed known phases, as the round's pool has them.
        label_source: the oracle's label source, e.g. ``chgnet-0.3.0``.
    """

    cfg: Config
    space: CrystalSpace
    env: CrystalEnv
    start: TrainingSet
    known: tuple[Structure, ...]
    phases: tuple[tuple[Composition, float], ...]
    templates: tuple[Template, ...]
    pool: tuple[SubstitutedStructure, ...]
    label_source: str


@dataclass(frozen=True)
class ArmBatch:
    """One round's batch: the crystals, the atoms sent to the oracle and, for proxy arms, predictions.

    ``proxy_mean``/``proxy_std`` are the proxy's predictive distribution of the new label
    (eV/atom, observation noise included) before the label is seen, ``quantiles`` its interval widths
    (``ResidualQuantiles.as_dict``). ``templates`` names each structure's template (``None``: pyxtal).
    ``about`` says how the batch was made (generator start, samples, valid share, skipped candidates).
    """

    crystals: list[Crystal]
    structures: list[Structure]
    proxy_mean: list[float] | None = None
    proxy_std: list[float] | None = None
    quantiles: dict | None = None
    about: dict = field(default_factory=dict)

    @property
    def templates(self) -> list[str | None]:
        return [s.properties.get(TEMPLATE_PROPERTY) for s in self.structures]


def known_materials(setup: Setup, data: TrainingSet, proposed: Sequence[Structure]) -> KnownMaterials:
    """Known for novelty: the data's (formula, group), the known entries' and the arm's earlier structures."""
    return KnownMaterials.from_sources(crystals=data.crystals.to_crystals(), structures=(*setup.known, *proposed))


def relaxed_labels(labels: Sequence[dict]) -> list[dict]:
    return [label for label in labels if label.get("ok")]


def training_set(setup: Setup, labels: Sequence[dict]) -> TrainingSet:
    """The starting data plus the arm's CHGNet formation energies (on the proposed crystals, as the round does)."""
    ok = relaxed_labels(labels)
    if not ok:
        return setup.start
    new = TrainingSet.from_crystals([Crystal.from_dict(label["crystal"]) for label in ok],
                                    [label["formation_energy_per_atom"] for label in ok],
                                    sources=[setup.label_source] * len(ok), ids=[label["id"] for label in ok],
                                    target=setup.start.target)
    return TrainingSet.concat([setup.start, new.as_campaign_labels()])


def reward_hull(setup: Setup, labels: Sequence[dict]) -> FormationHull | None:
    """For ``proxy.target: stability``: the formation-energy hull of the known phases and the arm's labels, on
    the oracle's scale (what ``aloop.hull.formation_hull`` gives the round); ``None`` for the other targets."""
    if setup.cfg.proxy.target != "stability":
        return None
    own = [(Composition(label["formula"]), label["formation_energy_per_atom"]) for label in relaxed_labels(labels)]
    return FormationHull(setup.space.elements, [*setup.phases, *own])


def placement(setup: Setup, labels: Sequence[dict]) -> Placement:
    """The round's placement (``aloop.round.placement``): the ``placement`` settings with the template pool of
    the Materials Project data, the relaxed known phases and every structure the arm has relaxed."""
    if not setup.cfg.placement.templates:
        return Placement.from_settings(setup.cfg.placement, None)
    own = {label["id"]: Structure.from_str(label["relaxed_cif"], fmt="cif") for label in relaxed_labels(labels)}
    return Placement.from_settings(setup.cfg.placement, TemplatePool.build(setup.templates, own))


def fitted_proxy(setup: Setup, labels: Sequence[dict], *, seed: int
                 ) -> tuple[TrainingSet, FormationHull | None, Proxy, float]:
    """The round's training set, reward hull and proxy for an arm with ``labels``, and the fit's seconds."""
    data = training_set(setup, labels)
    start = time.perf_counter()
    proxy = fit_proxy(data, setup.cfg.proxy, seed=seed)
    return data, reward_hull(setup, labels), proxy, time.perf_counter() - start


def propose_guided(setup: Setup, labels: Sequence[dict], proposed: Sequence[Structure], *, arm: str, seed: int,
                   size: int, workdir: Path, previous: Path | None) -> ArmBatch:
    """A round of the proxy-guided arms, through the round's own functions: proxy, ``train_generator``
    (warm-started from ``previous``) on ``generator_reward``, ``propose_batch``."""
    cfg = setup.cfg
    acquisition = cfg.acquisition.model_copy(update={"kind": ACQUISITION[arm] or cfg.acquisition.kind})
    selection = cfg.selection.model_copy(update={"batch_size": size})
    data, hull, proxy, proxy_s = fitted_proxy(setup, labels, seed=seed)
    fitted = time.perf_counter()
    torch.manual_seed(seed)
    place = placement(setup, labels)
    generator = train_generator(setup.env, generator_reward(proxy, data, acquisition, hull, place), cfg.gfn,
                                warm_start=previous)
    save_checkpoint(workdir / "gfn.pt", setup.env, generator.policy, cfg.gfn)
    trained = time.perf_counter()
    proposal = propose_batch(data, proxy, setup.env, generator.policy, known_materials(setup, data, proposed),
                             acquisition=acquisition, selection=selection, seed=seed, hull=hull,
                             threads=cfg.gfn.threads, placement=place,
                             substituted=setup.pool if cfg.selection.substitution else ())
    batch = proposal.batch
    mean, std = predict_label(proxy, batch, setup)
    about = {"generator": generator.start, "samples": len(proposal.samples),
             "valid": int(proposal.valid.sum()), "skipped": dict(proposal.skipped),
             "substituted": proposal.chosen_substituted, "temperatures": list(proposal.temperatures),
             "proxy_s": proxy_s, "generator_s": trained - fitted, "select_s": time.perf_counter() - trained}
    return ArmBatch(batch, list(proposal.structures), mean, std, proxy.quantiles.as_dict(), about)


def predict_label(proxy: Proxy, crystals: Sequence[Crystal], setup: Setup) -> tuple[list[float], list[float]]:
    """The proxy's prediction of the new labels, noise included, at its reference source: the prediction the
    round's reward used (the oracle's own source has a handful of rows, which the kernel learns nearly
    independent of the reference's, so its predictions there are the prior's)."""
    if not crystals:
        return [], []
    prediction = proxy.predict(CrystalBatch.from_crystals(list(crystals), setup.space.elements), observation_noise=True)
    return prediction.mean.tolist(), prediction.std.tolist()


def propose_random(setup: Setup, labels: Sequence[dict], proposed: Sequence[Structure], *, seed: int,
                   size: int, templates: bool) -> ArmBatch:
    """Valid crystals from the uniform sampler, in random order, novel and distinct; placed at random Wyckoff
    positions (sites dropped), or with ``templates`` on their sampled sites as the round places them."""
    cfg = setup.cfg
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        samples = setup.env.to_batch(rollout(setup.env, build_policy(setup.env, cfg.gfn), cfg.selection.n_samples,
                                             epsilon=1.0)).to("cpu")
    valid = valid_mask(samples, setup.space)
    crystals = samples[valid].to_crystals()
    if templates:
        place = placement(setup, labels)
    else:
        crystals = [Crystal(c.space_group, c.composition, c.lattice) for c in crystals]
        place = Placement.from_settings(cfg.placement, None)
    scores = np.random.default_rng(seed).random(len(crystals))
    selection = select_diverse(crystals, scores, size=size,
                               known=known_materials(setup, training_set(setup, labels), proposed),
                               to_structure=functools.partial(placed_structure, placement=place),
                               chemsys_penalty=0.0, space_group_penalty=0.0)
    about = {"samples": len(samples), "valid": int(valid.sum()), "skipped": dict(selection.skipped)}
    return ArmBatch([crystals[i] for i in selection.indices], selection.structures, about=about)


def propose_substitution(setup: Setup, proposed: Sequence[Structure], *, seed: int, size: int) -> ArmBatch:
    """The next substituted structures in the seed's probability-weighted order, novel and not yet proposed."""
    known = known_materials(setup, setup.start, proposed)
    matcher = structure_matcher()
    crystals, structures, passed = [], [], 0
    for index in seeded_order([p.probability for p in setup.pool], seed=seed):
        if len(structures) == size:
            break
        candidate = setup.pool[index]
        if known.is_novel(candidate.structure, space_group=candidate.crystal.space_group, matcher=matcher):
            crystals.append(candidate.crystal)
            structures.append(candidate.structure)
            known.add(candidate.structure)
        else:
            passed += 1
    return ArmBatch(crystals, structures, about={"pool": len(setup.pool), "skipped": {"known": passed}})


def propose_ranked_substitution(setup: Setup, labels: Sequence[dict], proposed: Sequence[Structure], *, seed: int,
                                size: int) -> ArmBatch:
    """The substituted structures ranked by the ``aloop`` arm's acquisition (its proxy, hull and batch penalties),
    novel and not yet proposed."""
    cfg = setup.cfg
    data, hull, proxy, proxy_s = fitted_proxy(setup, labels, seed=seed)
    fitted = time.perf_counter()
    crystals = [p.crystal for p in setup.pool]
    target, best_f = objective(proxy, data, cfg.acquisition, hull)
    scores = acquisition_values(proxy, cfg.acquisition, CrystalBatch.from_crystals(crystals, setup.space.elements),
                                target=target, best_f=best_f, hull=hull)
    structures = {id(p.crystal): p.structure for p in setup.pool}
    choice = select_diverse(crystals, scores.numpy(), size=size, known=known_materials(setup, data, proposed),
                            to_structure=lambda crystal: structures[id(crystal)],
                            chemsys_penalty=cfg.selection.chemsys_penalty,
                            space_group_penalty=cfg.selection.space_group_penalty)
    batch = [crystals[i] for i in choice.indices]
    mean, std = predict_label(proxy, batch, setup)
    about = {"pool": len(setup.pool), "skipped": dict(choice.skipped), "proxy_s": proxy_s,
             "select_s": time.perf_counter() - fitted}
    return ArmBatch(batch, list(choice.structures), mean, std, proxy.quantiles.as_dict(), about)
