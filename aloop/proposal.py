"""From a fitted proxy to a proposed batch: train the Crystal-GFN on the acquisition reward,
sample it, and choose a valid, novel, diverse batch high in acquisition.

Pure functions of their inputs (no database, no MLflow): the round persists and logs
around them, and the campaign benchmark's guided arms call the same two functions, so
the benchmark measures the product. The generator trains and samples on the environment's
device (``CrystalEnv.from_space(..., device=cfg.gfn.device)``); the proxy, the rewards and
everything a ``Proposal`` holds are on CPU.

Example:
    >>> reward = generator_reward(proxy, data, cfg.acquisition)  # doctest: +SKIP
    >>> generator = train_generator(env, reward, cfg.gfn, warm_start=previous_checkpoint)  # doctest: +SKIP
    >>> proposal = propose_batch(data, proxy, env, generator.policy, known, acquisition=cfg.acquisition,
    ...                          selection=cfg.selection, seed=0, threads=cfg.gfn.threads)  # doctest: +SKIP
    >>> proposal.batch[0].formula, proposal.prediction.mean[proposal.chosen[0]]  # doctest: +SKIP
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Structure

from aloop.acquisition import acquisition_values, best_observed, log_reward_fn, to_log_reward
from aloop.config import AcquisitionSettings, GFNSettings, SelectionSettings
from aloop.data import TrainingSet
from aloop.files import write_atomic
from aloop.gfn import CheckpointError, CrystalEnv, CrystalPolicy, LogRewardFn, TrainingHistory, build_policy
from aloop.gfn import load_checkpoint, sample, train
from aloop.proxy import Prediction, Proxy
from aloop.selection import KnownMaterials, Selection, select_diverse
from aloop.space import Crystal, CrystalBatch, CrystalSpace, Placement, placed_structure, valid_mask
from aloop.space.structure import TEMPLATE_PROPERTY
from aloop.space.supergroup import forced_supergroup
from aloop.space.templates import Prototypes
from aloop.substitution import SOURCE_PROPERTY, SubstitutedStructure
from aloop.thermo import FormationHull


@dataclass(frozen=True)
class TrainedGenerator:
    """A Crystal-GFN trained on one round's reward.

    Attributes:
        policy: the trained policy.
        history: its training curves.
        start: how training started: ``warm start from <checkpoint>``, or ``cold start`` and why.
    """

    policy: CrystalPolicy
    history: TrainingHistory
    start: str


@dataclass(frozen=True)
class Proposal:
    """One round's proposal: every sample with its reward, and the batch chosen among the candidates: the valid
    samples, then the substituted structures (``selection.substitution``).

    Attributes:
        samples: the ``N`` crystals drawn from the generator, valid or not.
        log_reward: ``(N,)`` their log rewards.
        valid: ``(N,)`` bool, which samples satisfy every constraint of the space.
        acquisition: ``(C,)`` acquisition value of each candidate (higher is better).
        prediction: the proxy's latent prediction of each candidate (reference source).
        chosen: indices into the candidates of the batch, in the order chosen.
        structures: the atoms of each chosen crystal (``placed_structure``: a template or pyxtal, seeded
            by its hash; a substituted structure as substituted), sent to the oracle.
        skipped: why high-acquisition samples were passed over (duplicate, forced_group, known, rediscovery,
            no_structure).
        substituted: the ``S`` crystals of ion substitution among the candidates (``aloop.substitution``), if any.
        temperatures: the sampling temperature of each draw of ``selection.n_samples``: ``(1.0,)``, then one per
            draw that ``selection.fill_temperatures`` added because the batch could not fill.
    """

    samples: CrystalBatch
    log_reward: torch.Tensor
    valid: torch.Tensor
    acquisition: torch.Tensor
    prediction: Prediction
    chosen: tuple[int, ...]
    structures: tuple[Structure, ...]
    skipped: dict[str, int]
    substituted: CrystalBatch | None = None
    temperatures: tuple[float, ...] = (1.0,)

    @property
    def valid_samples(self) -> CrystalBatch:
        return self.samples[self.valid]

    @property
    def candidates(self) -> CrystalBatch:
        """The valid samples, then the substituted crystals."""
        if self.substituted is None or not len(self.substituted):
            return self.valid_samples
        return CrystalBatch.concat([self.valid_samples, self.substituted])

    @property
    def batch(self) -> list[Crystal]:
        """The chosen crystals, in the order chosen."""
        return self.candidates[torch.tensor(self.chosen, dtype=torch.long)].to_crystals()

    @property
    def chosen_substituted(self) -> int:
        """How many of the batch are substituted structures."""
        return sum(i >= int(self.valid.sum()) for i in self.chosen)

    def save(self, path: Path) -> None:
        """Write the proposal to one file (``torch.save`` of tensors, CIFs and counts), atomically."""
        buffer = io.BytesIO()
        torch.save({
            **_batch_fields("", self.samples), "log_reward": self.log_reward,
            "valid": self.valid, "acquisition": self.acquisition, "mean": self.prediction.mean,
            "std": self.prediction.std, "chosen": list(self.chosen),
            "cifs": [s.to(fmt="cif") for s in self.structures], "skipped": dict(self.skipped),
            "temperatures": list(self.temperatures), **_batch_fields("substituted_", self.substituted)}, buffer)
        write_atomic(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> Proposal:
        data = torch.load(path, weights_only=True)
        return cls(_batch_from("", data), data["log_reward"], data["valid"], data["acquisition"],
                   Prediction(data["mean"], data["std"]), tuple(data["chosen"]),
                   tuple(Structure.from_str(cif, fmt="cif") for cif in data["cifs"]), dict(data["skipped"]),
                   _batch_from("substituted_", data), tuple(data.get("temperatures", (1.0,))))


def _batch_fields(prefix: str, batch: CrystalBatch | None) -> dict:
    """A batch's tensors under ``prefix`` keys, for ``torch.save`` (nothing for ``None``)."""
    if batch is None:
        return {}
    return {f"{prefix}elements": list(batch.elements), f"{prefix}space_group": batch.space_group,
            f"{prefix}counts": batch.counts, f"{prefix}lattice": batch.lattice, f"{prefix}sites": batch.sites}


