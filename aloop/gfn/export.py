"""Sampling from a config (and optionally a checkpoint) into a table, as ``aloop sample`` does.

Example:
    >>> table = sample_table(load_config("configs/fe-o.yaml"), n=100, seed=0)  # doctest: +SKIP
    >>> list(table.columns)  # doctest: +SKIP
    ['formula', 'space_group', 'a', 'b', 'c', 'alpha', 'beta', 'gamma']
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from aloop.config import Config
from aloop.gfn.checkpoint import load_checkpoint
from aloop.gfn.env import CrystalEnv
from aloop.gfn.trainer import build_policy, estimated_log_reward, resolve_device, sample
from aloop.space.crystal import LATTICE_KEYS, CrystalBatch
from aloop.space.space import CrystalSpace

COLUMNS = ("formula", "space_group", *LATTICE_KEYS)
"""Columns of a sample table; ``log_reward`` follows when a reward is known."""


def crystal_table(batch: CrystalBatch, *, log_reward: torch.Tensor | None = None) -> pd.DataFrame:
    """One row per crystal: full cell formula (``Fe4 O6``), space group, lattice, optional log reward."""
    crystals = batch.to("cpu").to_crystals()
    table = pd.DataFrame({
        "formula": [crystal.formula for crystal in crystals],
        "space_group": batch.space_group.cpu().numpy(),
        **{key: batch.lattice[:, i].cpu().numpy() for i, key in enumerate(LATTICE_KEYS)},
    }, columns=list(COLUMNS))
    if log_reward is not None:
        table["log_reward"] = log_reward.detach().cpu().numpy()
    return table


def sample_table(config: Config, *, n: int, checkpoint: str | Path | None = None, temperature: float = 1.0,
                 seed: int | None = None, progress: bool = False) -> pd.DataFrame:
    """Sample ``n`` crystals of ``config``'s space from a checkpoint, or from the untrained generator.

    The untrained generator is uniform over the allowed action at every step. With a
    checkpoint the table gets a ``log_reward`` column: the generator's own estimate
    ``log Z + log P_F`` (``estimated_log_reward``), equal to the training log reward
    where trajectory balance is met.
    """
    device = resolve_device(config.gfn.device)
    env = CrystalEnv.from_space(CrystalSpace.from_settings(config.space), config.gfn).to(device)
    if checkpoint is None:
        policy = build_policy(env, config.gfn)
    else:
        policy = load_checkpoint(checkpoint, env, settings=config.gfn)
    batch = sample(env, policy, n, temperature=temperature, seed=seed, progress=progress,
                   threads=config.gfn.threads)
    log_reward = estimated_log_reward(env, policy, batch) if checkpoint is not None else None
    return crystal_table(batch, log_reward=log_reward)
