"""The Wyckoff stage's tables and masks: which letter the next orbit of an element may take.

After group and composition, the Crystal-GFN places each element's atoms on Wyckoff
orbits, one orbit per action, element by element (the space's element order). Within an
element the letters follow a fixed *order* per group: positions without free coordinates
first, grouped by multiplicity, then positions with free coordinates; each element's
letters never go back in that order, and a fixed letter holds one orbit at most, across
all elements. So every assignment has exactly one trajectory (P_B = 1).

No dead end: an action is allowed only if the rest still completes. Feasibility depends
on letters only through multiplicities, so it is decided at the level of *classes*: a
class is a multiplicity whose positions are all fixed, and its cap is how many there are
(pyxtal's multiplicity bounds). A multiplicity that has a free position can be used any
number of times, fixed letters of it included. The state of the other elements is then a
small usage vector (orbits used per class; at most 24 states over the 230 groups), and

* ``good[j][s]``: elements ``j..`` can still be placed when usage ``s`` is spent,
  computed backwards per trajectory once the composition is known;
* a fixed letter of class ``c`` is allowed if some further usage ``x`` of the classes
  that remain after it in the order completes the element (``fits``) and lands in a
  good state; a letter of a free multiplicity only needs the rest of the element to be
  a sum of free multiplicities at or after it in the order (``representable``).

Everything is tensor lookups over the batch; the tables are built once per space (small:
groups x letters x states).

Example:
    >>> from aloop.space.space import CrystalSpace
    >>> from aloop.config import load_config
    >>> tables = WyckoffTables.build(CrystalSpace.from_settings(load_config("configs/smoke.yaml").space))
    >>> tables.n_letters <= 27
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import cache

import torch

from aloop.space.composition import fixed_usages, representable_by
from aloop.space.groups import space_group

Tensor = torch.Tensor
BOUNDED, UNBOUNDED, FREE = 0, 1, 2
"""Letter kinds: fixed of a capped multiplicity, fixed of a multiplicity that also has a free
position, free (has coordinates to choose)."""


@dataclass(frozen=True)
class WyckoffTables:
    """Per allowed group (rows as in ``CrystalSpace.space_groups``) and pyxtal letter index.

    Attributes:
        exists: ``(G, W)`` bool, the group has letter ``w``.
        multiplicity: ``(G, W)`` long (0 on padding).
        kind: ``(G, W)`` long, ``BOUNDED``, ``UNBOUNDED`` or ``FREE`` (-1 on padding).
        order: ``(G, W)`` long, position of the letter in the group's order (padding last).
        klass: ``(G, W)`` long, class of a ``BOUNDED`` letter, else -1.
        state_usage: ``(G, S, C)`` long, orbits per class of usage state ``s``.
        state_valid: ``(G, S)`` bool, ``s`` is a state of the group (within its caps).
        add: ``(G, S, S)`` long, the state of usage ``s + x``, -1 beyond the caps.
        unit: ``(G, C)`` long, the state of one orbit of class ``c``.
        fits: ``(G, K+1, S)`` bool, ``n`` atoms of one element can use exactly usage ``x``
            of the classes and fill the rest with free multiplicities.
        representable: ``(G, W+1, K+1)`` bool, ``r`` atoms are a sum of the multiplicities of
            free letters at order ``>= p``.
        capped: ``(G, F)`` long, the ``BOUNDED`` letters in order (they come first), -1 pads.
    """

    exists: Tensor
    multiplicity: Tensor
    kind: Tensor
    order: Tensor
    klass: Tensor
    state_usage: Tensor
    state_valid: Tensor
    add: Tensor
    unit: Tensor
    fits: Tensor
    representable: Tensor
    capped: Tensor

    @property
    def n_letters(self) -> int:
        return int(self.exists.shape[1])

    @property
    def max_count(self) -> int:
        return int(self.fits.shape[1]) - 1

    @classmethod
    def build(cls, space) -> WyckoffTables:  # noqa: ANN001 - CrystalSpace (import cycle)
        """The tables of ``space``'s allowed groups, counts up to its ``max_atoms_per_element``."""
        return _build(tuple(space.space_groups.tolist()), int(space.settings.max_atoms_per_element))

    def to(self, device: torch.device | str) -> WyckoffTables:
        return WyckoffTables(*(getattr(self, f.name).to(device) for f in fields(self)))

    def good_states(self, group: Tensor, slot_count: Tensor) -> Tensor:
        """``(B, J+1, S)`` bool: elements of slots ``j..`` can be placed once usage ``s`` is spent.

        Computed once per distinct (group, counts) row of the batch.

        Args:
            group: ``(B,)`` long group rows.
            slot_count: ``(B, J)`` long, atoms of each present element in order (0 pads).
        """
        slot_count = slot_count.clamp(max=self.max_count)  # larger counts are outside every space it serves
        distinct, inverse = torch.unique(torch.cat([group.unsqueeze(1), slot_count], dim=1), dim=0,
                                         return_inverse=True)
        group, slot_count = distinct[:, 0], distinct[:, 1:]
        valid = self.state_valid[group]  # (U, S)
        good = [valid]
        add = self.add[group]  # (U, S, S)
        for j in range(slot_count.shape[1] - 1, -1, -1):
            fits = self.fits[group, slot_count[:, j]]  # (U, S) usages x that place the element
            after = _lookup(good[0], add)  # (U, S, S): good[s + x]
            good.insert(0, (fits.unsqueeze(1) & after).any(dim=2) & valid)
        return torch.stack(good, dim=1)[inverse]

    def letter_mask(self, group: Tensor, remaining: Tensor, last: Tensor, used: Tensor, usage: Tensor,
                    good_after: Tensor) -> Tensor:
        """``(B, W)`` bool: letters the next orbit of the current element may take without a dead end.

        Args:
            group: ``(B,)`` long group rows.
            remaining: ``(B,)`` long, atoms of the current element not yet on an orbit (> 0).
            last: ``(B,)`` long, order of the element's previous letter, -1 for its first orbit.
            used: ``(B, W)`` bool, fixed letters already holding an orbit (any element).
            usage: ``(B,)`` long, usage state of ``used``.
            good_after: ``(B, S)`` bool, ``good_states`` of the next slot.
        """
        kind, order, mult = self.kind[group], self.order[group], self.multiplicity[group]  # (B, W)
        rest = remaining.unsqueeze(1) - mult  # (B, W)
        base = self.exists[group] & (rest >= 0) & ~used & (
            (order > last.unsqueeze(1)) | ((kind == FREE) & (order == last.unsqueeze(1))))
        rest = rest.clamp(min=0)
        final_good = good_after.gather(1, usage.unsqueeze(1))  # (B, 1): this element takes no more classes
        free_rows = self.representable[group]  # (B, W+1, K+1)
        free_ok = free_rows.gather(1, order.unsqueeze(2).expand(-1, -1, free_rows.shape[2])).gather(
            2, rest.unsqueeze(2)).squeeze(2)  # free letters at or after this one hold the rest
        unbounded_ok = free_rows[:, 0, :].gather(1, rest)  # (B, W): the rest on any free letters
        ok = (kind != BOUNDED) & torch.where(kind == FREE, free_ok, unbounded_ok) & final_good
        need = ((kind == BOUNDED) & base).any(dim=1).nonzero().squeeze(1)  # rows with a capped letter to check
        if need.numel():
            g = group[need]
            slot = torch.where(self.capped[g] >= 0, self.capped[g], self.n_letters)  # pads write to a dropped column
            capped_ok = self._capped_ok(g, remaining[need], used[need], usage[need], good_after[need])
            ok[need] |= torch.zeros(len(need), self.n_letters + 1, dtype=torch.bool,
                                    device=group.device).scatter(1, slot, capped_ok)[:, :-1]
        return base & ok

    def _capped_ok(self, group: Tensor, remaining: Tensor, used: Tensor, usage: Tensor, good_after: Tensor) -> Tensor:
        """``(B, F)`` for the group's capped fixed letters in order: after taking it, some usage ``x`` of the
        capped letters still after it completes the element and leaves the others placeable."""
        letter = self.capped[group]  # (B, F), -1 pads
        real = letter >= 0
        letter = letter.clamp(min=0)
        klass = self.klass[group.unsqueeze(1), letter].clamp(min=0)  # (B, F)
        spare = real & ~used.gather(1, letter)
        of_class = torch.nn.functional.one_hot(klass, self.state_usage.shape[2]) * spare.unsqueeze(2)  # (B, F, C)
        available = of_class.flip(1).cumsum(dim=1).flip(1) - of_class  # (B, F, C): spare ones after each
        picked = self.add[group.unsqueeze(1), usage.unsqueeze(1), self.unit[group.unsqueeze(1), klass]]  # (B, F)
        x_usage = self.state_usage[group].unsqueeze(1)  # (B, 1, S, C)
        within = (x_usage <= available.unsqueeze(2)).all(dim=3) & self.state_valid[group].unsqueeze(1)  # (B, F, S)
        rest = (remaining.unsqueeze(1) - self.multiplicity[group.unsqueeze(1), letter]).clamp(min=0)
        fits = self.fits[group.unsqueeze(1), rest]  # (B, F, S)
        landing = self.add[group.unsqueeze(1), picked.clamp(min=0)]  # (B, F, S): usage picked + x
        return real & (picked >= 0) & (within & fits & _lookup(good_after, landing)).any(dim=2)

    def slots(self, counts: Tensor) -> tuple[Tensor, Tensor]:
        """Present elements in column order: ``(B, J)`` element column and count (-1 and 0 pad)."""
        present = counts > 0
        key = torch.where(present, torch.arange(counts.shape[1], device=counts.device), counts.shape[1])
        column = key.sort(dim=1).values[:, : max(1, int(present.sum(dim=1).max()))]
        inside = column < counts.shape[1]
        count = counts.gather(1, column.clamp(max=counts.shape[1] - 1)) * inside
        return torch.where(inside, column, -1), count

    def after(self, group: Tensor, letter: Tensor, usage: Tensor) -> Tensor:
        """``(B,)`` usage state once letter ``letter`` ``(B,)`` holds an orbit."""
        klass = self.klass[group, letter]
        step = self.add[group, usage, self.unit[group, klass.clamp(min=0)]]
        return torch.where(klass >= 0, step, usage)

    def replay(self, group: Tensor, counts: Tensor, sites: Tensor, mask: Tensor | None = None) -> OrbitSteps:
        """The state before every orbit of given assignments, and whether each orbit was allowed.

        Args:
            group: ``(N,)`` long group rows.
            counts: ``(N, E)`` long atom counts.
            sites: ``(N, L, 2)`` long (element column, letter index) in trajectory order, -1 pads.
            mask: ``(N, L, W)`` bool, the letters allowed at each orbit when already known
                (``Trajectories.letter_mask``); None computes them, the costliest part of the replay.
        """
        n, length = sites.shape[:2]
        element, letter = sites[..., 0], sites[..., 1]
        real = letter >= 0
        rows = group.unsqueeze(1).expand(n, length)
        safe = letter.clamp(min=0)
        mult = self.multiplicity[rows, safe] * real
        previous = torch.cat([torch.full_like(element[:, :1], -1), element[:, :-1]], dim=1)
        starts = real & (element != previous)
        placed_atoms = mult.cumsum(dim=1) - mult
        before_element = (counts.cumsum(dim=1) - counts).gather(1, element.clamp(min=0))
        remaining = counts.gather(1, element.clamp(min=0)) - (placed_atoms - before_element)
        one_hot = torch.nn.functional.one_hot(safe, self.n_letters) * real.unsqueeze(2)  # (N, L, W)
        placed = one_hot.cumsum(dim=1) - one_hot
        start_index = torch.where(starts, torch.arange(length, device=sites.device), 0).cummax(dim=1).values
        mine = placed - placed.gather(1, start_index.unsqueeze(2).expand_as(placed))
        if mask is None:
            order = self.order[rows, safe]
            last = torch.where(starts, -1, torch.cat([torch.full_like(order[:, :1], -1), order[:, :-1]], dim=1))
            fixed = one_hot * (self.kind[rows, safe] != FREE).unsqueeze(2)
            used = (fixed.cumsum(dim=1) - fixed) > 0
            klass = self.klass[group]  # (N, W)
            per_class = (torch.nn.functional.one_hot(klass.clamp(min=0), self.state_usage.shape[2])
                         * (klass >= 0).unsqueeze(2))
            usage = torch.einsum("nlw,nwc,nc->nl", used.long(), per_class.long(), self.unit[group])
            slot = starts.long().cumsum(dim=1) - 1
            _, slot_count = self.slots(counts)
            good = self.good_states(group, slot_count)  # (N, J+1, S)
            next_slot = (slot + 1).clamp(0, good.shape[1] - 1)
            good_after = good.gather(1, next_slot.unsqueeze(2).expand(-1, -1, good.shape[2]))
            mask = torch.zeros(n, length, self.n_letters, dtype=torch.bool, device=sites.device)
            flat = real.nonzero(as_tuple=True)
            mask[flat] = self.letter_mask(rows[flat], remaining[flat].clamp(1, self.max_count), last[flat],
                                          used[flat], usage[flat], good_after[flat])
        allowed = mask.gather(2, safe.unsqueeze(2)).squeeze(2) | ~real
        per_element = torch.zeros_like(counts).scatter_add_(1, element.clamp(min=0), mult)
        complete = ((per_element == counts).all(dim=1) & allowed.all(dim=1) & (counts <= self.max_count).all(dim=1)
                    & (remaining > 0).where(real, True).all(dim=1))
        return OrbitSteps(element, letter, real, remaining, placed, mine, mask, complete)


