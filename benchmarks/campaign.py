"""Campaign simulation v2: aloop against four baselines on Li-Mn-O and Fe-O, hits confirmed by SevenNet.

The arms (``_campaign_arms``): aloop, mean-only, random valid crystals placed at random, the same
placed from templates, and ion substitution; CHGNet oracle; offline.
Every arm of a system starts from the ``mp_cgcnn36k`` entries inside its space
(``configs/campaign.yaml``: Li-Mn-O, ``configs/campaign-fe-o.yaml``: Fe-O, at most 12 atoms of
an element and 16 in the conventional cell; all other settings the product's defaults), gets the
same oracle budget (rounds x batch relaxations by the config's oracle, CHGNet, built by name as
the round builds it) and the same novelty filter. Hits are judged against a reference hull of
CHGNet energies of the known entries only (``_campaign_hull``); every novel CHGNet hit is relaxed
again by SevenNet-0 and judged against SevenNet's hull of the same entries (``_campaign_confirm``).

A round in progress is kept under the cache folder,
``<cache>/campaign/runs/run-<config key>/<arm>/seed-<s>/round-<n>/`` (``proposal.json``,
``label-<i>.json``, ``confirm-<i>.json``, and ``gfn.pt`` for the guided arms), so a killed run
continues where it stopped. A finished round becomes one line (seed, round, labels with their
SevenNet results, seconds, how the batch was made) of its arm's records,
``benchmarks/results/campaign_records/run-<config key>/<arm>.jsonl.gz``, committed with the report
beside both models' hulls (``hull-<model>.json.gz``) and the system's facts (``system.json``): a
recorded round is never recomputed, so a run longer than one machine's session continues on the
next, and with every round recorded the command only rebuilds the report (no relaxation, no
fit). A guided arm's next round warm-starts from the previous round's checkpoint: the one in the
cache, or on another machine the arm's last recorded one (``checkpoints/<arm>-seed-<s>.pt`` beside
the records, removed once the arm's seed has all its rounds). Delete an arm's records to recompute it. The config key
hashes the protocol version and every setting but names, seeds and paths, so v1's records
(``run-9b9b8c80ce86``, report ``campaign.md``) are never mixed with v2's. Each setting added since v2
(``LATER_SETTINGS``) is left out of the key at the value v2 ran with, so older records keep their key when
those values are named: v2's (before the Student-t fit, ``placement.spread`` and ``proxy.correction``)
with ``--set proxy.likelihood=gaussian placement.spread=false proxy.correction=false`` (``V2``); v3's (the
Student-t fit and spreading, no correction: ``run-fdec6f63f071`` Li-Mn-O, ``run-c6724fde8897`` Fe-O) with
``--set proxy.correction=false``; the Li-Mn-O aloop rounds with the Student-t fit but before spreading
(``run-6a906e9adc59``) with ``--set placement.spread=false proxy.correction=false``. The batch fill
(``selection.fill_temperatures``) came after them all: every record made before it is found with
``selection.fill_temperatures=[]`` added to its ``--set``, e.g. v4's (the campaign's correction,
``run-4f0735e4cb0e`` on Li-Mn-O). The proxy's hull (``proxy.baseline: hull``, ``proxy.hull_input``,
``proxy.hull_dropout``) came after v5 (``run-914e29a4fe06``), found with ``--set proxy.baseline=none
proxy.hull_input=false proxy.hull_dropout=0``. v6 (``run-25cf45f52724``) read the hull as the proxy's mean and
input, found with ``--set proxy.baseline=hull``; v7 (``run-7362e6a95dfa``) read it as input only. Each record
before v8 read the hull-dropout rows only without the hull: found with ``proxy.hull_dropout_mode=replace`` added to
its ``--set``. Today's defaults read them twice, with the hull and without: v8 (``run-726d45c0b56c``).

    python -m benchmarks.campaign --systems li-mn-o --arms aloop   # today's defaults (v8): the aloop arm
    python -m benchmarks.campaign --systems li-mn-o --arms aloop --set proxy.hull_dropout_mode=replace \
        --name campaign-v7
    python -m benchmarks.campaign --systems li-mn-o --arms aloop --set proxy.baseline=hull \
        proxy.hull_dropout_mode=replace --name campaign-v6
    python -m benchmarks.campaign --systems li-mn-o --arms aloop --set proxy.hull_input=false proxy.hull_dropout=0 \
        proxy.hull_dropout_mode=replace --name campaign-v5
    python -m benchmarks.campaign --systems li-mn-o --set selection.fill_temperatures=[] proxy.hull_input=false \
        proxy.hull_dropout=0 proxy.hull_dropout_mode=replace --name campaign-v4
    python -m benchmarks.campaign --set proxy.correction=false selection.fill_temperatures=[] proxy.hull_input=false \
        proxy.hull_dropout=0 proxy.hull_dropout_mode=replace --name campaign-v3
    python -m benchmarks.campaign --set proxy.likelihood=gaussian placement.spread=false proxy.correction=false \
        selection.fill_temperatures=[] proxy.hull_input=false proxy.hull_dropout=0 proxy.hull_dropout_mode=replace \
        --name campaign-v2           # v2's report
    python -m benchmarks.campaign --systems fe-o --arms aloop random --seeds 0 --no-report   # a partial run
    python -m benchmarks.campaign --rounds 1 --batch 2 --seeds 0 --gfn-steps 20 --n-samples 200 --name campaign-smoke

Writes ``benchmarks/results/campaign-v8.md``, ``campaign-v8.json`` and ``campaign-v8_<system>_hits.png`` (today's
code; ``--name`` chooses another stem, so older reports and runs of another budget sit beside them).
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
from dataclasses import dataclass
from pathlib import Path

import torch
from pymatgen.core import Structure

from aloop.config import Config, label_property, load_config
from aloop.data import TrainingSet, read_local
from aloop.data.convert import to_training_set
from aloop.data.known_structures import known_templates
from aloop.files import write_atomic
from aloop.gfn import CrystalEnv
from aloop.hull import known_phases
from aloop.oracle import Labelled, OracleInput
from aloop.selection import MATCHER_SETTINGS
from aloop.space import Crystal, CrystalSpace
from aloop.space.structure import TEMPLATE_PROPERTY
from aloop.space.templates import template_of
from aloop.substitution import substitution_pool
from benchmarks import CACHE_ROOT, SHARED_DATA
from benchmarks._campaign_arms import (
    ARMS,
    GUIDED,
    ArmBatch,
    Setup,
    propose_guided,
    propose_random,
    propose_ranked_substitution,
    propose_substitution,
)
from benchmarks._campaign_confirm import CONFIRM_BY, confirm, confirmer, to_confirm
from benchmarks._campaign_hull import (
    EnergyModel,
    ReferenceHull,
    known_structures,
    load_hull,
    relax_all,
)
from benchmarks._campaign_report import write_report
from benchmarks._campaign_substitution import THRESHOLD

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SYSTEMS = {"li-mn-o": CONFIGS / "campaign.yaml", "fe-o": CONFIGS / "campaign-fe-o.yaml"}
PROTOCOL = "campaign-v2"
"""Part of the config key: records of another protocol (v1's) are never mixed in."""
CACHE = CACHE_ROOT / "campaign"
RUNS = CACHE / "runs"
RECORDS = Path(__file__).resolve().parent / "results" / "campaign_records"
DATA = SHARED_DATA / "mp_cgcnn36k"


LATER_SETTINGS = {"proxy.likelihood": "gaussian", "placement.spread": False, "proxy.correction": False,
                  "selection.substitution": False, "selection.substitution_threshold": THRESHOLD,
                  "selection.substitution_share": 1.0, "proxy.baseline": "none", "selection.fill_temperatures": [],
                  "proxy.hull_input": False, "proxy.hull_dropout": 0.0,
                  "proxy.hull_dropout_mode": "replace"}
"""Settings added after campaign v2's records were made, at the value v2 ran with: left out of the records key
while they hold it, so a config that behaves as v2's did keeps v2's key (``V2``), and today's defaults get their
own records."""
V2 = [f"{key}={value}" for key, value in LATER_SETTINGS.items()]
"""Overrides that find campaign v2's committed records (the ``--set`` of v2's report command above)."""


def run_key(cfg: Config) -> str:
    """Records key of a campaign: the protocol and every setting but names, seeds (folders), local paths and
    ``LATER_SETTINGS`` at their old value."""
    settings = cfg.model_dump(mode="json", exclude={"campaign", "seed", "workdir", "store", "tracking", "review"})
    settings["data"] = {k: v for k, v in settings["data"].items() if k not in ("local_path", "mp")}
    for key, old in LATER_SETTINGS.items():
        section, field = key.split(".")
        if settings[section].get(field) == old:
            del settings[section][field]
    text = json.dumps({"protocol": PROTOCOL, "config": settings}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass
class System:
    """One searched system: its config, records, both models' hulls, and (built when a round must run) its setup."""

    name: str
    cfg: Config
    records: Path
    oracle: EnergyModel
    second: EnergyModel
    hull: ReferenceHull
    second_hull: ReferenceHull
    known: dict[str, Structure]
    setup: Setup | None = None

    @property
    def facts(self) -> dict:
        """What the report says of the space and data (``system.json``, written with the setup)."""
        path = self.records / "system.json"
        return json.loads(path.read_text()) if path.exists() else {}


def make_system(name: str, config: Path, overrides: list[str], *, progress: bool = True) -> System:
    """The system's config (overridden), records folder and hulls (read from its records, else relaxed)."""
    cfg = load_config(config, overrides=[*overrides, f"data.local_path={DATA}",
                                         f"data.mp.cache_dir={CACHE / 'no-mp-cache'}"])
    records = RECORDS / f"run-{run_key(cfg)}"
    oracle = EnergyModel(cfg.oracle.name, dict(cfg.oracle.settings))
    second = confirmer(oracle)
    known = known_structures(DATA, cfg.space.elements)
    hulls = [load_hull(known, cfg.space.elements, model, cache_dir=CACHE, record=records, progress=progress)
             for model in (oracle, second)]
    return System(name, cfg, records, oracle, second, *hulls, known=known)


def make_setup(system: System, *, arms: list[str]) -> Setup:
    """The space, environment, starting data, known phases and templates (and the substitution pool when
    that arm runs); writes the system's facts beside its records."""
    cfg, hull = system.cfg, system.hull
    space = CrystalSpace.from_settings(cfg.space)
    conversion = to_training_set(read_local(DATA, source=cfg.data.local_source), space=space,
                                 target=label_property(cfg.proxy.target), scope=cfg.data.scope)
    phases = {p.material_id for p in known_phases(cfg.space, cfg.data, cfg.hull)}
    relaxed = {e.material_id: e.relaxed for e in hull.entries if e.relaxed is not None and e.material_id in phases}
    start = TrainingSet.concat([conversion.training, phase_rows(hull, relaxed, source=system.oracle.source,
                                                                target=conversion.training.target)])
    templates = [*known_templates(space, cfg.data), *(template_of(s, f"known-{m}") for m, s in relaxed.items())]
    substituting = {"substitution", "substitution-ucb"} & set(arms) or cfg.selection.substitution
    pool = substitution_pool(space, cfg.data, threshold=THRESHOLD, progress=True) if substituting else []
    setup = Setup(cfg=cfg, space=space, env=CrystalEnv.from_space(space, cfg.gfn, device=cfg.gfn.device),
                  start=start, known=tuple(hull.known_structures), phases=tuple(hull.formation_entries(sorted(phases))),
                  templates=tuple(t for t in templates if t is not None), pool=tuple(pool),
                  label_source=system.oracle.source)
    facts = system.facts | {
        "compositions": len(space.compositions), "start": len(start), "start_sources": sorted(set(start.row_sources())),
        "phases": sorted(relaxed), "templates": len(setup.templates)}
    facts |= {"substitution_pool": len(pool)} if pool else {}
    system.records.mkdir(parents=True, exist_ok=True)
    write_atomic(system.records / "system.json", json.dumps(facts, indent=1, sort_keys=True))
    print(f"{system.name}: {len(start)} starting entries, {len(phases)} known phases in the reward's hull, "
          f"{len(setup.templates)} templates, substitution pool {len(pool)}", flush=True)
    return setup


def phase_rows(hull: ReferenceHull, relaxed: dict[str, Structure], *, source: str, target: str) -> TrainingSet:
    """The relaxed known phases as the oracle's formation-energy rows, as the round's training set has them
    (``aloop.hull.known_phase_entries``)."""
    energies = {e.material_id: e.energy_per_atom for e in hull.entries}
    ids = sorted(relaxed)
    return TrainingSet.from_crystals(
        [Crystal.from_structure(relaxed[m]) for m in ids],
        [hull.formation_energy(relaxed[m].composition, energies[m]) for m in ids],
        sources=[source] * len(ids), ids=[f"{source}-known:{m}" for m in ids], target=target)


def run_round(system: System, *, arms: list[str], arm: str, seed: int, number: int, last: bool, folder: Path,
              history: list[dict]) -> dict:
    """One round's record: from the arm's records when finished, else proposed (or reloaded from ``folder``),
    labelled by the oracle, its novel hits confirmed by the second model, and then recorded. A guided arm's
    Crystal-GFN checkpoint is kept beside the records until its ``last`` round is recorded."""
    records = system.records / f"{arm}.jsonl.gz"
    finished = read_records(records).get((seed, number))
    if finished:
        return finished
    system.setup = system.setup or make_setup(system, arms=arms)
    folder.mkdir(parents=True, exist_ok=True)
    batch, propose_s, about = _proposal(system.setup, arm=arm, seed=seed, number=number, folder=folder,
                                        records=records, history=history)
    start = time.perf_counter()
    labels = label_batch(system, batch, folder=folder, ident=f"{arm}-{seed}-{number}", number=number)
    oracle_s, start = time.perf_counter() - start, time.perf_counter()
    confirm(labels, to_confirm(history, labels, known=system.hull.known_structures), model=system.second,
            hull=system.second_hull, folder=folder)
    record = {"seed": seed, "round": number, "labels": labels, "propose_s": propose_s, "oracle_s": oracle_s,
              "confirm_s": time.perf_counter() - start, "about": about}
    record_round(records, record)
    checkpoint = checkpoint_path(records, arm=arm, seed=seed)
    if last:
        checkpoint.unlink(missing_ok=True)
    elif (folder / "gfn.pt").exists():  # the next round warm-starts from it, on this machine or another
        write_atomic(checkpoint, (folder / "gfn.pt").read_bytes())
    for path in (folder / "proposal.json", *folder.glob("label-*.json"), *folder.glob("confirm-*.json")):
        path.unlink()
    return record


def checkpoint_path(records: Path, *, arm: str, seed: int) -> Path:
    """The Crystal-GFN checkpoint of a guided arm's last recorded round, committed beside the records."""
    return records.parent / "checkpoints" / f"{arm}-seed-{seed}.pt"


def read_records(path: Path) -> dict[tuple[int, int], dict]:
    """An arm's finished rounds by (seed, round), as ``run_round`` returns them; none if no file."""
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
              ) -> tuple[ArmBatch, float, dict]:
    path = folder / "proposal.json"
    if path.exists():
        saved = json.loads(path.read_text())
        structures = [Structure.from_str(c, fmt="cif") for c in saved["cifs"]]
        for structure, template in zip(structures, saved["templates"], strict=True):
            if template is not None:
                structure.properties[TEMPLATE_PROPERTY] = template  # a CIF does not keep it
        return ArmBatch([Crystal.from_dict(c) for c in saved["crystals"]], structures, saved["proxy_mean"],
                        saved["proxy_std"], saved["quantiles"], saved["about"]), saved["seconds"], saved["about"]
    size, round_seed = setup.cfg.selection.batch_size, seed * 1009 + number
    proposed = [Structure.from_str(label[key], fmt="cif") for label in history
                for key in ("cif", "relaxed_cif") if label.get(key)]
    start = time.perf_counter()
    if arm in GUIDED:
        previous = _warm_start(folder, records=records, arm=arm, seed=seed, number=number)
        batch = propose_guided(setup, history, proposed, arm=arm, seed=round_seed, size=size, workdir=folder,
                               previous=previous)
    elif arm in ("random", "random-templates"):
        batch = propose_random(setup, history, proposed, seed=round_seed, size=size,
                               templates=arm == "random-templates")
    elif arm == "substitution-ucb":
        batch = propose_ranked_substitution(setup, history, proposed, seed=round_seed, size=size)
    else:
        batch = propose_substitution(setup, proposed, seed=seed, size=size)
    seconds = time.perf_counter() - start
    about = batch.about | {"templated": sum(t is not None for t in batch.templates)}
    write_atomic(path, json.dumps({"crystals": [c.as_dict() for c in batch.crystals],
                                   "cifs": [s.to(fmt="cif") for s in batch.structures],
                                   "templates": batch.templates, "proxy_mean": batch.proxy_mean,
                                   "proxy_std": batch.proxy_std, "quantiles": batch.quantiles,
                                   "about": about, "seconds": seconds}))
    return batch, seconds, about


def _warm_start(folder: Path, *, records: Path, arm: str, seed: int, number: int) -> Path | None:
    """The previous round's Crystal-GFN checkpoint a guided round warm-starts from (``None`` in round 1)."""
    if number == 1:
        return None
    previous = folder.parent / f"round-{number - 1}" / "gfn.pt"
    if previous.exists():
        return previous
    recorded = checkpoint_path(records, arm=arm, seed=seed)
    last = max((n for s, n in read_records(records) if s == seed), default=0)
    if recorded.exists() and last == number - 1:
        return recorded
    sys.exit(f"{previous} is missing: {arm} seed {seed} round {number} warm-starts the Crystal-GFN from round "
             f"{number - 1}'s checkpoint, which is neither in this machine's cache nor the arm's last recorded one "
             f"({recorded}). Delete {records} (all of the arm's seeds) to rerun the arm from round 1.")


def label_batch(system: System, batch: ArmBatch, *, folder: Path, ident: str, number: int) -> list[dict]:
    """The oracle's labels of the batch (each cached as ``label-<i>.json`` as it arrives): relaxed energy,
    formation energy and energy above the CHGNet reference hull, or why it failed."""
    labels: list[dict | None] = [None] * len(batch.crystals)
    todo = []
    for i, (crystal, structure) in enumerate(zip(batch.crystals, batch.structures, strict=True)):
        path = folder / f"label-{i}.json"
        if path.exists():
            labels[i] = json.loads(path.read_text())
        else:
            todo.append(OracleInput(f"{ident}-{i}", crystal, structure))
    templates = batch.templates

    def keep(item: OracleInput, result: object) -> None:
        i = int(item.candidate_id.rsplit("-", 1)[1])
        label = _label(system.hull, item, result, number=number, template=templates[i],
                       mean=batch.proxy_mean[i] if batch.proxy_mean else None,
                       std=batch.proxy_std[i] if batch.proxy_std else None, quantiles=batch.quantiles)
        write_atomic(folder / f"label-{i}.json", json.dumps(label))
        labels[i] = label

    relax_all(system.oracle, todo, on_result=keep)
    return [label for label in labels if label is not None]


def _label(hull: ReferenceHull, item: OracleInput, result: object, *, number: int, template: str | None,
           mean: float | None, std: float | None, quantiles: dict | None) -> dict:
    meta = dict(getattr(result, "metadata", {}) or {})
    structure = item.structure
    label = {"id": item.candidate_id, "round": number, "crystal": item.crystal.as_dict(),
             "cif": structure.to(fmt="cif"), "template": template,
             "formula": structure.composition.reduced_formula, "ok": isinstance(result, Labelled),
             "seconds": meta.get("seconds"), "steps": meta.get("steps"), "proxy_mean": mean, "proxy_std": std,
             "proxy_quantiles": quantiles}
    if isinstance(result, Labelled):
        composition = result.structure.composition
        return label | {"energy_per_atom": result.energy_per_atom, "relaxed_cif": result.structure.to(fmt="cif"),
                        "formula": composition.reduced_formula,
                        "formation_energy_per_atom": hull.formation_energy(composition, result.energy_per_atom),
                        "e_above_hull": hull.e_above_hull(composition, result.energy_per_atom)}
    return label | {"reason": getattr(result, "reason", ""), "kind": getattr(result, "kind", None)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS),
                        help="searched systems, each with its config (configs/campaign.yaml, campaign-fe-o.yaml)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16, help="oracle calls per round and arm")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--gfn-steps", type=int, help="gfn.train_steps (default: the config's)")
    parser.add_argument("--n-samples", type=int, help="selection.n_samples (default: the config's)")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for every system, e.g. oracle.settings.timeout_s=120")
    parser.add_argument("--no-report", action="store_true", help="only run the rounds (parallel partial runs); no report")
    parser.add_argument("--recorded", action="store_true",
                        help="compute nothing: report the arms and seeds whose rounds are all recorded, and name the rest")
    parser.add_argument("--note", default="", help="a paragraph printed under the command in the report")
    parser.add_argument("--runs", type=Path, default=RUNS,
                        help="folder of the rounds in progress (default: %(default)s); finished rounds go to "
                             "benchmarks/results/campaign_records/run-<config key>/<arm>.jsonl.gz")
    parser.add_argument("--name", default="campaign-v8",
                        help="report files: <name>.md, <name>.json, <name>_<system>_hits.png")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    warnings.filterwarnings("ignore")
    args = parse_args(argv)
    torch.set_num_threads(1)
    overrides = [f"selection.batch_size={args.batch}", *args.overrides]
    overrides += [f"gfn.train_steps={args.gfn_steps}"] if args.gfn_steps else []
    overrides += [f"selection.n_samples={args.n_samples}"] if args.n_samples else []
    if not DATA.exists():
        sys.exit(f"shared data not found at {DATA} (set ALOOP_SHARED_DATA)")
    runs: dict[str, dict[tuple[str, int], list[dict]]] = {}
    systems = []
    missing = []
    for name in args.systems:
        system = make_system(name, SYSTEMS[name], overrides)
        systems.append(system)
        print(f"{name}: rounds in progress under {args.runs / system.records.name}, finished rounds in "
              f"{system.records}", flush=True)
        runs[name] = {}
        for seed in args.seeds:
            for arm in args.arms:
                if args.recorded:
                    recorded = read_records(system.records / f"{arm}.jsonl.gz")
                    rounds = [recorded.get((seed, number)) for number in range(1, args.rounds + 1)]
                    if all(rounds):
                        runs[name][arm, seed] = rounds
                    else:
                        missing.append(f"{name} {arm} seed {seed} ({sum(map(bool, rounds))} of {args.rounds} rounds)")
                    continue
                history: list[dict] = []
                runs[name][arm, seed] = []
                for number in range(1, args.rounds + 1):
                    start = time.perf_counter()
                    record = run_round(system, arms=args.arms, arm=arm, seed=seed, number=number,
                                       last=number == args.rounds, history=history,
                                       folder=args.runs / system.records.name / arm / f"seed-{seed}" / f"round-{number}")
                    history += record["labels"]
                    runs[name][arm, seed].append(record)
                    _print_round(name, arm, seed, number, record, seconds=time.perf_counter() - start)
    if not args.no_report:
        command = "python -m benchmarks.campaign " + " ".join(a for a in (argv if argv is not None else sys.argv[1:])
                                                               if a != "--note" and a != args.note)
        note = args.note + (f"\n\nNot yet recorded, so not in the tables: {'; '.join(missing)}." if missing else "")
        write_report(runs, systems=systems, command=command.strip(), note=note.strip(), matcher=MATCHER_SETTINGS,
                     name=args.name)


def _print_round(name: str, arm: str, seed: int, number: int, record: dict, *, seconds: float) -> None:
    labels = record["labels"]
    ok = [x for x in labels if x.get("ok")]
    confirmed = [x for x in labels if (x.get(CONFIRM_BY) or {}).get("ok") and x[CONFIRM_BY]["e_above_hull"] <= 0.1]
    print(f"{name} {arm} seed {seed} round {number}: {len(labels)} calls, {len(ok)} relaxed, "
          f"{sum(x['e_above_hull'] <= 0.1 for x in ok)} within 0.1 eV/atom of the CHGNet hull, "
          f"{sum(CONFIRM_BY in x for x in labels)} novel sent to SevenNet, {len(confirmed)} confirmed "
          f"(propose {record['propose_s']:.0f} s, oracle {record['oracle_s']:.0f} s, "
          f"confirm {record['confirm_s']:.0f} s; {seconds:.0f} s here, load {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
