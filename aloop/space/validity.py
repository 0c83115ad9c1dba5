"""The one validity checker of the crystal space, for samples, MP entries and imports alike.

``broken_constraints`` evaluates every constraint on a whole ``CrystalBatch`` at once;
``valid_mask`` is its summary and ``check_crystal`` its readable form for one crystal.
Compositions found in the space's tables are checked by lookup; only others (invalid
anyway, e.g. MP entries with too many atoms) go through the charge and Wyckoff
functions, so the checker can name every constraint such an entry breaks.

Example:
    >>> space = CrystalSpace.from_settings(load_config("configs/fe-o.yaml").space)
    >>> nacl = Crystal(225, Composition("Na4Cl4"), (5.6,) * 3 + (90.0,) * 3)
    >>> [v.constraint.value for v in check_crystal(nacl, space)]
    ['unknown_element']
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch

from aloop.space.composition import charge_neutral, multiset_index, wyckoff_compatibility
from aloop.space.crystal import Crystal, CrystalBatch
from aloop.space.groups import N_SPACE_GROUPS, space_group, space_group_table
from aloop.space.lattice import follows_system, in_ranges, is_real_cell
from aloop.space.space import CrystalSpace
from aloop.space.wyckoff import site_errors


class Constraint(StrEnum):
    """The hard constraints of the space, in the order they are reported."""

    UNKNOWN_ELEMENT = "unknown_element"
    NO_ATOMS = "no_atoms"
    TOO_MANY_ATOMS_OF_ELEMENT = "too_many_atoms_of_element"
    TOO_MANY_ATOMS = "too_many_atoms"
    TOO_MANY_ELEMENTS = "too_many_elements"
    TOO_FEW_ELEMENTS = "too_few_elements"
    NOT_CHARGE_NEUTRAL = "not_charge_neutral"
    SPACE_GROUP_NOT_ALLOWED = "space_group_not_allowed"
    WYCKOFF_INCOMPATIBLE = "wyckoff_incompatible"
    WYCKOFF_SITES = "wyckoff_sites"
    """The crystal's Wyckoff sites (when it has any) do not hold its counts, or put two orbits on a fixed position."""
    LATTICE_SYSTEM_RULE = "lattice_system_rule"
    LATTICE_OUT_OF_RANGE = "lattice_out_of_range"
    NOT_A_CELL = "not_a_cell"


@dataclass(frozen=True)
class Violation:
    """One broken constraint of one crystal, with a message saying what and by how much."""

    constraint: Constraint
    message: str


def broken_constraints(batch: CrystalBatch, space: CrystalSpace) -> dict[Constraint, torch.Tensor]:
    """Every constraint on a batch: ``{constraint: (N,) bool}``, True where the crystal breaks it.

    ``batch.elements`` may differ from ``space.elements`` (columns are matched by symbol).
    A crystal whose space group is outside 1-230 only breaks ``SPACE_GROUP_NOT_ALLOWED``
    among the group-dependent constraints.
    """
    settings = space.settings
    counts, lattice = batch.counts.cpu().long(), batch.lattice.cpu().double()
    known = torch.tensor([el in space.elements for el in batch.elements], dtype=torch.bool)
    in_space = torch.zeros(len(batch), len(space.elements), dtype=torch.long)
    for column, el in enumerate(batch.elements):
        if el in space.elements:
            in_space[:, space.elements.index(el)] = counts[:, column]
    sg = batch.space_group.cpu().long()
    sg_known = (sg >= 1) & (sg <= N_SPACE_GROUPS)
    sg_safe = torch.where(sg_known, sg, torch.ones_like(sg))
    composition = space.composition_index(in_space)
    composition = torch.where((counts[:, ~known] > 0).any(dim=1), -1, composition)
    listed = composition >= 0
    neutral = listed.clone()
    neutral[~listed] = charge_neutral(counts[~listed], batch.elements, settings.charge_rule)
    lattice_system = space_group_table().lattice_system[sg_safe]
    has_atoms = counts.sum(dim=1) > 0
    return {
        Constraint.UNKNOWN_ELEMENT: (counts[:, ~known] > 0).any(dim=1),
        Constraint.NO_ATOMS: ~has_atoms,
        Constraint.TOO_MANY_ATOMS_OF_ELEMENT: (counts > settings.max_atoms_per_element).any(dim=1),
        Constraint.TOO_MANY_ATOMS: counts.sum(dim=1) > settings.max_atoms,
        Constraint.TOO_MANY_ELEMENTS: (counts > 0).sum(dim=1) > settings.max_elements,
        Constraint.TOO_FEW_ELEMENTS: has_atoms & ((counts > 0).sum(dim=1) < settings.min_elements),
        Constraint.NOT_CHARGE_NEUTRAL: ~neutral & has_atoms,
        Constraint.SPACE_GROUP_NOT_ALLOWED: ~sg_known | (space.group_row[sg_safe] < 0),
        Constraint.WYCKOFF_INCOMPATIBLE: sg_known & has_atoms & ~_wyckoff_fits(counts, sg_safe, composition, space),
        Constraint.WYCKOFF_SITES: sg_known & ~_sites_fit(batch.sites, counts, sg_safe),
        Constraint.LATTICE_SYSTEM_RULE: sg_known & ~follows_system(lattice_system, lattice),
        Constraint.LATTICE_OUT_OF_RANGE: ~in_ranges(lattice, length_range=space.length_range,
                                                    angle_range=space.angle_range),
        Constraint.NOT_A_CELL: ~is_real_cell(lattice),
    }


