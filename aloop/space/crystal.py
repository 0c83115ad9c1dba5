"""A crystal in the four-stage space: space group, composition, Wyckoff sites, lattice.

``Crystal`` is one point (immutable, hashable, round-trips through ``as_dict``);
``CrystalBatch`` is many points as tensors over a fixed element list, the form every
batched stage (GFlowNet, featurizer, proxy, reward) works on.

Example:
    >>> from pymatgen.core import Composition
    >>> nacl = Crystal(225, Composition("Na4Cl4"), (5.64, 5.64, 5.64, 90.0, 90.0, 90.0))
    >>> nacl.formula
    'Na4 Cl4'
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pymatgen.core import Composition, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from aloop.space.wyckoff import Sites, canonical_sites, format_sites, letter_index, letters, parse_sites, standard_cell

LATTICE_KEYS = ("a", "b", "c", "alpha", "beta", "gamma")
SYMPREC = 0.1
"""Symmetry tolerance (Angstrom) used to put structures into the space, as in MP's summary."""


@dataclass(frozen=True)
class Crystal:
    """One crystal: space group number, atom counts in the conventional cell, lattice, Wyckoff sites.

    Args:
        space_group: international number, 1-230.
        composition: atom counts of the conventional standard cell (integers).
        lattice: (a, b, c) in Angstrom and (alpha, beta, gamma) in degrees.
        sites: ``(element, letter)`` per occupied Wyckoff orbit in canonical order
            (``aloop.space.wyckoff``); ``()`` when not decided (older records, parameters only).
    """

    space_group: int
    composition: Composition
    lattice: tuple[float, float, float, float, float, float]
    sites: Sites = ()

    @property
    def formula(self) -> str:
        """Full cell formula, elements by electronegativity, e.g. ``'Fe4 O6'``."""
        return self.composition.formula

    @property
    def chemical_system(self) -> str:
        """Dash-joined sorted elements, e.g. ``'Fe-O'``."""
        return self.composition.chemical_system

    @property
    def composition_key(self) -> str:
        """Cheap dedup key on space group and cell composition."""
        return f"{self.space_group}:{self.formula}"

    @property
    def wyckoff(self) -> str:
        """The sites as text, e.g. ``'Li:4a Mn:4b O:8c O:8c'``; ``''`` without sites."""
        return format_sites(self.sites, self.space_group) if self.sites else ""

    @property
    def canonical_hash(self) -> str:
        """Stable hash of space group, composition, lattice (0.01 A / 0.1 degree) and sites when set
        (a crystal without sites keeps the hash it had before sites existed)."""
        lengths = ",".join(f"{x:.2f}" for x in self.lattice[:3])
        angles = ",".join(f"{x:.1f}" for x in self.lattice[3:])
        text = f"{self.composition_key}|{lengths}|{angles}" + (f"|{self.wyckoff}" if self.sites else "")
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    @classmethod
    def from_structure(cls, structure: Structure, *, symprec: float = SYMPREC) -> Crystal:
        """The crystal of a pymatgen structure, in its conventional cell in pyxtal's setting (``standard_cell``);
        pymatgen's conventional standard cell, without sites, for a disordered structure or where spglib fails."""
        analyzer = SpacegroupAnalyzer(structure, symprec=symprec)
        group = analyzer.get_space_group_number()
        standard = standard_cell(structure, group, symprec=symprec)
        if standard is None:
            conventional = analyzer.get_conventional_standard_structure()
            lattice, counts, sites = conventional.lattice, conventional.composition, ()
        else:
            lattice, counts, sites = standard
        return cls(
            space_group=group,
            composition=Composition({el: int(round(n)) for el, n in dict(counts).items()}),
            lattice=tuple(float(x) for x in (*lattice.abc, *lattice.angles)),  # type: ignore[arg-type]
            sites=sites,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "space_group": self.space_group,
            "formula": self.formula,
            **dict(zip(LATTICE_KEYS, self.lattice, strict=True)),
            "wyckoff": self.wyckoff,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Crystal:
        """Inverse of ``as_dict``; a missing or empty ``wyckoff`` (older records) gives no sites."""
        group = int(d["space_group"])
        return cls(
            space_group=group,
            composition=Composition(d["formula"]),
            lattice=tuple(float(d[k]) for k in LATTICE_KEYS),  # type: ignore[arg-type]
            sites=parse_sites(d.get("wyckoff") or "", group),
        )


@dataclass(frozen=True)
class CrystalBatch:
    """A batch of crystals as tensors over a fixed element list.

    Attributes:
        elements: element symbols, the columns of ``counts``.
        space_group: ``(N,)`` long, 1-230.
        counts: ``(N, E)`` long, atoms of each element in the conventional cell.
        lattice: ``(N, 6)`` float, a b c (Angstrom) alpha beta gamma (degrees).
        sites: ``(N, L, 2)`` long, one row per orbit: element column, Wyckoff letter index
            (pyxtal's order, ``aloop.space.wyckoff.letters``); -1 pads rows with fewer orbits
            and whole crystals without sites. ``None`` when no crystal has sites.
    """

    elements: tuple[str, ...]
    space_group: torch.Tensor
    counts: torch.Tensor
    lattice: torch.Tensor
    sites: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.space_group.shape[0])

    def to(self, device: torch.device | str) -> CrystalBatch:
        return CrystalBatch(self.elements, self.space_group.to(device), self.counts.to(device),
                            self.lattice.to(device), None if self.sites is None else self.sites.to(device))

    def __getitem__(self, index: Any) -> CrystalBatch:
        return CrystalBatch(self.elements, self.space_group[index], self.counts[index], self.lattice[index],
                            None if self.sites is None else self.sites[index])

    @classmethod
    def from_crystals(cls, crystals: Sequence[Crystal], elements: Sequence[str]) -> CrystalBatch:
        """Stack crystals; raises ``ValueError`` for an element not in ``elements``."""
        column = {el: i for i, el in enumerate(elements)}
        counts = torch.zeros(len(crystals), len(elements), dtype=torch.long)
        for row, crystal in enumerate(crystals):
            for el, n in crystal.composition.items():
                if el.symbol not in column:
                    raise ValueError(f"{crystal.formula}: element {el.symbol} is not in {list(elements)}")
                counts[row, column[el.symbol]] = int(round(n))
        return cls(
            elements=tuple(elements),
            space_group=torch.tensor([c.space_group for c in crystals], dtype=torch.long),
            counts=counts,
            lattice=torch.tensor([c.lattice for c in crystals], dtype=torch.float64).reshape(-1, 6),
            sites=_site_rows(crystals, column),
        )

    @classmethod
    def concat(cls, batches: Sequence[CrystalBatch]) -> CrystalBatch:
        """All crystals of ``batches``, in order, over the union of their elements (first seen first), on CPU."""
        elements = tuple(dict.fromkeys(el for batch in batches for el in batch.elements))
        counts = torch.zeros(sum(len(batch) for batch in batches), len(elements), dtype=torch.long)
        start = 0
        for batch in batches:
            counts[start:start + len(batch), [elements.index(el) for el in batch.elements]] = batch.counts.cpu().long()
            start += len(batch)
        return cls(elements, torch.cat([batch.space_group.cpu().long() for batch in batches]), counts,
                   torch.cat([batch.lattice.cpu().double().reshape(-1, 6) for batch in batches]),
                   _concat_sites(batches, elements))

    def to_crystals(self) -> list[Crystal]:
        """One ``Crystal`` per row (a Python loop: use at the edges, not on hot paths)."""
        sg = self.space_group.tolist()
        counts = self.counts.tolist()
        lattice = self.lattice.tolist()
        orbits = self.sites.tolist() if self.sites is not None else [[]] * len(sg)
        return [
            Crystal(
                space_group=int(sg[i]),
                composition=Composition({el: n for el, n in zip(self.elements, counts[i], strict=True) if n}),
                lattice=tuple(float(x) for x in lattice[i]),  # type: ignore[arg-type]
                sites=canonical_sites((self.elements[el], letters(int(sg[i]))[w]) for el, w in orbits[i] if el >= 0),
            )
            for i in range(len(sg))
        ]


