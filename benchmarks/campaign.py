"""Campaign simulation: aloop against random, mean-only and ion-substitution arms, CHGNet oracle, offline.

Every arm starts from ``mp_cgcnn36k`` inside the searched space (``configs/campaign.yaml``:
Li-Mn-O, at most 12 atoms of an element and 16 in the conventional cell), gets the same
oracle budget (rounds x batch CHGNet relaxations with the oracle's settings) and the same
novelty filter. Hits are judged against a reference hull of CHGNet energies only
(``_campaign_hull``, cached under the cache folder).

A round in progress is kept candidate by candidate under the cache folder,
``<cache>/campaign/runs/run-<config key>/<arm>/seed-<s>/round-<n>/`` (``proposal.json``,
``label-<i>.json``, and ``gfn.pt`` for the guided arms), so a killed run continues where it
stopped. A finished round becomes one line (seed, round, labels, proposal seconds) of its
arm's records, ``benchmarks/results/campaign_records/run-<config key>/<arm>.jsonl.gz``,
committed with the report: a recorded round is never recomputed, so a run longer than one
machine's session continues on the next, and with every round recorded the command only
rebuilds the report. A guided arm's next round warm-starts from the previous round's
checkpoint, which stays in the cache of the machine that ran it. Delete an arm's records to
recompute it.

    python -m benchmarks.campaign                       # 4 rounds of 16 per arm, seeds 0 1 2
    python -m benchmarks.campaign --batch 32 --name campaign-4x32    # the issue's example budget
    python -m benchmarks.campaign --rounds 3 --batch 8 --gfn-steps 200 --n-samples 2000

Writes ``benchmarks/results/campaign.md``, ``campaign.json`` and ``campaign_hits.png``
(``--name`` chooses another stem, so runs of another budget sit beside them).
"""

from __future__ import annotations

import argparse
import fcntl
import gzip
import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from pymatgen.core import Structure

from aloop.config import Config, load_config
from aloop.data import read_local, to_training_set
from aloop.files import write_atomic
from aloop.gfn import CrystalEnv
from aloop.oracle import Labelled, OracleInput
from aloop.proxy import calibration_metrics
from aloop.selection import MATCHER_SETTINGS
from aloop.space import Crystal, CrystalSpace
from benchmarks import CACHE_ROOT, SHARED_DATA
from benchmarks._campaign_arms import ARMS, ArmBatch, Setup, propose_guided, propose_random, propose_substitution
from benchmarks._campaign_hull import ReferenceHull, build_hull, known_structures, relax
from benchmarks._campaign_report import write_report
from benchmarks._campaign_substitution import substitution_pool
from oracles.chgnet import CHGNetSettings

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "campaign.yaml"
CACHE = CACHE_ROOT / "campaign"
RUNS = CACHE / "runs"
RECORDS = Path(__file__).resolve().parent / "results" / "campaign_records"


def run_key(cfg: Config) -> str:
    """Cache key of a campaign: every setting but the campaign's name and seed (seeds are folders)."""
    settings = cfg.model_dump(mode="json", exclude={"campaign", "seed", "workdir", "store", "tracking"})
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def make_setup(cfg: Config, *, arms: list[str], oracle: CHGNetSettings) -> tuple[Setup, ReferenceHull]:
    """The space, the starting data, the reference hull and (for the substitution arm) its pool."""
    space = CrystalSpace.from_settings(cfg.space)
    data_dir = SHARED_DATA / "mp_cgcnn36k"
    start = to_training_set(read_local(data_dir), target=cfg.proxy.target, space=space)
    print(f"starting data: {start.describe()}", flush=True)
    hull = build_hull(known_structures(data_dir, space.elements), space.elements, oracle, cache_dir=CACHE)
    pool = substitution_pool(space, data_dir, cache_dir=CACHE) if "substitution" in arms else []
    setup = Setup(cfg=cfg, space=space, env=CrystalEnv.from_space(space, cfg.gfn, device=cfg.gfn.device),
                  start=start.training, known=tuple(hull.known_structures), pool=tuple(pool),
                  label_source=f"chgnet-{oracle.model}")
    return setup, hull


