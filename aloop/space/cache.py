"""On-disk cache for tables that are slow to derive (space-group data, built spaces).

Files live in ``$ALOOP_CACHE_DIR`` (default ``~/.cache/aloop``) and carry the pyxtal
and pymatgen versions in their name, so an upgrade of either recomputes them. Writes
are atomic (temporary file + rename): parallel processes never read half a file.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from aloop.files import write_atomic


def cache_root() -> Path:
    """``$ALOOP_CACHE_DIR``, or ``~/.cache/aloop`` when unset."""
    return Path(os.environ.get("ALOOP_CACHE_DIR") or Path.home() / ".cache" / "aloop")


def cache_path(name: str, suffix: str) -> Path:
    """Path of cache file ``name``, e.g. ``space-groups-pyxtal1.1.5-pymatgen2026.10.24.json``."""
    return cache_root() / f"{name}-pyxtal{version('pyxtal')}-pymatgen{version('pymatgen')}{suffix}"


def load_cached(name: str) -> Any | None:
    """The cached JSON value, or ``None`` when absent or unreadable (it is then recomputed)."""
    try:
        return json.loads(cache_path(name, ".json").read_text())
    except (OSError, ValueError):
        return None


def save_cached(name: str, value: Any) -> None:
    """Write ``value`` as JSON atomically."""
    _save(cache_path(name, ".json"), json.dumps(value))


def load_arrays(name: str) -> dict[str, np.ndarray] | None:
    """The cached arrays, or ``None`` when absent or unreadable."""
    try:
        with np.load(cache_path(name, ".npz")) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError):
        return None


def save_arrays(name: str, **arrays: np.ndarray) -> None:
    """Write arrays as one ``.npz`` atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    _save(cache_path(name, ".npz"), buffer.getvalue())


def _save(path: Path, data: bytes | str) -> None:
    """Write atomically; an unwritable cache only warns (work goes on)."""
    try:
        write_atomic(path, data)
    except OSError as err:
        warnings.warn(f"cannot write cache file {path}: {err}", stacklevel=3)
