"""The first campaign round's proxy against the campaign's CHGNet labels, by ``data.scope``.

The proxy a round of ``configs/campaign.yaml`` (Li-Mn-O) fits before it has labels of its
own: ``assemble_training_set`` on the local folder ``mp_cgcnn36k`` with each scope (``space``:
the 5 entries inside the space; ``neighbours``: the entries with Li, Mn or O; ``all``), then
``fit_proxy`` with the campaign's proxy settings (seeds 0, 1, 2; one torch thread). It
predicts, at its reference source (``mp_legacy``), every relaxed label of the committed
campaign records (``results/campaign_records/run-*/<arm>.jsonl.gz``: 4 arms x 3 seeds x 4
rounds x 16 candidates, CHGNet's formation energy of the relaxed structure against CHGNet's
elemental references). The proxy sees the proposed crystal, as a round does; the ``relaxed``
columns predict the relaxed structure instead, the crystal the energy belongs to. CHGNet
and Materials Project's legacy corrections are different scales: the mean signed error
(predicted - label) shows the offset, the MAE includes it.

A ``scope:N`` variant sets ``data.max_entries`` N (the Materials Project rows inside the space
first, then a random draw of the others): the data-side way to weigh the space's rows more.

    python -m benchmarks.proxy_campaign_labels [--variants space neighbours all all:5000] [--seeds 0 1 2]

Writes ``benchmarks/results/proxy_campaign_labels.md``. About 4 minutes on 2 shared cores
(a fit on all 33,059 rows about 35 s).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Structure
from scipy.stats import spearmanr

from aloop.config import Config, load_config
from aloop.data import TrainingSet
from aloop.data.assembly import Assembly, assemble_training_set
from aloop.proxy import Proxy, calibration, fit_proxy
from aloop.space import Crystal, CrystalSpace
from aloop.store import get_or_create_campaign, open_store
from benchmarks import SHARED_DATA
from benchmarks._campaign_arms import ARMS
from benchmarks._markdown import table, write_report

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "campaign.yaml"
RECORDS = Path(__file__).resolve().parent / "results" / "campaign_records"
VARIANTS = ("space", "neighbours", "all", "all:5000")
"""``scope`` or ``scope:max_entries``."""
SEEDS = (0, 1, 2)
TARGET = "formation_energy_per_atom"
METRICS = ("MAE", "mean signed error", "Spearman", "coverage90", "MAE relaxed", "Spearman relaxed")


def campaign_labels(records: Path) -> dict[str, tuple[TrainingSet, TrainingSet]]:
    """Each arm's relaxed labels (all seeds and rounds) on the proposed and on the relaxed crystals."""
    labels = {}
    for arm in ARMS:
        with gzip.open(records / f"{arm}.jsonl.gz", "rt") as lines:
            rows = [label for line in lines for label in json.loads(line)["labels"] if label.get("ok")]
        relaxed = [Crystal.from_structure(Structure.from_str(x["relaxed_cif"], fmt="cif")) for x in rows]
        labels[arm] = tuple(TrainingSet.from_crystals(crystals, [x[TARGET] for x in rows], sources=["label"] * len(rows),
                                                      ids=[x["id"] for x in rows], target=TARGET)
                            for crystals in ([Crystal.from_dict(x["crystal"]) for x in rows], relaxed))
    return labels


def first_round_data(cfg: Config, scope: str, max_entries: int | None) -> Assembly:
    """The training set a first round of ``cfg`` assembles from the local folder (no labels yet)."""
    with tempfile.TemporaryDirectory() as folder:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={
            "scope": scope, "max_entries": max_entries, "local_path": str(SHARED_DATA / "mp_cgcnn36k"),
            "mp": cfg.data.mp.model_copy(update={"cache_dir": folder})})})
        store = open_store(f"sqlite:///{folder}/aloop.db")
        try:
            with store.session() as session:
                campaign_id = get_or_create_campaign(session, cfg.campaign).id
            return assemble_training_set(store, campaign_id, space=CrystalSpace.from_settings(cfg.space),
                                         settings=cfg.data, target=TARGET, seed=cfg.seed)
        finally:
            store.close()


def scores(proxy: Proxy, proposed: TrainingSet, relaxed: TrainingSet) -> dict[str, float]:
    """``METRICS`` of the proxy on one arm's labels, predicted at its reference source."""
    report = calibration(proxy, replace(proposed, sources=(proxy.reference_source,)))
    on_relaxed = calibration(proxy, replace(relaxed, sources=(proxy.reference_source,)))
    return {"MAE": report.mae, "mean signed error": float(np.mean(report.mean - report.observed)),
            "Spearman": float(spearmanr(report.mean, report.observed).statistic), "coverage90": report.coverage_90,
            "MAE relaxed": on_relaxed.mae,
            "Spearman relaxed": float(spearmanr(on_relaxed.mean, on_relaxed.observed).statistic)}


