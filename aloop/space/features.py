"""Featurizer: a batch of crystals -> a fixed-width float tensor, the proxy's input.

The same function serves Materials Project entries, oracle labels and GFlowNet terminal
states, and its columns do not depend on the batch's element list: element fractions
sit on a fixed periodic-table axis (Z = 1..94), so a crystal gets identical features
whichever element list it is stored over. It is on the GFlowNet's reward path, so it is
batched torch only (no per-crystal Python); element tables are built once per element
list and device.

Columns (``feature_names()``), all finite:

- ``frac_<El>`` (94): atom fraction of each element.
- ``<stat>_<prop>``: fraction-weighted mean, mean absolute deviation, min and max over
  the elements present of pymatgen element data (``ELEMENT_PROPERTIES``; missing values
  take the mean over Z = 1..94, then every property is standardised over Z = 1..94).
- stoichiometry: log atoms in the conventional cell, number of elements, Lp norms of the
  fractions (p = 2, 3, 5, 10), atoms per general-position multiplicity.
- symmetry: space-group number / 230, log multiplicity of the general position, one-hot
  lattice system (8), point-symmetry class (3) and point group (32).
- lattice: a, b, c over V^(1/3), cos alpha/beta/gamma, volume per atom (A^3), its log,
  and packing fraction (sum of atomic-radius sphere volumes over the cell volume).
- Wyckoff sites (``SITE_FEATURES``, from ``CrystalBatch.sites``; what the relaxed energy
  depends on beyond group and composition). Per occupied orbit: its multiplicity m, its
  site-symmetry order (general multiplicity / m, 1 on the general position), its free
  parameters (pyxtal's ``get_dof``) and its element; "atom-weighted" weights an orbit by m.

  - ``has_sites``: 1 when the crystal has a Wyckoff assignment, else 0 and every other
    site column is 0 (Materials Project rows whose assignment could not be read, older labels).
  - ``orbits_per_atom``: occupied orbits over atoms (1 / the mean orbit multiplicity).
  - ``log_site_symmetry_mean``, ``_min``, ``_max``: log of the site-symmetry order,
    atom-weighted mean, min and max over the orbits.
  - ``fixed_position_fraction``: share of atoms on positions without free parameters.
  - ``general_position_fraction``: share of atoms on the general position.
  - ``free_parameters_per_atom``: free coordinates of all orbits over atoms.
  - ``<where>_<stat>_<prop>``: ``where`` is ``special`` (orbits with site-symmetry order > 1)
    or ``general``; ``stat`` the atom-weighted mean, min or max over those orbits' elements;
    ``prop`` electronegativity ``X`` or ``atomic_radius``, standardised as above. 0 where
    no atom sits on such orbits (the fractions above tell).

  A crystal's site columns depend on its own orbits only: not on the batch's element list,
  the orbits' order or the padding width.

Example:
    >>> batch = CrystalBatch.from_crystals([Crystal(225, Composition("Na4Cl4"), (5.6,) * 3 + (90.0,) * 3)],
    ...                                    ("Na", "Cl"))
    >>> featurize(batch).shape == (1, len(feature_names()))
    True
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import cache

import torch
from pymatgen.core.periodic_table import Element

from aloop.config import CRYSTAL_LATTICE_SYSTEMS, POINT_SYMMETRIES
from aloop.space.cache import load_cached, save_cached
from aloop.space.crystal import CrystalBatch
from aloop.space.groups import N_SPACE_GROUPS, POINT_GROUPS, space_group_table

MAX_Z = 94
"""Elements up to plutonium: every element in Materials Project's summary data."""
ELEMENT_PROPERTIES = (
    "Z", "row", "group", "X", "atomic_radius", "atomic_mass", "mendeleev_no", "molar_volume",
    "melting_point", "ionization_energy", "electron_affinity", "block_s", "block_p", "block_d",
    "block_f", "max_oxidation_state", "min_oxidation_state",
)
STATS = ("mean", "mad", "min", "max")
LP_NORMS = (2, 3, 5, 10)
SITE_PROPERTIES = ("X", "atomic_radius")
"""Element properties summarised per kind of Wyckoff orbit (special vs general position)."""
SITE_FEATURES = (
    "has_sites", "orbits_per_atom", "log_site_symmetry_mean", "log_site_symmetry_min", "log_site_symmetry_max",
    "fixed_position_fraction", "general_position_fraction", "free_parameters_per_atom",
    *(f"{where}_{stat}_{prop}" for where in ("special", "general") for stat in ("mean", "min", "max")
      for prop in SITE_PROPERTIES),
)
"""The Wyckoff-site columns, last in ``feature_names()`` (proxies saved before them read the columns before)."""
DTYPE = torch.float32
_DOF_CACHE = "wyckoff-dof-v1"


