"""On-disk JSON cache for tables that are slow to derive from pyxtal (Wyckoff data).

Files live in ``$ALOOP_CACHE_DIR`` (default ``~/.cache/aloop``) and carry the pyxtal
version in their name, so a pyxtal upgrade recomputes them. Writes are atomic
(temporary file + rename), so parallel processes never read half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any


def cache_path(name: str) -> Path:
    """Path of cache file ``name`` tagged with the pyxtal version, e.g. ``wyckoff-pyxtal1.1.5.json``."""
    root = Path(os.environ.get("ALOOP_CACHE_DIR") or Path.home() / ".cache" / "aloop")
    return root / f"{name}-pyxtal{version('pyxtal')}.json"


def load_cached(name: str) -> Any | None:
    """The cached JSON value, or ``None`` when absent or unreadable (it is then recomputed)."""
    try:
        return json.loads(cache_path(name).read_text())
    except (OSError, ValueError):
        return None


def save_cached(name: str, value: Any) -> None:
    """Write ``value`` as JSON atomically; an unwritable cache folder only warns (work goes on)."""
    path = cache_path(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
            json.dump(value, tmp)
        os.replace(tmp.name, path)
    except OSError as err:
        warnings.warn(f"cannot write cache file {path}: {err}", stacklevel=2)
