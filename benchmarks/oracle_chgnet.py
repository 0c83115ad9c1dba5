"""CHGNet oracle on this machine: seconds per relaxation and failure rate by cell size.

Candidates of 4, 8, 16 and 32 atoms are drawn uniformly from the ``CrystalSpace`` tables
of the default elements (up to 32 atoms, 16 per element): a composition with that many
atoms, then a space group that hosts it, then lattice parameters uniform within the
system's free parameters, scaled to a volume of 10-25 A^3 per atom (uniform lengths alone
give mostly empty or overfull cells). Each is placed by pyxtal and relaxed with the
default CHGNet settings (FIRE, fmax 0.1 eV/A, at most 500 steps, one torch thread).

    python -m benchmarks.oracle_chgnet [--per-size 100] [--sizes 4 8 16 32]

Prints a table and writes ``benchmarks/results/oracle_chgnet.md``; every relaxation is
appended to ``oracle_chgnet.jsonl`` as it finishes, so a killed run continues where it stopped.
Failures are counted by their kind (``aloop.oracle.FAILURE_KINDS``), as the oracle reports it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter

import numpy as np
import torch
from tqdm import tqdm

from aloop.config import SpaceSettings
from aloop.oracle import Failed, OracleInput
from aloop.space import Crystal, CrystalSpace, StructureError, to_structure
from aloop.space.lattice import cell_volume, expand_lattice
from benchmarks._markdown import RESULTS, table, write_report
from oracles.chgnet import CHGNetSettings, relax_candidate

RUNS = RESULTS / "oracle_chgnet.jsonl"
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


def relax(crystal: Crystal, index: int, settings: CHGNetSettings) -> dict:
    """One candidate placed by pyxtal and relaxed: seconds, steps and the failure reason and kind, if any."""
    try:
        structure = to_structure(crystal, seed=index)
    except StructureError as err:
        return {"seconds": None, "steps": 0, "failure": f"atoms cannot be placed: {err}", "kind": "placement"}
    start = time.perf_counter()
    result = relax_candidate(OracleInput(str(index), crystal, structure), settings=settings)
    failed = isinstance(result, Failed)
    return {"seconds": time.perf_counter() - start, "steps": result.metadata.get("steps", 0),
            "failure": result.reason if failed else None, "kind": result.kind if failed else None}


def run(sizes: list[int], per_size: int, settings: CHGNetSettings) -> list[dict]:
    """Per-candidate records, appended to ``RUNS`` as they finish; a rerun skips the recorded ones."""
    key = json.dumps(settings.model_dump(), sort_keys=True)
    done = {(r["atoms"], r["index"]): r for r in map(json.loads, RUNS.read_text().splitlines())
            if r["settings"] == key and "kind" in r} if RUNS.exists() else {}  # a record without a kind is redone
    space = CrystalSpace.from_settings(SPACE)
    records = []
    for n_atoms in sizes:
        crystals = sample_crystals(space, n_atoms, per_size, seed=n_atoms)
        for index, crystal in enumerate(tqdm(crystals, desc=f"{n_atoms} atoms", unit="relaxation")):
            if (n_atoms, index) not in done:
                done[n_atoms, index] = {"atoms": n_atoms, "index": index, "settings": key,
                                        "load_1min": os.getloadavg()[0], **relax(crystal, index, settings)}
                with RUNS.open("a") as out:
                    out.write(json.dumps(done[n_atoms, index]) + "\n")
            records.append(done[n_atoms, index])
    return records


def summary(records: list[dict]) -> list[dict]:
    """One row per cell size: median/mean seconds, steps, failure rate and failures by kind."""
    rows = []
    for n_atoms in sorted({r["atoms"] for r in records}):
        runs = [r for r in records if r["atoms"] == n_atoms]
        seconds = [r["seconds"] for r in runs if r["seconds"] is not None]
        kinds = Counter(r["kind"] for r in runs if r["kind"])
        rows.append({"atoms": n_atoms, "candidates": len(runs), "relaxed": len(seconds),
                     "median s": np.median(seconds), "mean s": np.mean(seconds),
                     "median steps": np.median([r["steps"] for r in runs]),
                     "failure rate": sum(kinds.values()) / len(runs),
                     "failures": ", ".join(f"{k}: {v}" for k, v in kinds.most_common()) or "-"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-size", type=int, default=100)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--timeout-s", type=float, default=600.0, help="wall-clock limit of one relaxation")
    args = parser.parse_args()
    settings = CHGNetSettings(timeout_s=args.timeout_s)
    records = run(args.sizes, args.per_size, settings)
    loads = [r["load_1min"] for r in records]
    write_report("oracle_chgnet",
                 f"One relaxation at a time on {settings.torch_threads} torch thread; 1-minute load average during "
                 f"the runs {min(loads):.1f}-{max(loads):.1f} (median {np.median(loads):.1f}; the machine is shared). "
                 f"CHGNet {settings.model}, {settings.optimizer}, fmax {settings.fmax} eV/A, at most "
                 f"{settings.max_steps} steps, cell relaxed, timeout {settings.timeout_s:g} s. Candidates drawn "
                 f"uniformly from the default space's tables (seed = cell size), "
                 f"{VOLUME_PER_ATOM[0]:g}-{VOLUME_PER_ATOM[1]:g} A^3/atom.",
                 table(summary(records), {"median s": ".2f", "mean s": ".2f", "median steps": ".0f",
                                          "failure rate": ".0%"}))


if __name__ == "__main__":
    main()
