"""DFT oracle through atomate2/jobflow: one Flow per candidate from an atomate2 Maker.

The default Maker is the Materials Project GGA double relaxation + static
(``MPGGADoubleRelaxStaticMaker``, VASP). Each flow writes into its own persistent
``JobStore`` (maggma ``JSONStore`` files under ``jobstore/<flow uuid>/``), so any later
process can poll it: the job id is the flow's uuid. Where the flow runs is the ``manager``:

- ``local``: jobflow's ``run_locally`` on the executor (a worker thread, or a Dask worker
  sharing the file system); a ``status.json`` beside the store says how it ended.
- ``fireworks``: the flow becomes a FireWorks workflow (jobflow's ``flow_to_workflow``) on
  the configured LaunchPad; cluster workers (``rlaunch``/``qlaunch``) run it, and the
  workflow's state on the LaunchPad says whether it is queued, running, completed or
  fizzled. The jobstore folder must be on a file system the workers share.

Results are read back from the JobStore (final structure, energy, band gap); raw DFT
energies get MaterialsProject2020 corrections, energies of ML force fields trained on
corrected data (CHGNet) must not.

Example (``configs``)::

    oracle:
      name: atomate2
      settings:
        maker: atomate2.forcefields.jobs:ForceFieldRelaxMaker
        maker_settings: {force_field_name: CHGNet, steps: 200}
        correction: none
        references: maker
"""

from __future__ import annotations

import functools
import importlib
import json
import traceback
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from jobflow import Flow, JobStore, Maker, run_locally
from maggma.stores import JSONStore
from ase import Atoms
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pymatgen.core import Structure
from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
from pymatgen.entries.computed_entries import ComputedStructureEntry
from pymatgen.io.ase import AseAtomsAdaptor

from aloop.files import write_atomic
from aloop.oracle import Failed, Labelled, Lost, OracleInput, Pending, Result
from oracles.references import mp_reference_energies, reference_structures

if TYPE_CHECKING:
    from fireworks import LaunchPad

STATUS_FILE = "status.json"
FIREWORKS_FAILED = ("FIZZLED", "DEFUSED", "ARCHIVED")
"""Workflow states that will never complete."""


class Atomate2Settings(BaseModel):
    """Settings of the atomate2 oracle (``oracle.settings`` when ``oracle.name: atomate2``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    maker: str = "atomate2.vasp.flows.mp:MPGGADoubleRelaxStaticMaker"
    """Import path ``module:Class`` of an atomate2 Maker whose ``make(structure)`` gives a Job or Flow."""
    maker_settings: dict[str, Any] = Field(default_factory=dict)
    """Fields of that Maker dataclass (checked against them)."""
    jobstore: str = ".aloop/jobstore"
    """Folder of the per-flow JobStores; must be shared with Dask or FireWorks workers."""
    manager: Literal["local", "fireworks"] = "local"
    """Who runs the flows: ``local`` (jobflow on the executor) or ``fireworks`` (a LaunchPad's workers)."""
    launchpad: str | None = None
    """``manager: fireworks``: LaunchPad file (``my_launchpad.yaml``); default FireWorks' own config."""
    correction: Literal["mp2020", "none"] = "mp2020"
    """``mp2020`` for raw VASP energies; ``none`` for force fields trained on corrected energies."""
    references: Literal["mp", "maker"] = "mp"
    """Elemental references: MP's GGA(+U) entries, or relaxed here with the same Maker."""
    fidelity: float = Field(1.0, gt=0, le=1)
    label: str | None = None
    """Label source name; default ``atomate2-<Maker class>``."""

    @model_validator(mode="after")
    def _maker_fields(self) -> Atomate2Settings:
        cls = maker_class(self.maker)
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(self.maker_settings) - valid)
        if unknown:
            raise ValueError(f"maker_settings {unknown} are not fields of {self.maker}; fields: {sorted(valid)}")
        return self


def maker_class(path: str) -> type[Maker]:
    """The Maker dataclass at import path ``module:Class``."""
    module, _, name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"maker {path!r} cannot be imported ({err})") from err
    if not (is_dataclass(cls) and issubclass(cls, Maker)):
        raise ValueError(f"maker {path!r} is not a jobflow Maker dataclass")
    return cls


def make_flow(structure: Structure, settings: Atomate2Settings, *, name: str) -> Flow:
    """The Flow of one candidate: the Maker's job or flow, with its final output as the Flow's."""
    made = maker_class(settings.maker)(**settings.maker_settings).make(structure)
    return Flow([made], output=made.output, name=name)


