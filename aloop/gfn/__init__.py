"""Crystal-GFN: batched environment, policy, trajectory balance, replay, training and sampling.

Example:
    >>> env = CrystalEnv.from_space(space, settings)  # doctest: +SKIP
    >>> policy = build_policy(env, settings)  # doctest: +SKIP
    >>> history = train(env, policy, log_reward_fn, steps=settings.train_steps, settings=settings)  # doctest: +SKIP
    >>> crystals = sample(env, policy, 10_000, seed=0)  # doctest: +SKIP
"""

from aloop.gfn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from aloop.gfn.env import CrystalEnv
from aloop.gfn.policy import CrystalPolicy
from aloop.gfn.trainer import (
    LogRewardFn,
    TrainingHistory,
    build_policy,
    estimated_log_reward,
    sample,
    train,
)

__all__ = [
    "CheckpointError",
    "CrystalEnv",
    "CrystalPolicy",
    "LogRewardFn",
    "TrainingHistory",
    "build_policy",
    "estimated_log_reward",
    "load_checkpoint",
    "sample",
    "save_checkpoint",
    "train",
]
