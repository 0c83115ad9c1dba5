"""Sampling from a config (and optionally a checkpoint) into a table, as ``aloop sample`` does.

Example:
    >>> table = sample_table(load_config("configs/fe-o.yaml"), n=100, seed=0)  # doctest: +SKIP
    >>> list(table.columns)  # doctest: +SKIP
    ['formula', 'space_group', 'a', 'b', 'c', 'alpha', 'beta', 'gamma', 'wyckoff']
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from aloop.config import Config
from aloop.data.table import crystal_table
from aloop.gfn.checkpoint import load_checkpoint
from aloop.gfn.env import CrystalEnv
from aloop.gfn.trainer import build_policy, estimated_log_reward, sample
from aloop.space.space import CrystalSpace


def sample_table(config: Config, *, n: int, checkpoint: str | Path | None = None, temperature: float = 1.0,
                 seed: int | None = None, progress: bool = False) -> pd.DataFrame:
    """Sample ``n`` crystals of ``config``'s space from a checkpoint, or from the untrained generator.

    Columns: ``aloop.data.table.CRYSTAL_TABLE_COLUMNS`` (the last, ``wyckoff``, holds the sites as
    text, e.g. ``Na:4a Cl:4b``, which ``aloop labels import`` reads back). The untrained generator
    is uniform over the allowed action at every step but the Wyckoff letters, which follow the
    prior. With a checkpoint the table gets a ``log_reward`` column: the generator's own estimate
    ``log Z + log P_F`` (``estimated_log_reward``), equal to the training log reward where
    trajectory balance is met. Sampling runs on ``gfn.device``; the table is built on CPU.
    """
    env = CrystalEnv.from_space(CrystalSpace.from_settings(config.space), config.gfn, device=config.gfn.device)
    if checkpoint is None:
        policy = build_policy(env, config.gfn)
    else:
        policy = load_checkpoint(checkpoint, env, settings=config.gfn)
    batch = sample(env, policy, n, temperature=temperature, seed=seed, progress=progress,
                   threads=config.gfn.threads)
    table = crystal_table(batch.to("cpu").to_crystals())
    if checkpoint is not None:
        table["log_reward"] = estimated_log_reward(env, policy, batch).detach().cpu().numpy()
    return table
