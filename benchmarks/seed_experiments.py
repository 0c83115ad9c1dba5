"""The seed's own experiments (Crystal-GFN, AI4Mat 2023) reproduced with aloop's pieces.

1. Objectives: formation energy per atom (minimised) and band gap (target 1.34 eV). For
   each, aloop's proxy is fitted on a training split of the shared Materials Project data
   (``mp_cgcnn36k``, every element: the proxy learns chemistry from all of it), the
   reward is aloop's acquisition (``mean`` by default, the proxy's prediction, as in the
   seed; ``--acquisition ucb`` adds the uncertainty bonus), and the Crystal-GFN is trained
   on the default space and sampled. The proxy's predictions for the samples are compared
   with the Materials Project labels of the held-out split and with the untrained
   generator, whose every action is uniform among the allowed ones.
2. Diversity of the samples and of the top ``--top`` by reward (``diversity_report``).
3. Restricted sampling: ``configs/{fe-o,li-mn-o,cubic,lattice-range}.yaml``, each trained
   briefly on the formation-energy reward; the restrictions are checked on the samples
   (``benchmarks._seed_restricted``) and drawn.

Fitted proxies are cached under ``$ALOOP_CACHE_DIR/seed_experiments`` (default
``~/.cache/aloop``), keyed by their settings and training rows; ``--refit`` ignores them.

    python -m benchmarks.seed_experiments [--steps 1000] [--restricted-steps 500] [--samples 10000]
        [--top 100] [--acquisition mean] [--temperature T] [--seed 0] [--refit]

Writes ``benchmarks/results/seed_experiments.md`` and ``.json``, and ``seed_*.png`` there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aloop.acquisition import log_reward_fn
from aloop.config import Config, load_config
from aloop.data import Entries, TrainingSet, read_local, to_training_set
from aloop.data.convert import first_broken_constraint
from aloop.gfn import CrystalEnv, TrainingHistory, build_policy, sample, train
from aloop.proxy import Proxy, calibration, fit_proxy
from aloop.space import CrystalBatch, CrystalSpace, DiversityReport, diversity_report, plot_diversity, valid_mask
from benchmarks import CACHE_ROOT, SHARED_DATA
from benchmarks._markdown import RESULTS, table, write_report
from benchmarks._seed_plots import plot_distribution, plot_training
from benchmarks._seed_restricted import plot_restricted, restriction_checks, satisfied_share

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CACHE = CACHE_ROOT / "seed_experiments"
HOLDOUT_FRACTION, SPLIT_SEED = 0.1, 0
FIT_RECORD = "fit.json"
"""Written next to a cached proxy: how long its fit took, for reports made from the cache."""
RESTRICTED = ("fe-o", "li-mn-o", "cubic", "lattice-range")
BAND_GAP_NOTE = (
    " The band-gap reward is the posterior expectation of -|gap - target| (botorch's MC objective), not the "
    "distance of the posterior mean: a crystal the proxy is unsure of scores lower even when its mean is on "
    "target, so the generator is drawn to confident predictions (compare the `median proxy std` column).")
NEAR_GAP = 0.2
"""A band gap within this many eV of the target counts as on target."""


@dataclass(frozen=True)
class Objective:
    """One property objective: the proxy's target, how it reads and where its histogram is cut."""

    target: str
    label: str
    clip: tuple[float, float]


OBJECTIVES = (
    Objective("formation_energy_per_atom", "formation energy (eV/atom)", (-4.5, 1.5)),
    Objective("band_gap", "band gap (eV)", (0.0, 6.0)),
)


@dataclass(frozen=True)
class Run:
    """One trained generator and its samples, with the untrained generator's samples beside them."""

    name: str
    space: CrystalSpace
    trained: CrystalBatch
    uniform: CrystalBatch
    log_reward: torch.Tensor
    history: TrainingHistory
    sample_s: float


def load_split(entries: Entries, target: str) -> tuple[TrainingSet, TrainingSet]:
    """(train, held out): every usable entry with the target, 90/10 at random (seed 0), as in proxy_fit."""
    return to_training_set(entries, target=target).training.split(fraction=HOLDOUT_FRACTION, seed=SPLIT_SEED)


