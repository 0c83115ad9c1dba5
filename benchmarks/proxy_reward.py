"""The GFlowNet's reward path: featurizer throughput, the log reward of 1,000 terminal states, and the
stability reward of 10,000.

Crystals are 100,000 terminal states of the untrained (uniform) Crystal-GFN of the
default space. The proxy has the default architecture (256 inducing points, extractor
223-256-128-16), fitted briefly on 2,000 shared MP entries: the reward's cost does not
depend on how well it is trained. The reward is what the GFlowNet calls,
``log_reward_fn(...)(batch)``: featurize, proxy posterior, botorch acquisition, scaled
and clipped log reward. Each timing is the median of ``--repeats`` calls after one
warm-up call, wall clock and CPU time (all threads) of this process; torch threads 1
(``gfn.threads``, the setting the GFlowNet trains under) and 2. The stability reward
(``proxy.target: stability``) adds the hull's formation energy at each composition
(``aloop.thermo.FormationHull``), here the hull of the shared entries of the space's
elements; its first call also finds the hull's planes of every chemical system it meets
(reported apart: a round pays it once), and, as in the round, the placement templates' hash
(``Prototypes``: crystals without a template lose ``acquisition.untemplated_penalty``) and the
floor for crystals whose sites have no room or force a supergroup.

    python -m benchmarks.proxy_reward [--repeats 20]

Prints the tables and writes ``benchmarks/results/proxy_reward.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from aloop.acquisition import best_observed, log_reward_fn
from aloop.config import AcquisitionSettings, ProxySettings, load_config
from aloop.data import TrainingSet, read_local, to_training_set
from aloop.gfn import CrystalEnv, build_policy, sample
from aloop.proxy import fit_proxy
from aloop.data.known_structures import known_templates
from aloop.space import CrystalSpace, TemplatePool
from aloop.space.features import feature_names, featurize
from aloop.thermo import FormationHull
from benchmarks import SHARED_DATA

RESULTS = Path(__file__).resolve().parent / "results" / "proxy_reward.md"
THREADS = (1, 2)
BATCH = 1_000
STABILITY_BATCH = 10_000


def median_ms(call: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of ``call`` over ``repeats`` calls, after one warm-up call."""
    call()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


CORRECTION_LABELS = 256
"""Shared entries of the space's elements marked as the campaign's labels for the `corrected` rows: the proxy then
carries the campaign's correction (``aloop.proxy.correction``), an exact GP on that many labels."""


