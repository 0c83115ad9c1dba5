"""Proxy on the shared Materials Project data: fit time and memory by size, held-out accuracy and calibration.

Data: all 33,059 usable entries of ``mp_cgcnn36k`` (every element, no space filter; the
4 ``ef_outlier`` rows out), split 90/10 (seed 0) into 29,753 training and 3,306 held-out
entries. The whole set rather than its part inside the default space: that part is a few
hundred entries, too few to measure how the fit scales, and the proxy learns chemistry from
every element. The proxy is fitted on random 5k and 20k subsets and on all training rows
and evaluated on the same held-out entries. Each fit runs in its own interpreter, so its
peak resident memory (data, features and fit) is its own.

The default proxy reads the hull of its training rows as two inputs (``proxy.hull_input``, half the rows read once
more as if it were unknown: ``proxy.hull_dropout``, ``proxy.hull_dropout_mode: copy``); its fit time includes
finding every row's leave-one-out hull unless the cache holds it for those rows (column ``of it hull``). Further
rows, all training rows: no hull (the data's mean), the dropout rows read only without the hull
(``hull_dropout_mode: replace``, campaign v7's default), the hull as mean and input (``proxy.baseline: hull``,
campaign v6's default) and as mean only, and the band-gap target (no hull); then the default-space row: fitted on
the training rows outside the default space, evaluated on all entries inside it (where the Crystal-GFN searches),
and likewise for all entries of the Li-Mn-O and Fe-O chemical spaces (the example configs'), by each way of reading
the hull: there the hull of the training rows is only the elements', as in a cold start. The last two columns
compare the latent posterior std on held-out entries with that on 1,000 terminal states of an untrained Crystal-GFN
of the default space (random lattices, mostly far from any Materials Project entry): an exploring acquisition needs
the second to be larger. The rows that chose the ELBO's noise, the feature extractor, validation by chemical system,
no cell scale and the Student-t likelihood were measured before the hull became the default:
``benchmarks/results/proxy_fit-no-hull.md``.

Interval coverage is given twice from the same fit: with Gaussian intervals on the
proxy's mean and std (what the proxy reported before it fitted ``ResidualQuantiles``;
the fit itself is unchanged) and with the calibrated residual quantiles. A second table
repeats accuracy and coverage on the held-out entries inside two small chemical spaces
(all elements within {Li, Mn, O}, resp. {Fe, O}): a few of the random split, all of them
in the last row.

    python -m benchmarks.proxy_fit [--threads 1] [--quick]

Prints a table and writes ``benchmarks/results/proxy_fit.md`` and the calibration figure
``benchmarks/results/proxy_calibration.png`` (all rows, formation energy) and
``proxy_calibration_band_gap.png`` (all rows, band gap).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks import SHARED_DATA
from benchmarks._markdown import table

if TYPE_CHECKING:
    import torch

    from aloop.config import ProxySettings
    from aloop.proxy import Calibration
    from aloop.space.crystal import CrystalBatch

RESULTS = Path(__file__).resolve().parent / "results"
IN_SPACE, IN_SUBSPACES = "in_space", "in_subspaces"
NO_HULL = {"baseline": "none", "hull_input": False}
REPLACE = {"hull_dropout_mode": "replace"}
MEAN_AND_INPUT = {"baseline": "hull", **REPLACE}
MEAN_ONLY = {"baseline": "hull", "hull_input": False}
RUNS = (  # label, training rows (None: all; IN_SPACE / IN_SUBSPACES: outside those entries), settings overrides
    ("DKL-SVGP (default)", 5_000, {}),
    ("DKL-SVGP (default)", 20_000, {}),
    ("DKL-SVGP (default)", None, {}),
    ("DKL-SVGP, no hull (the data's mean)", None, NO_HULL),
    ("DKL-SVGP, dropout rows read only without the hull (v7)", None, REPLACE),
    ("DKL-SVGP, hull as mean and input (v6)", None, MEAN_AND_INPUT),
    ("DKL-SVGP, hull as mean only", None, MEAN_ONLY),
    ("DKL-SVGP, band gap", None, {"target": "band_gap"}),
    ("DKL-SVGP, held out: the default space", IN_SPACE, {}),
    ("DKL-SVGP, held out: all Li-Mn-O and Fe-O entries", IN_SUBSPACES, {}),
    ("DKL-SVGP, no hull, held out: all Li-Mn-O and Fe-O entries", IN_SUBSPACES, NO_HULL),
    ("DKL-SVGP, dropout rows read only without the hull (v7), held out: all Li-Mn-O and Fe-O entries", IN_SUBSPACES,
     REPLACE),
    ("DKL-SVGP, hull as mean and input (v6), held out: all Li-Mn-O and Fe-O entries", IN_SUBSPACES, MEAN_AND_INPUT),
    ("DKL-SVGP, hull as mean only, held out: all Li-Mn-O and Fe-O entries", IN_SUBSPACES, MEAN_ONLY),
)
"""Rows that chose earlier settings (the ELBO's noise, the feature extractor, random validation rows, the cell's
scale, the Gaussian likelihood) were measured before the hull became the default: ``results/proxy_fit-no-hull.md``."""
GFN_STATES = 1_000
SUBSPACES = {"Li-Mn-O": ("Li", "Mn", "O"), "Fe-O": ("Fe", "O")}
"""Held-out entries reported apart: those whose elements all lie in the set (the example spaces' chemistry)."""
FIGURES = {"formation_energy_per_atom": "proxy_calibration.png", "band_gap": "proxy_calibration_band_gap.png"}


def fit_once(size: int | str | None, overrides: dict, threads: int, figure: bool) -> dict:
    """Fit and evaluate one configuration in this process; the metrics as a dict."""
    import torch

    from aloop.config import ProxySettings, load_config
    from aloop.data import read_local, to_training_set
    from aloop.data.convert import first_broken_constraint
    from aloop.gfn import CrystalEnv, build_policy, sample
    from aloop.proxy import calibration, calibration_metrics, fit_proxy, plot_calibration
    from aloop.space import CrystalSpace

    torch.set_num_threads(threads)
    settings = ProxySettings(**{"target": "formation_energy_per_atom", **overrides, "threads": threads})
    data = to_training_set(read_local(SHARED_DATA / "mp_cgcnn36k"), target=settings.target).training
    train, heldout = data.split(fraction=0.1, seed=0)
    cfg = load_config()
    space = CrystalSpace.from_settings(cfg.space)
    if size in (IN_SPACE, IN_SUBSPACES):
        inside = (torch.as_tensor(first_broken_constraint(data.crystals, space) == "") if size == IN_SPACE
                  else torch.stack([within(data.crystals, e) for e in SUBSPACES.values()]).any(dim=0))
        heldout = data.subset(inside)
        train = train.subset(torch.tensor([i not in set(heldout.ids) for i in train.ids]))
    elif size is not None and size < len(train):  # a random subset: the files are ordered by material id
        train = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(1))[:size].sort().values)
    hull_s = timed_leave_one_out_hull()
    wall, cpu = time.perf_counter(), time.process_time()
    proxy = fit_proxy(train, settings, seed=0)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    load = os.getloadavg()[0]
    result = calibration(proxy, heldout)
    env = CrystalEnv.from_space(space, cfg.gfn, device=cfg.gfn.device)
    states = sample(env, build_policy(env, cfg.gfn), GFN_STATES, seed=0)
    latent_std = {name: float(proxy.predict(batch, observation_noise=False).std.median())
                  for name, batch in (("heldout", heldout.crystals), ("gfn", states))}
    if figure:
        plot_calibration(result, title=f"proxy on {len(heldout):,} held-out MP entries (fit on {len(train):,})").savefig(
            RESULTS / FIGURES[settings.target], dpi=110)
    subsets = {}
    for name, elements in SUBSPACES.items():
        rows = within(heldout.crystals, elements)
        subsets[name] = None if not rows.any() else coverages(calibration_metrics(
            torch.from_numpy(result.observed)[rows], torch.from_numpy(result.mean)[rows],
            torch.from_numpy(result.std)[rows], quantiles=result.quantiles))
    return {"target": settings.target, "n_train": len(train), "fit_s": wall, "cpu_s": cpu, "hull_s": hull_s[0],
            "hull": hull_description(settings), "load": load,
            "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            "variance_scale": float(proxy.model.variance_scale), "std_heldout": latent_std["heldout"],
            "std_gfn": latent_std["gfn"], "width_50": proxy.quantiles.width(0.5),
            "width_90": proxy.quantiles.width(0.9), **result.as_dict(), **coverages(result),
            "subsets": subsets}


