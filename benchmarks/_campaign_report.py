"""The campaign's report: per-round metrics of every system, arm and seed, their spread, tables and figures.

Everything here reads the round records (labels with their SevenNet results, seconds, how each
batch was made) and the hulls' known structures: nothing is relaxed or fitted again.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib.figure import Figure
from pymatgen.core import Composition

from aloop.hits import THRESHOLDS, acceleration_factor, hit_flags, spread
from aloop.oracle import validate_settings
from aloop.proxy import calibration_metrics
from aloop.proxy.proxy import ResidualQuantiles
from benchmarks._campaign_arms import ARMS, PROXY_ARMS
from benchmarks._campaign_confirm import CONFIRM_BY

if TYPE_CHECKING:
    from benchmarks.campaign import System

RESULTS = Path(__file__).resolve().parent / "results"
COLORS = {"aloop": "tab:red", "mean": "tab:blue", "random": "tab:gray", "random-templates": "tab:brown",
          "substitution": "tab:green", "substitution-ucb": "tab:olive"}
BASELINES = ("random", "random-templates", "substitution")
"""The arms every arm's hit rate is compared with (acceleration factor; against substitution, the target)."""
HIT = max(THRESHOLDS)


def round_calibration(labels: list[dict]) -> dict[str, float]:
    """The proxy's calibration on one round's new labels (formation energy), predicted before they were added,
    with the proxy's own interval widths."""
    rows = [label for label in labels if label.get("ok") and label.get("proxy_mean") is not None]
    if not rows:
        return {}
    quantiles = ResidualQuantiles(**(rows[0].get("proxy_quantiles") or {}))
    report = calibration_metrics(torch.tensor([r["formation_energy_per_atom"] for r in rows]),
                                 torch.tensor([r["proxy_mean"] for r in rows]),
                                 torch.tensor([r["proxy_std"] for r in rows]), quantiles=quantiles)
    return {"n": report.n, "mae": report.mae, "nll": report.nll, "coverage_50": report.coverage_50,
            "coverage_90": report.coverage_90}


def seed_rows(rounds: list[dict], *, known: list) -> list[dict]:
    """Cumulative metrics of one arm and seed after each round (novel = unique and not a known entry;
    confirmed = novel and within ``HIT`` of the SevenNet hull too)."""
    labels = [label for record in rounds for label in record["labels"]]
    flags = {t: hit_flags(labels, threshold=t, known=known, confirm_by=CONFIRM_BY) for t in THRESHOLDS}
    rows, end = [], 0
    for number, record in enumerate(rounds, start=1):
        end += len(record["labels"])
        done = labels[:end]
        ok = [x for x in done if x.get("ok")]
        novel, confirmed = flags[HIT]["novel"][:end], flags[HIT]["confirmed"][:end]
        novel_rows = np.flatnonzero(novel)
        last = number == len(rounds)
        rows.append({
            "round": number, "calls": end, "relaxed": len(ok),
            "hits": int(flags[HIT]["hit"][:end].sum()), "novel": int(novel.sum()),
            "confirmed": int(confirmed.sum()), "sent": sum(CONFIRM_BY in x for x in done),
            "novel_0.0": int(flags[0.0]["novel"][:end].sum()), "confirmed_0.0": int(flags[0.0]["confirmed"][:end].sum()),
            "hit_rate": float(novel.sum() / end) if end else math.nan,
            "confirmed_rate": float(confirmed.sum() / end) if end else math.nan,
            "ternary": sum(len(Composition(done[i]["formula"])) >= 3 for i in novel_rows),
            "ternary_confirmed": sum(len(Composition(done[i]["formula"])) >= 3 for i in np.flatnonzero(confirmed)),
            "novel_formulas": len({done[i]["formula"] for i in novel_rows}),
            "best_ef": min((x["formation_energy_per_atom"] for x in ok), default=math.nan),
            "calibration": round_calibration(record["labels"]),
            "templated": sum(x.get("template") is not None for x in record["labels"]),
            "round_calls": len(record["labels"]),
            "propose_s": record["propose_s"], "oracle_s": record["oracle_s"], "confirm_s": record["confirm_s"],
            "wall_s": record["propose_s"] + record["oracle_s"] + record["confirm_s"],
            "novel_curve": np.cumsum(novel).tolist() if last else None,
            "confirmed_curve": np.cumsum(confirmed).tolist() if last else None,
            "hits_list": [_hit_row(done[i], bool(confirmed[i])) for i in novel_rows] if last else None,
            "by_system": _by_system(done, novel) if last else None,
        })
    return rows


