"""The hull of the proxy's own training rows: its prior mean (``proxy.baseline: hull``) or two of its inputs
(``proxy.hull_input``).

A composition-level model of formation energy learns the hull's shape and, with it, smooths
the distance above it away: on campaign v3's Li-Mn-O labels the first round's predicted energy
above the hull ranked the proposed crystals in the opposite order to CHGNet's (Spearman -0.17
to -0.39 on every arm, ``benchmarks/results/proxy_campaign_labels-v3.md``), and so did the
stability reward. With this baseline the GP learns only ``E_f - hull(composition)``: the hull
of each label source's rows (pymatgen ``PhaseDiagram``, batched by ``aloop.thermo.FormationHull``)
is added back at prediction, so a crystal far from every row is predicted on the known hull
rather than at the data's mean. Each training row's target is taken from the hull of the *other*
rows (``leave_one_out_hull``): a phase on the hull learns how far below its neighbours' hull it
lies, the distance a new stable crystal has to find.

As a mean the hull fails where a chemistry has no compound rows: there it is its elements' (0 eV/atom) and the
GP, which learned distances above hulls, predicts about that. ``HullInput`` gives the model the same hull as two
inputs instead, its energy and whether a compound lies on it, so the fit learns how far to trust it: from rows
whose chemistry has other rows, and from those whose leave-one-out hull is only the elements.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from itertools import combinations

import numpy as np
import torch
from pymatgen.core import Composition
from scipy import sparse
from scipy.optimize import linprog
from torch import nn

from aloop.space.cache import load_arrays, save_arrays
from aloop.thermo import FormationHull

ON_HULL = 1e-8
"""eV/atom above the hull below which a row is on it."""
TINY_FRACTION = 1e-6
"""Fractions below this, read back from standardised features, are rounding: the element is absent."""
DECIMALS = 6
"""The leave-one-out hull is rounded to 1e-6 eV/atom, so it does not depend on how its linear programs are batched
(HiGHS stops within about 1e-9 of the optimum): a proxy's fit amplifies differences in its last bits (two fits of
campaign v3's first-round proxy on targets 1e-12 apart predicted its training crystals up to 0.46 eV/atom apart)."""
SAME_FRACTION = 1e-8
"""Atom fractions this close are one composition (pymatgen's ``Composition.amount_tolerance``)."""
PROGRAMS_PER_SOLVE = 500
"""Linear programs solved together as one block-diagonal program: a HiGHS call costs more than a small program
(Materials Project's 33,059 rows are 27,167 programs: about 2 min one call each, 10 s 500 to a call, 2 shared
cores)."""


