"""CHGNet oracle on this machine: seconds per relaxation and failure rate by cell size.

Candidates of 4, 8, 16 and 32 atoms are drawn uniformly from the ``CrystalSpace`` tables
of the default elements (up to 32 atoms, 16 per element): a composition with that many
atoms, then a space group that hosts it, then lattice parameters uniform within the
system's free parameters, scaled to a volume of 10-25 A^3 per atom (uniform lengths alone
give mostly empty or overfull cells). Each is placed by pyxtal and relaxed with the
default CHGNet settings (FIRE, fmax 0.1 eV/A, at most 500 steps, one torch thread).

    python -m benchmarks.oracle_chgnet [--per-size 100] [--sizes 4 8 16 32]

Prints a table and writes ``benchmarks/results/oracle_chgnet.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from aloop.config import SpaceSettings
from aloop.oracle import Failed, OracleInput
from aloop.space import Crystal, CrystalSpace, StructureError, to_structure
from aloop.space.lattice import cell_volume, expand_lattice
from oracles.chgnet import CHGNetSettings, relax_candidate

RESULTS = Path(__file__).resolve().parent / "results" / "oracle_chgnet.json"
SPACE = SpaceSettings(max_atoms=32, max_atoms_per_element=16)
VOLUME_PER_ATOM = (10.0, 25.0)


def sample_crystals(space: CrystalSpace, n_atoms: int, count: int, *, seed: int) -> list[Crystal]:
    """``count`` crystals with ``n_atoms`` atoms in the conventional cell, drawn from the tables."""
    rng = np.random.default_rng(seed)
    rows = torch.nonzero(space.compositions.sum(dim=1) == n_atoms).flatten().numpy()
    compositions = rng.choice(rows, size=count)
    groups = np.array([rng.choice(torch.nonzero(space.compatible[:, m]).flatten().numpy()) for m in compositions])
    lengths = rng.uniform(*space.length_range, size=(count, 3))
    angles = rng.uniform(max(space.angle_range[0], 60.0), min(space.angle_range[1], 120.0), size=(count, 3))
    lattice = expand_lattice(space.lattice_system[groups], torch.tensor(np.hstack([lengths, angles])))
    scale = (rng.uniform(*VOLUME_PER_ATOM, size=count) * n_atoms / cell_volume(lattice).numpy()) ** (1 / 3)
    lattice[:, :3] *= torch.tensor(scale)[:, None]
    counts = space.compositions[compositions].tolist()
    return [Crystal(int(space.space_groups[g]), _composition(space.elements, c), tuple(map(float, lat)))
            for g, c, lat in zip(groups, counts, lattice.tolist(), strict=True)]


def _composition(elements: tuple[str, ...], counts: list[int]):
    from pymatgen.core import Composition

    return Composition({el: n for el, n in zip(elements, counts, strict=True) if n})


def run(sizes: list[int], per_size: int, settings: CHGNetSettings) -> list[dict]:
    space = CrystalSpace.from_settings(SPACE)
    rows = []
    for n_atoms in sizes:
        reasons: Counter[str] = Counter()
        seconds, steps = [], []
        for i, crystal in enumerate(tqdm(sample_crystals(space, n_atoms, per_size, seed=n_atoms),
                                         desc=f"{n_atoms} atoms", unit="relaxation")):
            try:
                structure = to_structure(crystal, seed=i)
            except StructureError:
                reasons["atoms cannot be placed"] += 1
                continue
            start = time.perf_counter()
            result = relax_candidate(OracleInput(str(i), crystal, structure), settings=settings)
            seconds.append(time.perf_counter() - start)
            steps.append(result.metadata.get("steps", 0))
            if isinstance(result, Failed):
                reasons[result.reason.split(":")[0].split(" after")[0].split(" (")[0]] += 1
        failed = sum(reasons.values())
        rows.append({"atoms": n_atoms, "candidates": per_size, "relaxed": len(seconds),
                     "median_s": float(np.median(seconds)), "mean_s": float(np.mean(seconds)),
                     "median_steps": float(np.median(steps)), "failure_rate": failed / per_size,
                     "failures": dict(reasons)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-size", type=int, default=100)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--timeout-s", type=float, default=600.0, help="wall-clock limit of one relaxation")
    args = parser.parse_args()
    settings = CHGNetSettings(timeout_s=args.timeout_s)
    load_before = os.getloadavg()[1]
    rows: list[dict] = []
    for n_atoms in args.sizes:  # the results file is rewritten after each size
        rows += run([n_atoms], args.per_size, settings)
        machine = {"cpu": platform.machine(), "cores": os.cpu_count(), "torch_threads": settings.torch_threads,
                   "load_average_5min": [load_before, os.getloadavg()[1]]}
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({"command": "python -m benchmarks.oracle_chgnet " + " ".join(sys.argv[1:]),
                                       "machine": machine, "settings": settings.model_dump(), "rows": rows},
                                      indent=2))
    print(f"{'atoms':>5} {'n':>4} {'median s':>9} {'mean s':>7} {'steps':>6} {'failed':>7}  reasons")
    for r in rows:
        print(f"{r['atoms']:>5} {r['candidates']:>4} {r['median_s']:>9.2f} {r['mean_s']:>7.2f} "
              f"{r['median_steps']:>6.0f} {r['failure_rate']:>7.0%}  {r['failures']}")
    print(f"5-minute load average before/after: {machine['load_average_5min']} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