@cache
def feature_names() -> tuple[str, ...]:
    """Names of the ``featurize`` columns, in order."""
    symbols = [Element.from_Z(z).symbol for z in range(1, MAX_Z + 1)]
    return (
        *(f"frac_{s}" for s in symbols),
        *(f"{stat}_{prop}" for stat in STATS for prop in ELEMENT_PROPERTIES),
        "log_n_atoms", "n_elements", *(f"norm_{p}" for p in LP_NORMS), "atoms_per_general_position",
        "space_group", "log_general_multiplicity",
        *(f"lattice_system_{s}" for s in CRYSTAL_LATTICE_SYSTEMS),
        *(f"point_symmetry_{s}" for s in POINT_SYMMETRIES),
        *(f"point_group_{g}" for g in POINT_GROUPS),
        "a_rel", "b_rel", "c_rel", "cos_alpha", "cos_beta", "cos_gamma",
        "volume_per_atom", "log_volume_per_atom", "packing_fraction",
        *SITE_FEATURES,
    )


def _element_property(element: Element, name: str) -> float:
    """One property of one element as a float; NaN where pymatgen has no value."""
    if name.startswith("block_"):
        return float(element.block == name[-1])
    if name in ("max_oxidation_state", "min_oxidation_state"):
        states = element.common_oxidation_states or (0,)
        return float(max(states) if name.startswith("max") else min(states))
    value = getattr(element, name)
    return math.nan if value is None else float(value)


@cache
def _periodic_table() -> tuple[torch.Tensor, torch.Tensor]:
    """``(MAX_Z, P)`` standardised element properties and ``(MAX_Z,)`` atomic sphere volumes (A^3)."""
    with warnings.catch_warnings():  # pymatgen warns for each missing value (e.g. X of noble gases)
        warnings.simplefilter("ignore")
        elements = [Element.from_Z(z) for z in range(1, MAX_Z + 1)]
        raw = torch.tensor([[_element_property(e, p) for p in ELEMENT_PROPERTIES] for e in elements],
                           dtype=torch.float64)
        radius = torch.tensor([float(e.atomic_radius or e.atomic_radius_calculated or math.nan) for e in elements],
                              dtype=torch.float64)
    raw = torch.where(raw.isnan(), raw.nanmean(dim=0), raw)
    table = (raw - raw.mean(dim=0)) / raw.std(dim=0)
    radius = torch.where(radius.isnan(), radius.nanmean(), radius)
    return table.to(DTYPE), (4.0 / 3.0 * math.pi * radius**3).to(DTYPE)


@cache
def wyckoff_dof() -> torch.Tensor:
    """``(231, W)`` long: free parameters of each Wyckoff position (pyxtal's ``get_dof``), indexed like
    ``space_group_table().wyckoff_multiplicity`` (pyxtal's letter order), 0 on padding.

    Read from pyxtal once (about 1.5 s for the 230 groups) and cached on disk like the group tables.
    """
    raw = load_cached(_DOF_CACHE)
    if raw is None:
        from pyxtal.symmetry import Group

        raw = [[int(wp.get_dof()) for wp in Group(n)] for n in range(1, N_SPACE_GROUPS + 1)]
        save_cached(_DOF_CACHE, raw)
    dof = torch.zeros_like(space_group_table().wyckoff_multiplicity)
    for number, row in enumerate(raw, start=1):
        dof[number, : len(row)] = torch.tensor(row, dtype=torch.long)
    return dof


@dataclass(frozen=True)
class _Tables:
    """Per element list: column on the Z axis, element properties, atomic volumes; per space group: symmetry
    and Wyckoff positions."""

    z_column: torch.Tensor  # (E,) long
    properties: torch.Tensor  # (E, P)
    atomic_volume: torch.Tensor  # (E,)
    symmetry: torch.Tensor  # (231, 2 + 8 + 3 + 32): sg / 230, log general multiplicity, one-hots
    general_multiplicity: torch.Tensor  # (231,)
    wyckoff_multiplicity: torch.Tensor  # (231, W), 0 on padding
    wyckoff_dof: torch.Tensor  # (231, W) free parameters
    site_properties: torch.Tensor  # (E, len(SITE_PROPERTIES)): the standardised properties summarised per orbit kind


