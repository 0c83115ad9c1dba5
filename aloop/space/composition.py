"""Compositions: atom counts per element in the conventional cell, and their two constraints.

**Charge neutrality** (``space.charge_rule``). A count vector is neutral when each atom
can be given one of its element's oxidation states so that the charges sum to zero.
Atoms of one element may carry different states (mixed valence: Fe3O4 = 2 Fe(3+) + Fe(2+)
+ 4 O(2-) is neutral). The states are pymatgen's ``common_oxidation_states``
(``per_atom_common``) or those together with ``icsd_oxidation_states`` (``per_atom_icsd``);
the test is pymatgen's ``Composition.oxi_state_guesses`` with those states, but runs on a
whole batch of count vectors at once. With ``alloys`` compositions of metals only are
neutral without a check (the CDVAE/MatterGen compositional-validity convention); with
``intermetallics`` also those of metals and metalloids with at least one metal (silicides
such as the Heusler phase TiFe2Si).

**Wyckoff compatibility.** Whether the counts can be placed on the Wyckoff positions
of a space group, decided as ``pyxtal.symmetry.Group(sg).check_compatible`` decides it:
each element's count is a sum of multiplicities, positions with free coordinates may
be reused, each fixed position is used at most once over all elements (pyxtal's
``_get_base_and_upper_bounds``, read in ``aloop.space.groups``). pyxtal's solver
enumerates the product of every element's solutions (about 40 ms per count multiset
for the 230 groups); ``_group_hosts`` decides the same question by a small dynamic
programme over the usage of fixed positions, 10x faster, and is tested against pyxtal.
The answer depends only on the multiset of non-zero counts and is memoised per multiset.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import cache
from itertools import combinations, product

import torch
from pymatgen.core.periodic_table import Element
from tqdm import tqdm

from aloop.config import CHARGE_EXEMPTIONS, OXIDATION_STATE_RULES
from aloop.space.groups import N_SPACE_GROUPS, space_group

_CHUNK = 16_384


@cache
def oxidation_states(symbol: str, rule: str = "per_atom_icsd") -> tuple[int, ...]:
    """The oxidation states an atom of ``symbol`` may take under ``rule`` (one of ``OXIDATION_STATE_RULES``)."""
    if rule not in OXIDATION_STATE_RULES:
        raise ValueError(f"unknown oxidation-state rule {rule!r}, expected one of {list(OXIDATION_STATE_RULES)}")
    element = Element(symbol)
    states = set(element.common_oxidation_states)
    if rule == "per_atom_icsd":
        states |= set(element.icsd_oxidation_states)
    return tuple(sorted(int(s) for s in states))


def exempt_from_charge(counts: torch.Tensor, elements: Sequence[str], exemption: str | None) -> torch.Tensor:
    """``(N, E)`` counts -> ``(N,)`` bool: the composition needs no charge check under ``exemption``
    (``alloys``: metals only; ``intermetallics``: metals and metalloids, at least one metal; None: none)."""
    present = counts > 0
    if exemption is None:
        return torch.zeros(counts.shape[0], dtype=torch.bool)
    if exemption not in CHARGE_EXEMPTIONS:
        raise ValueError(f"unknown charge exemption {exemption!r}, expected one of {list(CHARGE_EXEMPTIONS)}")
    metal = torch.tensor([Element(e).is_metal for e in elements], dtype=torch.bool)
    allowed = metal | torch.tensor([exemption == "intermetallics" and Element(e).is_metalloid for e in elements])
    return (present & metal).any(dim=1) & ~(present & ~allowed).any(dim=1)


def _charge_sets(elements: Sequence[str], max_count: int, rule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Reachable total charges of n atoms of each element, as 0/1 polynomials.

    Returns ``low (E, max_count+1)`` the lowest total charge of n atoms and ``poly
    (E, max_count+1, T)`` with ``poly[e, n, t] = 1`` when charge ``low[e, n] + t`` is reachable.
    """
    states = [oxidation_states(el, rule) for el in elements]
    span = max((max(s) - min(s) for s in states if s), default=0)
    poly = torch.zeros(len(elements), max_count + 1, max_count * span + 1, dtype=torch.float64)
    low = torch.zeros(len(elements), max_count + 1, dtype=torch.long)
    for e, s in enumerate(states):
        poly[e, 0, 0] = 1.0
        if not s:
            continue
        offsets = torch.tensor(s) - min(s)
        for n in range(1, max_count + 1):
            low[e, n] = n * min(s)
            previous = poly[e, n - 1].nonzero().squeeze(1)
            poly[e, n, (previous[:, None] + offsets[None, :]).flatten()] = 1.0
    return low, poly


