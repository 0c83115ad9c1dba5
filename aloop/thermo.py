"""Formation energy and energy above the convex hull from one oracle's own energies.

Every energy here is in eV/atom on a single oracle's scale (e.g. CHGNet's, or MP2020-corrected
DFT): the compound, its elemental references and the other entries of the hull come from
the same oracle, so no correction scheme is mixed in. The hull is pymatgen's
``PhaseDiagram``, built per chemical system from the entries inside it; ``FormationHull``
evaluates the hull's formation energy at whole batches of compositions (the stability reward).

Example:
    >>> refs = {"Mg": -1.60, "O": -4.91}
    >>> round(formation_energy_per_atom(Composition("MgO"), -6.31, refs), 3)
    -3.055
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
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


class FormationHull:
    """The lower convex hull of formation energy per atom over ``elements``, evaluated on whole batches.

    Per chemical system the hull is a convex piecewise-linear function of the atom fractions,
    so it is the maximum of its facets' planes: each system's planes are found once (pymatgen
    ``PhaseDiagram`` of the entries inside it, elements at 0 eV/atom) and a batch is scored
    with one gather and one ``einsum``. Where no compound lies below the elements the hull is 0.

    Example:
        >>> hull = FormationHull(("Li", "O"), [(Composition("Li2O"), -2.0)])
        >>> hull(torch.tensor([[2, 1], [1, 1]])).tolist()  # Li2O itself; LiO, between Li2O and O
        [-2.0, -1.5]
    """

    def __init__(self, elements: Sequence[str], entries: Sequence[tuple[Composition, float]]) -> None:
        self.elements = tuple(elements)
        index = {el: i for i, el in enumerate(self.elements)}
        self.entries = [(c, e) for c, e in entries
                        if len(c.elements) > 1 and all(el.symbol in index for el in c.elements)]
        self._planes: dict[tuple[int, ...], torch.Tensor] = {}

    def __call__(self, counts: torch.Tensor) -> torch.Tensor:
        """``(N, E)`` atom counts over ``elements`` -> ``(N,)`` float64 hull formation energy at each composition."""
        counts = counts.to("cpu", torch.float64)
        if counts.shape[0] == 0:
            return torch.zeros(0, dtype=torch.float64)
        active = torch.nonzero((counts > 0).any(dim=0)).squeeze(1)  # the batch's elements: a few of many columns
        counts = counts[:, active]
        fractions = counts / counts.sum(dim=1, keepdim=True).clamp_min(1.0)
        systems, row = _systems(counts > 0)
        # each system's planes over its own k <= K elements only, so the (N, F, K) gather stays small
        k = systems.sum(dim=1)
        order = torch.argsort((~systems).to(torch.uint8), dim=1, stable=True)[:, : int(k.max())]  # own columns first
        own = torch.arange(order.shape[1]) < k.unsqueeze(1)
        planes = [self._system_planes(tuple(active[o[:n]].tolist())) for o, n in zip(order, k.tolist(), strict=True)]
        padded = torch.zeros(len(planes), max(p.shape[0] for p in planes), order.shape[1], dtype=torch.float64)
        valid = torch.zeros(padded.shape[:2], dtype=torch.bool)
        for s, p in enumerate(planes):
            padded[s, : p.shape[0], : p.shape[1]] = p
            valid[s, : p.shape[0]] = True
        gather = order.masked_fill(~own, len(active))[row]  # padding reads a zero column
        fractions = torch.cat([fractions, fractions.new_zeros(len(fractions), 1)], dim=1).gather(1, gather)
        heights = torch.einsum("nfk,nk->nf", padded[row], fractions)
        return heights.masked_fill(~valid[row], -math.inf).amax(dim=1)

    def at(self, elements: Sequence[str], counts: torch.Tensor) -> torch.Tensor:
        """``(N,)`` hull formation energy of ``(N, len(elements))`` counts over other columns; NaN for a row
        with atoms of an element the hull does not have."""
        own = torch.zeros(counts.shape[0], len(self.elements), dtype=torch.long)
        foreign = torch.zeros(counts.shape[0], dtype=torch.bool)
        for column, el in enumerate(elements):
            if el in self.elements:
                own[:, self.elements.index(el)] = counts[:, column].cpu().long()
            else:
                foreign |= counts[:, column].cpu() > 0
        return self(own).masked_fill(foreign, math.nan)

    def _system_planes(self, columns: tuple[int, ...]) -> torch.Tensor:
        """``(F, k)`` coefficients of the hull's facet planes of the system of the ``k`` elements at ``columns``,
        over those columns."""
        if columns not in self._planes:
            system = [self.elements[i] for i in columns]
            inside = [(c, e) for c, e in self.entries if {el.symbol for el in c.elements} <= set(system)]
            self._planes[columns] = self._planes_of(system, inside)[:, list(columns)]
        return self._planes[columns]

    def _planes_of(self, system: list[str], inside: list[tuple[Composition, float]]) -> torch.Tensor:
        zero = torch.zeros(1, len(self.elements), dtype=torch.float64)
        if len(system) < 2 or not inside:
            return zero
        diagram = PhaseDiagram([PDEntry(Composition(el), 0.0) for el in system]
                               + [PDEntry(c, e * c.num_atoms) for c, e in inside])
        vertices = [[diagram.qhull_entries[i] for i in facet] for facet in diagram.facets]
        fractions = torch.tensor([[[v.composition.get_atomic_fraction(el) for el in diagram.elements] for v in facet]
                                  for facet in vertices], dtype=torch.float64)  # (F, k, k)
        energies = torch.tensor([[diagram.get_form_energy_per_atom(v) for v in facet] for facet in vertices],
                                dtype=torch.float64)  # (F, k)
        # gelsd, not the CPU default gelsy: gelsy's result changed with memory layout (1e-16 to 1e-10 between calls)
        solution = torch.linalg.lstsq(fractions, energies.unsqueeze(2), driver="gelsd").solution.squeeze(2)
        solution = solution[torch.isfinite(solution).all(dim=1)]
        if not len(solution):
            return zero
        planes = torch.zeros(len(solution), len(self.elements), dtype=torch.float64)
        planes[:, [self.elements.index(el.symbol) for el in diagram.elements]] = solution
        return planes


def _systems(present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, E)`` bool element presence -> its ``(S, E)`` distinct rows and each row's index among them. One int64
    key per row where the columns fit (a unique over rows took 3x longer on the reward's 10,000 crystals)."""
    if present.shape[1] > 62:
        return torch.unique(present, dim=0, return_inverse=True)
    bits = torch.arange(present.shape[1])
    keys, row = torch.unique((present.long() << bits).sum(dim=1), return_inverse=True)
    return (keys.unsqueeze(1) >> bits) & 1 == 1, row

