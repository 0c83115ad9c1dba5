"""CHGNet oracle on this machine: relaxations per minute one at a time and batched, by cell size.

Candidates of 4, 8, 16 and 32 atoms are drawn uniformly from the ``CrystalSpace`` tables
of the default elements (up to 32 atoms, 16 per element): a composition with that many
atoms, then a space group that hosts it, then lattice parameters uniform within the
system's free parameters, scaled to a volume of 10-25 A^3 per atom (uniform lengths alone
give mostly empty or overfull cells). Each is placed by pyxtal and relaxed with the
default CHGNet settings (FIRE, fmax 0.1 eV/A, at most 500 steps, one torch thread per worker): one at
a time through ASE (``batch_size: 1``), then in the oracle's groups of each batch size
(``oracles.batched_relax``), on one worker; then on ``--workers`` worker threads (what
``oracle.workers: auto`` gives on this machine's cores), one at a time and in groups of the default
batch size. ``|dE|`` compares each candidate's final energy with its one-at-a-time one (both
labelled). The noise floor of that comparison is a second one-at-a-time run from starting positions
moved by ``JITTER`` (Gaussian, per coordinate): about CHGNet's float32 rounding of a position, so its
``|dE|`` is how far the reference path itself lands from its own end points. CPU seconds are this
process's (all threads), what idle cores give; ``per minute`` is wall clock, meaningful on an idle machine.

    python -m benchmarks.oracle_chgnet [--n 100] [--sizes 4 8 16 32] [--batch-sizes 8 16 32] [--workers 2]

Prints a table and writes ``benchmarks/results/oracle_chgnet.md``; every relaxation (every group,
batched) is appended to ``oracle_chgnet.jsonl`` as it finishes, so a killed run continues where it stopped;
``--recorded`` computes nothing and reports the modes already recorded for every placed candidate.
Failures are counted by their kind (``aloop.oracle.FAILURE_KINDS``), as the oracle reports it.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from pymatgen.core import Structure
from tqdm import tqdm

from aloop.config import SpaceSettings
from aloop.hardware import available_cores
from aloop.oracle import Failed, Labelled, OracleInput
from aloop.space import Crystal, CrystalSpace, StructureError, to_structure
from aloop.space.lattice import cell_volume, expand_lattice
from aloop.space.structure import TimeLimit, cpu_time_limit
from benchmarks._markdown import RESULTS, table, write_report
from benchmarks._records import append_lines, read_lines
from oracles.chgnet import CHGNetSettings, relax_candidate, relax_candidates, split_groups

RUNS = RESULTS / "oracle_chgnet.jsonl"
SPACE = SpaceSettings(max_atoms=32, max_atoms_per_element=16)
VOLUME_PER_ATOM = (10.0, 25.0)
JITTER = 1e-5
PLACEMENT_CPU_S = 30.0
"""CPU seconds pyxtal may spend placing one candidate: some drawn cells (an axis of 1-2 A, in hexagonal and
monoclinic groups: 7 of 100 four-atom ones) kept it trying past 15 s each, and placing the 100 past 12 minutes."""
"""Standard deviation (A) of the noise-floor run's moves of the starting positions."""


@dataclass(frozen=True)
class Mode:
    """One way of relaxing the candidates: group size, worker threads, starting positions jittered or not."""

    batch_size: int
    workers: int = 1
    jitter: bool = False

    @property
    def name(self) -> str:
        how = "one at a time" if self.batch_size == 1 else f"batch {self.batch_size}"
        if self.jitter:
            how += f", start moved {JITTER:g} A"
        return how if self.workers == 1 else f"{self.workers} workers, {how}"

    def key(self, settings: CHGNetSettings) -> str:
        """The records' ``settings`` field: the oracle's settings, plus workers and jitter where set."""
        extra = {"workers": self.workers} if self.workers > 1 else {}
        extra |= {"jitter": JITTER} if self.jitter else {}
        return json.dumps(settings.model_copy(update={"batch_size": self.batch_size}).model_dump() | extra,
                          sort_keys=True)

    def parts(self, items: list[OracleInput]) -> list[tuple[OracleInput, ...]]:
        """What one call relaxes: a candidate, or one of the oracle's groups."""
        if self.batch_size == 1:
            return [(item,) for item in items]
        return [group.items for group in split_groups(items, self.batch_size)]


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