def _by_system(labels: list[dict], novel: np.ndarray) -> dict[str, dict[str, list]]:
    """Where the calls went, per chemical system of the candidates: whether each call was a novel hit, and of
    the relaxed ones the CHGNet E_hull and the proxy's error on the formation energy (guided arms)."""
    out: dict[str, dict[str, list]] = defaultdict(lambda: {"novel": [], "e_above_hull": [], "proxy_error": []})
    for label, is_novel in zip(labels, novel, strict=True):
        row = out[Composition(label["formula"]).chemical_system]
        row["novel"].append(bool(is_novel))
        if label.get("ok"):
            row["e_above_hull"].append(label["e_above_hull"])
            if label.get("proxy_mean") is not None:
                row["proxy_error"].append(label["proxy_mean"] - label["formation_energy_per_atom"])
    return dict(out)


def _hit_row(label: dict, confirmed: bool) -> dict:
    second = label.get(CONFIRM_BY) or {}
    return {"id": label["id"], "formula": label["formula"], "space_group": label["crystal"]["space_group"],
            "e_above_hull": label["e_above_hull"], "second": second.get("e_above_hull"),
            "same_structure": second.get("same_structure"), "confirmed": confirmed}


def _fmt(values: list[float], digits: int = 1) -> str:
    mean, std, low, high = spread(values)
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def write_report(runs: dict[str, dict[tuple[str, int], list[dict]]], *, systems: list[System], command: str,
                 note: str, matcher: dict, name: str) -> None:
    """Print and write ``<name>.md``, ``<name>.json`` and ``<name>_<system>_hits.png`` under ``benchmarks/results``."""
    lines = [f"# Campaign simulation {name.removeprefix('campaign-')}: {', '.join(s.name for s in systems)}", "", f"Command: `{command}`", "",
             *([note, ""] if note else []), *_common_protocol(systems[0], matcher)]
    dump = {"command": command, "systems": {}}
    RESULTS.mkdir(exist_ok=True)
    for system in systems:
        rows = {key: seed_rows(rounds, known=system.hull.known_structures) for key, rounds in runs[system.name].items()}
        section, figure = _system_section(system, rows, name=name)
        lines += section
        figure.savefig(RESULTS / f"{name}_{system.name}_hits.png", dpi=120)
        dump["systems"][system.name] = {"records": str(system.records.relative_to(RESULTS.parent.parent)),
                                        "rows": {f"{a}/seed-{s}": r for (a, s), r in rows.items()}}
    load = os.getloadavg()
    lines += [(f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work, one torch thread; "
              f"load average at report time {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}."), ""]
    text = "\n".join(lines)
    print(text)
    (RESULTS / f"{name}.md").write_text(text + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps(dump, indent=1, default=str))


