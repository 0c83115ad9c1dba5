"""``CrystalSpace``: the configured crystal space as precomputed feasibility tables.

Built once from ``SpaceSettings``: the allowed space groups (after the lattice-system,
point-symmetry and space-group restrictions, and dropping systems whose fixed angles
fall outside the angle range), every composition within the atom limits that is charge
neutral and fits at least one allowed group, and which group hosts which composition
(Wyckoff positions, as pyxtal decides). Groups hosting no composition are dropped, so
every choice of lattice system -> point symmetry -> group -> composition -> lattice
has a valid completion: the GFlowNet built on these tables has no dead ends.

Example:
    >>> from aloop.config import load_config
    >>> space = CrystalSpace.from_settings(load_config("configs/fe-o.yaml").space)
    >>> space.compositions.shape[1], space.compatible.shape == (len(space.space_groups), len(space.compositions))
    (2, True)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from aloop.config import CRYSTAL_LATTICE_SYSTEMS, POINT_SYMMETRIES, SpaceSettings
from aloop.space.composition import (
    charge_neutral,
    enumerate_counts,
    multiset,
    multiset_index,
    unique_rows,
    wyckoff_compatibility,
)
from aloop.space.cache import load_arrays, save_arrays
from aloop.space.groups import N_SPACE_GROUPS, space_group_table
from aloop.space.lattice import system_fits_ranges


class SpaceError(ValueError):
    """The configured restrictions leave no valid crystal; the message names the restriction."""


@dataclass(frozen=True, eq=False)
class CrystalSpace:
    """The crystal space as tensors (CPU; move the ones you need to your device).

    Attributes:
        settings: the settings it was built from.
        elements: element symbols, the columns of ``compositions``.
        space_groups: ``(G,)`` long, allowed space-group numbers, ascending.
        lattice_system: ``(G,)`` long, index into ``aloop.config.CRYSTAL_LATTICE_SYSTEMS``.
        point_symmetry: ``(G,)`` long, index into ``aloop.config.POINT_SYMMETRIES``.
        compositions: ``(M, E)`` long, atom counts of the conventional cell: charge neutral,
            within ``max_atoms_per_element``, ``max_atoms``, ``max_elements``, and hosted by
            at least one allowed group.
        compatible: ``(G, M)`` bool, group g can host composition m on its Wyckoff positions.
        length_range: (min, max) of a, b, c in Angstrom.
        angle_range: (min, max) of alpha, beta, gamma in degrees.
        multisets: the distinct sorted non-zero count tuples of ``compositions``.
        composition_multiset: ``(M,)`` long, index into ``multisets``.
        wyckoff: ``(U, 231)`` bool, multiset u fits the Wyckoff positions of group number n
            (all 230 groups, also those not allowed).
    """

    settings: SpaceSettings
    elements: tuple[str, ...]
    space_groups: torch.Tensor
    lattice_system: torch.Tensor
    point_symmetry: torch.Tensor
    compositions: torch.Tensor
    compatible: torch.Tensor
    length_range: tuple[float, float]
    angle_range: tuple[float, float]
    multisets: tuple[tuple[int, ...], ...]
    composition_multiset: torch.Tensor
    wyckoff: torch.Tensor

    @classmethod
    def from_settings(cls, settings: SpaceSettings, *, use_cache: bool = True) -> CrystalSpace:
        """Build the tables, or load them from the disk cache (``aloop.space.cache``) keyed by the settings.

        Raises:
            SpaceError: a restriction leaves no valid crystal; the message names it.
        """
        length_range = (settings.lattice.length.min, settings.lattice.length.max)
        angle_range = (settings.lattice.angle.min, settings.lattice.angle.max)
        if length_range[0] <= 0 or not 0 < angle_range[0] < angle_range[1] < 180:
            raise SpaceError(f"space.lattice: lengths {length_range} must be positive and angles "
                             f"{angle_range} inside (0, 180) degrees")
        key = _cache_key(settings)
        arrays = load_arrays(key) if use_cache else None
        if arrays is None:
            arrays = _build_arrays(settings)
            if use_cache:
                save_arrays(key, **arrays)
        groups = torch.from_numpy(arrays["space_groups"]).long()
        counts = torch.from_numpy(arrays["compositions"]).long()
        composition_multiset = torch.from_numpy(arrays["composition_multiset"]).long()
        wyckoff = torch.from_numpy(arrays["wyckoff"])
        table = space_group_table()
        return cls(
            settings=settings,
            elements=tuple(settings.elements),
            space_groups=groups,
            lattice_system=table.lattice_system[groups],
            point_symmetry=table.point_symmetry[groups],
            compositions=counts,
            compatible=wyckoff[composition_multiset][:, groups].T.contiguous(),
            length_range=length_range,
            angle_range=angle_range,
            multisets=tuple(multiset(row) for row in arrays["multisets"].tolist()),
            composition_multiset=composition_multiset,
            wyckoff=wyckoff,
        )

    @property
    def group_row(self) -> torch.Tensor:
        """``(231,)`` long: row of space-group number n in ``space_groups``, -1 when not allowed."""
        row = torch.full((N_SPACE_GROUPS + 1,), -1, dtype=torch.long)
        row[self.space_groups] = torch.arange(len(self.space_groups))
        return row

    def composition_index(self, counts: torch.Tensor) -> torch.Tensor:
        """``(N, E)`` counts over ``elements`` -> ``(N,)`` long row in ``compositions``, -1 when absent."""
        counts = counts.long().cpu()
        if self._composition_keys is None:  # too many elements to pack a row into one int64
            _, inverse = unique_rows(torch.cat([self.compositions, counts]))
            row = torch.full((int(inverse.max()) + 1,), -1, dtype=torch.long)
            row[inverse[: len(self.compositions)]] = torch.arange(len(self.compositions))
            return row[inverse[len(self.compositions):]]
        sorted_keys, order = self._composition_keys
        inside = ((counts >= 0) & (counts <= self.settings.max_atoms_per_element)).all(dim=1)
        keys = (counts.clamp(0, self.settings.max_atoms_per_element) * self._key_weights).sum(dim=1)
        position = torch.searchsorted(sorted_keys, keys).clamp(max=len(sorted_keys) - 1)
        found = inside & (sorted_keys[position] == keys)
        return torch.where(found, order[position], torch.full_like(position, -1))

    @property
    def _key_weights(self) -> torch.Tensor:
        base = self.settings.max_atoms_per_element + 1
        return base ** torch.arange(len(self.elements) - 1, -1, -1)

    @cached_property
    def _composition_keys(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Sorted int64 keys of ``compositions`` (mixed radix) and their rows; None when they would overflow."""
        if len(self.elements) * math.log2(self.settings.max_atoms_per_element + 1) >= 62:
            return None
        return torch.sort((self.compositions * self._key_weights).sum(dim=1))

    def describe(self) -> dict[str, int]:
        """Sizes for logs: groups, compositions, compatible pairs, per lattice system."""
        sizes = {"space_groups": len(self.space_groups), "compositions": len(self.compositions),
                 "compatible_pairs": int(self.compatible.sum())}
        for i, name in enumerate(CRYSTAL_LATTICE_SYSTEMS):
            sizes[f"space_groups_{name}"] = int((self.lattice_system == i).sum())
        return sizes