def charge_neutral(counts: torch.Tensor, elements: Sequence[str], rule: Sequence[str]) -> torch.Tensor:
    """``(N, E)`` long counts over ``elements`` -> ``(N,)`` bool, neutral under ``rule`` (``space.charge_rule``).

    A single element is neutral (oxidation state 0), as in pymatgen; an all-zero row is
    not; an exempt composition (``exempt_from_charge``) is. Each row is reduced to its K
    non-zero (element, count) pairs; the reachable charges of the first K - 1 pairs are
    built once per distinct prefix (by FFT products of 0/1 polynomials), and the last
    pair is matched against them with one gather.
    """
    states = next(r for r in rule if r in OXIDATION_STATE_RULES)
    exemption = next((r for r in rule if r in CHARGE_EXEMPTIONS), None)
    counts = counts.to("cpu", torch.long)
    return _balanced(counts, elements, states) | exempt_from_charge(counts, elements, exemption)


def _balanced(counts: torch.Tensor, elements: Sequence[str], rule: str) -> torch.Tensor:
    """``(N,)`` bool: some per-atom assignment of the states of ``rule`` sums to zero."""
    n_rows = counts.shape[0]
    n_nonzero = (counts > 0).sum(dim=1)
    if n_rows == 0 or int(n_nonzero.max()) < 2:
        return n_nonzero == 1
    low, poly = _charge_sets(elements, int(counts.max()), rule)
    n, column = counts.topk(int(n_nonzero.max()), dim=1)  # (N, K): non-zero counts first
    pair = column * low.shape[1] + n  # (N, K) index of (element, count)
    low, poly = low.flatten(), poly.flatten(0, 1)  # (P,), (P, T)
    extent = torch.where(poly > 0, torch.arange(poly.shape[1]), 0).amax(dim=1)  # (P,) highest reachable offset
    prefixes, row_prefix = unique_rows(pair[:, :-1])
    prefix_low, prefix_reach = _sumsets(prefixes, low, poly, extent)  # (U,), (U, S)
    last = pair[:, -1]
    # charge of the prefix must be -(charge of the last pair): index into prefix_reach
    t = torch.arange(int(extent[last].max()) + 1)
    poly = poly[:, : len(t)]
    index = -(prefix_low[row_prefix] + low[last])[:, None] - t[None, :]  # (N, T)
    inside = (index >= 0) & (index < prefix_reach.shape[1]) & poly[last].bool()
    hit = prefix_reach[row_prefix[:, None], index.clamp(0, prefix_reach.shape[1] - 1)] & inside
    return (hit.any(dim=1) & (n_nonzero >= 2)) | (n_nonzero == 1)


