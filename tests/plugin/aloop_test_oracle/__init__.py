"""An aloop oracle plug-in living in its own package: Ewald energy of an ionic candidate.

Installed, it is found by name (``oracle.name: ewald``) through the ``aloop.oracles``
entry point declared in this package's ``pyproject.toml``; aloop never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pymatgen.analysis.ewald import EwaldSummation

from aloop.oracle import Failed, Labelled, Lost, OracleInput, Result


class EwaldSettings(BaseModel):
    """Validated by aloop from ``oracle.settings``; unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accuracy: float = Field(4.0, gt=0)
    """Digits of accuracy of the Ewald sum."""
    max_sites: int = Field(64, gt=0)


class EwaldOracle:
    """Labels a candidate with its Ewald energy per atom (eV/atom) from guessed oxidation states."""

    Settings: ClassVar[type[BaseModel]] = EwaldSettings
    name = "ewald"
    fidelity = 0.1
    cost = 0.01

    def __init__(self, settings: EwaldSettings, *, executor: Executor) -> None:
        self.settings = settings
        self._results: dict[str, Labelled | Failed] = {}

    def submit(self, inputs: Sequence[OracleInput]) -> list[str]:
        for item in inputs:
            self._results[f"ewald-{item.candidate_id}"] = self._evaluate(item)
        return [f"ewald-{item.candidate_id}" for item in inputs]

    def poll(self, job_ids: Sequence[str]) -> dict[str, Result]:
        return {j: self._results.get(j) or Lost(f"{j} was not submitted in this process") for j in job_ids}

    def _evaluate(self, item: OracleInput) -> Labelled | Failed:
        if len(item.structure) > self.settings.max_sites:
            return Failed(f"{len(item.structure)} sites > max_sites {self.settings.max_sites}", kind="unsupported")
        structure = item.structure.copy()
        structure.add_oxidation_state_by_guess()
        if all(site.specie.oxi_state == 0 for site in structure):
            return Failed(f"no charge-balanced oxidation states for {structure.formula}", kind="unsupported")
        energy = EwaldSummation(structure, acc_factor=self.settings.accuracy).total_energy / len(structure)
        return Labelled(energy_per_atom=None, properties={"ewald_energy_per_atom": energy},
                        metadata={"oxidation_states": structure.composition.oxi_state_guesses()[:1]})
