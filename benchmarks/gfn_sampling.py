"""Crystal-GFN sampling: validity, speed and pyxtal placement of the untrained (uniform) generator.

For the default space and each restriction preset: time to build the tables, time to
draw 10,000 crystals, the share that passes the space's validity checker, and the share
whose Wyckoff assignment is feasible by pyxtal's own tables (``pyxtal.symmetry.Group``:
every letter exists, multiplicities add up to the counts, a position without degrees of
freedom holds one orbit at most), independently of the generator's masks. Then the
first ``--structures`` samples of each space in ``--placement-configs`` (the default space
unless told) are placed by pyxtal (``aloop.space.structure.to_structure``, two worker
processes) and checked for two atoms closer than 0.5 Angstrom; each placement gets at
most ``--timeout-s`` seconds.

    python -m benchmarks.gfn_sampling [--n 10000] [--structures 1000] [--placement-configs default]

Prints the tables and writes ``benchmarks/results/gfn_sampling.md``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path

import torch

from aloop.config import CONFIG_DIR, load_config
from aloop.gfn import CrystalEnv, build_policy, sample
from aloop.space.crystal import Crystal
from aloop.space.space import CrystalSpace
from aloop.space.validity import valid_mask

CONFIGS = ("default", "fe-o", "li-mn-o", "cubic", "lattice-range")
RESULTS = Path(__file__).resolve().parent / "results" / "gfn_sampling.md"


class _Timeout(Exception):
    pass


def _raise_timeout(*_: object) -> None:
    raise _Timeout


def _place(args: tuple[dict, int, float]) -> str:
    """'ok', 'close' (atoms < 0.5 A), 'failed' (pyxtal gave up) or 'timeout' for one crystal."""
    from aloop.space.structure import StructureError, has_close_atoms, to_structure

    crystal, seed, timeout_s = Crystal.from_dict(args[0]), args[1], args[2]
    signal.signal(signal.SIGALRM, _raise_timeout)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return "close" if has_close_atoms(to_structure(crystal, seed=seed)) else "ok"
    except StructureError:
        return "failed"
    except _Timeout:
        return "timeout"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _sampling_row(name: str, n: int) -> tuple[dict, list[Crystal]]:
    config = load_config(CONFIG_DIR / f"{name}.yaml")
    start = time.perf_counter()
    space = CrystalSpace.from_settings(config.space)
    env = CrystalEnv.from_space(space, config.gfn, device=config.gfn.device)
    build_s = time.perf_counter() - start
    policy = build_policy(env, config.gfn)
    sample(env, policy, 100, seed=1, threads=config.gfn.threads)  # warm-up
    start = time.perf_counter()
    batch = sample(env, policy, n, seed=0, threads=config.gfn.threads)
    sample_s = time.perf_counter() - start
    valid = valid_mask(batch, space)
    crystals = batch.to_crystals()
    row = {"config": name, "groups": len(space.space_groups), "compositions": len(space.compositions),
           "trie_MB": env.trie.nbytes() / 1e6, "build_s": build_s, "n": n, "sample_s": sample_s,
           "valid": float(valid.float().mean()),
           "sites_feasible": sum(map(_pyxtal_feasible, crystals)) / len(crystals),
           "orbits_mean": float((batch.sites[..., 1] >= 0).sum(dim=1).float().mean())}
    return row, crystals


@cache
def _pyxtal_positions(number: int) -> dict[str, tuple[int, int]]:
    """Letter -> (multiplicity, degrees of freedom) from ``pyxtal.symmetry.Group``."""
    from pyxtal.symmetry import Group

    return {wp.letter: (int(wp.multiplicity), int(wp.get_dof())) for wp in Group(number)}


def _pyxtal_feasible(crystal: Crystal) -> bool:
    """The crystal's sites checked on pyxtal's Wyckoff tables alone (not aloop's)."""
    letters, placed, fixed = _pyxtal_positions(crystal.space_group), {}, []
    for element, letter in crystal.sites:
        if letter not in letters:
            return False
        multiplicity, dof = letters[letter]
        placed[element] = placed.get(element, 0) + multiplicity
        fixed += [letter] if dof == 0 else []
    counts = {el.symbol: int(n) for el, n in crystal.composition.items()}
    return bool(crystal.sites) and placed == counts and len(fixed) == len(set(fixed))


def _markdown(title: str, rows: list[dict], formats: dict[str, str]) -> str:
    keys = list(rows[0])
    lines = [f"### {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(format(row[k], formats.get(k, "")) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="crystals drawn per space for validity and speed")
    parser.add_argument("--structures", type=int, default=1000, help="crystals placed by pyxtal per space")
    parser.add_argument("--timeout-s", type=float, default=20.0, help="limit per pyxtal placement")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), help="spaces whose sampling is measured")
    parser.add_argument("--placement-configs", nargs="*", default=["default"], help="spaces whose samples are placed")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    sampling, placement = [], []
    for name in args.configs:
        row, crystals = _sampling_row(name, args.n)
        sampling.append(row)
        print(row, flush=True)
        if name not in args.placement_configs or args.structures == 0:
            continue
        start = time.perf_counter()
        jobs = [(c.as_dict(), i, args.timeout_s) for i, c in enumerate(crystals[: args.structures])]
        with ProcessPoolExecutor(max_workers=2) as pool:
            outcomes = list(pool.map(_place, jobs, chunksize=8))
        counts = {k: outcomes.count(k) for k in ("ok", "close", "failed", "timeout")}
        placement.append({"config": name, "n": len(jobs), **counts, "ok_share": counts["ok"] / len(jobs),
                          "seconds": time.perf_counter() - start})
        print(placement[-1], flush=True)
    gfn = load_config(CONFIG_DIR / "default.yaml").gfn
    header = (f"Command: `python -m benchmarks.gfn_sampling {' '.join(sys.argv[1:])}`\n\n"
              f"Machine: {os.cpu_count()} cores, torch {torch.__version__}, `gfn.threads` = 1 (torch threads), "
              f"load average {load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end (the machine is "
              f"shared). Untrained generator (uniform over allowed actions except the Wyckoff letters, which follow the prior), default `gfn` settings (lattice prior "
              f"{gfn.min_volume_per_atom} A^3/atom, length fraction {gfn.min_length_fraction}). `sample_s`: one `sample` call of n crystals after a warm-up call of 100.\n\n")
    text = header + _markdown(f"Validity and speed ({args.n} samples per space)", sampling,
                              {"trie_MB": ".1f", "build_s": ".1f", "sample_s": ".2f", "valid": ".4f",
                               "sites_feasible": ".4f", "orbits_mean": ".1f"})
    if placement:
        text += "\n" + _markdown(f"pyxtal placement (no two atoms closer than 0.5 A; {args.timeout_s:.0f} s limit "
                                 "each, 2 processes)", placement, {"ok_share": ".3f", "seconds": ".0f"})
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