@dataclass
class OrbitState:
    """Partial Wyckoff assignments of a batch, advanced one orbit at a time (tensors over rows).

    Attributes:
        group: ``(B,)`` group rows; ``slot_element``, ``slot_count``: ``(B, J)`` from ``slots``.
        good: ``(B, J+1, S)`` from ``good_states``.
        slot: ``(B,)`` the element being placed (index into the slots; J once all are placed).
        remaining, last, usage: ``(B,)`` as ``letter_mask`` takes them; ``used``: ``(B, W)``.
        placed, mine: ``(B, W)`` orbits per letter so far, of all elements and of the current one.
        sites: ``(B, L, 2)`` the orbits so far (element column, letter; -1 pads); ``n_orbits``: ``(B,)``.
    """

    group: Tensor
    slot_element: Tensor
    slot_count: Tensor
    good: Tensor
    slot: Tensor
    remaining: Tensor
    last: Tensor
    used: Tensor
    usage: Tensor
    placed: Tensor
    mine: Tensor
    sites: Tensor
    n_orbits: Tensor

    @classmethod
    def start(cls, tables: WyckoffTables, group: Tensor, counts: Tensor, max_orbits: int) -> OrbitState:
        """No orbit placed yet, for crystals of ``group`` rows and ``counts`` ``(B, E)``."""
        slot_element, slot_count = tables.slots(counts)
        n, device = len(group), group.device
        zeros = torch.zeros(n, dtype=torch.long, device=device)
        return cls(group, slot_element, slot_count, tables.good_states(group, slot_count), zeros,
                   slot_count[:, 0].clone(), torch.full_like(zeros, -1),
                   torch.zeros(n, tables.n_letters, dtype=torch.bool, device=device), zeros.clone(),
                   torch.zeros(n, tables.n_letters, dtype=torch.long, device=device),
                   torch.zeros(n, tables.n_letters, dtype=torch.long, device=device),
                   torch.full((n, max_orbits, 2), -1, dtype=torch.long, device=device), zeros.clone())

    def element(self, rows: Tensor) -> Tensor:
        """``(A,)`` element column whose orbit is next, for ``rows`` still placing atoms."""
        return self.slot_element[rows, self.slot[rows]]

    def mask(self, tables: WyckoffTables, rows: Tensor) -> Tensor:
        """``(A, W)`` allowed letters of the next orbit of ``rows`` (rows still placing atoms)."""
        return tables.letter_mask(self.group[rows], self.remaining[rows], self.last[rows], self.used[rows],
                                  self.usage[rows], self.good[rows, self.slot[rows] + 1])

    def advance(self, tables: WyckoffTables, rows: Tensor, letter: Tensor) -> None:
        """Put the next orbit of each of ``rows`` ``(A,)`` on ``letter`` ``(A,)`` (in place)."""
        g = self.group[rows]
        self.sites[rows, self.n_orbits[rows]] = torch.stack([self.element(rows), letter], dim=1)
        self.n_orbits[rows] += 1
        self.placed[rows, letter] += 1
        self.mine[rows, letter] += 1
        fixed = tables.kind[g, letter] != FREE
        self.used[rows[fixed], letter[fixed]] = True
        self.usage[rows] = tables.after(g, letter, self.usage[rows])
        self.last[rows] = tables.order[g, letter]
        self.remaining[rows] -= tables.multiplicity[g, letter]
        done = rows[self.remaining[rows] == 0]
        self.slot[done] += 1
        more = done[self.slot[done] < self.slot_count.shape[1]]
        self.remaining[more] = self.slot_count[more, self.slot[more]]
        self.last[done] = -1
        self.mine[done] = 0

    def take(self, index: Tensor) -> OrbitState:
        """The rows ``index`` (repeats allowed), as a new state."""
        return OrbitState(*(getattr(self, f.name)[index] for f in fields(self)))


