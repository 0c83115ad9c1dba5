"""The batched Crystal-GFN environment: feasibility tables and conversions, no networks.

A trajectory makes its steps in a fixed order (space group -> composition -> Wyckoff
sites -> lattice):

========= ================================ ============================================
step      action                           mask (precomputed table lookups)
========= ================================ ============================================
0         crystal-lattice system (8)       systems with an allowed space group
1         point-symmetry class (3)         classes with an allowed group in that system
2         space group (G)                  allowed groups of that system and class
3..E+2    count of element k (0..K)        prefixes that still complete into a
                                           composition the group hosts (``CompositionTrie``)
orbits    Wyckoff letter of the next orbit letters that leave the rest placeable
          (one step per orbit, element     (``aloop.gfn.wyckoff``); an element is done
          by element)                      when its orbits hold its atoms
last      lattice (continuous, [0, 1]^6)   none: ``CellMap`` makes every draw a valid cell
========= ================================ ============================================

Every mask keeps at least one action because every allowed group hosts a composition
and every hosted composition has an assignment, so no trajectory dead-ends and nothing
is rejected.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from aloop.config import GFNSettings
from aloop.gfn.cell import CellMap
from aloop.gfn.states import Trajectories
from aloop.gfn.trie import CompositionTrie
from aloop.gfn.wyckoff import WyckoffTables, letter_prior
from aloop.hardware import resolve_device
from aloop.space.crystal import CrystalBatch
from aloop.space.groups import N_LATTICE_SYSTEMS, N_POINT_SYMMETRIES
from aloop.space.lattice import follows_system
from aloop.space.space import CrystalSpace


@dataclass(frozen=True)
class CrystalEnv:
    """Tables of the four-stage construction over one ``CrystalSpace``.

    Attributes:
        space: the crystal space.
        group_number: ``(G,)`` long, allowed space-group numbers.
        group_lattice_system: ``(G,)`` long, index into ``CRYSTAL_LATTICE_SYSTEMS``.
        group_point_symmetry: ``(G,)`` long, point-symmetry class 0..2.
        lattice_system_mask: ``(8,)`` bool.
        point_symmetry_mask: ``(8, 3)`` bool, by lattice system.
        group_mask: ``(8, 3, G)`` bool, by lattice system and point-symmetry class.
        trie: composition prefix tables.
        wyckoff: Wyckoff-stage tables.
        letter_prior: ``(G, W)`` log frequency of each letter in known crystals (unweighted).
        cell: the lattice action's bounds.
        max_atoms: largest atom count of a composition, also the most orbits a crystal can have.
    """

    space: CrystalSpace
    group_number: torch.Tensor
    group_lattice_system: torch.Tensor
    group_point_symmetry: torch.Tensor
    lattice_system_mask: torch.Tensor
    point_symmetry_mask: torch.Tensor
    group_mask: torch.Tensor
    trie: CompositionTrie
    wyckoff: WyckoffTables
    letter_prior: torch.Tensor
    cell: CellMap
    max_atoms: int

    @classmethod
    def from_space(cls, space: CrystalSpace, settings: GFNSettings, *, device: torch.device | str = "cpu"
                   ) -> CrystalEnv:
        """Build the tables (about 2 s for the default space) and put them on ``device``.

        Only the lattice prior (``min_volume_per_atom``, ``min_length_fraction``) is read
        from ``settings``.

        Args:
            device: a torch device or a name of ``aloop.hardware.DEVICE_NAMES``; pass
                ``settings.device`` to train and sample where the config says (``auto``:
                CUDA when present). Policies built for the environment follow it.
        """
        system = space.lattice_system.long()
        symmetry = space.point_symmetry.long()
        n_groups = int(space.space_groups.shape[0])
        group_mask = torch.zeros(N_LATTICE_SYSTEMS, N_POINT_SYMMETRIES, n_groups, dtype=torch.bool)
        group_mask[system, symmetry, torch.arange(n_groups)] = True
        wyckoff = WyckoffTables.build(space)
        return cls(
            space=space,
            group_number=space.space_groups.long(),
            group_lattice_system=system,
            group_point_symmetry=symmetry,
            lattice_system_mask=group_mask.any(dim=2).any(dim=1),
            point_symmetry_mask=group_mask.any(dim=2),
            group_mask=group_mask,
            trie=CompositionTrie.build(space.compositions.long(), space.compatible.bool()),
            wyckoff=wyckoff,
            letter_prior=letter_prior(tuple(space.space_groups.tolist()), wyckoff.n_letters),
            cell=CellMap(tuple(space.length_range), tuple(space.angle_range), settings.min_volume_per_atom,
                         settings.min_length_fraction),
            max_atoms=int(space.compositions.sum(dim=1).max()),
        ).to(resolve_device(str(device)))

    def to(self, device: torch.device | str) -> CrystalEnv:
        return CrystalEnv(
            self.space, self.group_number.to(device), self.group_lattice_system.to(device),
            self.group_point_symmetry.to(device), self.lattice_system_mask.to(device),
            self.point_symmetry_mask.to(device), self.group_mask.to(device), self.trie.to(device),
            self.wyckoff.to(device), self.letter_prior.to(device), self.cell, self.max_atoms,
        )

    @property
    def device(self) -> torch.device:
        return self.group_number.device

    @property
    def n_elements(self) -> int:
        return len(self.space.elements)

    @property
    def n_groups(self) -> int:
        return int(self.group_number.shape[0])

    @property
    def orbit_step(self) -> int:
        """Step kind of every Wyckoff orbit (after system, class, group and the E counts)."""
        return self.n_elements + 3

    @property
    def lattice_step(self) -> int:
        """Step kind of the lattice, the last action."""
        return self.n_elements + 4

    def to_batch(self, trajectories: Trajectories) -> CrystalBatch:
        """The crystals the trajectories end in, on the environment's device."""
        return CrystalBatch(
            elements=tuple(self.space.elements),
            space_group=self.group_number[trajectories.group],
            counts=trajectories.counts,
            lattice=trajectories.lattice,
            sites=trajectories.sites,
        )

    def from_batch(self, batch: CrystalBatch) -> tuple[Trajectories, torch.Tensor]:
        """The trajectory of each crystal, and ``(N,)`` bool: the environment can build it.

        A crystal outside the space (group not allowed, composition not in the table or
        not hosted by the group, no Wyckoff sites or sites that do not hold the composition,
        lattice outside the reachable cells) gets ``False``; its trajectory entries are then
        placeholders.
        """
        if tuple(batch.elements) != tuple(self.space.elements):
            raise ValueError(f"batch elements {list(batch.elements)} differ from the space's {list(self.space.elements)}")
        batch = batch.to(self.device)
        lookup = torch.full((231,), -1, dtype=torch.long, device=self.device)
        lookup[self.group_number] = torch.arange(self.n_groups, device=self.device)
        group = lookup[batch.space_group.clamp(0, 230)]
        composition = self.trie.composition_index(batch.counts)
        known = (group >= 0) & (composition >= 0)
        group = group.clamp(min=0)
        hosted = self.space.compatible.to(self.device)[group, composition.clamp(min=0)]
        system = self.group_lattice_system[group]
        unit, _ = self.cell.to_unit(system, batch.lattice, batch.counts.sum(dim=1))
        reachable = ((unit >= 0) & (unit <= 1)).all(dim=1) & follows_system(system, batch.lattice.to(torch.float64))
        sites = self._trajectory_sites(group, batch.sites, len(batch))
        placed = self.wyckoff.replay(group, batch.counts.long(), sites).complete
        trajectories = Trajectories(
            lattice_system=system,
            point_symmetry=self.group_point_symmetry[group],
            group=group,
            counts=batch.counts.long(),
            sites=sites,
            unit=unit.clamp(0, 1).to(torch.float32),
            lattice=batch.lattice.to(torch.float64),
        )
        return trajectories, known & hosted & reachable & placed

    def _trajectory_sites(self, group: torch.Tensor, sites: torch.Tensor | None, n: int) -> torch.Tensor:
        """A batch's orbits in trajectory order (element column, then the group's letter order),
        padded to ``max_atoms`` orbits; all -1 (no assignment) where the batch has none."""
        out = torch.full((n, self.max_atoms, 2), -1, dtype=torch.long, device=self.device)
        if sites is None:
            return out
        sites = sites.to(self.device).long()[:, : self.max_atoms]
        letter = sites[..., 1]
        order = self.wyckoff.order[group.unsqueeze(1), letter.clamp(min=0)]
        key = torch.where(letter >= 0, sites[..., 0] * (self.wyckoff.n_letters + 1) + order, torch.iinfo(torch.long).max)
        sorted_rows = sites.gather(1, key.argsort(dim=1).unsqueeze(2).expand_as(sites))
        out[:, : sorted_rows.shape[1]] = sorted_rows
        return out

    def fingerprint(self) -> str:
        """Hash of everything the policy's meaning depends on: elements, groups, compositions,
        compatibility, lattice ranges and the lattice prior."""
        digest = hashlib.sha256()
        digest.update(repr((tuple(self.space.elements), self.cell, "wyckoff-stage-1")).encode())
        for tensor in (self.group_number, self.space.compositions, self.space.compatible):
            digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def describe(self) -> str:
        """One line for error messages: elements, group and composition counts, ranges."""
        return (f"elements {list(self.space.elements)}, {self.n_groups} space groups, "
                f"{int(self.space.compositions.shape[0])} compositions, lengths {self.cell.length_range} A, "
                f"angles {self.cell.angle_range} deg, min volume/atom {self.cell.min_volume_per_atom} A^3, "
                f"min length fraction {self.cell.min_length_fraction}")