def _batch_from(prefix: str, data: dict) -> CrystalBatch | None:
    """The batch ``_batch_fields`` saved, or ``None``; proposals saved before sites have none."""
    if f"{prefix}elements" not in data:
        return None
    return CrystalBatch(tuple(data[f"{prefix}elements"]), data[f"{prefix}space_group"], data[f"{prefix}counts"],
                        data[f"{prefix}lattice"], data.get(f"{prefix}sites"))


def generator_reward(proxy: Proxy, data: TrainingSet, settings: AcquisitionSettings,
                     hull: FormationHull | None = None, placement: Placement = Placement()) -> LogRewardFn:
    """The GFN's log reward: the acquisition on ``proxy``, improving on the best label of ``data``;
    with ``hull``, on the energy above it (the ``stability`` target); crystals without a template in
    ``placement``'s pool lose ``settings.untemplated_penalty``."""
    target, best_f = objective(proxy, data, settings, hull)
    return log_reward_fn(proxy, settings, target=target, best_f=best_f, hull=hull,
                         prototypes=_prototypes(placement))


def _prototypes(placement: Placement) -> Prototypes | None:
    """The keys of the placement's templates (``None`` without a template: nothing is penalised, since every
    crystal would lose the same and most would fall to the reward's floor)."""
    return placement.pool.prototypes() if placement.pool is not None and len(placement.pool) else None


def objective(proxy: Proxy, data: TrainingSet, settings: AcquisitionSettings,
              hull: FormationHull | None) -> tuple[str, float]:
    """The acquisition's target and its best label so far (for stability: the lowest E_f above ``hull``)."""
    if hull is None:
        return proxy.target, best_observed(data.values, settings, target=proxy.target)
    above = data.values.double() - hull.at(data.crystals.elements, data.crystals.counts)
    return "stability", best_observed(above, settings, target="stability")