def all_assignments(tables: WyckoffTables, group: Tensor, counts: Tensor, max_orbits: int
                    ) -> tuple[Tensor, Tensor]:
    """Every Wyckoff assignment of each crystal (``(B,)`` group rows, ``(B, E)`` counts), in trajectory order.

    Returns ``(R,)`` the crystal of each assignment and ``(R, L, 2)`` its sites. Exhaustive and
    exponential: for tests and benchmarks on small spaces, not for sampling.
    """
    state = OrbitState.start(tables, group, counts, max_orbits)
    crystal = torch.arange(len(group), device=group.device)
    while bool((state.remaining > 0).any()):
        rows = torch.arange(len(crystal), device=group.device)
        active = state.remaining > 0
        mask = torch.zeros(len(crystal), tables.n_letters, dtype=torch.bool, device=group.device)
        mask[active] = state.mask(tables, rows[active])
        mask[~active, 0] = True  # finished rows are kept once
        parent, letter = mask.nonzero(as_tuple=True)
        state, crystal = state.take(parent), crystal[parent]
        moving = (state.remaining > 0).nonzero().squeeze(1)
        state.advance(tables, moving, letter[moving])
    return crystal, state.sites


@dataclass(frozen=True)
class OrbitSteps:
    """The Wyckoff stage of ``N`` trajectories replayed: per orbit ``(N, L)`` and per crystal ``(N,)``.

    Attributes:
        element, letter: ``(N, L)`` long, the orbit's element column and letter (-1 pads).
        real: ``(N, L)`` bool, an orbit (not padding).
        remaining: ``(N, L)`` long, atoms of the orbit's element not placed before it.
        placed: ``(N, L, W)`` long, orbits per letter before it (all elements).
        mine: ``(N, L, W)`` long, orbits per letter of its element before it.
        mask: ``(N, L, W)`` bool, the letters allowed at that step.
        complete: ``(N,)`` bool, every orbit allowed and every element's atoms placed.
    """

    element: Tensor
    letter: Tensor
    real: Tensor
    remaining: Tensor
    placed: Tensor
    mine: Tensor
    mask: Tensor
    complete: Tensor


