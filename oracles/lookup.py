"""Lookup oracle: labels from a table (e.g. held-out Materials Project entries) for benchmarks.

A candidate matches a row with the same reduced composition and space group; with several
matching rows (polymorphs in one space group) the one lowest in ``prefer_lowest`` wins.
No match is a ``Failed`` label saying so (kind ``unsupported``). Synchronous: answers are
ready at ``submit``; each submission is a new job ``lookup-{candidate id}-{8 hex}``, so a
candidate sent again (``aloop retry``) keeps its earlier job as history.

Example:
    >>> oracle = LookupOracle(LookupSettings(table="../shared/data/mp_cgcnn36k/summary.csv.gz"),
    ...                       executor=executor)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import ClassVar

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pymatgen.core import Composition

from aloop.oracle import Failed, Labelled, Lost, OracleInput, Result


class LookupSettings(BaseModel):
    """Settings of the lookup oracle (``oracle.settings`` when ``oracle.name: lookup``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    table: str
    """CSV file (``.csv`` or ``.csv.gz``), one row per material."""
    formula_column: str = "formula"
    space_group_column: str = "spacegroup_number"
    properties: list[str] = Field(default_factory=lambda: ["formation_energy_per_atom", "band_gap"],
                                  min_length=1)
    """Numeric columns copied into each label."""
    prefer_lowest: str | None = "formation_energy_per_atom"
    id_column: str | None = "material_id"
    fidelity: float = Field(1.0, gt=0, le=1)

    @field_validator("table")
    @classmethod
    def _exists(cls, table: str) -> str:
        if not Path(table).is_file():
            raise ValueError(f"no such file {table!r}")
        return table


class LookupOracle:
    """Answers each candidate from a table indexed by (reduced formula, space group)."""

    Settings: ClassVar[type[BaseModel]] = LookupSettings
    cost = 0.0

    def __init__(self, settings: LookupSettings, *, executor: Executor | None = None) -> None:
        self.settings = settings
        self.name = f"lookup-{Path(settings.table).name.split('.')[0]}"
        self.fidelity = settings.fidelity
        self._index = index_table(pd.read_csv(settings.table), settings)
        self._results: dict[str, Labelled | Failed] = {}

    def submit(self, inputs: Sequence[OracleInput]) -> list[str]:
        job_ids = []
        for item in inputs:
            job_id = f"lookup-{item.candidate_id}-{uuid.uuid4().hex[:8]}"
            self._results[job_id] = self._answer(item)
            job_ids.append(job_id)
        return job_ids

    def poll(self, job_ids: Sequence[str]) -> dict[str, Result]:
        return {job_id: self._results.get(job_id) or Lost(f"job {job_id} was not submitted in this process")
                for job_id in job_ids}

    def _answer(self, item: OracleInput) -> Labelled | Failed:
        key = (item.crystal.composition.reduced_formula, item.crystal.space_group)
        row = self._index.get(key)
        if row is None:
            return Failed(f"no row of {self.settings.table} with formula {key[0]} in space group {key[1]}",
                          kind="unsupported")
        values = {p: float(row[p]) for p in self.settings.properties if not math.isnan(float(row[p]))}
        source = {"table": self.settings.table}
        if self.settings.id_column:
            source["id"] = str(row[self.settings.id_column])
        return Labelled(energy_per_atom=None, properties=values, structure=None, metadata=source)


def index_table(table: pd.DataFrame, settings: LookupSettings) -> dict[tuple[str, int], dict]:
    """Rows keyed by (reduced formula, space group), keeping the lowest ``prefer_lowest`` per key.

    Raises:
        ValueError: a configured column is missing (lists the table's columns).
    """
    wanted = [settings.formula_column, settings.space_group_column, *settings.properties,
              *filter(None, [settings.prefer_lowest, settings.id_column])]
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise ValueError(f"{settings.table}: missing columns {missing}; it has {list(table.columns)}")
    if settings.prefer_lowest:
        table = table.sort_values(settings.prefer_lowest, kind="stable")
    reduced = {f: Composition(f).reduced_formula for f in table[settings.formula_column].unique()}
    keyed = table.assign(_formula=table[settings.formula_column].map(reduced),
                         _space_group=table[settings.space_group_column].astype(int))
    keyed = keyed.drop_duplicates(["_formula", "_space_group"], keep="first")
    return {(r["_formula"], r["_space_group"]): r for r in keyed.to_dict("records")}