def run_round(setup: Setup, hull: ReferenceHull, oracle: CHGNetSettings, *, arm: str, seed: int, number: int,
              records: Path, folder: Path, history: list[dict]) -> list[dict]:
    """One round's labels: from the arm's ``records`` when finished, else proposed (or reloaded from ``folder``),
    labelled candidate by candidate in ``folder`` and then recorded."""
    finished = read_records(records).get((seed, number))
    if finished:
        return finished["labels"]
    folder.mkdir(parents=True, exist_ok=True)
    batch, propose_s = _proposal(setup, arm=arm, seed=seed, number=number, folder=folder, records=records,
                                 history=history)
    labels = [_label(setup, hull, oracle, batch, i, folder=folder, ident=f"{arm}-{seed}-{number}-{i}",
                     number=number) for i in range(len(batch.crystals))]
    record_round(records, {"seed": seed, "round": number, "labels": labels, "propose_s": propose_s})
    for path in (folder / "proposal.json", *folder.glob("label-*.json")):
        path.unlink()
    return labels


def read_records(path: Path) -> dict[tuple[int, int], dict]:
    """An arm's finished rounds by (seed, round): ``{"seed", "round", "labels", "propose_s"}``, none if no file."""
    if not path.exists():
        return {}
    with gzip.open(path, "rt") as lines:
        rounds = [json.loads(line) for line in lines]
    return {(r["seed"], r["round"]): r for r in rounds}


def record_round(path: Path, finished: dict) -> None:
    """Add a finished round to an arm's records: the gzipped JSON lines in (seed, round) order, rewritten
    atomically under a lock on their folder (parallel partial runs share it); ``mtime=0`` keeps equal records
    byte-identical for git."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent):
        rounds = read_records(path) | {(finished["seed"], finished["round"]): finished}
        text = "".join(json.dumps(rounds[key], separators=(",", ":")) + "\n" for key in sorted(rounds))
        write_atomic(path, gzip.compress(text.encode(), mtime=0))


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _proposal(setup: Setup, *, arm: str, seed: int, number: int, folder: Path, records: Path, history: list[dict]
              ) -> tuple[ArmBatch, float]:
    path = folder / "proposal.json"
    if path.exists():
        saved = json.loads(path.read_text())
        return ArmBatch([Crystal.from_dict(c) for c in saved["crystals"]],
                        [Structure.from_str(c, fmt="cif") for c in saved["cifs"]],
                        saved["proxy_mean"], saved["proxy_std"]), saved["seconds"]
    size, round_seed = setup.cfg.selection.batch_size, seed * 1009 + number
    proposed = [Structure.from_str(label["cif"], fmt="cif") for label in history]
    start = time.perf_counter()
    if arm in ("aloop", "mean"):
        previous = _warm_start(folder, records=records, arm=arm, seed=seed, number=number)
        batch = propose_guided(setup, history, proposed, arm=arm, seed=round_seed, size=size, workdir=folder,
                               previous=previous)
    elif arm == "random":
        batch = propose_random(setup, history, proposed, seed=round_seed, size=size)
    else:
        batch = propose_substitution(setup, proposed, seed=seed, size=size)
    seconds = time.perf_counter() - start
    write_atomic(path, json.dumps({"crystals": [c.as_dict() for c in batch.crystals],
                                   "cifs": [s.to(fmt="cif") for s in batch.structures],
                                   "proxy_mean": batch.proxy_mean, "proxy_std": batch.proxy_std,
                                   "seconds": seconds}))
    return batch, seconds


def _warm_start(folder: Path, *, records: Path, arm: str, seed: int, number: int) -> Path | None:
    """The previous round's Crystal-GFN checkpoint a guided round warm-starts from (``None`` in round 1)."""
    if number == 1:
        return None
    previous = folder.parent / f"round-{number - 1}" / "gfn.pt"
    if not previous.exists():
        sys.exit(f"{previous} is missing: {arm} seed {seed} round {number} warm-starts the Crystal-GFN from round "
                 f"{number - 1}'s checkpoint, which is kept only in the cache of the machine that ran that round. "
                 f"Run the arm on that machine, or copy its {folder.parent} to this one, or delete {records} "
                 f"(all of the arm's seeds) to rerun the arm from round 1.")
    return previous


def _label(setup: Setup, hull: ReferenceHull, oracle: CHGNetSettings, batch: ArmBatch, i: int, *, folder: Path,
           ident: str, number: int) -> dict:
    """One oracle call (cached): CHGNet relaxation, formation energy and energy above the reference hull."""
    path = folder / f"label-{i}.json"
    if path.exists():
        return json.loads(path.read_text())
    crystal, structure = batch.crystals[i], batch.structures[i]
    start = time.perf_counter()
    result = relax(OracleInput(ident, crystal, structure), oracle)
    label = {"id": ident, "round": number, "crystal": crystal.as_dict(), "cif": structure.to(fmt="cif"),
             "formula": structure.composition.reduced_formula, "ok": isinstance(result, Labelled),
             "seconds": time.perf_counter() - start, "steps": result.metadata.get("steps"),
             "proxy_mean": batch.proxy_mean[i] if batch.proxy_mean else None,
             "proxy_std": batch.proxy_std[i] if batch.proxy_std else None}
    if isinstance(result, Labelled):
        composition = result.structure.composition
        label |= {"energy_per_atom": result.energy_per_atom, "relaxed_cif": result.structure.to(fmt="cif"),
                  "formula": composition.reduced_formula,
                  "formation_energy_per_atom": hull.formation_energy(composition, result.energy_per_atom),
                  "e_above_hull": hull.e_above_hull(composition, result.energy_per_atom)}
    else:
        label |= {"reason": result.reason, "kind": result.kind}
    write_atomic(path, json.dumps(label))
    return label


