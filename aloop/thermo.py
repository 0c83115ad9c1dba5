"""Formation energy and energy above the convex hull from one oracle's own energies.

Every energy here is in eV/atom on a single oracle's scale (e.g. CHGNet's, or MP2020-corrected
DFT): the compound, its elemental references and the other entries of the hull come from
the same oracle, so no correction scheme is mixed in. The hull is pymatgen's
``PhaseDiagram``, built per chemical system from the entries inside it.

Example:
    >>> refs = {"Mg": -1.60, "O": -4.91}
    >>> round(formation_energy_per_atom(Composition("MgO"), -6.31, refs), 3)
    -3.055
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition


def formation_energy_per_atom(composition: Composition, energy_per_atom: float,
                              references: Mapping[str, float]) -> float:
    """``E - sum_i x_i mu_i`` in eV/atom, ``x_i`` atom fractions, ``mu_i`` reference energies.

    Raises:
        KeyError: an element of ``composition`` has no reference energy.
    """
    fractions = composition.fractional_composition
    return energy_per_atom - sum(x * references[el.symbol] for el, x in fractions.items())


def e_above_hull(composition: Composition, energy_per_atom: float, *, references: Mapping[str, float],
                 known: Sequence[tuple[Composition, float]] = ()) -> float:
    """Energy above the hull (eV/atom, >= 0) of one entry.

    Args:
        composition: the entry's composition.
        energy_per_atom: its energy, eV/atom.
        references: elemental reference energies per atom (at least the entry's elements).
        known: (composition, energy per atom) of other entries of the same oracle; those
            outside the entry's chemical system are ignored.
    """
    elements = {el.symbol for el in composition.elements}
    entries = [PDEntry(Composition(el), references[el]) for el in elements]
    entries += [PDEntry(c, e * c.num_atoms) for c, e in known
                if {el.symbol for el in c.elements} <= elements]
    entry = PDEntry(composition, energy_per_atom * composition.num_atoms)
    diagram = PhaseDiagram([*entries, entry])
    return float(diagram.get_e_above_hull(entry))