def job_store(folder: Path, *, read_only: bool) -> JobStore:
    """A JobStore in ``folder`` (documents and large data in two JSON files)."""
    folder.mkdir(parents=True, exist_ok=True)
    docs, data = (JSONStore(str(folder / f"{n}.json"), read_only=read_only) for n in ("docs", "data"))
    return JobStore(docs, additional_stores={"data": data})


def run_flow(flow: Flow, folder: Path) -> None:
    """Run ``flow`` with jobflow into its JobStore in ``folder``, then write its final status."""
    try:
        run_locally(flow, store=job_store(folder, read_only=False), create_folders=True, root_dir=folder / "runs",
                    log=False, raise_immediately=True)
        status = {"state": "COMPLETED", "output_uuid": flow.output.uuid}
    except Exception as err:
        status = {"state": "FAILED", "reason": f"{type(err).__name__}: {err}",
                  "traceback": traceback.format_exc(limit=8)}
    write_atomic(folder / STATUS_FILE, json.dumps(status))


def parse_task_document(doc: Mapping[str, Any], *, correction: str) -> Labelled | Failed:
    """A label from an atomate2 task document (VASP ``TaskDoc`` or ``ForceFieldTaskDocument``).

    Args:
        doc: the output document as stored in the JobStore (a dict).
        correction: ``mp2020`` applies MaterialsProject2020Compatibility to the raw energy
            (its run type, U values and POTCARs come from the document's ``entry``).
    """
    if doc.get("state") not in (None, "successful"):
        return Failed(f"task state {doc['state']!r}", kind="oracle_error")
    if doc.get("is_force_converged") is False:
        return Failed("relaxation did not converge (is_force_converged is false)", kind="not_converged")
    structure = Structure.from_dict(doc["structure"])
    output = doc["output"]
    energy = float(output["energy"])
    meta: dict[str, Any] = {"task": doc.get("task_label") or doc.get("forcefield_name"),
                            "raw_energy_per_atom": energy / len(structure)}
    if correction == "mp2020":
        parameters = dict((doc.get("entry") or {}).get("parameters") or {})
        entry = ComputedStructureEntry(structure, energy, parameters=parameters,
                                       data=dict((doc.get("entry") or {}).get("data") or {}))
        try:
            corrected = MaterialsProject2020Compatibility().process_entry(entry, on_error="raise")
        except Exception as err:
            return Failed(f"MP2020 compatibility rejected the entry: {err}", meta, kind="unsupported")
        if corrected is None:
            return Failed("MP2020 compatibility rejected the entry", meta, kind="unsupported")
        energy = corrected.energy
        meta |= {"correction_per_atom": corrected.correction_per_atom, "run_type": parameters.get("run_type")}
    properties = {"band_gap": float(output["bandgap"])} if output.get("bandgap") is not None else {}
    return Labelled(energy_per_atom=energy / len(structure), properties=properties, structure=structure,
                    metadata=meta)


