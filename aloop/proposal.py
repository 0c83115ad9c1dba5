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
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from pymatgen.core import Structure

from aloop.acquisition import acquisition_values, best_observed, log_reward_fn, to_log_reward
from aloop.config import AcquisitionSettings, GFNSettings, SelectionSettings
from aloop.data import TrainingSet
from aloop.files import write_atomic
from aloop.gfn import CheckpointError, CrystalEnv, CrystalPolicy, LogRewardFn, TrainingHistory, build_policy
from aloop.gfn import load_checkpoint, sample, train
from aloop.proxy import Prediction, Proxy
from aloop.selection import KnownMaterials, select_diverse
from aloop.space import Crystal, CrystalBatch, Placement, placed_structure, valid_mask
from aloop.space.supergroup import forced_supergroup
from aloop.space.templates import Prototypes
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
    """One round's proposal: every sample with its reward, and the batch chosen among the valid ones.

    Attributes:
        samples: the ``N`` crystals drawn from the generator, valid or not.
        log_reward: ``(N,)`` their log rewards.
        valid: ``(N,)`` bool, which samples satisfy every constraint of the space.
        acquisition: ``(V,)`` acquisition value of each valid sample (higher is better).
        prediction: the proxy's latent prediction of each valid sample (reference source).
        chosen: indices into the valid samples of the batch, in the order chosen.
        structures: the atoms of each chosen crystal (``placed_structure``: a template or pyxtal, seeded
            by its hash), sent to the oracle.
        skipped: why high-acquisition samples were passed over (duplicate, forced_group, known, rediscovery,
            no_structure).
    """

    samples: CrystalBatch
    log_reward: torch.Tensor
    valid: torch.Tensor
    acquisition: torch.Tensor
    prediction: Prediction
    chosen: tuple[int, ...]
    structures: tuple[Structure, ...]
    skipped: dict[str, int]

    @property
    def valid_samples(self) -> CrystalBatch:
        return self.samples[self.valid]

    @property
    def batch(self) -> list[Crystal]:
        """The chosen crystals, in the order chosen."""
        return self.valid_samples[torch.tensor(self.chosen, dtype=torch.long)].to_crystals()

    def save(self, path: Path) -> None:
        """Write the proposal to one file (``torch.save`` of tensors, CIFs and counts), atomically."""
        buffer = io.BytesIO()
        torch.save({
            "elements": list(self.samples.elements), "space_group": self.samples.space_group,
            "counts": self.samples.counts, "lattice": self.samples.lattice, "sites": self.samples.sites,
            "log_reward": self.log_reward,
            "valid": self.valid, "acquisition": self.acquisition, "mean": self.prediction.mean,
            "std": self.prediction.std, "chosen": list(self.chosen),
            "cifs": [s.to(fmt="cif") for s in self.structures], "skipped": dict(self.skipped)}, buffer)
        write_atomic(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> Proposal:
        data = torch.load(path, weights_only=True)
        samples = CrystalBatch(tuple(data["elements"]), data["space_group"], data["counts"], data["lattice"],
                               data.get("sites"))  # proposals saved before sites have none
        return cls(samples, data["log_reward"], data["valid"], data["acquisition"],
                   Prediction(data["mean"], data["std"]), tuple(data["chosen"]),
                   tuple(Structure.from_str(cif, fmt="cif") for cif in data["cifs"]), dict(data["skipped"]))


def generator_reward(proxy: Proxy, data: TrainingSet, settings: AcquisitionSettings,
                     hull: FormationHull | None = None, placement: Placement = Placement()) -> LogRewardFn:
    """The GFN's log reward: the acquisition on ``proxy``, improving on the best label of ``data``;
    with ``hull``, on the energy above it (the ``stability`` target); crystals without a template in
    ``placement``'s pool lose ``settings.untemplated_penalty``."""
    target, best_f = _objective(proxy, data, settings, hull)
    return log_reward_fn(proxy, settings, target=target, best_f=best_f, hull=hull,
                         prototypes=_prototypes(placement))


def _prototypes(placement: Placement) -> Prototypes | None:
    """The keys of the placement's templates (``None`` without a template: nothing is penalised, since every
    crystal would lose the same and most would fall to the reward's floor)."""
    return placement.pool.prototypes() if placement.pool is not None and len(placement.pool) else None


def _objective(proxy: Proxy, data: TrainingSet, settings: AcquisitionSettings,
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
                  progress: bool = False) -> Proposal:
    """Sample ``selection.n_samples`` crystals and choose a batch of up to ``selection.batch_size``.

    The batch is greedy in acquisition (less ``acquisition.untemplated_penalty`` for crystals without a
    template in ``placement``'s pool, as in ``generator_reward``), with penalties for repeated chemical systems and
    space groups; a sample whose atoms cannot be placed, one already in the batch (same
    cell formula, group and sites), one whose sites force a higher group (``forced_supergroup``) or one
    ``known`` is passed over.

    Args:
        data: the proxy's training set (its best label is the acquisition's ``best_f``).
        known: materials the batch must not repeat (training data, earlier candidates).
        seed: seeds the draw; the same inputs and seed give the same proposal.
        hull: the acquisition is on the energy above it (the ``stability`` target) when given.
        threads: torch threads while sampling (``gfn.threads``).
        placement: templates and settings the atoms are placed with (``aloop.space.structure.place``).
    """
    samples = sample(env, policy, selection.n_samples, seed=seed, progress=progress, threads=threads).to("cpu")
    target, best_f = _objective(proxy, data, acquisition, hull)
    everything = acquisition_values(proxy, acquisition, samples, target=target, best_f=best_f,  # the proxy runs on CPU
                                    hull=hull, prototypes=_prototypes(placement))
    valid = valid_mask(samples, env.space)
    candidates, scores = samples[valid], everything[valid]
    choice = select_diverse(candidates.to_crystals(), scores.numpy(), size=selection.batch_size, known=known,
                            to_structure=partial(placed_structure, placement=placement), chemsys_penalty=selection.chemsys_penalty,
                            space_group_penalty=selection.space_group_penalty,
                            forced=forced_supergroup(candidates).numpy())
    return Proposal(samples=samples, log_reward=to_log_reward(everything, acquisition), valid=valid,
                    acquisition=scores, prediction=proxy.predict(candidates, observation_noise=False),
                    chosen=tuple(choice.indices), structures=tuple(choice.structures), skipped=choice.skipped)