@cache
def _tables(elements: tuple[str, ...], device: torch.device) -> _Tables:
    z = []
    for symbol in elements:
        if not Element.is_valid_symbol(symbol) or Element(symbol).Z > MAX_Z:
            raise ValueError(f"featurize: element {symbol!r} of the batch is not one of Z = 1..{MAX_Z}")
        z.append(Element(symbol).Z - 1)
    properties, volume = _periodic_table()
    z_column = torch.tensor(z, dtype=torch.long)
    groups = space_group_table()
    general = groups.wyckoff_multiplicity[:, 0].clamp(min=1).to(DTYPE)
    one_hot = torch.nn.functional.one_hot  # row 0 (no group, -1) is clamped to class 0; never looked up
    symmetry = torch.cat([
        (torch.arange(N_SPACE_GROUPS + 1, dtype=DTYPE) / N_SPACE_GROUPS).unsqueeze(1),
        general.log().unsqueeze(1),
        one_hot(groups.lattice_system.clamp(min=0), len(CRYSTAL_LATTICE_SYSTEMS)).to(DTYPE),
        one_hot(groups.point_symmetry.clamp(min=0), len(POINT_SYMMETRIES)).to(DTYPE),
        one_hot(groups.point_group.clamp(min=0), len(POINT_GROUPS)).to(DTYPE),
    ], dim=1)
    return _Tables(
        z_column=z_column.to(device), properties=properties[z_column].to(device),
        atomic_volume=volume[z_column].to(device), symmetry=symmetry.to(device),
        general_multiplicity=general.to(device), wyckoff_multiplicity=groups.wyckoff_multiplicity.to(DTYPE).to(device),
        wyckoff_dof=wyckoff_dof().to(DTYPE).to(device),
        site_properties=properties[z_column][:, [ELEMENT_PROPERTIES.index(p) for p in SITE_PROPERTIES]].to(device),
    )


def featurize(batch: CrystalBatch) -> torch.Tensor:
    """Features of every crystal: ``(N, len(feature_names()))`` float32 on the batch's device.

    Raises:
        ValueError: an element of ``batch.elements`` is beyond plutonium.
    """
    tables = _tables(tuple(batch.elements), batch.counts.device)
    counts = batch.counts.to(DTYPE)  # (N, E)
    n = counts.shape[0]
    out = torch.zeros(n, len(feature_names()), dtype=DTYPE, device=counts.device)
    n_atoms = counts.sum(dim=1).clamp(min=1.0)  # (N,)
    fraction = counts / n_atoms.unsqueeze(1)  # (N, E)
    out[:, :MAX_Z].index_copy_(1, tables.z_column, fraction)
    column = MAX_Z

    k = max(int((counts > 0).sum(dim=1).max()), 1) if n else 1
    weight, index = fraction.topk(min(k, counts.shape[1]), dim=1)  # (N, K): the present elements first
    absent = (weight == 0).unsqueeze(2)  # (N, K, 1)
    values = tables.properties[index]  # (N, K, P)
    p = values.shape[2]
    mean = torch.einsum("nk,nkp->np", weight, values)
    out[:, column:column + p] = mean
    out[:, column + p:column + 2 * p] = torch.einsum("nk,nkp->np", weight, (values - mean.unsqueeze(1)).abs_())
    out[:, column + 2 * p:column + 3 * p] = values.masked_fill(absent, math.inf).amin(dim=1).clamp_(max=1e6)
    out[:, column + 3 * p:column + 4 * p] = values.masked_fill_(absent, -math.inf).amax(dim=1).clamp_(min=-1e6)
    column += 4 * p

    group = batch.space_group.clamp(0, N_SPACE_GROUPS)
    stoichiometry = [n_atoms.log(), (counts > 0).sum(dim=1).to(DTYPE),
                     *(fraction.pow(q).sum(dim=1).pow(1.0 / q) for q in LP_NORMS),
                     n_atoms / tables.general_multiplicity[group]]
    out[:, column:column + len(stoichiometry)] = torch.stack(stoichiometry, dim=1)
    column += len(stoichiometry)
    out[:, column:column + tables.symmetry.shape[1]] = tables.symmetry[group]
    column += tables.symmetry.shape[1]
    lattice = _lattice_features(batch.lattice.to(DTYPE), n_atoms, fraction @ tables.atomic_volume)
    out[:, column:column + lattice.shape[1]] = lattice
    if batch.sites is not None and batch.sites.shape[1]:  # else no crystal has sites: the site columns stay 0
        out[:, column + lattice.shape[1]:] = _site_features(batch.sites, group, tables)
    return out