def place_one(index: int, crystal: Crystal) -> Structure | None:
    """The candidate as pyxtal places it (seed = index) within ``PLACEMENT_CPU_S``, or None; a candidate left out
    here is left out of every mode alike."""
    try:
        with cpu_time_limit(PLACEMENT_CPU_S):
            return to_structure(crystal, seed=index)
    except (StructureError, TimeLimit):
        return None


def structure_record(structure: Structure) -> dict:
    """A placed structure as a compact record (lattice matrix, species, fractional coordinates)."""
    return {"lattice": structure.lattice.matrix.tolist(), "species": [str(s) for s in structure.species],
            "frac": structure.frac_coords.tolist()}


def _record(result: Labelled | Failed, seconds: float, cpu: float) -> dict:
    failed = isinstance(result, Failed)
    return {"seconds": seconds, "cpu": cpu, "steps": result.metadata.get("steps", 0),
            "energy": None if failed else result.energy_per_atom,
            "failure": result.reason if failed else None, "kind": result.kind if failed else None}


def jittered(item: OracleInput) -> OracleInput:
    """``item`` with its atoms moved by ``JITTER`` (seeded by the candidate's index)."""
    structure = item.structure
    noise = np.random.default_rng(int(item.candidate_id)).normal(0.0, JITTER, size=(len(structure), 3))
    moved = Structure(structure.lattice, structure.species, structure.cart_coords + noise, coords_are_cartesian=True)
    return OracleInput(item.candidate_id, item.crystal, moved)


def relax(items: tuple[OracleInput, ...], settings: CHGNetSettings) -> list[Labelled | Failed]:
    """The oracle's results for one part: a candidate through ASE, or a group batched."""
    if settings.batch_size == 1:
        return [relax_candidate(items[0], settings=settings)]
    return relax_candidates(items, settings=settings)


def relax_mode(items: list[OracleInput], mode: Mode, settings: CHGNetSettings, *, skip: set[int],
               save: Callable[[tuple[OracleInput, ...], list[dict]], None]) -> None:
    """Relax ``items`` as ``mode`` says, passing each part's per-candidate records to ``save``.

    On one worker a part's wall and CPU seconds are shared evenly by its candidates, and parts whose
    candidates are all in ``skip`` are not redone. On several, the mode runs whole and every record gets
    the mode's wall and CPU seconds over its candidate count (a killed run redoes it).
    """
    settings = settings.model_copy(update={"batch_size": mode.batch_size})
    items = [jittered(item) for item in items] if mode.jitter else items
    parts = mode.parts(items)
    if mode.workers == 1:
        for part in tqdm(parts, desc=f"{len(items[0].structure)} atoms, {mode.name}", unit="group"):
            if all(int(item.candidate_id) in skip for item in part):
                continue
            wall, cpu = time.perf_counter(), time.process_time()
            results = relax(part, settings)
            wall, cpu = (time.perf_counter() - wall) / len(part), (time.process_time() - cpu) / len(part)
            save(part, [_record(result, wall, cpu) for result in results])
        return
    if all(int(item.candidate_id) in skip for item in items):
        return
    wall, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(mode.workers) as pool:
        results = list(tqdm(pool.map(functools.partial(relax, settings=settings), parts), total=len(parts),
                            desc=f"{len(items[0].structure)} atoms, {mode.name}", unit="group"))
    wall, cpu = (time.perf_counter() - wall) / len(items), (time.process_time() - cpu) / len(items)
    save(tuple(items), [_record(result, wall, cpu) for part in results for result in part])


def modes_for(n: int, batch_sizes: list[int], workers: int) -> list[Mode]:
    """Every mode relaxing ``n`` candidates: one at a time (and its noise floor), each batch size that makes
    different groups, and on ``workers`` threads one at a time and in the oracle's default groups."""
    modes = [Mode(1), Mode(1, jitter=True), *(Mode(b) for b in sizes_up_to(batch_sizes, n))]
    if workers > 1:
        modes += [Mode(1, workers), Mode(CHGNetSettings().batch_size, workers)]
    return modes