def cached_proxy(train_set: TrainingSet, cfg: Config, *, seed: int, refit: bool) -> tuple[Proxy, str]:
    """The proxy of ``train_set`` with the config's proxy settings, and how long its fit took (and when)."""
    settings = cfg.proxy.model_copy(update={"target": train_set.target})
    digest = hashlib.sha1(settings.model_dump_json().encode())
    digest.update(f"{seed}:{','.join(train_set.ids)}".encode())
    folder = CACHE / f"proxy-{train_set.target}-{digest.hexdigest()[:16]}"
    if (folder / FIT_RECORD).exists() and not refit:
        return Proxy.load(folder), f"{json.loads((folder / FIT_RECORD).read_text())['fit']}, read from the cache"
    start = time.perf_counter()
    proxy = fit_proxy(train_set, settings, seed=seed)
    fit = f"proxy fit {time.perf_counter() - start:.0f} s at load {os.getloadavg()[0]:.1f}"
    proxy.save(folder)
    (folder / FIT_RECORD).write_text(json.dumps({"fit": fit}))
    return proxy, fit


def best_f(train_set: TrainingSet, cfg: Config) -> float:
    """Best training value on the acquisition's scale (used by ``logei`` only)."""
    if train_set.target == "band_gap":
        return float(-(train_set.values - cfg.acquisition.band_gap_target).abs().min())
    return float(train_set.values.min())


def train_and_sample(name: str, cfg: Config, proxy: Proxy, best: float, *, steps: int, n: int, seed: int) -> Run:
    """Sample the untrained generator, train it on the proxy's reward for ``steps``, sample it again."""
    space = CrystalSpace.from_settings(cfg.space)
    env = CrystalEnv.from_space(space, cfg.gfn, device=cfg.gfn.device)
    reward = log_reward_fn(proxy, cfg.acquisition, target=proxy.target, best_f=best)
    torch.manual_seed(seed)
    policy = build_policy(env, cfg.gfn)
    uniform = sample(env, policy, n, seed=seed + 1, threads=cfg.gfn.threads).to("cpu")
    history = train(env, policy, reward, steps=steps, settings=cfg.gfn, progress=False)
    start = time.perf_counter()
    trained = sample(env, policy, n, seed=seed + 1, threads=cfg.gfn.threads).to("cpu")
    sample_s = time.perf_counter() - start
    print(f"{name}: {steps} steps in {history.seconds:.0f} s, {n:,} samples in {sample_s:.1f} s", flush=True)
    return Run(name, space, trained, uniform, reward(trained), history, sample_s)


def quantiles(values: np.ndarray) -> dict[str, float]:
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return {"mean": float(values.mean()), "p10": float(p10), "median": float(p50), "p90": float(p90)}