def _site_features(sites: torch.Tensor, group: torch.Tensor, tables: _Tables) -> torch.Tensor:
    """``(N, L, 2)`` orbit rows (``CrystalBatch.sites``) and ``(N,)`` groups -> ``(N, len(SITE_FEATURES))``.

    Works on the flat list of occupied orbits (padding rows, element -1, are none), summed and
    reduced per crystal: the cost follows the number of orbits, not ``N`` times the widest
    crystal's (Materials Project has crystals of 150+ orbits), and a crystal's columns depend on
    its own orbits only. A crystal without orbits gets zeros.
    """
    n, width = sites.shape[0], tables.wyckoff_multiplicity.shape[1]
    crystal, slot = (sites[..., 0] >= 0).nonzero(as_tuple=True)  # (M,): one entry per occupied orbit
    element, letter = sites[crystal, slot].unbind(1)
    position = group[crystal] * width + letter
    multiplicity = tables.wyckoff_multiplicity.reshape(-1)[position]
    dof = tables.wyckoff_dof.reshape(-1)[position]
    log_order = (tables.general_multiplicity[group[crystal]] / multiplicity.clamp(min=1.0)).log()
    kind = 2 * crystal + (letter == 0)  # the crystal's special (2i) or general (2i + 1) orbits: pyxtal lists it first

    def total(x: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
        """Sum of the orbits' ``x`` per ``index`` (0..size-1)."""
        return torch.zeros((size, *x.shape[1:]), dtype=DTYPE, device=x.device).index_add_(0, index, x)

    def extreme(x: torch.Tensor, index: torch.Tensor, size: int, reduce: str) -> torch.Tensor:
        """``reduce`` (amin, amax) of the orbits' ``x`` per ``index``; 0 where no orbit has that index."""
        index = index.reshape(-1, *(1,) * (x.dim() - 1)).expand_as(x)
        return torch.zeros((size, *x.shape[1:]), dtype=DTYPE, device=x.device).scatter_reduce_(
            0, index, x, reduce, include_self=False)

    orbits = total(torch.ones_like(multiplicity), crystal, n)
    atoms_by_kind = total(multiplicity, kind, 2 * n).reshape(n, 2)
    atoms = atoms_by_kind.sum(dim=1).clamp(min=1.0)
    counts = torch.stack([
        (orbits > 0).to(DTYPE), orbits / atoms, total(multiplicity * log_order, crystal, n) / atoms,
        extreme(log_order, crystal, n, "amin"), extreme(log_order, crystal, n, "amax"),
        total(multiplicity * (dof == 0), crystal, n) / atoms, atoms_by_kind[:, 1] / atoms,
        total(dof, crystal, n) / atoms,
    ], dim=1)
    values = tables.site_properties[element]  # (M, P)
    p = values.shape[1]
    mean = total(multiplicity.unsqueeze(1) * values, kind, 2 * n).reshape(n, 2, p)
    mean = mean / atoms_by_kind.clamp(min=1.0).unsqueeze(2)
    low = extreme(values, kind, 2 * n, "amin").reshape(n, 2, p)
    high = extreme(values, kind, 2 * n, "amax").reshape(n, 2, p)
    return torch.cat([counts, torch.stack([mean, low, high], dim=2).reshape(n, 6 * p)], dim=1)  # kind, stat, property


def _lattice_features(lattice: torch.Tensor, n_atoms: torch.Tensor, atom_volume: torch.Tensor) -> torch.Tensor:
    """``(N, 6)`` a b c alpha beta gamma -> ``(N, 9)`` shape, cosines, volume per atom and packing fraction."""
    lengths, cosines = lattice[:, :3], torch.cos(torch.deg2rad(lattice[:, 3:]))
    ca, cb, cg = cosines.unbind(dim=1)
    root = (1.0 - ca**2 - cb**2 - cg**2 + 2.0 * ca * cb * cg).clamp(min=1e-9).sqrt()
    volume = (lengths.prod(dim=1) * root).clamp(min=1e-6)  # A^3
    per_atom = volume / n_atoms
    return torch.cat([
        lengths / volume.pow(1.0 / 3.0).unsqueeze(1), cosines,
        torch.stack([per_atom, per_atom.log(), atom_volume / per_atom], dim=1),
    ], dim=1)