def run(counts: dict[int, int], settings: CHGNetSettings, batch_sizes: list[int], workers: int, *,
        recorded: bool = False) -> list[dict]:
    """Per-candidate records of every mode, appended to ``RUNS`` as they finish; a rerun skips the recorded
    ones. Placed cells are recorded as they are placed (placement is minutes), so a rerun places only the
    candidates without a record, and none when every mode of a cell size is recorded. ``recorded``: compute
    nothing, return the modes recorded for every placed candidate."""
    done = {(r["settings"], r["atoms"], r["drawn"], r["index"]): r for r in read_lines(RUNS)
            if "drawn" in r}  # a record without ``drawn`` (older format) is redone
    space = functools.cache(lambda: CrystalSpace.from_settings(SPACE))
    records = []
    for n_atoms, n in counts.items():
        modes = modes_for(n, batch_sizes, workers)
        known = all(("placement", n_atoms, n, i) in done for i in range(n))
        placed_ids = [i for i in range(n) if known and done["placement", n_atoms, n, i]["placed"]]
        if recorded:
            modes = [m for m in modes if known and all((m.key(settings), n_atoms, n, i) in done for i in placed_ids)]
        elif not known or any((m.key(settings), n_atoms, n, i) not in done for m in modes for i in placed_ids):
            items = []
            for i, crystal in enumerate(tqdm(sample_crystals(space(), n_atoms, n, seed=n_atoms),
                                             desc=f"{n_atoms} atoms, placing", unit="crystal")):
                record = done.get(("placement", n_atoms, n, i))
                if record is None or (record["placed"] and "structure" not in record):  # older records: no cell
                    structure = place_one(i, crystal)
                    record = {"atoms": n_atoms, "drawn": n, "index": i, "settings": "placement",
                              "placed": structure is not None}
                    _append(done, [record | ({"structure": structure_record(structure)} if structure else {})])
                    record = done["placement", n_atoms, n, i]
                if record["placed"]:
                    cell = record["structure"]
                    items.append(OracleInput(str(i), crystal, Structure(cell["lattice"], cell["species"], cell["frac"])))
            placed_ids = [int(item.candidate_id) for item in items]
            for mode in modes:
                key = mode.key(settings)

                def save(part: tuple[OracleInput, ...], part_records: list[dict], mode=mode, key=key) -> None:
                    _append(done, [{"atoms": n_atoms, "drawn": n, "index": int(item.candidate_id),
                                    "batch_size": mode.batch_size, "workers": mode.workers, "jitter": mode.jitter,
                                    "mode": mode.name, "settings": key, "load_1min": os.getloadavg()[0], **record}
                                   for item, record in zip(part, part_records, strict=True)])

                relax_mode(items, mode, settings, skip={i for i in placed_ids if (key, n_atoms, n, i) in done},
                           save=save)
        records += [done[m.key(settings), n_atoms, n, i] for m in modes for i in placed_ids]
    return records


def sizes_up_to(batch_sizes: list[int], n: int) -> list[int]:
    """The batch sizes that make different groups of ``n`` candidates: those below ``n`` and the first at or above."""
    return [b for b in sorted(batch_sizes) if b < n] + [b for b in sorted(batch_sizes) if b >= n][:1]


def _append(done: dict, records: list[dict]) -> None:
    for record in records:
        done[record["settings"], record["atoms"], record["drawn"], record["index"]] = record
    append_lines(RUNS, records)


