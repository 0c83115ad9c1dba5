"""Training and sampling of the Crystal-GFN.

``train`` fits a policy by trajectory balance against a log-reward function on crystal
batches; ``sample`` draws crystals from it. Both run on ``settings.device`` ("auto":
CUDA when present, else CPU).

Example:
    >>> env = CrystalEnv.from_space(space, min_volume_per_atom=settings.min_volume_per_atom)  # doctest: +SKIP
    >>> policy = build_policy(env, settings)  # doctest: +SKIP
    >>> history = train(env, policy, log_reward_fn, steps=500, settings=settings)  # doctest: +SKIP
    >>> crystals = sample(env, policy, 10_000, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from aloop.config import GFNSettings
from aloop.gfn.env import CrystalEnv
from aloop.gfn.losses import trajectory_balance_loss
from aloop.gfn.policy import CrystalPolicy
from aloop.gfn.replay import ReplayBuffer
from aloop.gfn.sampler import log_prob, rollout
from aloop.gfn.states import Trajectories
from aloop.hardware import torch_threads
from aloop.space.crystal import CrystalBatch

LogRewardFn = Callable[[CrystalBatch], torch.Tensor]
"""Maps a batch of ``N`` crystals to ``(N,)`` finite log rewards."""
StepCallback = Callable[[int, float], bool]
"""Called after each gradient step with the number of steps done and the step's loss; True stops training."""
SAMPLE_CHUNK = 10_000
"""Crystals drawn per batched rollout in ``sample``."""
MAX_GRAD_NORM = 10.0


@dataclass(frozen=True)
class TrainingHistory:
    """Per-step curves of one ``train`` call.

    Attributes:
        loss: trajectory-balance loss.
        log_z: learned log partition function.
        mean_log_reward: mean log reward of the step's fresh (not replayed) crystals.
        seconds: wall time of the whole call.
    """

    loss: list[float]
    log_z: list[float]
    mean_log_reward: list[float]
    seconds: float


def build_policy(env: CrystalEnv, settings: GFNSettings) -> CrystalPolicy:
    """An untrained policy sized for ``env``, on the environment's device: uniform over the allowed
    actions except for the Wyckoff letters, which follow the prior (``gfn.wyckoff_prior_weight``)."""
    return CrystalPolicy(
        n_groups=env.n_groups, n_elements=env.n_elements, max_count=env.trie.max_count,
        max_atoms=env.max_atoms, letter_prior=settings.wyckoff_prior_weight * env.letter_prior,
        hidden_dim=settings.hidden_dim, n_layers=settings.n_layers,
        n_components=settings.n_beta_components,
    ).to(env.device)


def train(env: CrystalEnv, policy: CrystalPolicy, log_reward_fn: LogRewardFn, *, steps: int,
          settings: GFNSettings, progress: bool = True, callback: StepCallback | None = None) -> TrainingHistory:
    """Fit ``policy`` (in place) so that it samples crystals with probability proportional to the reward.

    Each step draws ``settings.batch_size`` trajectories with exploration (``epsilon``,
    ``temperature``), of which a ``replay_fraction`` share is replaced by crystals from a
    buffer of the ``replay_size`` best distinct ones seen so far, and takes one Adam step
    on the trajectory-balance loss (learning rate ``lr``, ``lr_logz`` for log Z; with
    ``lr_schedule: cosine`` both decay over the call's steps to ``lr_final_fraction`` of their value).

    Args:
        env: the environment; must be on the policy's device.
        policy: the policy to train, e.g. from ``build_policy`` or a checkpoint.
        log_reward_fn: crystals (on ``env.device``) -> ``(N,)`` log rewards.
        steps: number of gradient steps.
        settings: the ``gfn`` config section.
        progress: show a progress bar.
        callback: called after every step, e.g. to evaluate the policy on the way; it
            stops training early by returning True. Its time counts in ``seconds``.

    Raises:
        ValueError: the reward function returned a wrong shape or a non-finite value.
    """
    with torch_threads(settings.threads):
        return _train(env, policy, log_reward_fn, steps=steps, settings=settings, progress=progress,
                      callback=callback)


