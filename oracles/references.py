"""Elemental references: ground-state structures to relax, and MP's GGA(+U) reference energies.

An energy oracle's formation energies and hulls need each element's ground state on the
oracle's own scale: ML potentials relax ``reference_structures``; MP-compatible DFT uses
``mp_reference_energies`` (the elemental entries pymatgen ships, equal to MP's 2023 ones).
"""

from __future__ import annotations

import functools
import gzip
import json
import math
from collections.abc import Sequence
from pathlib import Path

import pymatgen.analysis.compatibility
from ase import Atoms
from ase.build import bulk
from ase.collections import dcdft
from pymatgen.entries.computed_entries import ComputedEntry

MP_ENTRIES = Path(pymatgen.analysis.compatibility.__file__).parent / "calc_compounds.json.gz"


def reference_structures(element: str) -> list[Atoms]:
    """Candidate ground-state structures of an element: ASE's DeltaCodesDFT set and bulk.

    ASE's Delta-test sulfur is a 1-atom cell 0.66 eV/atom above alpha-S with CHGNet, so
    sulfur also gets an S8 crown ring in a 7 A box (within 0.03 eV/atom of MP's alpha-S).
    """
    candidates = [dcdft[element]] if element in dcdft.names else []
    try:
        candidates.append(bulk(element))
    except (ValueError, KeyError, RuntimeError):
        pass
    if element == "S":
        radius, height, box = 2.3455, 0.98995, 7.0  # crown: S-S 2.05 A, S-S-S 108 degrees
        ring = [[radius * math.cos(k * math.pi / 4) + box / 2, radius * math.sin(k * math.pi / 4) + box / 2,
                 (-1) ** k * height / 2 + box / 2] for k in range(8)]
        candidates.append(Atoms("S8", positions=ring, cell=[box] * 3, pbc=True))
    if not candidates:
        raise ValueError(f"no reference structure for element {element!r} (not in ASE's dcdft set or bulk)")
    return candidates


@functools.lru_cache(maxsize=1)
def _mp_elements() -> dict[str, float]:
    entries = [ComputedEntry.from_dict(d) for d in json.loads(gzip.open(MP_ENTRIES).read()).values()]
    lowest: dict[str, float] = {}
    for entry in entries:
        if len(entry.composition.elements) == 1:
            element = entry.composition.elements[0].symbol
            lowest[element] = min(lowest.get(element, math.inf), entry.energy_per_atom)
    return lowest


def mp_reference_energies(elements: Sequence[str]) -> dict[str, float]:
    """MP's GGA/GGA+U elemental ground-state energies (eV/atom), shipped with pymatgen.

    Raises:
        ValueError: an element has no MP reference entry.
    """
    known = _mp_elements()
    missing = [el for el in elements if el not in known]
    if missing:
        raise ValueError(f"no Materials Project reference entry for {missing} in {MP_ENTRIES.name}")
    return {el: known[el] for el in elements}