def run_objective(objective: Objective, entries: Entries, cfg: Config, args: argparse.Namespace
                  ) -> tuple[str, dict, TrainingHistory]:
    """Section 1 and 2 for one objective: the figures, the tables (markdown) and their numbers."""
    train_set, heldout = load_split(entries, objective.target)
    proxy, fit = cached_proxy(train_set, cfg, seed=args.seed, refit=args.refit)
    check = calibration(proxy, heldout)
    run = train_and_sample(objective.target, cfg, proxy, best_f(train_set, cfg), steps=args.steps, n=args.samples,
                           seed=args.seed)
    top = run.log_reward.argsort(descending=True)[: args.top]
    generated = {f"Crystal-GFN, {args.steps} steps (proxy mean)": run.trained,
                 f"Crystal-GFN, top {args.top} by reward (proxy mean)": run.trained[top],
                 "uniform generator (proxy mean)": run.uniform}
    predicted = {label: proxy.predict(batch, observation_noise=False) for label, batch in generated.items()}
    predicted["proxy on MP held-out"] = proxy.predict(heldout.crystals, observation_noise=False)
    foreign = [i for i, el in enumerate(heldout.crystals.elements) if el not in run.space.elements]
    labels = heldout.values.numpy()
    values = {label: p.mean.numpy() for label, p in predicted.items()} | {
        "MP held-out (DFT)": labels,
        "MP held-out, default-space elements only (DFT)": labels[(heldout.crystals.counts[:, foreign] == 0).all(1)]}
    slug = "formation_energy" if objective.target.startswith("formation") else "band_gap"
    gap = cfg.acquisition.band_gap_target if objective.target == "band_gap" else None
    shown = {label: v for label, v in values.items() if "top" not in label}
    plot_distribution(shown, xlabel=objective.label, target=gap, clip=objective.clip, cap=gap is not None,
                      title=f"{objective.label}: {args.samples:,} Crystal-GFN samples vs Materials Project").savefig(
        RESULTS / f"seed_{slug}_distribution.png", dpi=110)
    goals = goals_of(labels, gap)
    rows = [{"set": label, "n": len(v),
             "valid in space": f"{valid_mask(generated[label], run.space).float().mean():.3f}"
             if label in generated else "-",
             **quantiles(v), **{name: goal(v) for name, goal in goals.items()},
             "median proxy std": f"{predicted[label].std.median():.3f}" if label in predicted else "-"}
            for label, v in values.items()]
    reports = {
        f"{slug}: Crystal-GFN, all {args.samples:,}": diversity_report(run.trained, run.space),
        f"{slug}: Crystal-GFN, top {args.top} by reward": diversity_report(run.trained[top], run.space),
        f"{slug}: uniform, all {args.samples:,}": diversity_report(run.uniform, run.space),
    }
    for key, suffix in zip(reports, ("all", f"top{args.top}"), strict=False):
        fig = plot_diversity(reports[key])
        fig.suptitle(key)
        fig.savefig(RESULTS / f"seed_diversity_{slug}_{suffix}.png", dpi=90)
    timing = fit + (
        f"; Crystal-GFN training {run.history.seconds:.0f} s for {args.steps} steps; sampling {run.sample_s:.1f} s "
        f"for {args.samples:,}")
    common = most_common(run.trained[top])
    section = "\n\n".join([
        f"## {objective.label}",
        f"Proxy ({len(train_set):,} training rows, every element): held-out MAE {check.mae:.3f}, "
        f"90% interval coverage {check.coverage_90:.3f} on the {len(heldout):,} held-out rows. {timing}."
        + (BAND_GAP_NOTE if gap is not None else ""),
        f"![distribution](seed_{slug}_distribution.png)",
        table(rows, {"n": ",", "mean": ".3f", "p10": ".3f", "median": ".3f", "p90": ".3f"}
              | dict.fromkeys(goals, ".3f")),
        "`median proxy std`: the proxy's latent posterior standard deviation (no observation noise).",
        f"Most frequent (cell formula, space group) among the top {args.top}: {common}.",
        f"Diversity (`diversity_report`; the top {args.top} are ranked by log reward, duplicates kept):",
        table([diversity_row(name, report) for name, report in reports.items()],
              {"unique": ".3f", "unique group+composition": ".3f", "largest crystal system share": ".2f"}),
        f"![diversity of all samples](seed_diversity_{slug}_all.png)\n"
        f"![diversity of the top {args.top}](seed_diversity_{slug}_top{args.top}.png)",
    ])
    numbers = {"n_train": len(train_set), "n_heldout": len(heldout), "proxy_fit": fit, "mae": check.mae,
               "coverage_90": check.coverage_90, "train_s": run.history.seconds, "sample_s": run.sample_s,
               "distribution": rows, "top_most_common": common,
               "diversity": {k: r.as_dict() for k, r in reports.items()}}
    return section, numbers, run.history


def goals_of(labels: np.ndarray, gap: float | None) -> dict[str, Callable[[np.ndarray], float]]:
    """Goal columns: share below MP held-out's 10th percentile, or closeness to the band-gap target."""
    if gap is not None:
        return {f"share within {NEAR_GAP} eV of {gap:g}": lambda v: float((np.abs(v - gap) <= NEAR_GAP).mean()),
                f"median abs(gap - {gap:g})": lambda v: float(np.median(np.abs(v - gap)))}
    cut = float(np.percentile(labels, 10))
    return {f"share <= {cut:.2f} (MP held-out p10)": lambda v: float((v <= cut).mean())}


def most_common(batch: CrystalBatch, k: int = 6) -> str:
    """The ``k`` most frequent (cell formula, space group) pairs of ``batch`` with their counts."""
    pairs = Counter((c.formula, c.space_group) for c in batch.to_crystals())
    return ", ".join(f"{formula} ({group}) x{n}" for (formula, group), n in pairs.most_common(k))


def diversity_row(name: str, report: DiversityReport) -> dict[str, object]:
    """One table row of a diversity report."""
    largest = max(report.crystal_systems, key=report.crystal_systems.get)
    return {"samples": name, "n": report.n, "unique": report.unique_fraction,
            "unique group+composition": report.unique_composition_fraction,
            "crystal systems": sum(v > 0 for v in report.crystal_systems.values()),
            "space groups": len(report.space_groups),
            "elements": f"{sum(v > 0 for v in report.elements.values())} of {len(report.elements)}",
            "largest crystal system": largest,
            "largest crystal system share": report.crystal_systems[largest] / max(report.n, 1)}