_TABLES_VERSION = 2
"""Bump when the way the tables are built changes, to invalidate cached spaces."""


def _cache_key(settings: SpaceSettings) -> str:
    text = f"{_TABLES_VERSION}|{settings.model_dump_json()}"
    return f"space-{hashlib.sha1(text.encode()).hexdigest()[:16]}"


def _build_arrays(settings: SpaceSettings) -> dict[str, np.ndarray]:
    """Enumerate, filter and cross the tables: allowed groups, compositions, Wyckoff rows (numpy, compact)."""
    groups = _allowed_groups(settings)
    counts = enumerate_counts(len(settings.elements), max_per_element=settings.max_atoms_per_element,
                              max_atoms=settings.max_atoms, max_elements=settings.max_elements,
                              min_elements=settings.min_elements)
    counts = counts[charge_neutral(counts, settings.elements, settings.charge_rule)]
    if counts.shape[0] == 0:
        raise SpaceError(f"no charge-neutral composition (space.charge_rule={list(settings.charge_rule)}) of "
                         f"space.elements={settings.elements} with "
                         f"space.max_atoms_per_element={settings.max_atoms_per_element}, "
                         f"space.max_atoms={settings.max_atoms}, space.max_elements={settings.max_elements}, "
                         f"space.min_elements={settings.min_elements}")
    multisets, composition_multiset = multiset_index(counts)
    compatible = wyckoff_compatibility(multisets)[composition_multiset][:, groups].T  # (G, M)
    keep_groups, keep_compositions = compatible.any(dim=1), compatible.any(dim=0)
    if not keep_groups.any():
        raise SpaceError(f"no allowed space group ({_restrictions(settings)}) can host any of the "
                         f"{counts.shape[0]} charge-neutral compositions of {settings.elements} "
                         f"(space.max_atoms={settings.max_atoms}) on its Wyckoff positions")
    counts = counts[keep_compositions]
    multisets, composition_multiset = multiset_index(counts)
    padded = np.zeros((len(multisets), settings.max_elements), dtype=np.int16)
    for u, m in enumerate(multisets):
        padded[u, : len(m)] = m
    return {
        "space_groups": groups[keep_groups].numpy().astype(np.int16),
        "compositions": counts.numpy().astype(np.uint8),
        "composition_multiset": composition_multiset.numpy().astype(np.int32),
        "multisets": padded,
        "wyckoff": wyckoff_compatibility(multisets).numpy(),
    }