def _stability_rows(env: CrystalEnv, batch, repeats: int) -> list[str]:
    """Time the formation-energy and stability log rewards of ``batch`` on one thread."""
    local = read_local(SHARED_DATA / "mp_cgcnn36k")
    data = to_training_set(local, target="formation_energy_per_atom").training
    train = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:2_000])
    torch.set_num_threads(1)
    proxy = fit_proxy(train, ProxySettings(epochs=1, min_steps=50), seed=0)
    crystals = data.crystals.to_crystals()
    inside = torch.tensor([{el.symbol for el in c.composition} <= set(env.space.elements) for c in crystals])
    entries = [(c.composition, float(v)) for c, v, kept in zip(crystals, data.values.tolist(), inside.tolist(),
                                                                strict=True) if kept]
    shared = load_config(overrides=[f"data.local_path={SHARED_DATA / 'mp_cgcnn36k'}"])
    prototypes = TemplatePool.build(known_templates(env.space, shared.data)).prototypes()
    labels = data.subset(inside.nonzero().squeeze(1)[:CORRECTION_LABELS]).as_campaign_labels()
    corrected = fit_proxy(TrainingSet.concat([train, labels]), ProxySettings(epochs=1, min_steps=50), seed=0)
    no_hull = fit_proxy(train, ProxySettings(epochs=1, min_steps=50, baseline="none", hull_input=False), seed=0)
    proxies = {"stability, corrected": corrected, "stability, no hull": no_hull}
    rows = []
    for kind in ("ucb", "logei", "mean"):
        for target in ("formation_energy_per_atom", "stability", *proxies):
            if target in proxies and kind == "logei":
                continue
            settings = AcquisitionSettings(kind=kind)
            hull = FormationHull(env.space.elements, entries) if target != "formation_energy_per_atom" else None
            reward = log_reward_fn(proxies.get(target, proxy), settings,
                                   target=target.split(",")[0], best_f=0.0, hull=hull,
                                   prototypes=prototypes if hull is not None else None)
            start = time.perf_counter()
            reward(batch)
            first = (time.perf_counter() - start) * 1e3
            wall, cpu = median_ms(lambda reward=reward: reward(batch), repeats)
            rows.append(f"| {target} | {kind} | {first:.0f} | {wall:.0f} | {cpu:.0f} |")
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    cfg = load_config()
    torch.set_num_threads(1)
    env = CrystalEnv.from_space(CrystalSpace.from_settings(cfg.space), cfg.gfn, device=cfg.gfn.device)
    crystals = sample(env, build_policy(env, cfg.gfn), 100_000, seed=0).to("cpu")  # featurised and scored on CPU

    feature_rows = []
    for n in (1_000, 10_000, 100_000):
        row = f"| {n:,} |"
        for threads in THREADS:
            torch.set_num_threads(threads)
            wall, cpu = median_ms(lambda n=n: featurize(crystals[:n]), max(3, args.repeats * 1_000 // n))
            row += f" {wall:.1f} | {cpu:.1f} | {n / wall * 1e3:,.0f} |"
        feature_rows.append(row)
        print(row, flush=True)

    reward_rows = []
    batch = crystals[:BATCH]
    for target in ("formation_energy_per_atom", "band_gap"):
        data = to_training_set(read_local(SHARED_DATA / "mp_cgcnn36k"), target=target).training
        train = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:2_000])
        torch.set_num_threads(1)
        proxy = fit_proxy(train, ProxySettings(target=target, epochs=1, min_steps=50), seed=0)
        for kind in ("ucb", "logei", "mean"):
            settings = AcquisitionSettings(kind=kind)
            best = best_observed(train.values, settings, target=target)
            reward = log_reward_fn(proxy, settings, target=target, best_f=best)
            row = f"| {target} | {kind} |"
            for threads in THREADS:
                torch.set_num_threads(threads)
                wall, cpu = median_ms(lambda reward=reward: reward(batch), args.repeats)
                row += f" {wall:.1f} | {cpu:.1f} |"
            values = reward(batch)
            reward_rows.append(f"{row} {float(values.min()):.2f} .. {float(values.max()):.2f} |")
            print(reward_rows[-1], flush=True)

    stability_rows = _stability_rows(env, crystals[:STABILITY_BATCH], args.repeats)

    text = "\n".join([
        "# Reward path: featurizer throughput and log reward of GFlowNet terminal states",
        "",
        f"`python -m benchmarks.proxy_reward` on {platform.node()} ({os.cpu_count()} cores, shared with other "
        f"engineers; load average {os.getloadavg()[0]:.1f} at the end), median of {args.repeats} calls; CPU is "
        "the process's CPU time over all its threads. Crystals: terminal states of the untrained Crystal-GFN "
        f"of the default space ({len(env.space.elements)} elements, at most {cfg.space.max_atoms} atoms).",
        "",
        f"## Featurizer (`aloop.space.features.featurize`, {len(feature_names())} columns)",
        "",
        "| crystals | 1 thread: ms | CPU ms | crystals/s | 2 threads: ms | CPU ms | crystals/s |",
        "|---|---|---|---|---|---|---|",
        *feature_rows,
        "",
        f"## Log reward of {BATCH:,} terminal states (featurize + proxy posterior + acquisition + log reward)",
        "",
        "Band gap: botorch's Monte-Carlo acquisition (64 quasi-MC samples) on |gap - 1.34 eV|; formation "
        "energy: analytic. Temperature 0.2, floor -20; best_f as the round sets it (best training value).",
        "",
        "| target | acquisition | 1 thread: ms | CPU ms | 2 threads: ms | CPU ms | log reward range |",
        "|---|---|---|---|---|---|---|",
        *reward_rows,
        "",
        f"## Stability reward of {STABILITY_BATCH:,} terminal states (1 thread)",
        "",
        "Proxy of formation energy as above; hull: the formation energies of the shared entries made of the "
        "space's elements; the stability rows also look the crystals up among the templates of the shared entries "
        "(the round's `untemplated_penalty`). `first call`: the hull's planes of every chemical system the batch "
        "meets are found then (pymatgen `PhaseDiagram`), once per round. Every row includes the floor of crystals "
        "whose sites have no room or force a supergroup. `stability, corrected`: the proxy also fitted on "
        f"{CORRECTION_LABELS} entries of the space's elements marked as the campaign's labels, so it carries the "
        "campaign's correction (an exact GP on them) as a round with labels does. Every proxy but `stability, no "
        "hull` reads the hull of its training rows as two inputs (the default `proxy.hull_input`, `proxy.baseline: "
        "none`; `first call` also finds that hull's planes of each chemical system); `no hull` reads no hull.",
        "",
        "| target | acquisition | first call: ms | median: ms | CPU ms |",
        "|---|---|---|---|---|",
        *stability_rows,
        "",
    ])
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