def run_restricted(entries: Entries, proxy: Proxy, best: float, args: argparse.Namespace
                   ) -> tuple[str, list[dict], dict[str, TrainingHistory]]:
    """Section 3: each restricted config trained briefly on the formation-energy reward, checked and drawn."""
    data = to_training_set(entries, target="formation_energy_per_atom").training
    rows, histories = [], {}
    for name in RESTRICTED:
        cfg = with_acquisition(load_config(CONFIGS / f"{name}.yaml"), args)
        run = train_and_sample(name, cfg, proxy, best, steps=args.restricted_steps, n=args.samples, seed=args.seed)
        histories[name] = run.history
        checks = restriction_checks(run.trained, cfg.space)
        inside = first_broken_constraint(data.crystals, run.space) == ""
        trained = f"trained, {args.restricted_steps} steps"
        posterior = {trained: proxy.predict(run.trained, observation_noise=False),
                     "uniform": proxy.predict(run.uniform, observation_noise=False)}
        energies = {label: p.mean.numpy() for label, p in posterior.items()}
        if inside.any():
            energies["MP entries in this space, all splits (DFT)"] = data.values.numpy()[inside]
        plot_restricted(name, cfg.space, run.trained, run.uniform, energies).savefig(
            RESULTS / f"seed_restricted_{name}.png", dpi=90)
        broken = {key: int((~ok).sum()) for key, ok in checks.items() if not ok.all()}
        rows.append({
            "config": f"configs/{name}.yaml",
            "groups x compositions": f"{len(run.space.space_groups)} x {len(run.space.compositions):,}",
            "train s": run.history.seconds, "n": len(run.trained),
            "valid share": float(valid_mask(run.trained, run.space).float().mean()),
            "restriction satisfied share": satisfied_share(run.trained, cfg.space),
            "broken (count by check)": ", ".join(f"{k} {v}" for k, v in broken.items()) or "none",
            "unique share": diversity_report(run.trained, run.space).unique_fraction,
            "uniform: restriction satisfied": satisfied_share(run.uniform, cfg.space),
            "median E_f trained": float(posterior[trained].mean.median()),
            "median E_f uniform": float(posterior["uniform"].mean.median()),
            "median proxy std trained": float(posterior[trained].std.median()),
            "median proxy std uniform": float(posterior["uniform"].std.median()),
            "MP entries in space": int(inside.sum()),
        })
    figures = "\n".join(f"![{name}](seed_restricted_{name}.png)" for name in RESTRICTED)
    section = "\n\n".join([
        "## Restricted sampling",
        f"Each config's space (its `space` section; everything else default), the formation-energy proxy and "
        f"reward above, {args.restricted_steps} training steps, {args.samples:,} samples. `valid share`: aloop's "
        "checker of that space (`valid_mask`: charge neutrality, Wyckoff fit, atom limits and the restriction). "
        "`restriction satisfied share`: the restriction re-checked on the numbers of each crystal, without the "
        "generator's tables (elements and atom limits, lattice system of the space group, lattice lengths and "
        "angles within the ranges, 1e-6 slack). The MP column counts entries of mp_cgcnn36k (both splits) inside "
        "the space; their DFT formation energies are drawn in the last panel. Median E_f and proxy std (latent, "
        "eV/atom): the proxy's posterior.",
        table(rows, {"train s": ".0f", "n": ",", "valid share": ".3f", "restriction satisfied share": ".3f",
                     "unique share": ".3f", "uniform: restriction satisfied": ".3f", "median E_f trained": ".2f",
                     "median E_f uniform": ".2f", "median proxy std trained": ".3f",
                     "median proxy std uniform": ".3f"}),
        figures,
    ])
    return section, rows, histories


