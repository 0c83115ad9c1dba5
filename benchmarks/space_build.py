"""Build time and size of the crystal space for the default config and each restriction preset.

Each cold build runs in a fresh interpreter with an empty cache folder (nothing memoised,
group tables read from pyxtal); the cached build then loads what the cold one saved.
Also times the batched checks on 10,000 crystals drawn from the default tables.

    python -m benchmarks.space_build

Prints the tables and writes ``benchmarks/results/space_build.md``.
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

from benchmarks._markdown import table, write_report

CONFIGS = ("default", "fe-o", "li-mn-o", "cubic", "lattice-range")


def _build(name: str, cache_dir: str) -> dict[str, float | int]:
    """Cold build, then cached load, in this (fresh) process."""
    os.environ["ALOOP_CACHE_DIR"] = cache_dir
    from aloop.config import CONFIG_DIR, load_config
    from aloop.space.space import CrystalSpace

    settings = load_config(CONFIG_DIR / f"{name}.yaml").space
    start = time.perf_counter()
    space = CrystalSpace.from_settings(settings)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    CrystalSpace.from_settings(settings)
    cached = time.perf_counter() - start
    return {"config": name, "elements": len(space.elements), "space_groups": len(space.space_groups),
            "compositions_M": len(space.compositions), "compatible_pairs": int(space.compatible.sum()),
            "cold_build_s": round(cold, 2), "cached_load_s": round(cached, 3)}


def _checks(cache_dir: str, n: int = 10_000) -> dict[str, float]:
    """Time ``valid_mask``, ``charge_neutral`` and ``diversity_report`` on n crystals of the default space
    (after one untimed ``valid_mask`` call that also builds the space's lookup keys)."""
    os.environ["ALOOP_CACHE_DIR"] = cache_dir
    from aloop.config import load_config
    from aloop.space.composition import charge_neutral
    from aloop.space.crystal import CrystalBatch
    from aloop.space.diversity import diversity_report
    from aloop.space.lattice import expand_lattice
    from aloop.space.space import CrystalSpace
    from aloop.space.validity import valid_mask

    space = CrystalSpace.from_settings(load_config().space)
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(len(space.space_groups), (n,), generator=g)
    compositions = space.compatible[rows].float().multinomial(1, generator=g).squeeze(1)
    free = torch.tensor([[5.0, 6.0, 7.0, 80.0, 95.0, 100.0]], dtype=torch.float64).expand(n, 6)
    batch = CrystalBatch(space.elements, space.space_groups[rows], space.compositions[compositions],
                         expand_lattice(space.lattice_system[rows], free))
    timings: dict[str, float] = {"valid_fraction": float(valid_mask(batch, space).float().mean())}
    for label, call in (("valid_mask_10k_s", lambda: valid_mask(batch, space)),
                        ("charge_neutral_10k_s", lambda: charge_neutral(batch.counts, space.elements, space.settings.charge_rule)),
                        ("diversity_report_10k_s", lambda: diversity_report(batch, space))):
        start = time.perf_counter()
        call()
        timings[label] = round(time.perf_counter() - start, 3)
    return timings


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for name in CONFIGS:
            with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
                rows.append(pool.submit(_build, name, str(Path(root) / name)).result())
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            checks = pool.submit(_checks, str(Path(root) / "default")).result()
    write_report("space_build", __doc__.split("\n\n")[1].replace("\n", " ")
                 + f" {torch.get_num_threads()} torch threads.",
                 table(rows), table([{"check": key, "value": value} for key, value in checks.items()]))


if __name__ == "__main__":
    main()
