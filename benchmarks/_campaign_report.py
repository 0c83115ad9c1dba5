"""The campaign's report: per-round metrics of every arm and seed, their spread, a table and a figure."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from aloop.hits import THRESHOLDS, acceleration_factor, hit_flags, spread
from benchmarks._campaign_arms import ARMS, Setup
from benchmarks._campaign_hull import ReferenceHull
from oracles.chgnet import CHGNetSettings

RESULTS = Path(__file__).resolve().parent / "results"
COLORS = {"aloop": "tab:red", "random": "tab:gray", "mean": "tab:blue", "substitution": "tab:green"}


def seed_rows(rounds: list[list[dict]], *, known: list, calibration: Callable[[list[dict]], dict]) -> list[dict]:
    """Cumulative metrics of one arm and seed after each round (novel = unique and not a known entry)."""
    labels = [label for batch in rounds for label in batch]
    flags = {t: hit_flags(labels, threshold=t, known=known) for t in THRESHOLDS}
    rows, end = [], 0
    for number, batch in enumerate(rounds, start=1):
        end += len(batch)
        done = labels[:end]
        ok = [x for x in done if x.get("ok")]
        novel = flags[0.1]["novel"][:end]
        rows.append({
            "round": number, "calls": end, "relaxed": len(ok),
            "hits_0.1": int(flags[0.1]["hit"][:end].sum()), "unique_0.1": int(flags[0.1]["unique"][:end].sum()),
            "novel_0.1": int(novel.sum()), "hits_0.0": int(flags[0.0]["hit"][:end].sum()),
            "novel_0.0": int(flags[0.0]["novel"][:end].sum()),
            "hit_rate": float(novel.sum() / end) if end else math.nan,
            "best_ef": min((x["formation_energy_per_atom"] for x in ok), default=math.nan),
            "novel_formulas": len({done[i]["formula"] for i in np.flatnonzero(novel)}),
            "calibration": calibration(batch),
            "oracle_s": sum(x["seconds"] for x in batch),
            "novel_curve": np.cumsum(novel).tolist() if number == len(rounds) else None,
            "novel0_curve": np.cumsum(flags[0.0]["novel"][:end]).tolist() if number == len(rounds) else None,
        })
    return rows


def _fmt(values: list[float], digits: int = 1) -> str:
    mean, std, low, high = spread(values)
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def write_report(runs: dict[tuple[str, int], list[list[dict]]], *, hull: ReferenceHull, setup: Setup,
                 oracle: CHGNetSettings, command: str, note: str, matcher: dict, calibration: Callable,
                 name: str = "campaign") -> None:
    """Print and write ``<name>.md``, ``<name>.json`` and ``<name>_hits.png`` under ``benchmarks/results``."""
    known = hull.known_structures
    rows = {key: seed_rows(rounds, known=known, calibration=calibration) for key, rounds in runs.items()}
    arms = [a for a in ARMS if any(k[0] == a for k in rows)]
    seeds = sorted({k[1] for k in rows})
    n_rounds = min(len(r) for r in rows.values())

    def values(arm: str, number: int, name: str) -> list[float]:
        return [rows[arm, s][number - 1][name] for s in seeds if (arm, s) in rows]

    def daf(arm: str, number: int) -> float:
        random = spread(values("random", number, "hit_rate"))[0] if "random" in arms else math.nan
        return acceleration_factor(spread(values(arm, number, "hit_rate"))[0], random)

    lines = [f"# Campaign simulation: {', '.join(arms)}", "", f"Command: `{command}`", "", *([note, ""] if note else []),
             *_protocol(setup, hull, oracle, matcher, seeds=seeds, n_rounds=n_rounds), "",
             f"## After {n_rounds} rounds (mean ± std [min, max] over seeds {seeds})", "",
             "| arm | oracle calls | relaxed | hits ≤ 0.1 | unique ≤ 0.1 | **novel ≤ 0.1** | hits ≤ 0.0 | novel ≤ 0.0 "
             "| hit rate (novel ≤ 0.1 / call) | acceleration vs random | best E_f (eV/atom) | distinct novel formulas |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        cells = [_fmt(values(arm, n_rounds, k), d) for k, d in (
            ("calls", 0), ("relaxed", 1), ("hits_0.1", 1), ("unique_0.1", 1), ("novel_0.1", 1), ("hits_0.0", 1),
            ("novel_0.0", 1), ("hit_rate", 3))]
        lines.append(f"| {arm} | {' | '.join(cells)} | {daf(arm, n_rounds):.2f} | "
                     f"{_fmt(values(arm, n_rounds, 'best_ef'), 3)} | {_fmt(values(arm, n_rounds, 'novel_formulas'))} |")
    lines += ["", "## Per round (cumulative; novel unique hits)", "",
              "| arm | round | calls | novel ≤ 0.1 | novel ≤ 0.0 | hit rate | acceleration | best E_f | "
              "proxy on the round's new labels: n (all seeds), MAE, NLL, 50% / 90% coverage | oracle wall s per round |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        for number in range(1, n_rounds + 1):
            lines.append(f"| {arm} | {number} | {int(np.mean(values(arm, number, 'calls')))} | "
                         f"{_fmt(values(arm, number, 'novel_0.1'))} | {_fmt(values(arm, number, 'novel_0.0'))} | "
                         f"{_fmt(values(arm, number, 'hit_rate'), 3)} | {daf(arm, number):.2f} | "
                         f"{_fmt(values(arm, number, 'best_ef'), 3)} | {_calibration_cell(arm, number, rows, seeds)} | "
                         f"{np.mean(values(arm, number, 'oracle_s')):.0f} |")
    RESULTS.mkdir(exist_ok=True)
    figure = plot_hits(rows, arms=arms, seeds=seeds, daf=lambda arm: daf(arm, n_rounds))
    figure.savefig(RESULTS / f"{name}_hits.png", dpi=120)
    lines += ["", f"![novel unique hits against oracle calls]({name}_hits.png)", ""]
    text = "\n".join(lines)
    print(text)
    (RESULTS / f"{name}.md").write_text(text + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps(
        {"command": command, "rows": {f"{a}/seed-{s}": r for (a, s), r in rows.items()}}, indent=1, default=str))


def _calibration_cell(arm: str, number: int, rows: dict, seeds: list[int]) -> str:
    reports = [rows[arm, s][number - 1]["calibration"] for s in seeds if (arm, s) in rows]
    reports = [r for r in reports if r]
    if not reports:
        return "-"
    return (f"{sum(r['n'] for r in reports)}, {np.mean([r['mae'] for r in reports]):.3f}, "
            f"{np.mean([r['nll'] for r in reports]):.2f}, {np.mean([r['coverage_50'] for r in reports]):.2f} / "
            f"{np.mean([r['coverage_90'] for r in reports]):.2f}")


def _protocol(setup: Setup, hull: ReferenceHull, oracle: CHGNetSettings, matcher: dict, *, seeds: list[int],
              n_rounds: int) -> list[str]:
    cfg = setup.cfg
    relaxed = sum(e.energy_per_atom is not None for e in hull.entries)
    failed = [f"{e.material_id} ({e.kind or 'kind not recorded'})" for e in hull.entries if e.energy_per_atom is None]
    on_hull = sorted({e.name for e in hull.diagram.stable_entries})
    load = os.getloadavg()
    return [
        "## Protocol", "",
        f"- **Space**: elements {list(cfg.space.elements)}, at most {cfg.space.max_atoms_per_element} atoms of an "
        f"element and {cfg.space.max_atoms} in the conventional cell, {cfg.space.min_elements}-"
        f"{cfg.space.max_elements} elements, lengths {cfg.space.lattice.length.min}-{cfg.space.lattice.length.max} A, "
        f"angles {cfg.space.lattice.angle.min}-{cfg.space.lattice.angle.max} deg ({len(setup.space.compositions)} "
        "compositions).",
        f"- **Starting data** of every arm: the {len(setup.start)} mp_cgcnn36k entries inside the space "
        "(legacy-corrected DFT formation energies, source `mp_legacy`).",
        f"- **Budget**: {n_rounds} rounds x {cfg.selection.batch_size} oracle calls per arm and seed; seeds {seeds}.",
        f"- **Oracle**: CHGNet {oracle.model} (weights from the wheel), ASE {oracle.optimizer} with the cell relaxed "
        f"(FrechetCellFilter), fmax {oracle.fmax} eV/A, at most {oracle.max_steps} steps, {oracle.timeout_s:g} s "
        "limit, one torch thread; a failed relaxation (not converged, timeout, atoms < 0.5 A, exploded cell) is an "
        "oracle call without a label. Atoms placed by pyxtal (seeded by the crystal's hash, as the round does); the "
        "substitution arm relaxes its substituted structures directly.",
        f"- **Reference hull**: pymatgen PhaseDiagram of CHGNet energies only: CHGNet elemental references "
        f"(oracle's `reference_energies`: {', '.join(f'{k} {v:.3f}' for k, v in hull.references.items())} eV/atom) "
        f"and the {relaxed} of {len(hull.entries)} known mp_cgcnn36k entries of the searched chemical systems "
        f"relaxed with the same settings from their stored cells"
        f"{' (not relaxed: ' + ', '.join(failed) + ')' if failed else ''}. On the hull: {', '.join(on_hull)}. "
        "**No corrections** (CHGNet is trained on MP2020-corrected energies); no DFT number enters the hull.",
        "- **Hits**: relaxed candidates with energy above that hull at most 0.1 eV/atom (and at most 0.0). "
        f"**Unique**: matching no earlier hit of the same arm and seed; **novel**: unique and matching no known "
        f"entry (stored or CHGNet-relaxed structure), pymatgen StructureMatcher({', '.join(f'{k}={v}' for k, v in matcher.items())}) "
        "on the relaxed structures. Hit rate = novel unique hits (0.1) per oracle call; acceleration = an arm's "
        "mean hit rate / the random arm's. Best E_f: lowest CHGNet formation energy against the CHGNet "
        "references among the arm's labels. Diversity: distinct reduced formulas among the novel hits.",
        f"- **Arms**: aloop (proxy fit on starting data + the arm's CHGNet labels as source `{setup.label_source}`, "
        f"a GP on the crystal features, without the feature extractor below {cfg.proxy.extractor_min_rows:,} rows, "
        f"target standardised by at least {cfg.proxy.prior_std:g} eV/atom; "
        f"acquisition `{cfg.acquisition.kind}` beta {cfg.acquisition.beta}, reward temperature "
        f"{cfg.acquisition.temperature}, Crystal-GFN {cfg.gfn.train_steps} training steps per round warm-started "
        f"from the previous round, {cfg.selection.n_samples} samples, diverse novel batch); mean (the same with "
        "acquisition `mean`); random (uniform Crystal-GFN sampler over the same space: every allowed action "
        "equally likely, valid, novel and distinct samples in random order); substitution (pymatgen "
        "SubstitutionPredictor/Substitutor, threshold 1e-3, over mp_cgcnn36k structures of the predicted source "
        "chemistries, substituted structures inside the space, drawn without replacement with probability "
        "proportional to the substitution probability, seeded). Calibration: the proxy's prediction of each new "
        "label (its `chgnet` source once it has one, noise included) made before the label was added.",
        f"- **Machine**: {platform.machine()}, {os.cpu_count()} cores shared with other work, one torch thread; "
        f"load average at report time {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}.",
    ]


def plot_hits(rows: dict, *, arms: list[str], seeds: list[int], daf: Callable[[str], float]) -> Figure:
    """Novel unique hits (0.1 and 0.0 eV/atom) against oracle calls (mean line, min-max band over seeds),
    and the final hit rate per arm (mean, min-max bars) labelled with its acceleration factor."""
    figure = Figure(figsize=(15, 4.4), layout="constrained")
    curves_0, curves_1, rates = figure.subplots(1, 3)
    for axis, key, title in ((curves_0, "novel_curve", "novel unique hits, E_hull <= 0.1 eV/atom"),
                             (curves_1, "novel0_curve", "novel unique hits, E_hull <= 0.0 eV/atom")):
        for arm in arms:
            curves = [rows[arm, s][-1][key] for s in seeds if (arm, s) in rows]
            length = min(len(c) for c in curves)
            stack = np.array([[0, *c[:length]] for c in curves], dtype=float)
            calls = np.arange(length + 1)
            axis.plot(calls, stack.mean(axis=0), color=COLORS[arm], label=f"{arm} (n={len(curves)} seeds)")
            axis.fill_between(calls, stack.min(axis=0), stack.max(axis=0), color=COLORS[arm], alpha=0.2)
        axis.set(xlabel="oracle calls (CHGNet relaxations)", ylabel="cumulative hits", title=title)
        axis.legend(loc="upper left")
    for x, arm in enumerate(arms):
        values = [rows[arm, s][-1]["hit_rate"] for s in seeds if (arm, s) in rows]
        mean, _, low, high = spread(values)
        rates.bar(x, mean, color=COLORS[arm], yerr=[[mean - low], [high - mean]], capsize=4)
        rates.annotate(f"x{daf(arm):.2f}", (x, high), textcoords="offset points", xytext=(0, 4), ha="center")
    rates.set_xticks(range(len(arms)), arms)
    rates.set(ylabel="novel unique hits (<= 0.1) per oracle call",
              title="final hit rate (bars: min-max over seeds; x: vs random)")
    return figure