def train_generator(env: CrystalEnv, reward: LogRewardFn, settings: GFNSettings, *, warm_start: Path | None = None,
                    progress: bool = False) -> TrainedGenerator:
    """Train the Crystal-GFN against ``reward``, from the policy at ``warm_start`` when it loads.

    A checkpoint of another space or architecture is not an error: training starts from a
    fresh policy and ``start`` says why. The policy is on ``env.device``. Uses the global
    torch random state (seed it first).
    """
    policy, start = build_policy(env, settings), "cold start"
    if warm_start is not None and warm_start.exists():
        try:
            policy, start = load_checkpoint(warm_start, env, settings=settings), f"warm start from {warm_start}"
        except CheckpointError as err:
            start = f"cold start: {err}"
    history = train(env, policy, reward, steps=settings.train_steps, settings=settings, progress=progress)
    return TrainedGenerator(policy, history, start)


def propose_batch(data: TrainingSet, proxy: Proxy, env: CrystalEnv, policy: CrystalPolicy, known: KnownMaterials,
                  *, acquisition: AcquisitionSettings, selection: SelectionSettings, seed: int,
                  hull: FormationHull | None = None, threads: int | None = None, placement: Placement = Placement(),
                  substituted: Sequence[SubstitutedStructure] = (), progress: bool = False) -> Proposal:
    """Sample ``selection.n_samples`` crystals and choose a batch of up to ``selection.batch_size``.

    The batch is greedy in acquisition (less ``acquisition.untemplated_penalty`` for crystals without a
    template in ``placement``'s pool, as in ``generator_reward``), with penalties for repeated chemical systems and
    space groups; a sample whose atoms cannot be placed, one already in the batch (same
    cell formula, group and sites), one whose sites force a higher group (``forced_supergroup``) or one
    ``known`` is passed over. The ``substituted`` structures compete with the valid samples on the same
    acquisition (no template penalty: their atoms are already placed), for ``selection.substitution_share`` of the
    batch when it is set, and go to the oracle as substituted. When the candidates cannot fill the batch (a
    generator collapsed onto a few crystals), ``selection.n_samples`` more are drawn at each of
    ``selection.fill_temperatures`` in turn, and the batch is chosen again among all of them, until it fills.

    Args:
        data: the proxy's training set (its best label is the acquisition's ``best_f``).
        known: materials the batch must not repeat (training data, earlier candidates).
        seed: seeds the draw; the same inputs and seed give the same proposal.
        hull: the acquisition is on the energy above it (the ``stability`` target) when given.
        threads: torch threads while sampling (``gfn.threads``).
        placement: templates and settings the atoms are placed with (``aloop.space.structure.place``).
        substituted: candidates of ion substitution (``aloop.substitution.substitution_pool``).
    """
    target, best_f = objective(proxy, data, acquisition, hull)
    score = partial(acquisition_values, proxy, acquisition, target=target, best_f=best_f, hull=hull)  # proxy on CPU
    prototypes = _prototypes(placement)
    elements = tuple(env.space.elements)  # every sample's columns (CrystalEnv.to_batch)
    extra = CrystalBatch.from_crystals([s.crystal for s in substituted], elements) if substituted else None
    extra_scores = None if extra is None else score(extra)
    draws: list[_Draw] = []
    placed: dict[tuple, Structure | None] = {}
    for temperature in (1.0, *selection.fill_temperatures):  # each draw is scored once; the batch is chosen again
        drawn = sample(env, policy, selection.n_samples, temperature=temperature, seed=seed + len(draws),
                       progress=progress, threads=threads).to("cpu")
        draws.append(_Draw.of(drawn, score(drawn, prototypes=prototypes), env.space, temperature))
        samples, everything = CrystalBatch.concat([d.samples for d in draws]), torch.cat([d.scores for d in draws])
        valid = torch.cat([d.valid for d in draws])
        scores = everything[valid] if extra_scores is None else torch.cat([everything[valid], extra_scores])
        choice = _choose([c for d in draws for c in d.crystals], np.concatenate([d.forced for d in draws]),
                         substituted, scores, known, selection=selection, placement=placement, placed=placed)
        if len(choice.indices) >= selection.batch_size:
            break
    candidates = samples[valid] if extra is None else CrystalBatch.concat([samples[valid], extra])
    return Proposal(samples=samples, log_reward=to_log_reward(everything, acquisition), valid=valid,
                    acquisition=scores, prediction=proxy.predict(candidates, observation_noise=False),
                    chosen=tuple(choice.indices), structures=tuple(choice.structures), skipped=choice.skipped,
                    substituted=extra, temperatures=tuple(d.temperature for d in draws))


