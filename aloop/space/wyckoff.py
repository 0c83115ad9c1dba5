"""Wyckoff assignments: which Wyckoff orbits of its space group each element occupies.

A crystal's sites are ``(element, letter)`` pairs, one per orbit, letters of pyxtal's
standard setting (the setting of ``aloop.space.groups``). In text (CSV ``wyckoff``
column, MLflow) an orbit is a token ``Element:`` + multiplicity + letter, tokens
separated by spaces: ``"Li:4a Mn:4b O:8c O:8c"`` is two oxygen orbits on 8c.

Canonical order: elements by electronegativity (as in ``Composition.formula``), then
letters alphabetically ('a' first, pyxtal's 'A' for the 27th letter last).

Example:
    >>> parse_sites("Na:4a Cl:4b", 225)
    (('Na', 'a'), ('Cl', 'b'))
    >>> format_sites((("Cl", "b"), ("Na", "a")), 225)
    'Na:4a Cl:4b'
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

import spglib
from pymatgen.core import Element, Lattice, Structure

from aloop.space.groups import WyckoffPosition, space_group

Sites = tuple[tuple[str, str], ...]
"""One ``(element symbol, Wyckoff letter)`` pair per occupied orbit."""


class SitesError(ValueError):
    """A Wyckoff assignment that does not fit its group or composition; the message says which orbit."""


def positions(group: int) -> dict[str, WyckoffPosition]:
    """The Wyckoff positions of ``group`` by letter."""
    return {w.letter: w for w in space_group(group).wyckoff_positions}


def letters(group: int) -> tuple[str, ...]:
    """The letters of ``group`` in pyxtal's order (general position first): index -> letter."""
    return tuple(w.letter for w in space_group(group).wyckoff_positions)


def letter_index(group: int) -> dict[str, int]:
    """Letter -> index in ``letters(group)``."""
    return {letter: i for i, letter in enumerate(letters(group))}


def letter_rank(letter: str) -> tuple[bool, str]:
    """Sort key of a letter: 'a'..'z', then pyxtal's 'A' (alpha)."""
    return (letter.isupper(), letter)


def canonical_sites(sites: Iterable[tuple[str, str]]) -> Sites:
    """``sites`` in canonical order (elements by electronegativity, then letters)."""
    return tuple(sorted(((str(el), str(letter)) for el, letter in sites), key=_site_key))


def _site_key(site: tuple[str, str]) -> tuple[float, str, tuple[bool, str]]:
    """Electronegativity (noble gases without one last), symbol, letter."""
    x = Element(site[0]).X
    return (math.inf if math.isnan(x) else x, site[0], letter_rank(site[1]))


def format_sites(sites: Iterable[tuple[str, str]], group: int) -> str:
    """Tokens ``Element:<multiplicity><letter>`` in canonical order, space-separated."""
    table = positions(group)
    return " ".join(f"{el}:{table[letter].multiplicity}{letter}" for el, letter in canonical_sites(sites))


def parse_sites(text: str, group: int) -> Sites:
    """Read ``"Li:4a O:8c"`` for space group ``group``; ``SitesError`` names the bad token. Blank text: no sites."""
    if not text.strip():
        return ()
    table = positions(group)
    sites = []
    for token in text.split():
        element, _, orbit = token.partition(":")
        letter, multiplicity = orbit[-1:], orbit[:-1]
        if not element or not letter or not multiplicity.isdigit():
            raise SitesError(f"Wyckoff token {token!r} is not Element:<multiplicity><letter>, e.g. 'O:8c'")
        if not Element.is_valid_symbol(element):
            raise SitesError(f"Wyckoff token {token!r}: {element!r} is not an element")
        if letter not in table:
            raise SitesError(f"Wyckoff token {token!r}: space group {group} has no position {letter!r} "
                             f"(it has {', '.join(sorted(table, key=letter_rank))})")
        if table[letter].multiplicity != int(multiplicity):
            raise SitesError(f"Wyckoff token {token!r}: position {letter} of space group {group} has "
                             f"multiplicity {table[letter].multiplicity}, not {multiplicity}")
        sites.append((element, letter))
    return canonical_sites(sites)


def site_errors(sites: Iterable[tuple[str, str]], group: int, counts: Mapping[str, int]) -> list[str]:
    """Why ``sites`` cannot be the assignment of ``counts`` (atoms per element) in ``group``; empty when it can.

    Orbit multiplicities must add up to each element's count, and a position without free
    coordinates holds one orbit at most, across all elements.
    """
    table = positions(group)
    sites = tuple(sites)
    errors = [f"space group {group} has no Wyckoff position {letter!r}" for _, letter in sites if letter not in table]
    if errors:
        return errors
    placed: Counter[str] = Counter()
    for el, letter in sites:
        placed[el] += table[letter].multiplicity
    for el in sorted(set(placed) | {el for el, n in counts.items() if n}):
        if placed[el] != counts.get(el, 0):
            errors.append(f"{el}: orbits hold {placed[el]} atoms, the composition has {counts.get(el, 0)}")
    for letter, n in Counter(letter for _, letter in sites).items():
        if n > 1 and not table[letter].free:
            errors.append(f"position {table[letter].multiplicity}{letter} has no free coordinate but holds {n} orbits")
    return errors


def standard_cell(structure: Structure, group: int, *, symprec: float) -> tuple[Lattice, Counter[str], Sites] | None:
    """The conventional cell of ``structure`` (any cell of it) in pyxtal's setting of ``group``: spglib's
    standardised cell for the group's Hall number (origin choice 2 where there are two, axes as in
    pyxtal's tables), its atom counts and its Wyckoff assignment. The letters follow the
    structure's own origin, so a structure pyxtal placed reads back with the letters it was placed on;
    lattice and letters are in the same setting (pymatgen's conventional cell orders the axes of
    orthorhombic groups by length, which names other letters).

    ``None`` for a disordered structure, or when spglib finds no symmetry or another group; the sites are
    ``()`` when letters' multiplicities do not match pyxtal's positions: no assignment rather than a wrong one.
    """
    if not structure.is_ordered:
        return None
    cell = (structure.lattice.matrix, structure.frac_coords, [site.specie.Z for site in structure])
    dataset = spglib.get_symmetry_dataset(cell, symprec=symprec, hall_number=space_group(group).hall_number)
    if dataset is None or int(dataset.number) != group:
        return None
    counts = Counter(Element.from_Z(int(z)).symbol for z in dataset.std_types)
    return Lattice(dataset.std_lattice), counts, _sites(structure, dataset, group)


def _sites(structure: Structure, dataset: spglib.SpglibDataset, group: int) -> Sites:
    table = positions(group)
    scale = len(dataset.std_types) / len(structure)  # conventional cell atoms per atom of this cell
    orbits = Counter(int(i) for i in dataset.equivalent_atoms)
    sites = []
    for atom, size in orbits.items():
        letter = str(dataset.wyckoffs[atom])
        if letter not in table or table[letter].multiplicity != round(size * scale):
            return ()
        sites.append((structure[atom].specie.symbol, letter))
    return canonical_sites(sites)
