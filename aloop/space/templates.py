"""Placement templates: known structures indexed by space group and anonymous Wyckoff set.

A crystal with Wyckoff sites can take the free coordinates of a known structure (a
*template*) with the same space group and the same anonymous Wyckoff set: the letters of
its orbits with the elements left out, but which orbits share an element kept
(``Li:4a Mn:4b O:8c O:8c`` -> ``(a) (b) (c c)``). The crystal's elements are mapped onto the
template's by the orbits they sit on; among all templates and mappings the chemically
closest wins (``element_distance``). Points are in pyxtal's standard setting (spglib's
standardised cell in the Hall setting pyxtal uses, e.g. origin choice 2 of Fd-3m), so each
orbit is regenerated from one representative point with pyxtal's symmetry operations.

Indexing one known structure costs about 30 ms (two spglib calls; 6 ms more to parse a
CIF), so sources of thousands of structures are indexed once and cached on disk
(``cached_templates``).

Example:
    >>> from pymatgen.core import Composition, Lattice, Structure
    >>> nacl = Structure.from_spacegroup(225, Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> pool = TemplatePool.build([template_of(nacl, "mp-22862")])
    >>> kcl = Crystal(225, Composition("K4Cl4"), (6.3,) * 3 + (90.0,) * 3, (("K", "a"), ("Cl", "b")))
    >>> best = pool.decorations(kcl)[0]
    >>> best.template.source, best.elements
    ('mp-22862', ('K', 'Cl'))
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import spglib
import torch
from pymatgen.core import Element, Lattice, Structure

from aloop.space.cache import load_cached, save_cached
from aloop.space.crystal import SYMPREC, Crystal, CrystalBatch
from aloop.space.wyckoff import Sites, canonical_sites, letter_index, letter_rank, positions

AnonymousSet = tuple[tuple[str, ...], ...]
"""Letters of each element's orbits (sorted), for all elements (sorted): the sites without elements."""
POINT_TOLERANCE = 0.01
"""Fractional distance under which two images of a point are the same atom."""
RADIUS_WEIGHT = 2.0
"""Element distance per Angstrom of atomic radius, in units of Pauling electronegativity."""
_CACHE = "templates-v1"

__all__ = ["AnonymousSet", "Decoration", "Prototypes", "Template", "TemplatePool", "anonymous_set",
           "cached_templates", "element_distance", "orbit", "prototype_hash", "template_of"]


def anonymous_set(sites: Iterable[tuple[str, str]]) -> AnonymousSet:
    """The anonymous Wyckoff set of ``sites``: each element's letters, elements left out."""
    by_element: dict[str, list[str]] = defaultdict(list)
    for element, letter in sites:
        by_element[element].append(letter)
    return tuple(sorted(tuple(sorted(letters, key=letter_rank)) for letters in by_element.values()))


@cache
def _setting(group: int) -> tuple[int, np.ndarray, np.ndarray]:
    """pyxtal's Hall number of ``group`` and the rotations ``(K, 3, 3)`` and translations ``(K, 3)`` of its
    general position (centring included): the operations every orbit is generated with."""
    from pyxtal.symmetry import Group

    pyxtal_group = Group(group)
    ops = pyxtal_group[0].ops
    return (int(pyxtal_group.hall_number), np.array([op.rotation_matrix for op in ops]),
            np.array([op.translation_vector for op in ops]))


def orbit(group: int, point: Iterable[float]) -> np.ndarray:
    """``(m, 3)`` fractional points of the orbit of ``point`` in ``group`` (pyxtal's setting), in [0, 1)."""
    _, rotations, translations = _setting(group)
    images = (rotations @ np.asarray(point, dtype=float) + translations) % 1.0
    delta = images[:, None] - images[None]
    same = np.linalg.norm(delta - np.round(delta), axis=-1) < POINT_TOLERANCE
    return images[~np.tril(same, -1).any(axis=1)]


