"""SevenNet oracle: relax a candidate with the pretrained SevenNet-0 shipped in the sevenn wheel.

A second machine-learned potential beside CHGNet, built differently (an E(3)-equivariant
NequIP-type network, Park et al., J. Chem. Theory Comput. 2024), to confirm what CHGNet finds:
a hit both models put on their hull is better evidence than a hit of one. It relaxes exactly as
the CHGNet oracle does one at a time (``oracles.ase_relax``: ASE FIRE on a ``FrechetCellFilter``,
the same limits, checks, failure kinds and elemental references); only the calculator and the
label source differ.

**Energy scale.** SevenNet-0 was trained on MPtrj, as CHGNet was, but on its *uncorrected*
GGA/GGA+U energies: its checkpoints name their data ``chgnet_..._dataset_uncorrected``, and its
rock-salt NaCl, LiCl and MgO come out 0.28-0.34 eV/atom above CHGNet's (the MP2020 Cl and O anion
corrections), its FeO 1.4 eV/atom above (plus the Fe U correction), its metals within 0.04. So
this oracle applies MaterialsProject2020Compatibility to every relaxed candidate (``correction:
mp2020``, the default), with the run type and U values Materials Project's input set would have
used for the composition (GGA+U for oxides and fluorides of V, Cr, Mn, Fe, Co, Ni, Mo, W): its
labels are then on CHGNet's MP2020-corrected scale. Elements get no MP2020 correction, so its
elemental references are SevenNet's own energies. ``correction: none`` keeps the raw energies,
under another label source (``sevennet-0-uncorrected``), since they share no hull with corrected ones.

**Offline.** The weights are files inside the sevenn wheel
(``sevenn/pretrained_potentials/SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth``); they are
loaded from that path, never downloaded. SevenNet predicts no band gap or magnetic moments.

Example:
    >>> oracle = load_oracle("sevennet", {"max_steps": 200}, executor=executor)  # doctest: +SKIP
    >>> oracle.poll(oracle.submit([item]))  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel
from pymatgen.core import Structure
from pymatgen.entries.compatibility import (
    CompatibilityError,
    MaterialsProject2020Compatibility,
)
from pymatgen.entries.computed_entries import ComputedStructureEntry

from aloop.oracle import OracleInput, Result
from oracles import ase_relax
from oracles.ase_relax import Potential, RelaxSettings, quiet

if TYPE_CHECKING:
    from sevenn.calculator import SevenNetCalculator
    from sevenn.nn.sequential import AtomGraphSequential

CHECKPOINTS = {
    "7net-0": "pretrained_potentials/SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth",
    "7net-l3i5": "pretrained_potentials/SevenNet_l3i5/checkpoint_l3i5.pth",
}
"""Checkpoints shipped in the sevenn wheel, relative to the ``sevenn`` package."""
CUTOFF = 5.0
"""Angstrom; the graph cutoff of both checkpoints: an atom without a neighbour this close is isolated."""


class SevenNetSettings(RelaxSettings):
    """Settings of the SevenNet oracle (``oracle.settings`` when ``oracle.name: sevennet``)."""

    model: Literal["7net-0", "7net-l3i5"] = "7net-0"
    """Pretrained weights shipped in the sevenn wheel, both trained on MPtrj's uncorrected energies:
    ``7net-0`` is SevenNet-0 (11 July 2024), ``7net-l3i5`` a larger, slower variant (l_max 3, 5 layers)."""
    correction: Literal["mp2020", "none"] = "mp2020"
    """``mp2020`` puts the labels on CHGNet's MP2020-corrected scale; ``none`` keeps SevenNet's raw GGA/GGA+U
    energies (under another label source)."""


@functools.lru_cache(maxsize=4)
def load_model(name: str, device: str) -> AtomGraphSequential:
    """The pretrained SevenNet, loaded once per process from the sevenn wheel (never downloaded).

    Args:
        name: ``SevenNetSettings.model`` (e.g. ``"7net-0"``).
        device: torch device name, ``SevenNetSettings.device`` (e.g. ``"cpu"``).

    Raises:
        FileNotFoundError: the checkpoint is not in the installed wheel.
    """
    import sevenn
    from sevenn.util import load_checkpoint

    path = Path(sevenn.__file__).parent / CHECKPOINTS[name]
    if not path.is_file():
        raise FileNotFoundError(f"SevenNet weights {name!r} are not in the installed sevenn wheel: no {path}")
    with quiet():  # it warns that no tensor-product accelerator (CUDA only) is enabled
        model = load_checkpoint(str(path)).build_model()
    return model.to(device).eval()


def _calculator(settings: SevenNetSettings) -> SevenNetCalculator:
    """SevenNet's ASE calculator around the process's model, built quietly."""
    from sevenn.calculator import SevenNetCalculator

    model = load_model(settings.model, settings.device)
    with quiet():
        return SevenNetCalculator(model=model, file_type="model_instance", device=settings.device)


@functools.lru_cache(maxsize=1)
def _mp2020() -> MaterialsProject2020Compatibility:
    return MaterialsProject2020Compatibility(check_potcar=False)  # no POTCARs: an ML potential's entry


def mp2020_energy(structure: Structure, energy_per_atom: float) -> tuple[float, dict[str, Any]]:
    """MP2020-corrected energy per atom (eV/atom) of a structure whose uncorrected MPtrj-scale energy is given.

    The entry gets the run type and U values Materials Project's input set gives the composition: U on
    the transition metals of ``MPRelaxSet`` when the most electronegative element is O or F.

    Returns:
        the corrected energy per atom and ``raw_energy_per_atom``, ``correction_per_atom``, ``run_type``.

    Raises:
        ValueError: MP2020 rejects the entry.
    """
    compatibility = _mp2020()
    elements = sorted(structure.composition.elements, key=lambda el: el.X)
    u_values = compatibility.u_settings.get(elements[-1].symbol, {})
    hubbards = {el.symbol: float(u_values[el.symbol]) for el in elements if u_values.get(el.symbol)}
    run_type = "GGA+U" if hubbards else "GGA"
    entry = ComputedStructureEntry(structure, energy_per_atom * len(structure),
                                   parameters={"run_type": run_type, "hubbards": hubbards})
    try:
        with quiet():  # "Failed to guess oxidation states" of every intermetallic
            corrected = compatibility.process_entry(entry, on_error="raise")
    except CompatibilityError as error:
        raise ValueError(f"MP2020 rejects {structure.composition.reduced_formula}: {error}") from error
    if corrected is None:
        raise ValueError(f"MP2020 rejects {structure.composition.reduced_formula}")
    return corrected.energy_per_atom, {"raw_energy_per_atom": energy_per_atom,
                                       "correction_per_atom": corrected.correction_per_atom, "run_type": run_type}


def potential(settings: SevenNetSettings) -> Potential:
    """SevenNet as ``oracles.ase_relax`` relaxes with it: source ``sevennet-0`` (``7net-0``), MP2020-corrected."""
    name = "sevennet" + settings.model.removeprefix("7net")
    if settings.correction == "none":
        return Potential(f"{name}-uncorrected", "SevenNet", settings, calculator=_calculator, cutoff=CUTOFF)
    return Potential(name, "SevenNet", settings, calculator=_calculator, correct=mp2020_energy, cutoff=CUTOFF)


class SevenNetOracle:
    """Relaxes candidates with SevenNet on the given executor, one at a time (synchronous: done on first poll)."""

    Settings: ClassVar[type[BaseModel]] = SevenNetSettings
    fidelity = 0.5
    cost = 15.0
    """Seconds per candidate: a step takes 1.2-2x CHGNet's on one thread, with no batched path."""

    def __init__(self, settings: SevenNetSettings, *, executor: Executor) -> None:
        importlib.import_module("sevenn.calculator")  # not first in two worker threads at once (CHGNetOracle)
        self.settings = settings
        self._potential = potential(settings)
        self.name = self._potential.name
        self._pool = ase_relax.job_pool(self._potential, executor=executor, prefix="sevennet")

    def submit(self, inputs: Sequence[OracleInput]) -> list[str]:
        return self._pool.submit(inputs)

    def poll(self, job_ids: Sequence[str]) -> dict[str, Result]:
        return self._pool.poll(job_ids)

    def reference_energies(self, elements: Sequence[str]) -> dict[str, float]:
        """Lowest SevenNet energy per atom (eV/atom) of each element's relaxed reference structures."""
        return ase_relax.reference_energies(self._potential, elements)