@dataclass(frozen=True)
class _Draw:
    """One draw of ``selection.n_samples``: its samples and acquisition, which are valid, and the valid ones as
    crystals with whether their sites force a higher group (computed once, however often the batch is chosen)."""

    samples: CrystalBatch
    scores: torch.Tensor
    valid: torch.Tensor
    crystals: list[Crystal]
    forced: np.ndarray
    temperature: float

    @classmethod
    def of(cls, samples: CrystalBatch, scores: torch.Tensor, space: CrystalSpace, temperature: float) -> _Draw:
        valid = valid_mask(samples, space)
        generated = samples[valid]
        return cls(samples, scores, valid, generated.to_crystals(), forced_supergroup(generated).numpy(), temperature)


def _choose(generated: list[Crystal], forced: np.ndarray, substituted: Sequence[SubstitutedStructure],
            scores: torch.Tensor, known: KnownMaterials, *, selection: SelectionSettings, placement: Placement,
            placed: dict[tuple, Structure | None]) -> Selection:
    """``select_diverse`` over the valid samples (``forced``: their sites force a higher group), then the substituted
    structures, on their acquisition ``scores``."""
    as_substituted = {id(s.crystal): s.structure for s in substituted}
    return select_diverse(generated + [s.crystal for s in substituted], scores.numpy(),
                          size=selection.batch_size, known=known,
                          to_structure=partial(_structure, substituted=as_substituted, placement=placement,
                                               placed=placed),
                          chemsys_penalty=selection.chemsys_penalty, space_group_penalty=selection.space_group_penalty,
                          forced=np.concatenate([forced, np.zeros(len(substituted), dtype=bool)]),
                          **_reserved(len(generated), len(substituted), selection))


def _reserved(samples: int, substituted: int, selection: SelectionSettings) -> dict:
    """``select_diverse``'s reserved places for the substituted candidates (``selection.substitution_share``)."""
    if selection.substitution_share is None or not substituted:
        return {}
    return {"reserved": np.arange(samples + substituted) >= samples,
            "reserved_size": round(selection.substitution_share * selection.batch_size)}


def origin(structure: Structure) -> str:
    """Where a proposed structure's atoms came from, for the reviewer: ``'template <id>'`` (a known or relaxed
    structure's coordinates on the sampled sites), ``'substitution of <id>'`` (a Materials Project structure with
    ions substituted) or ``'sampled sites'`` (pyxtal's or ``spread``'s coordinates on the generator's sites)."""
    if TEMPLATE_PROPERTY in structure.properties:
        return f"template {structure.properties[TEMPLATE_PROPERTY]}"
    if SOURCE_PROPERTY in structure.properties:
        return f"substitution of {structure.properties[SOURCE_PROPERTY]}"
    return "sampled sites"


def _structure(crystal: Crystal, *, substituted: dict[int, Structure], placement: Placement,
               placed: dict[tuple, Structure | None]) -> Structure | None:
    """A substituted crystal's own atoms; any other placed by ``placement``, once: ``placed`` keeps each crystal's
    atoms (by its hash, which seeds the placement, and its exact lattice) for the fill's next selection, which would
    otherwise place them all again."""
    if id(crystal) in substituted:
        return substituted[id(crystal)]
    key = (crystal.canonical_hash, tuple(crystal.lattice))
    if key not in placed:
        placed[key] = placed_structure(crystal, placement=placement)
    return placed[key]