@dataclass(frozen=True)
class Template:
    """A known structure reduced to what placement needs.

    Attributes:
        source: where it comes from, e.g. ``mp-1234`` or ``candidate-17``.
        space_group: its international number.
        sites: its Wyckoff sites, canonical order.
        points: one representative fractional point per orbit, in the order of ``sites``.
        lattice: a b c (Angstrom) alpha beta gamma (degrees) of its conventional standard cell.
    """

    source: str
    space_group: int
    sites: Sites
    points: tuple[tuple[float, float, float], ...]
    lattice: tuple[float, float, float, float, float, float]

    @property
    def key(self) -> tuple[int, AnonymousSet]:
        return self.space_group, anonymous_set(self.sites)

    def structure(self, elements: Iterable[str] | None = None, lattice: Lattice | None = None) -> Structure:
        """Its atoms, or with ``elements`` (one per orbit) and ``lattice`` instead of its own: a decoration."""
        species = list(elements) if elements is not None else [el for el, _ in self.sites]
        orbits = [orbit(self.space_group, p) for p in self.points]
        return Structure(lattice or Lattice.from_parameters(*self.lattice),
                         [el for el, points in zip(species, orbits, strict=True) for _ in points],
                         np.concatenate(orbits))

    def as_row(self) -> list:
        return [self.source, self.space_group, [list(s) for s in self.sites], [list(p) for p in self.points],
                list(self.lattice)]

    @classmethod
    def from_row(cls, row: list) -> Template:
        source, group, sites, points, lattice = row
        return cls(source, int(group), tuple((str(e), str(w)) for e, w in sites),
                   tuple(tuple(float(x) for x in p) for p in points), tuple(float(x) for x in lattice))  # type: ignore[arg-type]


def template_of(structure: Structure, source: str, *, symprec: float = SYMPREC) -> Template | None:
    """``structure`` as a template, or ``None`` when it cannot be one: disordered, no symmetry found
    by spglib, or a standardised cell whose orbits pyxtal's operations do not regenerate."""
    if not structure.is_ordered:
        return None
    cell = (structure.lattice.matrix, structure.frac_coords, [site.specie.Z for site in structure])
    found = spglib.get_symmetry_dataset(cell, symprec=symprec)
    if found is None:
        return None
    group = int(found.number)
    hall = _setting(group)[0]
    standard = spglib.get_symmetry_dataset(cell, symprec=symprec, hall_number=hall)
    if standard is None:
        return None
    std = (standard.std_lattice, standard.std_positions, standard.std_types)
    dataset = spglib.get_symmetry_dataset(std, symprec=symprec, hall_number=hall)
    if dataset is None or int(dataset.number) != group:
        return None
    table, frac = positions(group), np.asarray(std[1]) % 1.0
    rows = []
    for atom in np.unique(dataset.equivalent_atoms):
        members = frac[dataset.equivalent_atoms == atom]
        letter = str(dataset.wyckoffs[atom])
        generated = orbit(group, frac[atom])
        if letter not in table or table[letter].multiplicity != len(members) or len(generated) != len(members):
            return None
        delta = generated[:, None] - members[None]
        if not (np.linalg.norm(delta - np.round(delta), axis=-1).min(axis=1) < POINT_TOLERANCE).all():
            return None  # the orbit is not pyxtal's: another setting
        rows.append((Element.from_Z(int(std[2][atom])).symbol, letter, tuple(float(x) for x in frac[atom])))
    order = canonical_sites((el, letter) for el, letter, _ in rows)
    rows.sort(key=lambda r: order.index((r[0], r[1])))
    return Template(source, group, tuple((el, letter) for el, letter, _ in rows), tuple(p for _, _, p in rows),
                    tuple(float(x) for x in Lattice(std[0]).parameters))  # type: ignore[arg-type]


@cache
def _element_vector(symbol: str) -> np.ndarray:
    """Pauling electronegativity and atomic radius (Angstrom) of an element, 0 where pymatgen has none."""
    element = Element(symbol)
    return np.nan_to_num(np.array([element.X, element.atomic_radius or np.nan], dtype=float))