def _lookup(good: Tensor, index: Tensor) -> Tensor:
    """``good[b, index[b, ...]]`` with index -1 giving False: ``(B, S)``, ``(B, ...)`` -> ``(B, ...)``."""
    flat = index.reshape(index.shape[0], -1)
    value = good.gather(1, flat.clamp(min=0)) & (flat >= 0)
    return value.view(index.shape)


@cache
def _group_layout(number: int) -> tuple[list[tuple[int, int, int, int]], list[int], list[int]]:
    """Per letter (multiplicity, kind, order, class); class multiplicities; class caps. The classes are
    pyxtal's capped multiplicities in its order (``SpaceGroup.multiplicity_bounds``), as ``fixed_usages``
    counts them."""
    group = space_group(number)
    wps = group.wyckoff_positions
    base, upper = group.multiplicity_bounds
    capped = [b for b, u in zip(base, upper, strict=True) if u is not None]
    caps = [u for u in upper if u is not None]

    def kind(w) -> int:  # noqa: ANN001
        return FREE if w.free else (BOUNDED if w.multiplicity in capped else UNBOUNDED)

    rank = sorted(range(len(wps)), key=lambda i: (kind(wps[i]),
                                                  capped.index(wps[i].multiplicity) if kind(wps[i]) == BOUNDED else 0,
                                                  i))
    order = {i: position for position, i in enumerate(rank)}
    letters = [(w.multiplicity, kind(w), order[i], capped.index(w.multiplicity) if kind(w) == BOUNDED else -1)
               for i, w in enumerate(wps)]
    return letters, capped, caps


