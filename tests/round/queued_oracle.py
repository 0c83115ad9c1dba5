"""A queued oracle, as a group with DFT behind a batch queue would write one from the README's protocol.

Jobs live in a folder (the "queue"), so they outlive the process that submitted them: a
job answers ``Pending`` for ``polls`` polls, whichever process asks, then its result. Every
``fail_every``-th job fails (its wall time ran out: a transient failure ``aloop retry``
sends again), and the first job returns NaN (a broken calculation). Loaded by import path: ``oracle.name: queued_oracle:QueuedOracle``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from aloop.oracle import Failed, Labelled, Lost, OracleInput, Pending, Result


class QueuedSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    queue: str
    """Folder holding one JSON file per job."""
    polls: int = Field(2, ge=0)
    """Polls a job answers ``Pending`` before it is done."""
    fail_every: int = Field(4, gt=0)
    """Every this-many-th job (by submission order, from the second) fails."""


class QueuedOracle:
    """Labels ``formation_energy_per_atom`` with a smooth made-up function of the composition, slowly."""

    Settings: ClassVar[type[BaseModel]] = QueuedSettings
    name = "queued"
    fidelity = 0.5
    cost = 3600.0

    def __init__(self, settings: QueuedSettings, *, executor: Executor | None) -> None:
        self.settings = settings
        self.queue = Path(settings.queue)
        self.queue.mkdir(parents=True, exist_ok=True)

    def submit(self, inputs: Sequence[OracleInput]) -> list[str]:
        job_ids = []
        for item in inputs:
            number = len(list(self.queue.glob("q-*.json")))
            job_id = f"q-{number}"
            fractions = item.structure.composition.fractional_composition.get_el_amt_dict()
            (self.queue / f"{job_id}.json").write_text(json.dumps({
                "candidate": item.candidate_id, "polls_left": self.settings.polls, "number": number,
                "value": -1.5 * fractions.get("O", 0.0) - 0.3 * fractions.get("Li", 0.0) - 0.1}))
            job_ids.append(job_id)
        return job_ids

    def poll(self, job_ids: Sequence[str]) -> dict[str, Result]:
        return {job_id: self._state(job_id) for job_id in job_ids}

    def _state(self, job_id: str) -> Result:
        path = self.queue / f"{job_id}.json"
        if not path.exists():
            return Lost(f"{job_id} is not in the queue")
        job = json.loads(path.read_text())
        if job["polls_left"] > 0:
            path.write_text(json.dumps(job | {"polls_left": job["polls_left"] - 1}))
            return Pending("queued")
        if job["number"] == 0:
            return Labelled(None, {"formation_energy_per_atom": math.nan})
        if job["number"] % self.settings.fail_every == 0:
            return Failed(f"{job_id}: wall time exceeded", kind="timeout")
        return Labelled(None, {"formation_energy_per_atom": job["value"]}, metadata={"queue_job": job_id})
