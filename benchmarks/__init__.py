"""Benchmarks: plain scripts, one per measured figure, run as ``python -m benchmarks.<name>``.

Each prints a table and writes its results under ``benchmarks/results/``.
``python -m benchmarks`` (``make bench``) runs them all; modules whose name starts
with ``_`` are helpers, not benchmarks.
"""

import os
from pathlib import Path

from aloop.space.cache import cache_root

SHARED_DATA = Path(os.environ.get("ALOOP_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
"""The shared Materials Project data (``<repo>/../shared/data``), never copied into the repository."""
CACHE_ROOT = cache_root()
"""Where benchmarks keep costly intermediate results (relaxations, fitted proxies) between runs."""