def _sumsets(pairs: torch.Tensor, low: torch.Tensor, poly: torch.Tensor,
             extent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reachable charges of ``(U, K)`` (element, count) pair indices: ``low (U,)`` and ``(U, S)`` bool,
    ``reach[u, s]`` true when total charge ``low[u] + s`` is reachable. ``extent (P,)`` is the
    highest offset each pair reaches; it sizes the FFT so products never wrap around."""
    size = 1 << int(extent[pairs].sum(dim=1).max()).bit_length()
    poly = poly[:, :size]
    reach = torch.zeros(pairs.shape[0], size, dtype=torch.float64)
    reach[:, 0] = 1.0
    for start in range(0, pairs.shape[0], _CHUNK):
        block = reach[start : start + _CHUNK]
        for k in range(pairs.shape[1]):
            factor = torch.fft.rfft(poly[pairs[start : start + _CHUNK, k]], n=size)  # (B, F)
            block = (torch.fft.irfft(torch.fft.rfft(block, n=size) * factor, n=size) > 0.5).double()
        reach[start : start + _CHUNK] = block
    return low[pairs].sum(dim=1), reach.bool()


def multiset(counts: Iterable[int]) -> tuple[int, ...]:
    """The sorted (descending) non-zero counts, e.g. ``(0, 4, 2, 4) -> (4, 4, 2)``."""
    return tuple(sorted((int(c) for c in counts if c), reverse=True))


@cache
def representable_by(free: tuple[int, ...], n: int) -> bool:
    """``n`` is a sum of the reusable multiplicities ``free`` (coin problem, by dynamic programming:
    a recursion ran out of stack at a few hundred atoms of an element)."""
    reachable = [True] + [False] * n
    for total in range(1, n + 1):
        reachable[total] = any(total >= f and reachable[total - f] for f in free)
    return reachable[n]


@cache
def fixed_usages(number: int, n: int) -> tuple[tuple[int, ...], ...]:
    """Ways ``n`` atoms of one element use the bounded multiplicities of group ``number``:
    usage counts per bounded multiplicity, the rest filled by reusable ones."""
    base, upper = space_group(number).multiplicity_bounds
    free = tuple(b for b, u in zip(base, upper, strict=True) if u is None)
    bounded = [(b, u) for b, u in zip(base, upper, strict=True) if u is not None]
    usages = []
    for use in product(*(range(min(u, n // b) + 1) for b, u in bounded)):
        rest = n - sum(k * b for k, (b, _) in zip(use, bounded, strict=True))
        if rest >= 0 and representable_by(free, rest):
            usages.append(use)
    return tuple(usages)


def _group_hosts(number: int, counts: tuple[int, ...]) -> bool:
    """pyxtal's ``Group(number).check_compatible(counts)[0]``: elements together use each
    bounded multiplicity at most its bound (the reachable total usages, element by element)."""
    caps = [u for u in space_group(number).multiplicity_bounds[1] if u is not None]
    reach = {(0,) * len(caps)}
    for n in counts:
        totals = (tuple(a + b for a, b in zip(r, use, strict=True)) for r in reach for use in fixed_usages(number, n))
        reach = {t for t in totals if all(x <= c for x, c in zip(t, caps, strict=True))}
        if not reach:
            return False
    return True


@cache
def _hosting_groups(key: tuple[int, ...]) -> tuple[bool, ...]:
    return tuple(_group_hosts(g, key) for g in range(1, N_SPACE_GROUPS + 1))


def wyckoff_compatibility(multisets: Sequence[tuple[int, ...]]) -> torch.Tensor:
    """``(U, 231)`` bool: the counts of multiset u fit the Wyckoff positions of group n (column 0 False)."""
    table = torch.zeros(len(multisets), N_SPACE_GROUPS + 1, dtype=torch.bool)
    for u, key in enumerate(tqdm(multisets, desc="Wyckoff compatibility", disable=len(multisets) < 500)):
        table[u, 1:] = torch.tensor(_hosting_groups(tuple(key)))
    return table


def is_wyckoff_compatible(space_group: int, counts: Iterable[int]) -> bool:
    """Whether ``counts`` (atoms per element, zeros ignored) fit the Wyckoff positions of ``space_group``."""
    return _group_hosts(space_group, multiset(counts))


def enumerate_counts(n_elements: int, *, max_per_element: int, max_atoms: int, max_elements: int,
                     min_elements: int = 1) -> torch.Tensor:
    """All count vectors with ``min_elements``..``max_elements`` non-zero entries, each <= ``max_per_element``,
    summing to <= ``max_atoms``: ``(M, n_elements)`` long, in a fixed order."""
    blocks = []
    for k in range(min_elements, min(max_elements, n_elements) + 1):
        grid = torch.cartesian_prod(*[torch.arange(1, max_per_element + 1)] * k).reshape(-1, k)
        grid = grid[grid.sum(dim=1) <= max_atoms]
        if grid.shape[0] == 0:
            break
        subsets = torch.tensor(list(combinations(range(n_elements), k)), dtype=torch.long)  # (S, k)
        block = torch.zeros(subsets.shape[0], grid.shape[0], n_elements, dtype=torch.long)
        index = subsets[:, None, :].expand(-1, grid.shape[0], -1)
        block.scatter_(2, index, grid[None].expand(subsets.shape[0], -1, -1))
        blocks.append(block.reshape(-1, n_elements))
    return torch.cat(blocks) if blocks else torch.zeros(0, n_elements, dtype=torch.long)


def multiset_index(counts: torch.Tensor) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    """Distinct count multisets of ``(N, E)`` counts: the list and ``(N,)`` long index into it."""
    width = int((counts > 0).sum(dim=1).max()) if counts.shape[0] else 0
    keys = counts.sort(dim=1, descending=True).values[:, :width]
    distinct, inverse = unique_rows(keys)
    return [multiset(row) for row in distinct.tolist()], inverse


def unique_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(rows, dim=0, return_inverse=True)`` for ``(N, K)`` non-negative long rows.

    Rows are packed into one int64 key each (mixed radix) when that cannot overflow,
    which is about 10x faster than ``unique(dim=0)``; the result is the same.
    """
    if rows.shape[0] == 0 or rows.shape[1] == 0:
        return torch.unique(rows, dim=0, return_inverse=True)
    base = int(rows.max()) + 1
    if rows.shape[1] * math.log2(base) >= 62:
        return torch.unique(rows, dim=0, return_inverse=True)
    weights = base ** torch.arange(rows.shape[1] - 1, -1, -1, device=rows.device)
    keys, inverse = torch.unique((rows * weights).sum(dim=1), return_inverse=True)
    digits = keys[:, None] // weights % base
    return digits, inverse
