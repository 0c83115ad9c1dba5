"""CHGNet oracle throughput on a Dask cluster of 1, 2 and 4 worker processes on this machine.

Each worker is a process with one thread and one torch thread. The same 12 candidates of
8 atoms (drawn as in ``oracle_chgnet``) are relaxed for a fixed 30 FIRE steps each
(fmax 1e-4 eV/A, so no run stops early): equal work for every cluster size. Workers load
CHGNet before the clock starts.

    python -m benchmarks.oracle_dask [--workers 1 2 4] [--candidates 12]

Prints a table and writes ``benchmarks/results/oracle_dask.md``.
"""

from __future__ import annotations

import argparse
import time

from distributed import Client, LocalCluster

from aloop.executor import open_executor
from aloop.oracle import OracleInput, Pending, load_oracle
from aloop.space import CrystalSpace, StructureError, to_structure
from benchmarks._markdown import table, write_report
from benchmarks.oracle_chgnet import SPACE, sample_crystals

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
    from oracles.chgnet import CHGNetSettings, load_model

    load_model(CHGNetSettings().model, "cpu")


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
    return {"workers": n_workers, "candidates": len(items), "seconds": seconds,
            "relaxations per minute": 60 * len(items) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--candidates", type=int, default=12)
    args = parser.parse_args()
    items = candidates(args.candidates)
    rows = [throughput(items, n) for n in args.workers]
    for row in rows:
        row["speed-up"] = row["relaxations per minute"] / rows[0]["relaxations per minute"]
    write_report("oracle_dask", __doc__.split("\n\n")[1].replace("\n", " ")
                 + " The machine has 2 cores, so more than 2 workers cannot help.",
                 table(rows, {"seconds": ".1f", "relaxations per minute": ".2f", "speed-up": ".2f"}))


if __name__ == "__main__":
    main()
