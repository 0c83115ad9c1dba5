"""Recall of the crystal space: which known crystals its hard constraints let the Crystal-GFN propose.

For each config and each charge rule (``space.charge_rule``), the Materials Project entries
of the local data inside the space's element and atom limits (elements of the space,
``min_elements``..``max_elements`` of them, at most ``max_atoms_per_element`` of each and
``max_atoms`` in the conventional cell) go through the hard constraints in turn: charge
neutrality, the allowed space groups, Wyckoff compatibility of the conventional cell's
counts, the lattice rules and ranges, and the lattice prior of the Crystal-GFN (``gfn.
min_volume_per_atom``, ``gfn.min_length_fraction``: the cell must be reachable by the
lattice action). Each column is the share that passes that constraint and every one
before it, for all entries and for the stable ones (``e_above_hull_dataset <= 0``).

The other side of a looser rule is chemistry that is not: 10,000 samples of the untrained
(uniform) generator per rule are checked for plausibility, a yardstick fixed across rules:
metals only (an alloy), or one oxidation state per main-group element (common or ICSD
states), mixed valence allowed on transition metals, summing to zero with every cation
less electronegative (Pauling) than every anion. ``one_common_state`` is the stricter
share that balances with one common state per element.

    python -m benchmarks.space_recall [--configs default li-mn-o ...] [--samples 10000]

Prints the tables and writes ``benchmarks/results/space_recall.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from functools import cache
from itertools import combinations_with_replacement, product

import numpy as np
import pandas as pd
import torch
from pymatgen.core.periodic_table import Element

from aloop.config import CHARGE_EXEMPTIONS, CONFIG_DIR, load_config
from aloop.data.local import SUMMARY, read_local
from aloop.gfn import CrystalEnv, build_policy, sample
from aloop.space import CrystalBatch, CrystalSpace
from aloop.space.composition import exempt_from_charge, oxidation_states
from aloop.space.groups import space_group_table
from aloop.space.validity import Constraint, broken_constraints
from benchmarks import SHARED_DATA
from benchmarks._markdown import table, write_report

CONFIGS = ("default", "fe-o", "li-mn-o", "cubic", "lattice-range")
RULES = (("per_atom_common",), ("per_atom_icsd",), ("per_atom_common", "alloys"), ("per_atom_icsd", "alloys"),
         ("per_atom_common", "intermetallics"), ("per_atom_icsd", "intermetallics"))
STEPS = {
    "charge": (Constraint.NOT_CHARGE_NEUTRAL,),
    "space_group": (Constraint.SPACE_GROUP_NOT_ALLOWED,),
    "wyckoff": (Constraint.WYCKOFF_INCOMPATIBLE,),
    "lattice": (Constraint.LATTICE_SYSTEM_RULE, Constraint.LATTICE_OUT_OF_RANGE, Constraint.NOT_A_CELL),
}
"""The hard constraints in the order they are applied; the lattice prior comes last."""
UNIT_TOL = 1e-6


def _entries_in_limits(space: CrystalSpace, data: tuple[CrystalBatch, np.ndarray]) -> tuple[CrystalBatch, torch.Tensor]:
    """The entries inside the space's element and atom limits, over its elements, and ``(N,)`` stable flags."""
    crystals, e_hull = data
    settings = space.settings
    foreign = [i for i, el in enumerate(crystals.elements) if el not in space.elements]
    counts = crystals.counts
    n_elements = (counts > 0).sum(dim=1)
    inside = ~(counts[:, foreign] > 0).any(dim=1) & (n_elements >= settings.min_elements) \
        & (n_elements <= settings.max_elements) & (counts <= settings.max_atoms_per_element).all(dim=1) \
        & (counts.sum(dim=1) <= settings.max_atoms)
    rows = torch.nonzero(inside).squeeze(1)
    own = torch.zeros(len(rows), len(space.elements), dtype=torch.long)
    for column, el in enumerate(space.elements):
        if el in crystals.elements:
            own[:, column] = counts[rows, crystals.elements.index(el)]
    batch = CrystalBatch(space.elements, crystals.space_group[rows], own, crystals.lattice[rows])
    return batch, torch.as_tensor(e_hull[rows.numpy()] <= 0.0)


def _reachable(env: CrystalEnv, batch: CrystalBatch) -> torch.Tensor:
    """``(N,)`` bool: the lattice action can draw the cell (the lattice prior lets it through)."""
    system = space_group_table().lattice_system[batch.space_group]
    unit, _ = env.cell.to_unit(system, batch.lattice, batch.counts.sum(dim=1))
    return ((unit >= -UNIT_TOL) & (unit <= 1 + UNIT_TOL)).all(dim=1)


def _pass_chain(space: CrystalSpace, env: CrystalEnv, batch: CrystalBatch) -> dict[str, torch.Tensor]:
    """Step name -> ``(N,)`` bool: the entry passes that step and every one before it."""
    broken = broken_constraints(batch, space)
    passed = torch.ones(len(batch), dtype=torch.bool)
    chain = {}
    for step, constraints in STEPS.items():
        for constraint in constraints:
            passed = passed & ~broken[constraint]
        chain[step] = passed
    chain["lattice_prior"] = passed & _reachable(env, batch)
    return chain


@cache
def _states(symbol: str) -> tuple[int, ...]:
    return oxidation_states(symbol, "per_atom_icsd")