def _system_section(system: System, rows: dict, *, name: str) -> tuple[list[str], Figure]:
    arms = [a for a in ARMS if any(k[0] == a for k in rows)]
    seeds = sorted({k[1] for k in rows})
    n_rounds = min(len(r) for r in rows.values())

    def values(arm: str, number: int, key: str) -> list[float]:
        return [rows[arm, s][number - 1][key] for s in seeds if (arm, s) in rows]

    def daf(arm: str, number: int, baseline: str, key: str = "hit_rate") -> str:
        if baseline not in arms:
            return "-"
        factor = acceleration_factor(spread(values(arm, number, key))[0], spread(values(baseline, number, key))[0])
        return f"{factor:.2f}"

    last = n_rounds
    lines = [*_system_protocol(system, n_rounds=n_rounds, seeds=seeds), "",
             f"### {system.name}: after {last} rounds (mean ± std [min, max] over seeds {seeds})", "",
             ("| arm | oracle calls | relaxed | **novel hits / call** (CHGNet ≤ 0.1) | **confirmed hits / call** "
              "(CHGNet and SevenNet ≤ 0.1) | acceleration vs random / random-templates / substitution, novel hits | the same, "
              "confirmed hits | "
              "wall s per round (proposal + CHGNet + SevenNet) |"),
             "|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        wall = [float(np.mean([r["wall_s"] for r in rows[arm, s][:last]])) for s in seeds if (arm, s) in rows]
        lines.append(
            f"| {arm} | {_fmt(values(arm, last, 'calls'), 0)} | {_fmt(values(arm, last, 'relaxed'))} | "
            f"{_fmt(values(arm, last, 'hit_rate'), 3)} | {_fmt(values(arm, last, 'confirmed_rate'), 3)} | "
            f"{' / '.join(daf(arm, last, b) for b in BASELINES)} | "
            f"{' / '.join(daf(arm, last, b, 'confirmed_rate') for b in BASELINES)} | {_fmt(wall, 0)} |")
    lines += ["", ("| arm | novel ≤ 0.1 | confirmed ≤ 0.1 | novel ≤ 0.0 | confirmed ≤ 0.0 | novel of ≥ 3 elements | "
              "confirmed of ≥ 3 elements | distinct novel formulas | best E_f (eV/atom, CHGNet) |"),
              "|---|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        cells = [_fmt(values(arm, last, key)) for key in ("novel", "confirmed", "novel_0.0", "confirmed_0.0", "ternary",
                                                          "ternary_confirmed", "novel_formulas")]
        lines.append(f"| {arm} | {' | '.join(cells)} | {_fmt(values(arm, last, 'best_ef'), 3)} |")
    lines += ["", f"### {system.name}: per round (cumulative hits; seconds of that round)", "",
              ("| arm | round | calls | novel ≤ 0.1 | confirmed ≤ 0.1 | novel / call | acceleration vs random / "
              "random-templates / substitution | best E_f | proxy on the round's new labels: n (all seeds), MAE, NLL, 50% / 90% "
              "coverage | templated candidates | propose / oracle / SevenNet s |"),
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        for number in range(1, n_rounds + 1):
            seconds = " / ".join(f"{np.mean(values(arm, number, k)):.0f}" for k in ("propose_s", "oracle_s", "confirm_s"))
            templated = f"{sum(values(arm, number, 'templated'))} of {sum(values(arm, number, 'round_calls'))}"
            lines.append(f"| {arm} | {number} | {int(np.mean(values(arm, number, 'calls')))} | "
                         f"{_fmt(values(arm, number, 'novel'))} | {_fmt(values(arm, number, 'confirmed'))} | "
                         f"{_fmt(values(arm, number, 'hit_rate'), 3)} | "
                         f"{' / '.join(daf(arm, number, b) for b in BASELINES)} | "
                         f"{_fmt(values(arm, number, 'best_ef'), 3)} | {_calibration_cell(arm, number, rows, seeds)} | "
                         f"{templated} | {seconds} |")
    lines += ["", *_calls_by_system(rows, arms=arms, n_rounds=n_rounds), "",
              *_hits_by_formula(rows, arms=arms, n_rounds=n_rounds), "",
              f"![novel and confirmed hits against oracle calls]({name}_{system.name}_hits.png)", ""]
    return lines, plot_hits(rows, arms=arms, seeds=seeds, title=system.name)


def _substitution_note(cfg) -> str:
    """What the guided arms' batch holds besides the generator's samples (``selection.substitution``)."""
    selection = cfg.selection
    if not selection.substitution:
        return ""
    share = ("competing on the acquisition alone" if selection.substitution_share is None
             else f"{selection.substitution_share:.0%} of the batch kept for them")
    return f", with the substitution arm's structures as candidates too ({share})"


def _calibration_cell(arm: str, number: int, rows: dict, seeds: list[int]) -> str:
    if arm not in PROXY_ARMS:
        return "-"
    reports = [rows[arm, s][number - 1]["calibration"] for s in seeds if (arm, s) in rows]
    reports = [r for r in reports if r]
    if not reports:
        return "-"
    return (f"{sum(r['n'] for r in reports)}, {np.mean([r['mae'] for r in reports]):.3f}, "
            f"{np.mean([r['nll'] for r in reports]):.2f}, {np.mean([r['coverage_50'] for r in reports]):.2f} / "
            f"{np.mean([r['coverage_90'] for r in reports]):.2f}")


def _calls_by_system(rows: dict, *, arms: list[str], n_rounds: int) -> list[str]:
    """Per arm and chemical system (all seeds): the share of the calls, the novel hits they gave, the median CHGNet
    E_hull of the relaxed ones and, for the guided arms, the proxy's mean error on their formation energy."""
    lines = [("Where the calls went (all seeds): per chemical system of the candidates, its share of the arm's calls, "
              "novel hits per call there, the median CHGNet E_hull of its relaxed candidates and, for the guided arms, "
              "the proxy's mean error (predicted - CHGNet formation energy, eV/atom, predicted before the label)."), "",
             "| arm | chemical system | calls | share | novel hits | hits / call | median E_hull | proxy error |",
             "|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        merged: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        for (a, _), seed_rows_ in rows.items():
            if a == arm:
                for system, row in (seed_rows_[n_rounds - 1]["by_system"] or {}).items():
                    for key, values in row.items():
                        merged[system][key] += values
        total = sum(len(m["novel"]) for m in merged.values())
        for system, m in sorted(merged.items(), key=lambda kv: -len(kv[1]["novel"])):
            calls, novel = len(m["novel"]), sum(m["novel"])
            error = f"{np.mean(m['proxy_error']):+.2f}" if m["proxy_error"] else "-"
            median = f"{np.median(m['e_above_hull']):.2f}" if m["e_above_hull"] else "-"
            lines.append(f"| {arm} | {system} | {calls} | {calls / total:.0%} | {novel} | {novel / calls:.2f} | "
                         f"{median} | {error} |")
    return lines


def _hits_by_formula(rows: dict, *, arms: list[str], n_rounds: int) -> list[str]:
    """Every novel hit by reduced formula: which arms found it how often, and what SevenNet said."""
    found: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for (arm, _), seed_rows_ in rows.items():
        for hit in seed_rows_[n_rounds - 1]["hits_list"] or []:
            found[hit["formula"]].append((arm, hit))
    if not found:
        return ["No novel hit."]
    lines = [("Novel hits by formula (all seeds): novel hits per arm, confirmed of them, lowest E_hull under "
             "CHGNet and under SevenNet (eV/atom), and how many kept their structure in the SevenNet relaxation."), "",
             f"| formula | {' | '.join(arms)} | confirmed | min E_hull CHGNet | min E_hull SevenNet | same structure |",
             f"|---|{'---|' * len(arms)}---|---|---|---|"]
    for formula, hits in sorted(found.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        per_arm = [sum(a == arm for a, _ in hits) for arm in arms]
        second = [h["second"] for _, h in hits if h["second"] is not None]
        lines.append(f"| {formula} | {' | '.join(map(str, per_arm))} | {sum(h['confirmed'] for _, h in hits)} | "
                     f"{min(h['e_above_hull'] for _, h in hits):.3f} | "
                     f"{f'{min(second):.3f}' if second else '-'} | "
                     f"{sum(bool(h['same_structure']) for _, h in hits)} of {len(hits)} |")
    return lines


def _common_protocol(system: System, matcher: dict) -> list[str]:
    cfg, oracle = system.cfg, system.oracle
    settings = validate_settings(oracle.oracle, oracle.settings)
    batch = getattr(settings, "batch_size", 1)
    return [
        "## Protocol (both systems)", "",
        ("- **Pipeline**: the product's, with its defaults: the guided arms run `aloop.proposal` "
        f"(`generator_reward`, `train_generator`, `propose_batch`) on the `{cfg.proxy.target}` target (acquisition "
        "on the predicted formation energy minus the hull of the known phases and the arm's labels), the "
        "Crystal-GFN with its Wyckoff stage, and placement from templates "
        f"(`placement.templates: {str(cfg.placement.templates).lower()}`; the Materials Project data's structures "
        "and every structure relaxed in the campaign). Settings not named in the configs are the product defaults."),
        (f"- **Oracle**: `{oracle.oracle}` as the round builds it ({system.hull.model}, weights from the wheel): "
        f"ASE {settings.optimizer} with the cell relaxed (FrechetCellFilter), fmax {settings.fmax} eV/A, at most "
        f"{settings.max_steps} steps, {settings.timeout_s:g} s limit, "
        f"{f'in batches of {batch}' if batch > 1 else 'one at a time'}, one torch thread on one worker; a failed "
        "relaxation (not converged, timeout, atoms < 0.5 A, exploded cell) is an oracle call without a label."),
        ("- **Reference hulls**: pymatgen PhaseDiagram of one model's energies only: its elemental references "
        "(the oracle's `reference_energies`) and every known mp_cgcnn36k entry of the searched chemical systems "
        "(any size) relaxed by its oracle from the stored cell. CHGNet (trained on MP2020-corrected energies, "
        f"no further correction) and {system.second_hull.model} (SevenNet-0, trained on uncorrected MPtrj "
        "energies, MP2020 corrections applied by its oracle, GGA+U for the oxides of Mn and Fe): two hulls of "
        "the same entries, no DFT number in either."),
        ("- **Hits**: relaxed candidates at most 0.1 eV/atom (and 0.0) above the CHGNet hull. **Unique**: matching "
        "no earlier hit of the same arm and seed; **novel**: unique and matching no known entry (stored or "
        "relaxed structure), pymatgen StructureMatcher("
        f"{', '.join(f'{k}={v}' for k, v in matcher.items())}) on relaxed structures. **Confirmed**: a novel hit "
        "that SevenNet-0, relaxing the CHGNet-relaxed structure again with the same settings, also puts at "
        "most 0.1 eV/atom (0.0) above its own hull. Hit rate: novel hits per oracle call; acceleration: an "
        "arm's mean rate over a random arm's. Best E_f: lowest CHGNet formation energy among the arm's labels."),
        ("- **Arms**: aloop (UCB, beta "
        f"{cfg.acquisition.beta}, reward temperature {cfg.acquisition.temperature}, Crystal-GFN "
        f"{cfg.gfn.train_steps} steps per round warm-started from the previous round, {cfg.selection.n_samples} "
        f"samples, diverse novel batch{_substitution_note(cfg)}); mean (the same with acquisition `mean`); random "
        "(uniform Crystal-GFN "
        "samples, valid, novel and distinct, in random order, sampled Wyckoff sites dropped so pyxtal places "
        "atoms at random positions, as in v1); random-templates (the same samples placed on their sampled "
        "sites as the round places them: a template where one fits, else pyxtal on those sites); substitution "
        "(pymatgen SubstitutionPredictor/Substitutor over mp_cgcnn36k structures of the predicted source "
        "chemistries, substituted structures inside the space, drawn without replacement in proportion to their "
        "probability, seeded; `aloop.substitution`); substitution-ucb (the same substituted structures ranked by "
        "aloop's proxy and acquisition, batch chosen by the round's `select_diverse`). The proxy is fitted on the "
        "starting data and the arm's "
        "CHGNet labels; calibration: its prediction of each new label (CHGNet source once it has one, noise "
        "included, its own interval widths) made before the label was added."), ""]


def _system_protocol(system: System, *, n_rounds: int, seeds: list[int]) -> list[str]:
    cfg, hull, second, facts = system.cfg, system.hull, system.second_hull, system.facts
    failed = {h.model: [f"{e.material_id} ({e.kind})" for e in h.entries if e.energy_per_atom is None]
              for h in (hull, second)}
    on_hull = {h.model: sorted({e.name for e in h.diagram.stable_entries}) for h in (hull, second)}
    space = cfg.space
    return [
        f"## {system.name}", "",
        (f"- **Space** (`{system.records.name}`): elements {list(space.elements)}, at most "
        f"{space.max_atoms_per_element} atoms of an element and {space.max_atoms} in the conventional cell, "
        f"{space.min_elements}-{space.max_elements} elements, charge rule {list(space.charge_rule)}, lengths "
        f"{space.lattice.length.min}-{space.lattice.length.max} A, angles {space.lattice.angle.min}-"
        f"{space.lattice.angle.max} deg ({facts.get('compositions', '?')} compositions)."),
        (f"- **Starting data** of every arm: {facts.get('start', '?')} mp_cgcnn36k entries (`data.scope: "
        f"{cfg.data.scope}`, sources {facts.get('start_sources', '?')}); the reward's hull starts from "
        f"{len(facts.get('phases', []))} known phases (`hull` settings: within {cfg.hull.max_e_above_hull} eV/atom "
        f"of the data set's hull, at most {cfg.hull.max_sites} sites); {facts.get('templates', '?')} placement "
        f"templates; substitution pool {facts.get('substitution_pool', '?')} structures."),
        f"- **Budget**: {n_rounds} rounds x {cfg.selection.batch_size} oracle calls per arm and seed; seeds {seeds}.",
        *(f"- **{h.model} hull**: references {', '.join(f'{k} {v:.3f}' for k, v in h.references.items())} eV/atom; "
          f"{sum(e.energy_per_atom is not None for e in h.entries)} of {len(h.entries)} known entries relaxed"
          f"{' (not: ' + ', '.join(failed[h.model]) + ')' if failed[h.model] else ''}; on the hull: "
          f"{', '.join(on_hull[h.model])}." for h in (hull, second)),
    ]


def plot_hits(rows: dict, *, arms: list[str], seeds: list[int], title: str) -> Figure:
    """Novel and confirmed hits (0.1 eV/atom) against oracle calls (mean line, min-max band over seeds), and
    the final rates per arm (mean, min-max bars)."""
    figure = Figure(figsize=(15, 4.4), layout="constrained")
    novel_axis, confirmed_axis, rates = figure.subplots(1, 3)
    for axis, key, label in ((novel_axis, "novel_curve", "novel hits, CHGNet E_hull <= 0.1"),
                             (confirmed_axis, "confirmed_curve", "confirmed hits, CHGNet and SevenNet <= 0.1")):
        for arm in arms:
            curves = [rows[arm, s][-1][key] for s in seeds if (arm, s) in rows]
            length = min(len(c) for c in curves)
            stack = np.array([[0, *c[:length]] for c in curves], dtype=float)
            calls = np.arange(length + 1)
            axis.plot(calls, stack.mean(axis=0), color=COLORS[arm], label=f"{arm} (n={len(curves)} seeds)")
            axis.fill_between(calls, stack.min(axis=0), stack.max(axis=0), color=COLORS[arm], alpha=0.2)
        axis.set(xlabel="oracle calls (CHGNet relaxations)", ylabel="cumulative hits", title=f"{title}: {label}")
        axis.legend(loc="upper left")
    width = 0.4
    for x, arm in enumerate(arms):
        for offset, key, hatch in ((-width / 2, "hit_rate", None), (width / 2, "confirmed_rate", "//")):
            mean, _, low, high = spread([rows[arm, s][-1][key] for s in seeds if (arm, s) in rows])
            if math.isnan(mean):
                continue
            rates.bar(x + offset, mean, width, color=COLORS[arm], hatch=hatch, yerr=[[mean - low], [high - mean]],
                      capsize=3)
    rates.set_xticks(range(len(arms)), arms, rotation=20)
    rates.set(ylabel="hits per oracle call", title="final rates: novel, confirmed (hatched)")
    return figure