def with_acquisition(cfg: Config, args: argparse.Namespace) -> Config:
    """``cfg`` with the acquisition kind (and reward temperature, when given) of the command line."""
    update = {"kind": args.acquisition} | ({"temperature": args.temperature} if args.temperature else {})
    return cfg.model_copy(update={"acquisition": cfg.acquisition.model_copy(update=update)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps per objective (default 1000)")
    parser.add_argument("--restricted-steps", type=int, default=500, help="training steps per restricted case")
    parser.add_argument("--samples", type=int, default=10_000, help="crystals sampled per generator")
    parser.add_argument("--top", type=int, default=100, help="top crystals by reward for the diversity analysis")
    parser.add_argument("--acquisition", choices=("mean", "ucb"), default="mean", help="reward's acquisition kind")
    parser.add_argument("--temperature", type=float, help="reward temperature (default: acquisition.temperature)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the proxy fit, the generator and sampling")
    parser.add_argument("--refit", action="store_true", help="fit the proxies again instead of reading the cache")
    parser.add_argument("--only", choices=("objectives", "restricted"), help="run one part (the report has only it)")
    args = parser.parse_args()
    if not (SHARED_DATA / "mp_cgcnn36k").exists():
        sys.exit(f"shared data not found at {SHARED_DATA} (set ALOOP_SHARED_DATA)")
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    cfg = with_acquisition(load_config(), args)
    entries = read_local(SHARED_DATA / "mp_cgcnn36k")
    sections, numbers, histories = [], {}, {}
    for objective in OBJECTIVES if args.only != "restricted" else ():
        section, numbers[objective.target], histories[objective.target] = run_objective(objective, entries, cfg, args)
        sections.append(section)
    if args.only != "objectives":
        train_set, _ = load_split(entries, "formation_energy_per_atom")
        proxy, _ = cached_proxy(train_set, cfg, seed=args.seed, refit=False)
        section, numbers["restricted"], restricted = run_restricted(entries, proxy, best_f(train_set, cfg), args)
        histories.update(restricted)
        sections.append(section)
    plot_training(histories).savefig(RESULTS / "seed_training.png", dpi=100)
    total = time.perf_counter() - start
    (RESULTS / "seed_experiments.json").write_text(json.dumps(
        {"args": vars(args), "wall_s": total, "load_start": load_start, "load_end": os.getloadavg()[0], **numbers},
        indent=1, default=float))
    write_report("seed_experiments", protocol(cfg, args, total, load_start), *sections,
                 "## Training curves\n\n![training](seed_training.png)")


def protocol(cfg: Config, args: argparse.Namespace, total: float, load_start: float) -> str:
    """The protocol paragraph shown above the figures."""
    gfn = cfg.gfn
    return "\n\n".join([
        "# The seed's experiments (Crystal-GFN, AI4Mat 2023) with aloop",
        f"Total wall time {total:.0f} s; 1-minute load average {load_start:.1f} at the start (the 2 cores are "
        "shared with other engineers, so seconds here are upper bounds of an idle machine's).",
        "**Protocol.** Data: `mp_cgcnn36k` (33,059 usable entries, the 4 `ef_outlier` rows out), split 90/10 at "
        f"random (seed {SPLIT_SEED}) into 29,753 training and 3,306 held-out entries, the split of "
        "`benchmarks.proxy_fit`; the proxy is fitted on the whole training split (every element, not only the "
        "default space, whose 329 entries are too few to learn from), one proxy per target, with the default "
        f"`proxy` settings (DKL-SVGP: {cfg.proxy.inducing_points} inducing points, feature extractor "
        f"{cfg.proxy.hidden_dims} to {cfg.proxy.latent_dim}, {cfg.proxy.kernel}, {cfg.proxy.epochs} epochs, "
        f"variance recalibrated on {cfg.proxy.validation_fraction:.0%} of the rows, {cfg.proxy.threads} torch "
        f"thread), seed {args.seed}, cached under `~/.cache/aloop/seed_experiments`. Reward: `log R = "
        f"max(acquisition / {cfg.acquisition.temperature}, {cfg.acquisition.log_reward_min})` with acquisition "
        f"`{args.acquisition}` (`mean`: the proxy's posterior mean, minus it for formation energy; for the band "
        f"gap the Monte-Carlo mean of `-|gap - {cfg.acquisition.band_gap_target}|` over 64 posterior samples). "
        f"Generator: the default space (`configs/default.yaml`: {len(cfg.space.elements)} elements, at most "
        f"{cfg.space.max_atoms_per_element} atoms of each and {cfg.space.max_atoms} in all, 2-3 elements, lengths "
        f"{cfg.space.lattice.length.min:g}-{cfg.space.lattice.length.max:g} A, angles "
        f"{cfg.space.lattice.angle.min:g}-{cfg.space.lattice.angle.max:g} degrees) and default `gfn` settings "
        f"(hidden {gfn.hidden_dim} x {gfn.n_layers}, batch {gfn.batch_size}, lr {gfn.lr}, epsilon {gfn.epsilon}, "
        f"replay {gfn.replay_fraction:.0%} of {gfn.replay_size}, {gfn.threads} torch thread, CPU), "
        f"{args.steps} trajectory-balance steps per objective ({args.restricted_steps} per restricted case; the "
        f"round's default is {gfn.train_steps}), seed {args.seed} for the policy's initialisation and training, "
        f"{args.seed + 1} for sampling; {args.samples:,} samples from the trained and from the untrained "
        "(uniform over the allowed actions) generator. Sample values are the proxy's posterior mean; Materials "
        "Project values are DFT labels (legacy corrections). `valid in space`: aloop's constraint checker of "
        "the default space.",
    ])


if __name__ == "__main__":
    main()
