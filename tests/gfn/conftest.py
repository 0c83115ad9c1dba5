"""Shared fixtures: crystal spaces and environments built once per session."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import pytest

from aloop.config import CONFIG_DIR, GFNSettings, load_config
from aloop.gfn import CrystalEnv
from aloop.space.space import CrystalSpace

PRESETS = ("default", "fe-o", "li-mn-o", "cubic", "lattice-range")
SMALL = GFNSettings(hidden_dim=32, n_layers=2, n_beta_components=2, batch_size=64, replay_size=64)
"""A small network: fast tests, same code paths."""
TINY_SPACE = ["space.elements=[Na, F]", "space.max_atoms_per_element=4", "space.space_groups=[221, 225]"]
"""Pm-3m hosts NaF, Na3F3, Na4F4; Fm-3m only Na4F4: probabilities computable by hand (F takes -1 only
under every charge rule; Cl's positive states would let Na1Cl3 in)."""
SMALL_SPACE = ["space.elements=[Fe, O]", "space.max_atoms_per_element=4", "space.lattice_systems=[cubic]",
               "space.point_symmetries=[centrosymmetric]"]
"""Small enough to enumerate every discrete trajectory."""


@pytest.fixture(scope="session")
def env_for() -> Callable[..., CrystalEnv]:
    """``env_for(name)`` for ``configs/<name>.yaml``, or ``env_for(overrides=[...])`` on the default config."""

    @cache
    def build(name: str = "default", overrides: tuple[str, ...] = ()) -> CrystalEnv:
        config = load_config(CONFIG_DIR / f"{name}.yaml", list(overrides))
        return CrystalEnv.from_space(CrystalSpace.from_settings(config.space), config.gfn)

    return lambda name="default", overrides=(): build(name, tuple(overrides))


@pytest.fixture(scope="session")
def small_env(env_for) -> CrystalEnv:
    return env_for(overrides=SMALL_SPACE)


@pytest.fixture(scope="session")
def tiny_env(env_for) -> CrystalEnv:
    return env_for(overrides=TINY_SPACE)
