"""CHGNet oracle throughput on a Dask cluster of 1, 2 and 4 worker processes on this machine.

Each worker is a process with one thread and one torch thread. The same 12 candidates of
8 atoms (drawn as in ``oracle_chgnet``) are relaxed for a fixed 30 FIRE steps each
(fmax 1e-4 eV/A, so no run stops early): equal work for every cluster size. Workers load
CHGNet before the clock starts.

    python -m benchmarks.oracle_dask [--workers 1 2 4] [--candidates 12]

Prints a table and writes ``benchmarks/results/oracle_dask.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from distributed import Client, LocalCluster

from aloop.executor import open_executor
from aloop.oracle import OracleInput, Pending, load_oracle
from aloop.space import CrystalSpace, StructureError, to_structure
from benchmarks.oracle_chgnet import SPACE, sample_crystals

RESULTS = Path(__file__).resolve().parent / "results" / "oracle_dask.json"
SETTINGS = {"max_steps": 30, "fmax": 1e-4, "timeout_s": 3600}


def candidates(count: int) -> list[OracleInput]:
    """``count`` placeable 8-atom candidates from the space tables."""
    space = CrystalSpace.from_settings(SPACE)
    items = []
    for i, crystal in enumerate(sample_crystals(space, 8, 4 * count, seed=8)):
        try:
            items.append(OracleInput(str(i), crystal, to_structure(crystal, seed=i)))
        except StructureError:
            continue
        if len(items) == count:
            return items
    raise RuntimeError(f"only {len(items)} of {count} candidates could be placed")


def _warm() -> None:
    from oracles.chgnet import CHGNetSettings, _model

    _model(CHGNetSettings().model, "cpu")


def throughput(items: list[OracleInput], n_workers: int) -> dict:
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            client.run(_warm)
        with open_executor(kind="dask", scheduler_address=cluster.scheduler_address) as executor:
            oracle = load_oracle("chgnet", SETTINGS, executor=executor)
            start = time.perf_counter()
            job_ids = oracle.submit(items)
            while any(isinstance(r, Pending) for r in oracle.poll(job_ids).values()):
                time.sleep(0.2)
            seconds = time.perf_counter() - start
    return {"workers": n_workers, "candidates": len(items), "seconds": round(seconds, 1),
            "relaxations_per_minute": round(60 * len(items) / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--candidates", type=int, default=12)
    args = parser.parse_args()
    items = candidates(args.candidates)
    load_before = os.getloadavg()[1]
    rows = [throughput(items, n) for n in args.workers]
    base = rows[0]["relaxations_per_minute"]
    print(f"{'workers':>7} {'seconds':>8} {'relax/min':>10} {'speed-up':>9}")
    for r in rows:
        r["speedup"] = round(r["relaxations_per_minute"] / base, 2)
        print(f"{r['workers']:>7} {r['seconds']:>8.1f} {r['relaxations_per_minute']:>10.2f} {r['speedup']:>9.2f}")
    load = [load_before, os.getloadavg()[1]]
    print(f"{os.cpu_count()} cores; 5-minute load average before/after: {load}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"command": "python -m benchmarks.oracle_dask " + " ".join(sys.argv[1:]),
                                   "cores": os.cpu_count(), "load_average_5min": load, "settings": SETTINGS,
                                   "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