def _build(groups: tuple[int, ...], max_count: int) -> WyckoffTables:
    layouts = [_group_layout(g) for g in groups]
    n_groups = len(groups)
    width = max(len(letters) for letters, _, _ in layouts)
    n_classes = max(1, max(len(caps) for _, _, caps in layouts))
    n_states = max(math.prod(c + 1 for c in caps) for _, _, caps in layouts)
    exists = torch.zeros(n_groups, width, dtype=torch.bool)
    multiplicity = torch.zeros(n_groups, width, dtype=torch.long)
    kind = torch.full((n_groups, width), -1, dtype=torch.long)
    order = torch.full((n_groups, width), width, dtype=torch.long)
    klass = torch.full((n_groups, width), -1, dtype=torch.long)
    state_usage = torch.zeros(n_groups, n_states, n_classes, dtype=torch.long)
    state_valid = torch.zeros(n_groups, n_states, dtype=torch.bool)
    add = torch.full((n_groups, n_states, n_states), -1, dtype=torch.long)
    unit = torch.zeros(n_groups, n_classes, dtype=torch.long)
    fits = torch.zeros(n_groups, max_count + 1, n_states, dtype=torch.bool)
    representable = torch.zeros(n_groups, width + 1, max_count + 1, dtype=torch.bool)
    for g, (letters, capped, caps) in enumerate(layouts):
        for w, (m, k, o, c) in enumerate(letters):
            exists[g, w], multiplicity[g, w], kind[g, w], order[g, w], klass[g, w] = True, m, k, o, c
        caps_full = caps + [0] * (n_classes - len(caps))
        strides = [math.prod(c + 1 for c in caps_full[:i]) for i in range(n_classes)]
        size = math.prod(c + 1 for c in caps_full)
        usages = torch.cartesian_prod(*[torch.arange(c + 1) for c in caps_full]).reshape(size, n_classes)
        index = (usages * torch.tensor(strides)).sum(dim=1)
        state_usage[g, index] = usages
        state_valid[g, index] = True
        unit[g, : len(caps)] = torch.tensor(strides[: len(caps)])
        total = state_usage[g].unsqueeze(1) + state_usage[g].unsqueeze(0)  # (S, S, C)
        inside = (total <= torch.tensor(caps_full)).all(dim=2) & state_valid[g].unsqueeze(1) & state_valid[g]
        add[g] = torch.where(inside, (total * torch.tensor(strides)).sum(dim=2), -1)
        free_by_order = sorted((o, m) for m, k, o, _ in letters if k == FREE)
        for p in range(width + 1):
            free = tuple(sorted({m for o, m in free_by_order if o >= p}))
            representable[g, p] = torch.tensor([representable_by(free, r) for r in range(max_count + 1)])
        for n in range(max_count + 1):
            for use in fixed_usages(groups[g], n):
                fits[g, n, sum(k * stride for k, stride in zip(use, strides, strict=False))] = True
    n_capped = int((kind == BOUNDED).sum(dim=1).max())
    capped = torch.full((n_groups, n_capped), -1, dtype=torch.long)
    for g in range(n_groups):
        letters_in_order = sorted((int(order[g, w]), w) for w in range(width) if kind[g, w] == BOUNDED)
        capped[g, : len(letters_in_order)] = torch.tensor([w for _, w in letters_in_order], dtype=torch.long)
    return WyckoffTables(exists, multiplicity, kind, order, klass, state_usage, state_valid, add, unit, fits,
                         representable, capped)


