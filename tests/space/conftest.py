"""Shared fixtures: spaces built once per session, in a fresh cache folder so the build runs."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from functools import cache

import pytest

from aloop.config import CONFIG_DIR, load_config
from aloop.space.space import CrystalSpace

PRESETS = ("fe-o", "li-mn-o", "cubic", "lattice-range")


@pytest.fixture(scope="session", autouse=True)
def fresh_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    previous = os.environ.get("ALOOP_CACHE_DIR")
    os.environ["ALOOP_CACHE_DIR"] = str(tmp_path_factory.mktemp("aloop-cache"))
    yield
    if previous is None:
        os.environ.pop("ALOOP_CACHE_DIR")
    else:
        os.environ["ALOOP_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def preset() -> Callable[[str], CrystalSpace]:
    """Builds the space of ``configs/<name>.yaml`` once per session."""
    return cache(lambda name: CrystalSpace.from_settings(load_config(CONFIG_DIR / f"{name}.yaml").space))


@pytest.fixture(scope="session")
def spaces(preset: Callable[[str], CrystalSpace]) -> dict[str, CrystalSpace]:
    """The default space and every restriction preset, by config name."""
    return {name: preset(name) for name in ("default", *PRESETS)}


@pytest.fixture(scope="session")
def fe_o(preset: Callable[[str], CrystalSpace]) -> CrystalSpace:
    return preset("fe-o")