def leave_one_out_hull(compositions: Sequence[Composition], energies: Sequence[float]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``(N,)`` each row's hull energy (eV/atom) at its composition among the other rows (elements at 0), and
    ``(N,)`` bool whether the row is on the hull of all rows.

    For a row above the hull that is the hull itself; for a row on it, the hull without every row of its
    composition (pymatgen's phase separation energy): its own energy cannot be its baseline. Rounded to
    ``DECIMALS``, so every process computes the same. Cached by the rows (``aloop.space.cache``).
    """
    rows = [[c.formula, round(float(e), 6)] for c, e in zip(compositions, energies, strict=True)]
    key = "hull-baseline-v3-" + hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]
    if (cached := load_arrays(key)) is not None:
        return cached["below"], cached["on_hull"]
    below, on_hull = _leave_one_out_hull(compositions, energies)
    save_arrays(key, below=below, on_hull=on_hull)
    return below, on_hull


def _leave_one_out_hull(compositions: Sequence[Composition], energies: Sequence[float]
                        ) -> tuple[np.ndarray, np.ndarray]:
    """One linear program per distinct composition c: the lowest energy of a mix of the other compositions of its
    chemical system (each at its lowest row; elements at 0) whose atoms add up to c.

    This is pymatgen's phase separation energy and its hull, computed exactly: pymatgen builds a ``PhaseDiagram``
    per chemical system and finds each on-hull row's by SLSQP, 170-230 s for Materials Project's 30,000 rows
    (2 cores) and up to 4e-5 eV/atom short of the optimum; these programs take about 10 s together.
    """
    energies = np.asarray(energies, dtype=float)
    elements = sorted({el.symbol for c in compositions for el in c.elements})
    column = {el: j for j, el in enumerate(elements)}
    fractions = np.zeros((len(compositions), len(elements)))
    for i, composition in enumerate(compositions):
        for el, amount in composition.get_el_amt_dict().items():
            fractions[i, column[el]] = amount
    fractions /= fractions.sum(axis=1, keepdims=True)
    distinct, of_row = np.unique((fractions / SAME_FRACTION).round(), axis=0, return_inverse=True)
    of_row = of_row.reshape(-1)
    distinct = distinct * SAME_FRACTION
    lowest = np.full(len(distinct), np.inf)
    np.minimum.at(lowest, of_row, energies)
    systems: dict[frozenset[int], list[int]] = defaultdict(list)
    for u, row in enumerate(distinct):
        systems[frozenset(np.nonzero(row)[0].tolist())].append(u)
    mixed = np.zeros(len(distinct))  # the lowest mix of the others (0 for an element: out of the programs)
    programs = [program for system, members in systems.items() if len(system) > 1
                for program in _programs(sorted(system), members, systems, distinct, lowest)]
    for start in range(0, len(programs), PROGRAMS_PER_SOLVE):
        block = programs[start:start + PROGRAMS_PER_SOLVE]
        solution = linprog(np.concatenate([cost for _, _, cost, _ in block]),
                           A_eq=sparse.block_diag([matrix for _, matrix, _, _ in block], format="csr"),
                           b_eq=np.concatenate([target for _, _, _, target in block]), bounds=(0, None),
                           method="highs")
        if solution.status != 0:
            raise RuntimeError(f"leave-one-out hull: HiGHS failed ({solution.message})")
        offsets = np.cumsum([0] + [len(cost) for _, _, cost, _ in block])[:-1]
        for (u, _, cost, _), begin in zip(block, offsets, strict=True):
            mixed[u] = cost @ solution.x[begin:begin + len(cost)]
    compound = np.count_nonzero(distinct, axis=1)[of_row] > 1
    hull = np.minimum(mixed, lowest)[of_row]
    on_hull = compound & (energies - hull < ON_HULL)
    below = np.where(on_hull, mixed[of_row], np.where(compound, hull, 0.0))
    return below.round(DECIMALS), on_hull


def _programs(system: list[int], members: list[int], systems: dict[frozenset[int], list[int]],
              distinct: np.ndarray, lowest: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Each member composition's program ``(member, A, cost, target)``: minimise ``cost @ w`` over ``w >= 0`` with
    ``A @ w = target``, the columns of ``A`` the fractions (over ``system``) of every other composition inside it
    and of its elements."""
    inside = [u for size in range(1, len(system) + 1) for subsystem in combinations(system, size)
              for u in systems.get(frozenset(subsystem), ())]
    matrix = np.concatenate([distinct[inside][:, system].T, np.eye(len(system))], axis=1)
    cost = np.concatenate([lowest[inside], np.zeros(len(system))])
    position = {u: k for k, u in enumerate(inside)}
    out = []
    for u in members:
        others = np.arange(matrix.shape[1]) != position[u]
        out.append((u, matrix[:, others], cost[others], matrix[:, position[u]]))
    return out


class HullMean(nn.Module):
    """b(x): the hull of the source's training rows at the composition read from the shared model's inputs.

    ``columns`` are the inputs' element-fraction columns (standardised; ``offset`` and ``scale`` undo it) over
    ``elements``; each source's rows are buffers (fractions and formation energies), so a saved proxy rebuilds the
    same hulls (``from_state``). The hulls' facets are found per chemical system when first asked for.
    """

    def __init__(self, elements: Sequence[str], columns: torch.Tensor, offset: torch.Tensor, scale: torch.Tensor,
                 fractions: torch.Tensor, energies: torch.Tensor, source: torch.Tensor) -> None:
        super().__init__()
        self.elements = tuple(elements)
        for name, value in (("columns", columns), ("offset", offset), ("scale", scale), ("fractions", fractions),
                            ("energies", energies), ("source", source)):
            self.register_buffer(name, value)
        self._hulls: dict[int, FormationHull] = {}

    @classmethod
    def from_state(cls, elements: Sequence[str], state: dict[str, torch.Tensor], prefix: str) -> HullMean:
        """An empty module shaped like the one saved under ``prefix`` in a state dict (load it after)."""
        return cls(elements, *(state[f"{prefix}{name}"] for name in ("columns", "offset", "scale", "fractions",
                                                                      "energies", "source")))

    def hull(self, source: int) -> FormationHull:
        """The formation-energy hull of one source's rows."""
        if source not in self._hulls:
            rows = torch.nonzero(self.source == source).squeeze(1)
            self._hulls[source] = FormationHull(self.elements, list(zip(
                _compositions(self.fractions[rows], self.elements), self.energies[rows].tolist(), strict=True)))
        return self._hulls[source]

    def forward(self, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """``(N,)`` hull formation energy (target units) of ``(N, D + K)`` inputs, each at its ``(N,)`` source."""
        fractions = (x[:, self.columns] * self.scale + self.offset).double()
        fractions = fractions.where(fractions > TINY_FRACTION, torch.zeros((), dtype=fractions.dtype))
        out = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        for s in source.unique().tolist():
            rows = source == s
            out[rows] = self.hull(s)(fractions[rows].cpu()).to(x.dtype).to(x.device)
        return out


HULL_INPUTS = 2
"""Columns ``HullInput`` adds to the proxy's inputs."""
ONE_VALUE = 1e-6
"""eV/atom: training hull energies spread less than this are one value (every row's hull is the elements')."""


class HullInput(nn.Module):
    """Two inputs at a crystal's composition from the hull of the reference source's training rows: the hull's
    formation energy (standardised by ``mean`` and ``std``) and 1 where it lies below the elements (a compound of
    the chemistry is known), else 0. The rows on the hull are buffers, so a saved proxy rebuilds the same hull."""

    def __init__(self, elements: Sequence[str], fractions: torch.Tensor, energies: torch.Tensor,
                 mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.elements = tuple(elements)
        for name, value in (("fractions", fractions), ("energies", energies), ("mean", mean), ("std", std)):
            self.register_buffer(name, value)
        self._hull: FormationHull | None = None

    @classmethod
    def from_state(cls, elements: Sequence[str], state: dict[str, torch.Tensor], prefix: str) -> HullInput:
        """An empty module shaped like the one saved under ``prefix`` in a state dict (load it after)."""
        return cls(elements, *(state[f"{prefix}{name}"] for name in ("fractions", "energies", "mean", "std")))

    @property
    def hull(self) -> FormationHull:
        """The formation-energy hull of the rows."""
        if self._hull is None:
            self._hull = FormationHull(self.elements, list(zip(_compositions(self.fractions, self.elements),
                                                               self.energies.tolist(), strict=True)))
        return self._hull

    def forward(self, fractions: torch.Tensor) -> torch.Tensor:
        """``(N, len(elements))`` atom fractions -> ``(N, HULL_INPUTS)`` inputs."""
        return self.columns(self.hull(fractions))

    def columns(self, energies: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
        """``(N,)`` hull formation energies (eV/atom) -> ``(N, HULL_INPUTS)`` inputs."""
        energies = energies.to(self.mean.dtype)
        known = energies < -ON_HULL if known is None else known
        return torch.stack([(energies - self.mean) / self.std, known.to(energies.dtype)], dim=1)


def hull_input(fractions: torch.Tensor, energies: torch.Tensor, source: torch.Tensor, reference: int, *,
               elements: Sequence[str], cold: torch.Tensor) -> tuple[HullInput, torch.Tensor, torch.Tensor]:
    """The hull input of a training set and two ``(N, HULL_INPUTS)`` sets of its columns, from ``(N, len(elements))``
    atom fractions, ``(N,)`` formation energies and sources: a ``reference`` row reads the hull of the other reference
    rows (``leave_one_out_hull``, so its own energy is never its input), any other row the hull of all of them. The
    first set is what the fit reads, the ``(N,)`` bool ``cold`` rows reading the hull as unknown (``hull_dropout``);
    the second what the fitted model would read for them (no row cold), as for a new crystal."""
    fractions, energies = fractions.double(), energies.double()
    rows = torch.nonzero(source == reference).squeeze(1)
    below, on_hull = leave_one_out_hull(_compositions(fractions[rows], elements), energies[rows].tolist())
    keep = rows[torch.from_numpy(on_hull)]
    module = HullInput(elements, fractions[keep], energies[keep], torch.zeros((), dtype=torch.float64),
                       torch.ones((), dtype=torch.float64))
    hull = torch.zeros(len(fractions), dtype=torch.float64)
    hull[rows] = torch.from_numpy(below)
    others = torch.nonzero(source != reference).squeeze(1)
    hull[others] = module.hull(fractions[others])
    known = hull < -ON_HULL
    fitted = hull.masked_fill(cold, 0.0)
    module.mean.copy_(fitted.mean())
    if len(fitted) > 1 and float(fitted.std()) > ONE_VALUE:  # else one value: centred, not scaled
        module.std.copy_(fitted.std())
    return module, module.columns(fitted, known & ~cold), module.columns(hull, known)


def _compositions(fractions: torch.Tensor, elements: Sequence[str]) -> list[Composition]:
    """The compositions of ``(N, len(elements))`` atom fractions."""
    return [Composition({elements[j]: float(row[j]) for j in torch.nonzero(row).squeeze(1).tolist()})
            for row in fractions.double()]


def hull_mean(fractions: torch.Tensor, energies: torch.Tensor, source: torch.Tensor, *, elements: Sequence[str],
              columns: torch.Tensor, offset: torch.Tensor, scale: torch.Tensor) -> tuple[HullMean, torch.Tensor]:
    """The baseline of a training set and each row's leave-one-out baseline ``(N,)`` (its target is the label
    minus that), from ``(N, len(elements))`` atom fractions, ``(N,)`` formation energies and sources. The module
    keeps only the rows on their source's hull: no other row changes it."""
    fractions = fractions.double()
    compositions = _compositions(fractions, elements)
    loo = torch.zeros(len(compositions), dtype=torch.float64)
    keep = torch.zeros(len(compositions), dtype=torch.bool)
    for s in source.unique().tolist():
        rows = torch.nonzero(source == s).squeeze(1).tolist()
        below, on_hull = leave_one_out_hull([compositions[i] for i in rows], energies[rows].double().tolist())
        loo[rows], keep[rows] = torch.from_numpy(below), torch.from_numpy(on_hull)
    return HullMean(elements, columns, offset, scale, fractions[keep], energies.double()[keep], source[keep]), loo
