"""At which source should the stability reward predict? The guided arm's proxy on campaign v2's next-round labels.

The reward of ``proxy.target: stability`` is the acquisition on the predicted formation energy minus the
hull of the known phases and the labels, both on the oracle's (CHGNet's) scale; the proxy predicts at its
``reference_source``, the most frequent source of its rows (Materials Project, ``mp_legacy``), not at
the oracle's. This fits the proxy a guided campaign round fits (``benchmarks.campaign``'s starting data,
the known phases as CHGNet rows, every recorded arm's labels of campaign seed s up to round k; proxy seed
s) and predicts the relaxed labels of round k + 1 of every recorded arm of seed s at both sources:
formation-energy MAE and mean signed error against CHGNet, Spearman correlation of the predicted and CHGNet
formation energy and of the predicted and CHGNet energy above that hull (what the reward ranks), and the
mean predictive std (what UCB adds).

    python -m benchmarks.proxy_reward_source [--systems li-mn-o fe-o] [--after 0 2]

Writes ``benchmarks/results/proxy_reward_source.md``; about 2 minutes per fit on 2 shared cores.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from scipy.stats import spearmanr

from aloop.proxy import fit_proxy
from aloop.space import Crystal, CrystalBatch
from benchmarks._campaign_arms import ARMS, reward_hull, training_set
from benchmarks._markdown import table, write_report
from benchmarks.campaign import SYSTEMS, V2, make_setup, make_system, read_records


def seed_labels(records: dict[str, dict[tuple[int, int], dict]], seed: int, rounds: range) -> list[dict]:
    """Every recorded arm's labels of campaign seed ``seed`` in ``rounds``."""
    return [label for recorded in records.values() for (s, n), r in recorded.items() if s == seed and n in rounds
            for label in r["labels"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--after", nargs="+", type=int, default=[0, 2],
                        help="rounds of labels the proxy has (k); it predicts round k + 1")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    rows, start = [], time.perf_counter()
    for name in args.systems:
        system = make_system(name, SYSTEMS[name], V2, progress=False)  # v2's records and proxy settings
        setup = make_setup(system, arms=["aloop"])
        records = {arm: read_records(system.records / f"{arm}.jsonl.gz") for arm in ARMS}
        for seed in sorted({s for recorded in records.values() for s, _ in recorded}):
            for k in args.after:
                target = [label for label in seed_labels(records, seed, range(k + 1, k + 2)) if label.get("ok")]
                if not target:
                    continue
                known = seed_labels(records, seed, range(1, k + 1))
                proxy = fit_proxy(training_set(setup, known), setup.cfg.proxy, seed=seed)
                batch = CrystalBatch.from_crystals([Crystal.from_dict(x["crystal"]) for x in target], setup.space.elements)
                hull = reward_hull(setup, known).at(batch.elements, batch.counts).numpy()
                observed = np.array([x["formation_energy_per_atom"] for x in target])
                for source in (proxy.reference_source, setup.label_source):
                    prediction = proxy.predict(batch, source=proxy.source_index([source]).expand(len(batch)))
                    mean = prediction.mean.numpy()
                    rows.append({
                        "system": name, "seed": seed, "labels known": len(known), "round predicted": k + 1,
                        "n": len(target), "source": source, "MAE": float(np.abs(mean - observed).mean()),
                        "mean signed error": float(np.mean(mean - observed)),
                        "Spearman E_f": float(spearmanr(mean, observed).statistic),
                        "Spearman E_hull": float(spearmanr(mean - hull, observed - hull).statistic),
                        "mean std": float(prediction.std.mean())})
                print(*(f"{k_}={v:.3f}" if isinstance(v, float) else f"{k_}={v}" for k_, v in rows[-1].items()),
                      flush=True)
    write_report(
        "proxy_reward_source",
        "# The stability reward's source: the guided proxy on campaign v2's next-round labels",
        ("Records: `benchmarks/results/campaign_records/run-*/` (every arm recorded for the seed). Proxy: the "
         "campaign configs' settings, fitted on the starting data, the known phases as CHGNet rows and the "
         "labels of rounds 1..k of every recorded arm of the seed (proxy seed = campaign seed, one torch "
         "thread); predicted on the relaxed labels of round k + 1 at each source. Errors in eV/atom against "
         f"CHGNet; E_hull against the reward's hull at round k. Whole run {(time.perf_counter() - start) / 60:.1f} "
         "min."),
        table(rows, {"MAE": ".3f", "mean signed error": "+.3f", "Spearman E_f": ".2f", "Spearman E_hull": ".2f",
                     "mean std": ".2f"}))


if __name__ == "__main__":
    main()
