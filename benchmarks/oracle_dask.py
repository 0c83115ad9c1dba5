"""CHGNet oracle throughput by worker count: local worker threads and a Dask cluster of worker processes.

Local threads are ``oracle.executor: local`` (what ``oracle.workers: auto`` sizes), in this
process; Dask workers are processes with one thread each. Every worker runs one torch
thread. The same 12 candidates of 8 atoms (drawn as in ``oracle_chgnet``) are relaxed for
a fixed 30 FIRE steps each (fmax 1e-4 eV/A, so no run stops early): equal work for every
worker count. CHGNet is loaded before the clock starts. ``busy cores`` is the whole
machine's CPU use during the run (other users included): near the worker count when the
workers run in parallel on an idle machine.

    python -m benchmarks.oracle_dask [--threads 1 2] [--workers 1 2 4] [--candidates 12]

Prints the tables and writes ``benchmarks/results/oracle_dask.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import Executor
from pathlib import Path

from distributed import Client, LocalCluster

from aloop.executor import open_executor
from aloop.hardware import available_cores
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


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (Linux ``/proc/stat``)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def _timed(executor: Executor, items: list[OracleInput], n_workers: int) -> dict:
    oracle = load_oracle("chgnet", SETTINGS, executor=executor)
    start, busy = time.perf_counter(), _busy_seconds()
    job_ids = oracle.submit(items)
    while any(isinstance(r, Pending) for r in oracle.poll(job_ids).values()):
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    return {"workers": n_workers, "candidates": len(items), "seconds": seconds,
            "relaxations per minute": 60 * len(items) / seconds, "busy cores": (_busy_seconds() - busy) / seconds}


def threads_throughput(items: list[OracleInput], n_workers: int) -> dict:
    """Local worker threads of this process, as a round runs the oracle by default."""
    _warm()
    with open_executor(kind="local", max_workers=n_workers) as executor:
        return _timed(executor, items, n_workers)


def throughput(items: list[OracleInput], n_workers: int) -> dict:
    """A Dask cluster of worker processes on this machine."""
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            client.run(_warm)
        with open_executor(kind="dask", scheduler_address=cluster.scheduler_address) as executor:
            return _timed(executor, items, n_workers)


def _speed_ups(rows: list[dict]) -> list[dict]:
    for row in rows:
        row["speed-up"] = row["relaxations per minute"] / rows[0]["relaxations per minute"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="local worker threads")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="Dask worker processes")
    parser.add_argument("--candidates", type=int, default=12)
    args = parser.parse_args()
    items = candidates(args.candidates)
    local = _speed_ups([threads_throughput(items, n) for n in args.threads])
    dask = _speed_ups([throughput(items, n) for n in args.workers])
    formats = {"seconds": ".1f", "relaxations per minute": ".2f", "busy cores": ".2f", "speed-up": ".2f"}
    write_report("oracle_dask", __doc__.split("\n\n")[1].replace("\n", " ")
                 + f" The machine has {available_cores()} cores available, so more workers than that cannot help.",
                 "Local worker threads (`oracle.executor: local`):\n\n" + table(local, formats),
                 "Dask worker processes:\n\n" + table(dask, formats))


if __name__ == "__main__":
    main()