def summary(records: list[dict]) -> list[dict]:
    """One row per cell size and mode: relaxations per minute (wall, CPU), speed-ups over one idle core's rate one
    at a time, steps, failures, |dE| against one at a time."""
    rows = []
    for n_atoms in sorted({r["atoms"] for r in records}):
        runs = [r for r in records if r["atoms"] == n_atoms]
        one = {r["index"]: r for r in runs if r["mode"] == Mode(1).name}
        base_cpu = 60 * len(one) / sum(r["cpu"] for r in one.values())
        for name in dict.fromkeys(r["mode"] for r in runs):
            mode = [r for r in runs if r["mode"] == name]
            kinds = Counter(r["kind"] for r in mode if r["kind"])
            d_e = [abs(r["energy"] - one[r["index"]]["energy"]) for r in mode
                   if r["energy"] is not None and one[r["index"]]["energy"] is not None]
            per_minute, per_cpu_minute = 60 * len(mode) / sum(r["seconds"] for r in mode), 60 * len(mode) / sum(
                r["cpu"] for r in mode)
            rows.append({"atoms": n_atoms, "mode": name, "relaxed": len(mode), "per minute": per_minute,
                         "speed-up": per_minute / base_cpu, "per CPU minute": per_cpu_minute,
                         "speed-up (CPU)": per_cpu_minute / base_cpu,
                         "median steps": np.median([r["steps"] for r in mode]),
                         "failures": ", ".join(f"{k}: {v}" for k, v in kinds.most_common()) or "-",
                         "label changed": sum((r["kind"] is None) != (one[r["index"]]["kind"] is None) for r in mode),
                         "max abs dE": max(d_e, default=math.nan), "median abs dE": np.median(d_e) if d_e else math.nan,
                         "abs dE > 0.005": sum(d > 0.005 for d in d_e)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", "--per-size", type=int, nargs="+", default=[100],
                        help="candidates drawn per cell size: one for all sizes, or one per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--workers", type=int, default=min(available_cores(), 2),
                        help="worker threads of the multi-worker modes (1: none)")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="wall-clock limit of one relaxation")
    parser.add_argument("--recorded", action="store_true",
                        help="compute nothing: report the modes recorded for every placed candidate")
    args = parser.parse_args()
    settings = CHGNetSettings(timeout_s=args.timeout_s)
    counts = dict(zip(args.sizes, args.n * len(args.sizes) if len(args.n) == 1 else args.n, strict=True))
    records = run(counts, settings, args.batch_sizes, args.workers, recorded=args.recorded)
    loads = [r["load_1min"] for r in records]
    write_report("oracle_chgnet",
                 f"Candidates drawn per cell size: {', '.join(f'{k} atoms: {v}' for k, v in counts.items())}; those pyxtal "
                 f"places are relaxed in every mode (batch sizes up to the first that holds them all; "
                 f"{settings.torch_threads} torch thread per worker); 1-minute load average during the runs "
                 f"{min(loads):.1f}-{max(loads):.1f} (median {np.median(loads):.1f}; on a shared machine ``per minute`` "
                 f"(wall clock) is slowed by other users and ``per CPU minute`` is what an idle core gives). "
                 f"``speed-up``: relaxations per minute (wall clock) over one at a time's per CPU minute (what one idle core "
                 f"gives one at a time, the oracle's default before ``oracle.workers: auto`` and batching); ``speed-up "
                 f"(CPU)``: per CPU minute over the same. CHGNet "
                 f"{settings.model}, {settings.optimizer}, fmax {settings.fmax} eV/A, at most {settings.max_steps} "
                 f"steps, cell relaxed, timeout {settings.timeout_s:g} s. Candidates drawn uniformly from the default "
                 f"space's tables (seed = cell size), {VOLUME_PER_ATOM[0]:g}-{VOLUME_PER_ATOM[1]:g} A^3/atom. ``batch "
                 f"N``: the oracle's groups of at most N (``split_groups``), each relaxed together; ``W workers``: W "
                 f"threads relaxing parts side by side, as ``oracle.workers`` does. ``label changed``: candidates "
                 f"labelled in one mode and failed in the other; ``abs dE`` (eV/atom) against one at a time over "
                 f"candidates labelled in both. ``start moved {JITTER:g} A`` is the noise floor: one at a time again "
                 f"from starting positions moved by about CHGNet's float32 rounding. The batched path takes CHGNet's "
                 f"forces as a plain first derivative (``forward`` builds a differentiable one, for training), equal "
                 f"within about 1e-5 eV/A: relaxations that keep that difference agree to ~1e-5 eV/atom, and those "
                 f"that amplify it end elsewhere below fmax, as the noise floor's do."
                 + (" Built with ``--recorded``: a mode not yet recorded for every placed candidate of a cell size is "
                    "left out." if args.recorded else ""),
                 table(summary(records), {"per minute": ".1f", "speed-up": ".2f", "per CPU minute": ".1f",
                                          "speed-up (CPU)": ".2f", "median steps": ".0f", "max abs dE": ".4f",
                                          "median abs dE": ".5f"}))


if __name__ == "__main__":
    main()