def run(cfg: Config, variant: str, labels: dict[str, tuple[TrainingSet, TrainingSet]], seeds: list[int]
        ) -> tuple[dict[str, list[dict]], dict]:
    """Each arm's scores by seed, and a summary (training rows inside and outside the space, fit seconds)."""
    scope, _, cap = variant.partition(":")
    assembly = first_round_data(cfg, scope, int(cap) if cap else None)
    assert assembly.training is not None
    print(f"{variant}: {assembly.describe()}", flush=True)
    by_arm: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    seconds = []
    for seed in seeds:
        start = time.perf_counter()
        proxy = fit_proxy(assembly.training, cfg.proxy.model_copy(update={"target": TARGET}), seed=seed)
        seconds.append(time.perf_counter() - start)
        for arm in ARMS:
            by_arm[arm].append(scores(proxy, *labels[arm]))
        print(f"  seed {seed}: fit {seconds[-1]:.0f} s; " + "; ".join(
            f"{arm} MAE {by_arm[arm][-1]['MAE']:.3f} Spearman {by_arm[arm][-1]['Spearman']:.2f}" for arm in ARMS),
            flush=True)
    outside = sum(assembly.outside.values())
    summary = {"variant": variant, "training rows": len(assembly.training),
               "inside the space": len(assembly.training) - outside, "outside": outside,
               "feature extractor": str(proxy.hidden_dims or "none"), "fit s (mean)": float(np.mean(seconds))}
    return by_arm, summary


def _spread(values: list[float], spec: str) -> str:
    return f"{np.mean(values):{spec}} ± {np.std(values):.2f}" if len(values) > 1 else f"{values[0]:{spec}}"


def versus_space(results: dict[str, tuple[dict[str, list[dict]], dict]]) -> str:
    """For each wide variant: on how many arms its seed-mean MAE is lower and Spearman higher than ``space``'s."""
    if "space" not in results:
        return ""

    def mean(variant: str, arm: str, metric: str) -> float:
        return float(np.mean([s[metric] for s in results[variant][0][arm]]))

    lines = []
    for variant in (v for v in results if v != "space"):
        counts = {m: sum((mean(variant, a, m) < mean("space", a, m)) == m.startswith("MAE") for a in ARMS)
                  for m in ("MAE", "Spearman", "MAE relaxed", "Spearman relaxed")}
        lines.append(f"- `{variant}` beats `space` on proposed crystals in MAE on {counts['MAE']} of {len(ARMS)} "
                     f"arms, in Spearman on {counts['Spearman']}; on relaxed structures in MAE on "
                     f"{counts['MAE relaxed']}, in Spearman on {counts['Spearman relaxed']}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help="scope or scope:max_entries")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--records", type=Path, help="a campaign_records/run-* folder (default: the only one)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    runs = sorted(RECORDS.glob("run-*"))
    records = args.records or (runs[0] if len(runs) == 1 else None)
    if records is None:
        sys.exit(f"pass --records: {len(runs)} record folders under {RECORDS}")
    if not (SHARED_DATA / "mp_cgcnn36k").exists():
        sys.exit(f"shared data not found at {SHARED_DATA} (set ALOOP_SHARED_DATA)")
    cfg = load_config(CONFIG)
    start = time.perf_counter()
    labels = campaign_labels(records)
    results = {variant: run(cfg, variant, labels, args.seeds) for variant in args.variants}
    specs = {"MAE": ".3f", "mean signed error": "+.3f", "Spearman": ".2f", "coverage90": ".2f", "MAE relaxed": ".3f",
             "Spearman relaxed": ".2f"}
    rows = [{"arm": arm, "variant": variant, "n": len(labels[arm][0]),
             **{m: _spread([s[m] for s in results[variant][0][arm]], specs[m]) for m in METRICS},
             "fit s": f"{results[variant][1]['fit s (mean)']:.0f}"}
            for arm in ARMS for variant in args.variants]
    write_report(
        "proxy_campaign_labels",
        "# The first campaign round's proxy on the campaign's CHGNet labels, by `data.scope`",
        f"Records: `{records.relative_to(RECORDS.parents[2])}` (relaxed labels: "
        f"{', '.join(f'{a} {len(labels[a][0])}' for a in ARMS)}). Proxy: configs/campaign.yaml's settings, one torch "
        f"thread, fitted on mp_cgcnn36k assembled with each scope (`scope:N`: `data.max_entries` N, the rows inside "
        f"the space first), predicted at its reference source (mp_legacy) on each proposed crystal (the `relaxed` "
        f"columns: on the relaxed structure). Mean ± std over proxy seeds {args.seeds}. Errors in eV/atom; mean "
        f"signed error = predicted - CHGNet label; coverage90: share of labels inside the proxy's 90% interval; "
        f"Spearman: rank correlation of predicted and CHGNet formation energies. "
        f"Whole run {(time.perf_counter() - start) / 60:.1f} min.",
        table([summary for _, summary in results.values()],
              {"training rows": ",", "inside the space": ",", "outside": ",", "fit s (mean)": ".0f"}),
        table(rows),
        versus_space(results),
    )


if __name__ == "__main__":
    main()