def _restrictions(settings: SpaceSettings) -> str:
    parts = [f"space.{key}={getattr(settings, key)}" for key in ("lattice_systems", "point_symmetries", "space_groups")
             if getattr(settings, key) is not None]
    angle = settings.lattice.angle
    parts.append(f"space.lattice.angle=[{angle.min}, {angle.max}]")
    return ", ".join(parts)


def _allowed_groups(settings: SpaceSettings) -> torch.Tensor:
    """``(G,)`` long group numbers passing every restriction; ``SpaceError`` naming the one that empties it."""
    table = space_group_table()
    numbers = torch.arange(1, N_SPACE_GROUPS + 1)
    keep = torch.ones(N_SPACE_GROUPS, dtype=torch.bool)
    checks: list[tuple[str, torch.Tensor]] = []
    if settings.lattice_systems is not None:
        allowed = _indices(CRYSTAL_LATTICE_SYSTEMS, settings.lattice_systems)
        checks.append((f"space.lattice_systems={settings.lattice_systems}",
                       torch.isin(table.lattice_system[1:], allowed)))
    if settings.point_symmetries is not None:
        allowed = _indices(POINT_SYMMETRIES, settings.point_symmetries)
        checks.append((f"space.point_symmetries={settings.point_symmetries}",
                       torch.isin(table.point_symmetry[1:], allowed)))
    if settings.space_groups is not None:
        checks.append((f"space.space_groups={settings.space_groups}",
                       torch.isin(numbers, torch.tensor(settings.space_groups))))
    angle = (settings.lattice.angle.min, settings.lattice.angle.max)
    checks.append((f"space.lattice.angle=[{angle[0]}, {angle[1]}] (fixed angles 90/120 of the lattice systems)",
                   system_fits_ranges(angle)[table.lattice_system[1:]]))
    applied = []
    for name, mask in checks:
        keep &= mask
        applied.append(name)
        if not keep.any():
            raise SpaceError(f"no space group is left after {' and '.join(applied)}")
    return numbers[keep]


def _indices(names: Sequence[str], chosen: Sequence[str]) -> torch.Tensor:
    return torch.tensor([names.index(c) for c in chosen], dtype=torch.long)