def _wyckoff_fits(counts: torch.Tensor, sg: torch.Tensor, composition: torch.Tensor,
                  space: CrystalSpace) -> torch.Tensor:
    """``(N,)`` bool: the counts fit group ``sg``; table lookup for listed compositions, pyxtal otherwise."""
    listed = composition >= 0
    fits = torch.zeros(len(sg), dtype=torch.bool)
    fits[listed] = space.wyckoff[space.composition_multiset[composition[listed]], sg[listed]]
    others = ~listed & (counts.sum(dim=1) > 0)
    if others.any():
        multisets, index = multiset_index(counts[others])
        fits[others] = wyckoff_compatibility(multisets)[index, sg[others]]
    return fits


def _sites_fit(sites: torch.Tensor | None, counts: torch.Tensor, sg: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: no sites, or orbits (pyxtal's tables) that hold each element's count with each
    position without free coordinates used once at most."""
    if sites is None:
        return torch.ones(len(sg), dtype=torch.bool)
    sites = sites.cpu().long()
    table = space_group_table()
    element, letter = sites[..., 0], sites[..., 1]
    real = letter >= 0
    exists = real & (letter < table.wyckoff_multiplicity.shape[1])
    letter = torch.where(exists, letter, 0)
    multiplicity = table.wyckoff_multiplicity[sg.unsqueeze(1), letter] * exists
    exists &= multiplicity > 0
    placed = torch.zeros_like(counts).scatter_add_(1, element.clamp(min=0), multiplicity)
    fixed = exists & ~table.wyckoff_free[sg.unsqueeze(1), letter]
    per_letter = torch.zeros(len(sg), table.wyckoff_multiplicity.shape[1], dtype=torch.long)
    per_letter.scatter_add_(1, letter, fixed.long())
    decided = real.any(dim=1)
    fits = (exists == real).all(dim=1) & (placed == counts).all(dim=1) & (per_letter <= 1).all(dim=1)
    return ~decided | fits


def valid_mask(batch: CrystalBatch, space: CrystalSpace) -> torch.Tensor:
    """``(N,)`` bool on the batch's device: the crystal breaks no constraint of ``space``."""
    broken = torch.stack(list(broken_constraints(batch, space).values())).any(dim=0)
    return (~broken).to(batch.space_group.device)


def check_crystal(crystal: Crystal, space: CrystalSpace) -> list[Violation]:
    """The constraints ``crystal`` breaks in ``space``, with messages; empty when it is valid."""
    extra = sorted({el.symbol for el in crystal.composition} - set(space.elements))
    batch = CrystalBatch.from_crystals([crystal], (*space.elements, *extra))
    broken = [c for c, mask in broken_constraints(batch, space).items() if bool(mask[0])]
    return [Violation(c, _message(c, crystal, space, extra)) for c in broken]


def _message(constraint: Constraint, crystal: Crystal, space: CrystalSpace, extra: list[str]) -> str:
    s = space.settings
    counts = {el.symbol: int(round(n)) for el, n in crystal.composition.items()}
    lat = ", ".join(f"{x:.3f}" for x in crystal.lattice)
    system = space_group(crystal.space_group).lattice_system if 1 <= crystal.space_group <= N_SPACE_GROUPS else "?"
    if constraint == Constraint.WYCKOFF_SITES:  # only crystals of a real group reach it
        return (f"Wyckoff sites {crystal.wyckoff!r} of space group {crystal.space_group} do not fit "
                f"{crystal.formula}: " + "; ".join(site_errors(crystal.sites, crystal.space_group, counts)))
    messages = {
        Constraint.UNKNOWN_ELEMENT: f"elements {extra} are not in space.elements={list(space.elements)}",
        Constraint.NO_ATOMS: "the composition has no atoms",
        Constraint.TOO_MANY_ATOMS_OF_ELEMENT: f"{ {e: n for e, n in counts.items() if n > s.max_atoms_per_element} } "
                                              f"exceed space.max_atoms_per_element={s.max_atoms_per_element}",
        Constraint.TOO_MANY_ATOMS: f"{sum(counts.values())} atoms exceed space.max_atoms={s.max_atoms}",
        Constraint.TOO_MANY_ELEMENTS: f"{len(counts)} elements exceed space.max_elements={s.max_elements}",
        Constraint.TOO_FEW_ELEMENTS: f"{len(counts)} element(s), fewer than space.min_elements={s.min_elements}",
        Constraint.NOT_CHARGE_NEUTRAL: f"{crystal.formula}: no assignment of oxidation states sums to zero under "
                                       f"space.charge_rule={list(s.charge_rule)}",
        Constraint.SPACE_GROUP_NOT_ALLOWED: f"space group {crystal.space_group} is not among the "
                                            f"{len(space.space_groups)} allowed by the space's restrictions",
        Constraint.WYCKOFF_INCOMPATIBLE: f"counts {sorted(counts.values(), reverse=True)} of {crystal.formula} do not "
                                         f"fit the Wyckoff positions of space group {crystal.space_group}",
        Constraint.LATTICE_SYSTEM_RULE: f"lattice ({lat}) breaks the {system}"
                                        f" rule of space group {crystal.space_group} (see aloop.space.lattice)",
        Constraint.LATTICE_OUT_OF_RANGE: f"lattice ({lat}) is outside lengths {space.length_range} A, "
                                         f"angles {space.angle_range} degrees",
        Constraint.NOT_A_CELL: f"lattice ({lat}) makes no cell of volume above 0.1 A^3",
    }
    return messages[constraint]