def round_calibration(labels: list[dict]) -> dict[str, float]:
    """The proxy's calibration on one round's new labels, predicted before they were added."""
    rows = [label for label in labels if label.get("ok") and label.get("proxy_mean") is not None]
    if not rows:
        return {}
    report = calibration_metrics(torch.tensor([r["formation_energy_per_atom"] for r in rows]),
                                 torch.tensor([r["proxy_mean"] for r in rows]),
                                 torch.tensor([r["proxy_std"] for r in rows]))
    return {"n": report.n, "mae": report.mae, "nll": report.nll, "coverage_50": report.coverage_50,
            "coverage_90": report.coverage_90}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16,
                        help="oracle calls per round and arm (16: all arms and 3 seeds in about 2.5 hours of 2 cores)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--gfn-steps", type=int, help="gfn.train_steps (default: the config's)")
    parser.add_argument("--n-samples", type=int, help="selection.n_samples (default: the config's)")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. oracle.settings.timeout_s=120")
    parser.add_argument("--no-report", action="store_true", help="only run the rounds (parallel partial runs); no report")
    parser.add_argument("--note", default="", help="a line printed under the command in the report")
    parser.add_argument("--runs", type=Path, default=RUNS,
                        help="folder of the rounds in progress (default: %(default)s); finished rounds go to "
                             "benchmarks/results/campaign_records/run-<config key>/<arm>.jsonl.gz")
    parser.add_argument("--name", default="campaign", help="report files: <name>.md, <name>.json, <name>_hits.png")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    warnings.filterwarnings("ignore")
    args = parse_args(argv)
    torch.set_num_threads(1)
    overrides = [f"selection.batch_size={args.batch}", *args.overrides]
    overrides += [f"gfn.train_steps={args.gfn_steps}"] if args.gfn_steps else []
    overrides += [f"selection.n_samples={args.n_samples}"] if args.n_samples else []
    cfg = load_config(args.config, overrides=overrides)
    oracle = CHGNetSettings(**cfg.oracle.settings)
    if not (SHARED_DATA / "mp_cgcnn36k").exists():
        sys.exit(f"shared data not found at {SHARED_DATA} (set ALOOP_SHARED_DATA)")
    setup, hull = make_setup(cfg, arms=args.arms, oracle=oracle)
    key = run_key(cfg)
    run_dir, records = args.runs / f"run-{key}", RECORDS / f"run-{key}"
    print(f"rounds in progress: {run_dir}; finished rounds: {records}", flush=True)
    runs: dict[tuple[str, int], list[list[dict]]] = {}
    for seed in args.seeds:
        for arm in args.arms:
            history: list[dict] = []
            runs[arm, seed] = []
            for number in range(1, args.rounds + 1):
                start = time.perf_counter()
                labels = run_round(setup, hull, oracle, arm=arm, seed=seed, number=number,
                                   records=records / f"{arm}.jsonl.gz",
                                   folder=run_dir / arm / f"seed-{seed}" / f"round-{number}", history=history)
                history += labels
                runs[arm, seed].append(labels)
                ok = [x for x in labels if x.get("ok")]
                print(f"{arm} seed {seed} round {number}: {len(labels)} calls, {len(ok)} relaxed, "
                      f"{sum(x['e_above_hull'] <= 0.1 for x in ok)} within 0.1 eV/atom of the hull "
                      f"({time.perf_counter() - start:.0f} s, load {os.getloadavg()[0]:.1f})", flush=True)
    if not args.no_report:
        command = "python -m benchmarks.campaign " + " ".join(a for a in (argv if argv is not None else sys.argv[1:])
                                                               if a != "--note" and a != args.note)
        write_report(runs, hull=hull, setup=setup, oracle=oracle, command=command.strip(), note=args.note,
                     matcher=MATCHER_SETTINGS, calibration=round_calibration, name=args.name)


if __name__ == "__main__":
    main()