@cache
def plausible(composition: tuple[tuple[str, int], ...]) -> bool:
    """The yardstick: metals only, or one state per main-group element (mixed valence on transition
    metals, of one sign) summing to zero with cations less electronegative than anions."""
    if all(Element(el).is_metal for el, _ in composition):
        return True
    options = []
    for el, n in composition:
        if Element(el).is_transition_metal:
            sums = {(sum(c), c[0] > 0) for c in combinations_with_replacement(_states(el), n) if len({x > 0 for x in c}) == 1}
        else:
            sums = {(n * x, x > 0) for x in _states(el)}
        options.append([(el, charge, cation) for charge, cation in sums])
    for choice in product(*options):
        if sum(charge for _, charge, _ in choice):
            continue
        cations = [Element(el).X for el, _, cation in choice if cation]
        anions = [Element(el).X for el, _, cation in choice if not cation]
        if cations and anions and max(cations) < min(anions):
            return True
    return False


@cache
def one_common_state(composition: tuple[tuple[str, int], ...]) -> bool:
    """Balances with one common oxidation state per element (the stricter reading of 'plausible')."""
    return any(sum(n * x for (_, n), x in zip(composition, choice, strict=True)) == 0
               for choice in product(*(Element(el).common_oxidation_states for el, _ in composition)))


def _plausibility(space: CrystalSpace, env: CrystalEnv, n: int) -> dict[str, float]:
    """Shares of ``n`` uniform samples that are plausible, that balance with one common state and that are
    exempt from the charge check (alloys, intermetallics); seconds to draw them."""
    start = time.perf_counter()
    batch = sample(env, build_policy(env, load_config(CONFIG_DIR / "default.yaml").gfn), n, seed=0, threads=1)
    seconds = time.perf_counter() - start
    rows = [tuple((el, c) for el, c in zip(space.elements, row, strict=True) if c) for row in batch.counts.tolist()]
    exemption = next((r for r in space.settings.charge_rule if r in CHARGE_EXEMPTIONS), None)
    return {"plausible": float(np.mean([plausible(r) for r in rows])),
            "one_common_state": float(np.mean([one_common_state(r) for r in rows])),
            "exempt": float(exempt_from_charge(batch.counts, space.elements, exemption).float().mean()),
            "sample_s": seconds}


def measure(name: str, rule: Sequence[str], data: tuple[CrystalBatch, np.ndarray], n_samples: int) -> dict:
    """One row: recall per constraint step (all and stable entries) and plausibility of uniform samples."""
    config = load_config(CONFIG_DIR / f"{name}.yaml", overrides=[f"space.charge_rule=[{', '.join(rule)}]"])
    space = CrystalSpace.from_settings(config.space)
    env = CrystalEnv.from_space(space, config.gfn)
    batch, stable = _entries_in_limits(space, data)
    chain = _pass_chain(space, env, batch)
    row: dict = {"config": name, "charge_rule": "+".join(rule), "compositions": len(space.compositions),
                 "entries": len(batch), "stable": int(stable.sum())}
    for step, passed in chain.items():
        row[f"{step}_all"] = float(passed.float().mean()) if len(batch) else float("nan")
        row[f"{step}_stable"] = float(passed[stable].float().mean()) if stable.any() else float("nan")
    before = torch.ones(len(batch), dtype=torch.bool)
    losses = {}
    for step, passed in chain.items():
        losses[step] = int((before & ~passed & stable).sum())
        before = passed
    row["stable_lost_most_at"] = max(losses, key=losses.get) if any(losses.values()) else "-"
    if n_samples:
        row |= _plausibility(space, env, n_samples)
    return row


def _read_data() -> tuple[CrystalBatch, np.ndarray]:
    folder = SHARED_DATA / "mp_cgcnn36k"
    if not folder.exists():
        sys.exit(f"shared data not found at {folder} (set ALOOP_SHARED_DATA)")
    entries = read_local(folder)
    summary = pd.read_csv(folder / SUMMARY, usecols=["material_id", "e_above_hull_dataset"])
    e_hull = summary.set_index("material_id").loc[list(entries.ids), "e_above_hull_dataset"].to_numpy()
    return entries.crystals, e_hull


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), help="configs (configs/<name>.yaml) measured")
    parser.add_argument("--samples", type=int, default=10_000, help="uniform samples per rule for plausibility")
    args = parser.parse_args()
    data = _read_data()
    rows = []
    for name in args.configs:
        for rule in RULES:
            rows.append(measure(name, rule, data, args.samples if name == "default" else 0))
            print(rows[-1], flush=True)
    shares = ("plausible", "one_common_state", "exempt")
    formats = {k: ".3f" for row in rows for k in row if k.endswith(("_all", "_stable")) or k in shares} \
        | {"sample_s": ".2f"}
    recall = [{k: v for k, v in row.items() if k not in (*shares, "sample_s")} for row in rows]
    default = [row for row in rows if row["config"] == "default"]
    write_report(
        "space_recall",
        "Local data: `mp_cgcnn36k` (legacy MP, 33,059 entries); stable: `e_above_hull_dataset <= 0` (hull of that "
        "data set). Entries inside each config's element and atom limits, conventional cell. Columns `<step>_all` / "
        "`<step>_stable`: share passing that constraint and every one before it (charge, space group allowed, Wyckoff, "
        "lattice rules and ranges, lattice prior of the Crystal-GFN). `stable_lost_most_at`: the step that removes most "
        "stable entries.",
        "## Recall of known crystals\n\n" + table(recall, formats),
        "## Plausibility of 10,000 uniform samples (default config)\n\n"
        + table([{k: row[k] for k in ("charge_rule", "compositions", *shares, "sample_s")} for row in default],
                formats),
    )


if __name__ == "__main__":
    main()