def _site_rows(crystals: Sequence[Crystal], column: dict[str, int]) -> torch.Tensor | None:
    """``(N, L, 2)`` orbit rows of ``CrystalBatch.sites``; None when no crystal has sites."""
    width = max((len(c.sites) for c in crystals), default=0)
    if width == 0:
        return None
    rows = torch.full((len(crystals), width, 2), -1, dtype=torch.long)
    for i, crystal in enumerate(crystals):
        if crystal.sites:
            index = letter_index(crystal.space_group)
            rows[i, : len(crystal.sites)] = torch.tensor([[column[el], index[w]] for el, w in crystal.sites])
    return rows


def _concat_sites(batches: Sequence[CrystalBatch], elements: tuple[str, ...]) -> torch.Tensor | None:
    """The batches' site rows over the union ``elements``, padded to the widest; None when none has sites."""
    if all(batch.sites is None for batch in batches):
        return None
    width = max(int(batch.sites.shape[1]) for batch in batches if batch.sites is not None)
    parts = []
    for batch in batches:
        rows = torch.full((len(batch), width, 2), -1, dtype=torch.long)
        if batch.sites is not None:
            sites = batch.sites.cpu().long()
            remap = torch.tensor([elements.index(el) for el in batch.elements] + [-1])
            rows[:, : sites.shape[1], 0] = remap[sites[..., 0]]  # -1 pads index the appended -1
            rows[:, : sites.shape[1], 1] = sites[..., 1]
        parts.append(rows)
    return torch.cat(parts)