def letter_prior(groups: tuple[int, ...], width: int) -> Tensor:
    """``(G, W)`` log frequency of each letter among the orbits of known crystals in that group.

    Counts come from pyxtal's statistics of Materials Project structures (its package data
    ``spg_num_wps_mp.csv``: per group, the letter indices of each structure's orbits and
    how many structures share them), plus one per letter so that no letter is ruled out:
    a prior the policy can move away from, not a rule. Padding letters get 0.
    """
    counts = _pyxtal_letter_counts()
    prior = torch.zeros(len(groups), width)
    for row, number in enumerate(groups):
        n_letters = len(space_group(number).wyckoff_positions)
        seen = torch.ones(n_letters)
        for index, n in counts.get(number, {}).items():
            if index < n_letters:
                seen[index] += n
        prior[row, :n_letters] = (seen / seen.sum()).log()
    return prior


@cache
def _pyxtal_letter_counts() -> dict[int, dict[int, int]]:
    """Group -> letter index -> orbits on it among pyxtal's Materials Project structures."""
    import csv
    from importlib.resources import files

    counts: dict[int, dict[int, int]] = {}
    with (files("pyxtal") / "database" / "spg_num_wps_mp.csv").open() as handle:
        for row in csv.DictReader(handle):
            per_group = counts.setdefault(int(row["spg"]), {})
            for index in row["wps"].split("-"):
                per_group[int(index)] = per_group.get(int(index), 0) + int(row["count"])
    return counts