class Atomate2Oracle:
    """Runs an atomate2 Flow per candidate; job ids are flow uuids, results live in JobStores."""

    Settings: ClassVar[type[BaseModel]] = Atomate2Settings
    cost = 36_000.0

    def __init__(self, settings: Atomate2Settings, *, executor: Executor) -> None:
        self.settings = settings
        self.name = settings.label or f"atomate2-{settings.maker.rpartition(':')[2]}"
        self.fidelity = settings.fidelity
        self._executor = executor
        self._root = Path(settings.jobstore).resolve()
        self._running: dict[str, Future[None]] = {}

    @functools.cached_property
    def launchpad(self) -> LaunchPad:
        """The FireWorks LaunchPad flows are handed to (``manager: fireworks``), connected once."""
        from fireworks import LaunchPad

        return LaunchPad.from_file(self.settings.launchpad) if self.settings.launchpad else LaunchPad.auto_load()

    def submit(self, inputs: Sequence[OracleInput]) -> list[str]:
        job_ids = []
        for item in inputs:
            flow = make_flow(item.structure, self.settings, name=f"aloop candidate {item.candidate_id}")
            folder = self._root / flow.uuid
            if self.settings.manager == "fireworks":
                self._hand_to_fireworks(flow, folder)
            else:
                self._running[flow.uuid] = self._executor.submit(run_flow, flow, folder)
            job_ids.append(flow.uuid)
        return job_ids

    def _hand_to_fireworks(self, flow: Flow, folder: Path) -> None:
        """Add ``flow`` to the LaunchPad as a workflow whose jobs write into ``folder``'s JobStore."""
        from jobflow.managers.fireworks import flow_to_workflow

        workflow = flow_to_workflow(flow, store=job_store(folder, read_only=False),
                                    metadata={"aloop_flow": flow.uuid, "aloop_output": flow.output.uuid})
        self.launchpad.add_wf(workflow)

    def poll(self, job_ids: Sequence[str]) -> dict[str, Result]:
        return {job_id: self._state(job_id) for job_id in job_ids}

    def _state(self, job_id: str) -> Result:
        if self.settings.manager == "fireworks":
            return self._fireworks_state(job_id)
        finished = self._finished(self._root / job_id)
        if finished is not None:
            return finished
        future = self._running.get(job_id)
        if future is None:
            return Lost(f"flow {job_id} has no result in {self._root} and is not running in this process")
        if future.done() and (err := future.exception()) is not None:
            return Failed(f"flow runner crashed: {type(err).__name__}: {err}", kind="oracle_error")
        return Pending("running" if future.running() else "queued")

    def _fireworks_state(self, job_id: str) -> Result:
        """The workflow's state on the LaunchPad: completed flows are read from their JobStore."""
        workflow = self.launchpad.workflows.find_one({"metadata.aloop_flow": job_id},
                                                     {"state": 1, "nodes": 1, "metadata": 1})
        if workflow is None:
            return Lost(f"flow {job_id} is not on the LaunchPad")
        if workflow["state"] in FIREWORKS_FAILED:
            return Failed(f"FireWorks workflow {workflow['state'].lower()}: {self._fizzle_reason(workflow['nodes'])}",
                          kind="oracle_error")
        if workflow["state"] != "COMPLETED":
            return Pending(workflow["state"].lower())
        return self._read_output(self._root / job_id, workflow["metadata"]["aloop_output"])

    def _fizzle_reason(self, fw_ids: Sequence[int]) -> str:
        """The last line of the exception a fizzled Firework of the workflow stored."""
        for fw_id in fw_ids:
            firework = self.launchpad.get_fw_by_id(fw_id)
            if firework.state == "FIZZLED" and firework.launches:
                trace = firework.launches[-1].action.stored_data.get("_exception", {}).get("_stacktrace", "")
                return trace.strip().splitlines()[-1] if trace.strip() else "no exception stored"
        return "no fizzled firework"

    def _finished(self, folder: Path) -> Labelled | Failed | None:
        """The result of the flow run locally in ``folder``, ``None`` while it has written no status."""
        if not (folder / STATUS_FILE).is_file():
            return None
        status = json.loads((folder / STATUS_FILE).read_text())
        if status["state"] != "COMPLETED":
            return Failed(status["reason"], {"traceback": status.get("traceback", "")}, kind="oracle_error")
        return self._read_output(folder, status["output_uuid"])

    def _read_output(self, folder: Path, output_uuid: str) -> Labelled | Failed:
        """The label parsed from the flow's final output document in ``folder``'s JobStore."""
        store = job_store(folder, read_only=True)
        store.connect()
        try:
            doc = store.get_output(output_uuid, load=False)
        finally:
            store.close()
        result = parse_task_document(doc, correction=self.settings.correction)
        if isinstance(result, Failed):
            return result
        return Labelled(result.energy_per_atom, result.properties, result.structure,
                        {**result.metadata, "jobstore": str(folder)})

    def reference_energies(self, elements: Sequence[str]) -> dict[str, float]:
        """Elemental ground states (eV/atom): MP's entries, or the lowest of this Maker's relaxations."""
        if self.settings.references == "mp":
            return mp_reference_energies(elements)
        energies = {}
        for element in elements:
            runs = [self._relax_reference(atoms) for atoms in reference_structures(element)]
            if all(e is None for e in runs):
                raise ValueError(f"every reference structure of {element} failed with {self.settings.maker}")
            energies[element] = min(e for e in runs if e is not None)
        return energies

    def _relax_reference(self, atoms: Atoms) -> float | None:
        """Energy per atom of one reference structure run through the Maker here and now."""
        flow = make_flow(AseAtomsAdaptor.get_structure(atoms), self.settings, name="aloop reference")
        folder = self._root / "references" / flow.uuid
        run_flow(flow, folder)
        result = self._finished(folder)
        return result.energy_per_atom if isinstance(result, Labelled) else None