def _train(env: CrystalEnv, policy: CrystalPolicy, log_reward_fn: LogRewardFn, *, steps: int,
           settings: GFNSettings, progress: bool, callback: StepCallback | None) -> TrainingHistory:
    """The training loop of ``train``, under its thread setting."""
    start = time.perf_counter()
    optimizer = torch.optim.Adam([
        {"params": [p for name, p in policy.named_parameters() if name != "log_z"], "lr": settings.lr},
        {"params": [policy.log_z], "lr": settings.lr_logz},
    ])
    scheduler = _scheduler(optimizer, steps, settings)
    buffer = ReplayBuffer.empty(capacity=settings.replay_size)
    n_replay = round(settings.batch_size * settings.replay_fraction) if settings.replay_size else 0
    losses, log_zs, rewards = [], [], []
    for step in tqdm(range(steps), desc="training Crystal-GFN", disable=not progress):
        replayed = n_replay if len(buffer) else 0
        fresh = rollout(env, policy, settings.batch_size - replayed, epsilon=settings.epsilon,
                        temperature=settings.temperature)
        fresh_log_reward = _checked_log_reward(log_reward_fn, env, fresh)
        trajectories, log_reward = fresh, fresh_log_reward
        if replayed:
            old, old_log_reward = buffer.sample(replayed)
            trajectories = Trajectories.cat([fresh, old])
            log_reward = torch.cat([fresh_log_reward, old_log_reward])
        buffer = buffer.add(fresh, fresh_log_reward)
        loss = trajectory_balance_loss(policy.log_z, log_prob(env, policy, trajectories), log_reward)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(float(loss.detach()))
        log_zs.append(float(policy.log_z.detach()))
        rewards.append(float(fresh_log_reward.mean()))
        if callback is not None and callback(step + 1, losses[-1]):
            break
    return TrainingHistory(losses, log_zs, rewards, time.perf_counter() - start)


def _scheduler(optimizer: torch.optim.Optimizer, steps: int, settings: GFNSettings
               ) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule of one ``train`` call (None: constant)."""
    if settings.lr_schedule == "constant":
        return None
    floor = settings.lr_final_fraction

    def factor(step: int) -> float:
        progress = min(step / max(steps - 1, 1), 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _checked_log_reward(log_reward_fn: LogRewardFn, env: CrystalEnv, trajectories: Trajectories) -> torch.Tensor:
    """Call the reward on the crystals and check it: ``(N,)`` finite float32 on the env's device."""
    value = torch.as_tensor(log_reward_fn(env.to_batch(trajectories))).to(env.device, torch.float32)
    if value.shape != (len(trajectories),):
        raise ValueError(f"log_reward_fn returned shape {tuple(value.shape)}, expected ({len(trajectories)},)")
    bad = ~torch.isfinite(value)
    if bad.any():
        raise ValueError(f"log_reward_fn returned {int(bad.sum())} non-finite log rewards (first: {value[bad][0]}); "
                         "clip log rewards to a finite floor")
    return value.detach()


@torch.no_grad()
def sample(env: CrystalEnv, policy: CrystalPolicy, n: int, *, temperature: float = 1.0, seed: int | None = None,
           progress: bool = False, threads: int | None = None) -> CrystalBatch:
    """Draw ``n`` crystals from the policy (no exploration) on the env's device.

    Args:
        temperature: divides the discrete logits and the Beta-mixture weights; above 1
            flattens, below 1 sharpens.
        seed: makes the draw reproducible without touching the global random state.
        progress: show a progress bar over chunks of ``SAMPLE_CHUNK``.
        threads: torch threads while sampling (``settings.threads``; None leaves torch's).
    """
    if n <= 0:
        raise ValueError(f"sample size n={n} must be positive")
    devices = [env.device] if env.device.type == "cuda" else []
    with torch_threads(threads), torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        sizes = [min(SAMPLE_CHUNK, n - start) for start in range(0, n, SAMPLE_CHUNK)]
        parts = [rollout(env, policy, size, temperature=temperature)
                 for size in tqdm(sizes, desc="sampling crystals", disable=not progress)]
    return env.to_batch(Trajectories.cat(parts))


@torch.no_grad()
def estimated_log_reward(env: CrystalEnv, policy: CrystalPolicy, batch: CrystalBatch) -> torch.Tensor:
    """``log Z + log P_F`` of each crystal ``(N,)``: its log reward as the trained policy models it.

    Equal to the true log reward where trajectory balance holds (each crystal has one
    trajectory); ``-inf`` for crystals the environment cannot build.
    """
    trajectories, inside = env.from_batch(batch)
    value = policy.log_z + log_prob(env, policy, trajectories)
    return torch.where(inside, value, float("-inf"))