def hull_description(settings: ProxySettings) -> str:
    """How a proxy reads the hull of its rows: ``mean`` (``proxy.baseline``), ``input`` (``proxy.hull_input``), both
    or none, with its dropout and, for ``copy``, its mode."""
    parts = (["mean"] if settings.baseline == "hull" else []) + (["input"] if settings.hull_input else [])
    copies = ", copies" if settings.hull_dropout_mode == "copy" else ""
    return f"{' + '.join(parts)} (dropout {settings.hull_dropout:g}{copies})" if parts else "none"


def timed_leave_one_out_hull() -> list[float]:
    """A one-item list that sums the seconds this process spends finding leave-one-out hulls (not read from the
    cache) from now on: part of the fit's time, reported apart."""
    from aloop.proxy import baseline

    seconds, compute = [0.0], baseline._leave_one_out_hull

    def timed(*args: object) -> object:
        start = time.perf_counter()
        try:
            return compute(*args)
        finally:
            seconds[0] += time.perf_counter() - start

    baseline._leave_one_out_hull = timed
    return seconds


def within(batch: CrystalBatch, elements: tuple[str, ...]) -> torch.Tensor:
    """``(N,)`` bool: the crystals made only of ``elements``."""
    import torch

    outside = torch.tensor([e not in elements for e in batch.elements])
    return ~(batch.counts[:, outside] > 0).any(dim=1)


