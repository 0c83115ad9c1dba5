"""Where oracle evaluations run: a worker thread of this process (default) or a Dask cluster.

Both are ``concurrent.futures.Executor``s, so an oracle submits the same way to either.
``JobPool`` tracks an oracle's evaluations on one of them by job id; such jobs live in
this process only, so after a restart their ids poll as ``Lost``. Timeouts are enforced
where a job runs (``run_with_timeout``), because concurrent.futures and Dask cannot stop a
running task: a job that overruns is reported failed and its worker slot is freed.

Example:
    >>> with open_executor(kind="local") as executor:  # doctest: +SKIP
    ...     pool = JobPool(relax, executor=executor, prefix="chgnet", timeout_s=600)
"""

from __future__ import annotations

import threading
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Literal

from aloop.config import OracleSettings
from aloop.hardware import workers_for
from aloop.oracle import Failed, Labelled, Lost, OracleInput, Pending, Result, validate_settings

Evaluate = Callable[[OracleInput], Labelled | Failed]
"""A picklable function (module-level, or a ``functools.partial`` of one) labelling one input."""


@contextmanager
def open_executor(*, kind: Literal["local", "dask"] = "local", scheduler_address: str | None = None,
                  max_workers: int = 1) -> Iterator[Executor]:
    """An executor for oracle evaluations, closed on exit.

    Args:
        kind: ``local`` runs evaluations on ``max_workers`` threads of this process;
            ``dask`` sends them to the Dask scheduler at ``scheduler_address``.
        scheduler_address: e.g. ``tcp://10.0.0.5:8786`` (required for ``dask``).
        max_workers: local threads; one is right for a single CPU-bound oracle.
    """
    if kind == "local":
        with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="aloop-oracle") as executor:
            yield executor
        return
    if not scheduler_address:
        raise ValueError("oracle.executor='dask' needs oracle.scheduler_address (e.g. tcp://host:8786)")
    from distributed import Client

    with Client(scheduler_address, set_as_default=False) as client:
        yield client.get_executor(pure=False)


def local_workers(settings: OracleSettings) -> int:
    """``oracle.workers`` as a number of local threads: ``auto`` fits as many evaluations of the oracle's own
    ``torch_threads`` as the available cores hold (``aloop.hardware.workers_for``); an oracle whose settings
    have none (atomate2 running VASP, lookup) may use every core per evaluation, so it gets one worker."""
    if settings.workers != "auto":
        return settings.workers
    oracle_settings = validate_settings(settings.name, settings.settings)
    return workers_for(getattr(oracle_settings, "torch_threads", None))


def run_with_timeout(evaluate: Evaluate, item: OracleInput, *, timeout_s: float) -> Labelled | Failed:
    """``evaluate(item)`` with exceptions (``oracle_error``), NaN values (``non_finite``) and
    overruns (``timeout``) turned into ``Failed``.

    The evaluation runs on a daemon thread; past ``timeout_s`` seconds it is abandoned
    (it cannot be killed) and the caller's slot returns to the pool.
    """
    outcome: list[Labelled | Failed] = []
    thread = threading.Thread(target=lambda: outcome.append(_guarded(evaluate, item)), daemon=True,
                              name=f"aloop-eval-{item.candidate_id}")
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        return Failed(f"timed out after {timeout_s:g} s", {"timeout_s": timeout_s}, kind="timeout")
    return outcome[0]


def _guarded(evaluate: Evaluate, item: OracleInput) -> Labelled | Failed:
    try:
        result = evaluate(item)
    except Exception as err:
        return Failed(f"{type(err).__name__}: {err}", {"traceback": traceback.format_exc(limit=8)},
                      kind="oracle_error")
    if isinstance(result, Labelled) and (bad := result.non_finite()):
        return Failed(f"non-finite values {bad}", {"values": {k: str(v) for k, v in result.properties.items()}},
                      kind="non_finite")
    return result


class JobPool:
    """Evaluations of one function on an executor, tracked by job id.

    Job ids are ``{prefix}-{candidate_id}-{8 hex}``. They live in this process: after a
    restart ``poll`` answers ``Lost`` for them and the caller submits the candidate again.
    """

    def __init__(self, evaluate: Evaluate, *, executor: Executor, prefix: str, timeout_s: float) -> None:
        self._evaluate = evaluate
        self._executor = executor
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._futures: dict[str, Future[Labelled | Failed]] = {}

    def submit(self, inputs: Sequence[OracleInput]) -> list[str]:
        """Queue one evaluation per input; returns their job ids in input order."""
        job_ids = []
        for item in inputs:
            job_id = f"{self._prefix}-{item.candidate_id}-{uuid.uuid4().hex[:8]}"
            self._futures[job_id] = self._executor.submit(run_with_timeout, self._evaluate, item,
                                                          timeout_s=self._timeout_s)
            job_ids.append(job_id)
        return job_ids

    def poll(self, job_ids: Sequence[str]) -> dict[str, Result]:
        """The state of each job (asking again gives the same answer)."""
        return {job_id: self._state(job_id) for job_id in job_ids}

    def _state(self, job_id: str) -> Result:
        future = self._futures.get(job_id)
        if future is None:
            return Lost(f"job {job_id} is not known to this process (it ran in a process that ended)")
        if not future.done():
            return Pending("running" if future.running() else "queued")
        if future.cancelled():
            return Failed("cancelled by the executor", kind="lost")
        if (err := future.exception()) is not None:
            return Failed(f"executor error {type(err).__name__}: {err}", kind="oracle_error")
        return future.result()
