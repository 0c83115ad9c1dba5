"""Checkpoints of a trained Crystal-GFN for warm starts and later sampling.

A checkpoint holds the policy weights (log Z included), the ``gfn`` settings it was
trained with and the fingerprint of the environment (elements, groups, compositions,
compatibility, lattice ranges, volume bound). Loading into a different environment, or
with a different network shape, raises ``CheckpointError`` saying what differs.

Example:
    >>> save_checkpoint("gfn.pt", env, policy, settings)  # doctest: +SKIP
    >>> policy = load_checkpoint("gfn.pt", env, settings=settings)  # doctest: +SKIP
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from aloop.config import GFNSettings
from aloop.gfn.env import CrystalEnv
from aloop.gfn.policy import CrystalPolicy
from aloop.gfn.trainer import build_policy

FORMAT = 4
"""4: one-hot count and site codes in the policy (3: the Wyckoff stage; 2: Beta concentrations exp(raw output), no sites; 1: a scaled softplus)."""
ARCHITECTURE_KEYS = ("hidden_dim", "n_layers", "n_beta_components")
"""Settings that fix the network's shape: they must match to load the weights."""


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded here; the message says which file and what differs."""


def save_checkpoint(path: str | Path, env: CrystalEnv, policy: CrystalPolicy, settings: GFNSettings) -> Path:
    """Write policy weights, settings and the environment's fingerprint to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "format": FORMAT,
        "policy": {name: tensor.detach().cpu() for name, tensor in policy.state_dict().items()},
        "settings": settings.model_dump(mode="json"),
        "fingerprint": env.fingerprint(),
        "space": env.describe(),
    }, path)
    return path


def load_checkpoint(path: str | Path, env: CrystalEnv, *, settings: GFNSettings) -> CrystalPolicy:
    """A policy with the checkpoint's weights, on the environment's device.

    Raises:
        CheckpointError: unreadable file, other format, another environment, or
            ``settings`` with another network shape than the checkpoint's.
    """
    path = Path(path)
    try:
        data = torch.load(path, map_location=env.device, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"{path}: cannot read Crystal-GFN checkpoint ({err})") from err
    if not isinstance(data, dict) or "format" not in data:
        raise CheckpointError(f"{path}: not a Crystal-GFN checkpoint")
    if data["format"] != FORMAT:
        why = "the generator has since gained the Wyckoff stage" if data["format"] < FORMAT else "a newer aloop wrote it"
        raise CheckpointError(f"{path}: Crystal-GFN checkpoint of format {data['format']}, this aloop reads format "
                              f"{FORMAT} ({why}); train afresh (a round without a checkpoint does)")
    if data["fingerprint"] != env.fingerprint():
        raise CheckpointError(
            f"{path}: trained on another crystal space (fingerprint {data['fingerprint']}: {data['space']}); "
            f"this one is {env.fingerprint()}: {env.describe()}. Use the same space config or train afresh.")
    stored = data["settings"]
    differ = [f"gfn.{key}={getattr(settings, key)} (checkpoint: {stored[key]})"
              for key in ARCHITECTURE_KEYS if stored[key] != getattr(settings, key)]
    if differ:
        raise CheckpointError(f"{path}: network shape differs: {', '.join(differ)}")
    policy = build_policy(env, settings)
    policy.load_state_dict(data["policy"])
    return policy