def element_distance(a: str, b: str) -> float:
    """How far apart two elements are for substitution: |delta electronegativity| + ``RADIUS_WEIGHT`` x
    |delta atomic radius|; 0 for the same element."""
    delta = np.abs(_element_vector(a) - _element_vector(b))
    return float(delta[0] + RADIUS_WEIGHT * delta[1])


@dataclass(frozen=True)
class Decoration:
    """A template with a crystal's elements on its orbits.

    Attributes:
        template: the known structure.
        elements: the crystal's element on each orbit of the template (order of ``template.sites``).
        distance: mean ``element_distance`` per atom between the template's and the crystal's elements.
    """

    template: Template
    elements: tuple[str, ...]
    distance: float

    @property
    def same_elements(self) -> bool:
        """The crystal puts the template's own elements on its orbits: an element-specific copy."""
        return self.elements == tuple(el for el, _ in self.template.sites)


def decorations_of(template: Template, crystal: Crystal) -> list[Decoration]:
    """Every mapping of ``crystal``'s elements onto ``template``'s that keeps each element's orbits.

    Elements with the same letters (e.g. two elements on one 8c orbit each) can swap, so
    there may be several; none when the anonymous sets differ.
    """
    def letters_by_element(sites: Sites) -> dict[str, tuple[str, ...]]:
        by_element: dict[str, list[str]] = defaultdict(list)
        for el, letter in sites:
            by_element[el].append(letter)
        return {el: tuple(sorted(ws, key=letter_rank)) for el, ws in by_element.items()}

    ours, theirs = letters_by_element(crystal.sites), letters_by_element(template.sites)
    if sorted(ours.values()) != sorted(theirs.values()):
        return []
    classes: dict[tuple[str, ...], tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for el, ws in ours.items():
        classes[ws][0].append(el)
    for el, ws in theirs.items():
        classes[ws][1].append(el)
    multiplicity = positions(template.space_group)
    weights = np.array([multiplicity[w].multiplicity for _, w in template.sites], dtype=float)
    result = []
    for choice in itertools.product(*(itertools.permutations(mine) for mine, _ in classes.values())):
        mapping = {t: c for (_, tmpl), perm in zip(classes.values(), choice, strict=True)
                   for t, c in zip(tmpl, perm, strict=True)}
        elements = tuple(mapping[el] for el, _ in template.sites)
        cost = np.array([element_distance(t, c) for (t, _), c in zip(template.sites, elements, strict=True)])
        result.append(Decoration(template, elements, float(cost @ weights / weights.sum())))
    return result


@dataclass(frozen=True)
class TemplatePool:
    """Templates indexed by (space group, anonymous Wyckoff set)."""

    templates: tuple[Template, ...]
    index: Mapping[tuple[int, AnonymousSet], tuple[int, ...]] = field(repr=False)

    @classmethod
    def build(cls, templates: Iterable[Template | None],
              relaxed: Mapping[str, Structure] | None = None) -> TemplatePool:
        """The pool of ``templates`` and of every ``relaxed`` structure (source -> structure, ``template_of``);
        ``None`` entries and structures that are no template are left out."""
        extra = (template_of(structure, source) for source, structure in (relaxed or {}).items())
        kept = tuple(t for t in itertools.chain(templates, extra) if t is not None)
        index: dict[tuple[int, AnonymousSet], list[int]] = defaultdict(list)
        for i, template in enumerate(kept):
            index[template.key].append(i)
        return cls(kept, {key: tuple(rows) for key, rows in index.items()})

    def __len__(self) -> int:
        return len(self.templates)

    def decorations(self, crystal: Crystal) -> list[Decoration]:
        """The crystal on every template of its key, chemically closest first (ties: by source);
        empty for a crystal without sites or without a template."""
        if not crystal.sites:
            return []
        rows = self.index.get((crystal.space_group, anonymous_set(crystal.sites)), ())
        found = [d for i in rows for d in decorations_of(self.templates[i], crystal)]
        return sorted(found, key=lambda d: (d.distance, d.template.source))

    def prototypes(self) -> Prototypes:
        """The (space group, anonymous Wyckoff set) keys of the pool, for batched lookup."""
        keys = sorted(self.index)
        width = max((sum(len(letters) for letters in anonymous) for _, anonymous in keys), default=0)
        sites = torch.full((len(keys), width, 2), -1, dtype=torch.long)
        for i, (group, anonymous) in enumerate(keys):
            rows = [[element, letter_index(group)[letter]] for element, letters in enumerate(anonymous)
                    for letter in letters]
            sites[i, : len(rows)] = torch.tensor(rows, dtype=torch.long).reshape(-1, 2)
        group = torch.tensor([group for group, _ in keys], dtype=torch.long)
        return Prototypes(torch.unique(prototype_hash(group, sites)))

    def without(self, sources: Collection[str]) -> TemplatePool:
        """The pool less the templates from ``sources`` (held out)."""
        return TemplatePool.build(t for t in self.templates if t.source not in sources)

    def __add__(self, other: TemplatePool) -> TemplatePool:
        return TemplatePool.build((*self.templates, *other.templates))


_LETTER_WEIGHTS = torch.randint(1, 1 << 16, (32,), generator=torch.Generator().manual_seed(0))
"""Fixed pseudo-random weight of each letter index in ``prototype_hash`` (a group has at most 27 letters)."""
_MIX = 2654435761
_PRIME = (1 << 31) - 1


def prototype_hash(space_group: torch.Tensor, sites: torch.Tensor) -> torch.Tensor:
    """``(N,)`` int64 hash of each crystal's (space group, anonymous Wyckoff set), batched.

    Each element's letters hash to a weighted sum mixed modulo a prime; the sum of those over the
    elements does not depend on which element is which. Equal keys hash equally; two different ones
    collide with a chance of order 1e-9 (a wrong "has a template" only changes a reward's prior).

    Args:
        space_group: ``(N,)`` long.
        sites: ``(N, L, 2)`` long orbit rows (element column, letter index; -1 pads), ``CrystalBatch.sites``.
    """
    real = sites[..., 0] >= 0
    weight = _LETTER_WEIGHTS.to(sites.device)[sites[..., 1].clamp(min=0)] * real
    columns = int(sites[..., 0].max()) + 1 if real.any() else 1
    per_element = torch.zeros(len(sites), columns, dtype=torch.long, device=sites.device)
    per_element.scatter_add_(1, sites[..., 0].clamp(min=0), weight)
    return space_group.long() * (1 << 40) + (per_element * _MIX % _PRIME).sum(dim=1)


@dataclass(frozen=True)
class Prototypes:
    """The sorted hashes of a template pool's keys (``prototype_hash``): which crystals have a template."""

    hashes: torch.Tensor

    def known(self, batch: CrystalBatch) -> torch.Tensor:
        """``(N,)`` bool: the crystal's group and anonymous Wyckoff set are a template's (False without sites)."""
        if batch.sites is None:
            return torch.zeros(len(batch), dtype=torch.bool, device=batch.space_group.device)
        found = torch.isin(prototype_hash(batch.space_group, batch.sites), self.hashes.to(batch.sites.device))
        return found & (batch.sites[..., 0] >= 0).any(dim=1)


def cached_templates(key: str, wanted: Collection[str],
                     structures: Callable[[set[str]], Iterable[tuple[str, Structure]]]) -> list[Template]:
    """Templates of the ``wanted`` structures of one source (``key`` names it and its version), indexed
    once: ``structures(missing ids)`` yields those not cached yet, and the cache grows by them."""
    name = f"{_CACHE}-{key}"
    cached: dict[str, list | None] = load_cached(name) or {}
    missing = set(wanted) - set(cached)
    if missing:
        for source, structure in structures(missing):
            template = template_of(structure, source)
            cached[source] = None if template is None else template.as_row()
        cached.update({m: None for m in missing if m not in cached})
        save_cached(name, cached)
    return [Template.from_row(cached[m]) for m in sorted(wanted) if cached.get(m) is not None]