def coverages(result: Calibration) -> dict:
    """MAE and 50%/90% coverage of a ``Calibration`` with its quantiles and with Gaussian intervals (``*_gaussian``)."""
    from aloop.proxy.proxy import GAUSSIAN

    gaussian = replace(result, quantiles=GAUSSIAN)
    return {"n": result.n, "mae": result.mae, "coverage_50": result.coverage_50, "coverage_90": result.coverage_90,
            "coverage_50_gaussian": gaussian.coverage(0.5), "coverage_90_gaussian": gaussian.coverage(0.9)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (proxy.threads; 1 is the default)")
    parser.add_argument("--quick", action="store_true", help="only the three default sizes")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: JSON of (size, overrides, figure)
    args = parser.parse_args()
    if args.one:
        size, overrides, figure = json.loads(args.one)
        print(json.dumps(fit_once(size, overrides, args.threads, figure)))
        return
    if not (SHARED_DATA / "mp_cgcnn36k").exists():
        sys.exit(f"shared data not found at {SHARED_DATA} (set ALOOP_SHARED_DATA)")
    rows = []
    for label, size, overrides in RUNS[:3] if args.quick else RUNS:
        figure = size is None and set(overrides) <= {"target"}
        spec = json.dumps([size, overrides, figure])
        out = subprocess.run([sys.executable, "-m", "benchmarks.proxy_fit", "--threads", str(args.threads),
                              "--one", spec], capture_output=True, text=True, check=True)
        row = {"model": label, **json.loads(out.stdout.strip().splitlines()[-1])}
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_table(rows, threads=args.threads)


def write_table(rows: list[dict], *, threads: int) -> None:
    """The markdown tables with their protocol, printed and written to ``results/proxy_fit.md``."""
    header = ("| model | target | hull | train rows | held out | fit wall (s) | of it hull (s) | fit CPU (s) | load "
              "| peak RSS (GB) | MAE | RMSE "
              "| NLL (Gaussian) | cover 50%: Gaussian -> calibrated | cover 90%: Gaussian -> calibrated "
              "| half-width 50% / 90% (std) | Spearman abs(err) vs std | variance scale "
              "| latent std held-out | latent std GFN states |\n|" + "---|" * 20)
    lines = [f"| {r['model']} | {r['target']} | {r['hull']} | {r['n_train']:,} | {r['n']:,} | {r['fit_s']:.0f} | "
             f"{r['hull_s']:.0f} | {r['cpu_s']:.0f} | "
             f"{r['load']:.1f} | {r['peak_gb']:.2f} | {r['mae']:.3f} | {r['rmse']:.3f} | {r['nll']:.2f} | "
             f"{r['coverage_50_gaussian']:.3f} -> {r['coverage_50']:.3f} | "
             f"{r['coverage_90_gaussian']:.3f} -> {r['coverage_90']:.3f} | {r['width_50']:.2f} / {r['width_90']:.2f} | "
             f"{r['spearman_err_std']:.2f} | {r['variance_scale']:.1f} | {r['std_heldout']:.3f} | {r['std_gfn']:.3f} |"
             for r in rows]
    subsets = [{"model": r["model"], "target": r["target"], "train rows": f"{r['n_train']:,}", "held out": name,
                "n": s["n"], "MAE": f"{s['mae']:.3f}",
                "cover 50%: Gaussian -> calibrated": f"{s['coverage_50_gaussian']:.3f} -> {s['coverage_50']:.3f}",
                "cover 90%: Gaussian -> calibrated": f"{s['coverage_90_gaussian']:.3f} -> {s['coverage_90']:.3f}"}
               for r in rows for name, s in r["subsets"].items() if s is not None]
    text = "\n".join([
        "# Proxy: fit time, memory and held-out calibration on the shared MP data",
        "",
        f"`python -m benchmarks.proxy_fit` on {platform.node()} ({os.cpu_count()} cores, shared with other "
        f"engineers; `load` is the 1-minute load average when each fit ended), torch threads {threads}. "
        "Data: mp_cgcnn36k, all 33,059 entries (ef_outliers out), 90/10 split (seed 0); 5k and 20k rows are "
        "random subsets of the 29,753 training rows; each fit in its own process (peak RSS: reading, "
        "featurizing and fitting). The default-space row fits on the training rows outside the default "
        "space and evaluates on all its entries, the Li-Mn-O/Fe-O row likewise on all entries of those two "
        "chemical spaces. MAE/RMSE in eV/atom (eV for band gap); each label is "
        "predicted at its own source, noise included. `of it hull`: seconds of the fit spent finding each "
        "training row's leave-one-out hull (`hull`: `mean`, `proxy.baseline: hull`; `input`, `proxy.hull_input` "
        "with `proxy.hull_dropout`; 0: read "
        "from the cache of an earlier fit on the same rows). Defaults: 256 inducing points, feature extractor "
        "223-256-128-16 (225 inputs with the hull's two), Matern 5/2, Student-t likelihood in the ELBO "
        "(`proxy.likelihood`), the hull of the training rows as input (half the rows read once more as if it "
        "were unknown: `copies`, `proxy.hull_dropout_mode: copy`), 20 epochs of batch 512; 10% of the fit rows, "
        "whole chemical systems "
        "(`proxy.validation_split`), recalibrate the posterior variance scale and the noise (Gaussian NLL), "
        "then the interval widths: the 1%..99% quantiles of their |standardised residual| "
        "(`ResidualQuantiles`). Coverage `Gaussian -> calibrated`: the same "
        "fit's mean and std with Gaussian half-widths (0.67 / 1.64 std: what the proxy reported before "
        "`ResidualQuantiles`) and with the fitted ones (column `half-width`). NLL is the Gaussian's on the "
        "mean and std. Latent std: median posterior std of the latent value (eV/atom, no noise) on the "
        "held-out entries and on 1,000 terminal states of an untrained Crystal-GFN of the default space.",
        "",
        header, *lines, "",
        "Why a quantile map rather than a Student-t predictive: on the same full-size fits, a t fitted by "
        "maximum likelihood on the validation residuals (scale and degrees of freedom) matched the map for "
        "formation energy (held-out coverage 0.499 / 0.896, 2.8 degrees of freedom) but not for band gap "
        "(0.541 / 0.811: its residuals are a spike of metals predicted near 0 plus a broad part, and the "
        "fitted t collapses to 2 degrees of freedom); measured once with a scratch script, not rerun here. "
        "The std is left as it was (Gaussian NLL on the validation rows), so UCB and every consumer of the "
        "mean and std are unchanged. The quantiles hold for rows like the validation rows: whole chemical "
        "systems the fit never saw, as the rows held out by chemistry are; drawn at random (the `random "
        "validation rows` rows of `proxy_fit-no-hull.md`, the default before) they were overconfident there.",
        "",
        "## Held-out entries inside small chemical spaces",
        "",
        "The rows above restricted to held-out entries whose elements all lie in {Li, Mn, O} resp. {Fe, O} "
        "(few entries: a binomial sd of about 0.5/sqrt(n) at 50%, 0.3/sqrt(n) at 90%).",
        "",
        table(subsets), "",
    ])
    (RESULTS / "proxy_fit.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
