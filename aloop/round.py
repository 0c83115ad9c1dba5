"""One round of the active-learning loop, top to bottom (``run_round``).

collect finished oracle jobs and reviews -> training set (Materials Project + labels;
a space-filling design labelled by the oracle when there is nothing) -> fit the proxy
and log its calibration -> train the Crystal-GFN on the acquisition reward, warm-started
from the previous round -> propose: sample and choose a valid, novel, diverse batch ->
store it -> log it to MLflow -> review gate -> label the approved candidates with the
oracle -> report.

Each stage's output is persisted (store rows, files in the round's folder, MLflow runs)
and the last stage completed is recorded on the round row, so a killed round continues
at the first unfinished stage, with the same seeds and no duplicated rows. Oracle jobs
still pending (queued oracles, ``oracle.wait: false``) are collected first by every run,
whatever stage it resumes at; a cold start whose design is still queued stops after the
design until its labels are in. The stages'
work is done by the modules named after it (``aloop.data``, ``aloop.proxy``,
``aloop.proposal``, ``aloop.tracking``, ``aloop.review``, ``aloop.labelling``); this module
runs them in order and persists around them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from mlflow.tracking import MlflowClient
from pymatgen.core import Structure
from rich.console import Console

from aloop import tracking
from aloop.config import Config, label_property
from aloop.data import TrainingSet
from aloop.data.assembly import Assembly, assemble_training_set
from aloop.data.cold_start import initial_design
from aloop.data.known_structures import known_templates
from aloop.gfn import CrystalEnv, CrystalPolicy, load_checkpoint, save_checkpoint
from aloop.hull import formation_hull, known_phases
from aloop.labelling import SubmitReport, label_approved, print_hull
from aloop.logs import LibraryLog, library_log
from aloop.oracle import validate_settings
from aloop.plots import plot_predicted_distribution, plot_reward_histogram, plot_training_curves
from aloop.proposal import Proposal, generator_reward, origin, propose_batch, train_generator
from aloop.proxy import Proxy, calibration, fit_proxy, plot_calibration
from aloop.thermo import FormationHull
from aloop.report import RoundReport, round_report
from aloop.review import apply_reviews, approve_round
from aloop.selection import KnownMaterials, nearest_distance
from aloop.space import CrystalBatch, CrystalSpace, Placement, diversity_report, plot_diversity
from aloop.space.features import featurize
from aloop.space.templates import TemplatePool
from aloop.store import (Campaign, NewCandidate, Round, RoundLock, Store, add_candidates, candidate_structures,
                         get_or_create_campaign, latest_round, open_store, pending_jobs, relaxed_structures,
                         start_round)
from aloop.substitution import SubstitutedStructure, substitution_pool

T = TypeVar("T")

STAGES = ("collected", "designed", "trained_proxy", "trained_generator", "sampled", "selected",
          "logged", "reviewed", "labelled", "done")
"""Stages in order; ``Round.stage`` holds the last one completed."""


@dataclass
class RoundContext:
    """What every stage of one round needs: config, stores, the round row and its folder."""

    cfg: Config
    store: Store
    space: CrystalSpace
    client: MlflowClient
    experiment_id: str
    campaign_id: int
    round_id: int
    number: int
    run_id: str
    stage: str | None
    workdir: Path
    console: Console
    progress: bool
    timings: dict[str, float] = field(default_factory=dict)

    def seed(self, stage: str) -> int:
        """A seed per (campaign seed, round, stage): a resumed stage replays the same draw."""
        return (self.cfg.seed * 1_000_003 + self.number * 1009 + STAGES.index(stage)) % (2**31)

    def done(self, stage: str) -> bool:
        return self.stage is not None and STAGES.index(self.stage) >= STAGES.index(stage)

    def run(self, stage: str, compute: Callable[[], T], load: Callable[[], T]) -> T:
        """Load a completed stage's output, or compute it (seeded, timed) and record it done."""
        if self.done(stage):
            return load()
        self.console.print(f"[bold]round {self.number}[/bold] · {stage.replace('_', ' ')}")
        torch.manual_seed(self.seed(stage))
        np.random.seed(self.seed(stage))
        start = time.perf_counter()
        result = compute()
        self.timings[stage] = time.perf_counter() - start
        tracking.log_metrics(self.client, self.run_id, {f"time_{stage}_s": self.timings[stage]})
        with self.store.session() as session:
            row = session.get_one(Round, self.round_id)
            row.stage = stage
            if stage == "done":
                row.finished_at = row.updated_at
        self.stage = stage
        return result


def run_round(cfg: Config, *, progress: bool = True, console: Console | None = None,
              verbose: bool = False) -> RoundReport:
    """Run (or resume) one round of the campaign in ``cfg`` and return its report.

    Library warnings and log records go to ``round.log`` in the round's folder, and the console
    ends with their count and the log's path; ``verbose`` also shows them on the console.

    Raises:
        LockHeld: another round of this campaign is running on the same database.
        OracleError: unknown oracle or bad ``oracle.settings`` (before anything is written).
    """
    console = console or Console(stderr=True)
    with library_log(verbose=verbose) as log:
        try:
            return _run_round(cfg, progress=progress, console=console, log=log)
        finally:
            if log.path is not None:
                console.print(log.summary(), soft_wrap=True, markup=False)


def _run_round(cfg: Config, *, progress: bool, console: Console, log: LibraryLog) -> RoundReport:
    validate_settings(cfg.oracle.name, cfg.oracle.settings)
    space = CrystalSpace.from_settings(cfg.space)
    store = open_store(cfg.db_url)
    with RoundLock.acquire(store, cfg.campaign, ttl_s=cfg.store.lock_ttl_s):
        ctx = open_round(cfg, store, space, console=console, progress=progress)
        log.open(ctx.workdir / "round.log")
        ctx.run("collected", lambda: collect(ctx), lambda: collect_pending(ctx))
        assembly = ctx.run("designed", lambda: label_initial_design(ctx), lambda: None)
        if design_pending(ctx):
            return report(ctx)
        training = training_data(ctx, assembly)
        proxy = ctx.run("trained_proxy", lambda: train_proxy(ctx, training), lambda: Proxy.load(ctx.workdir / "proxy"))
        env = CrystalEnv.from_space(space, cfg.gfn, device=cfg.gfn.device)
        # nothing is relaxed or labelled in this process between training, sampling and labelling: they see the
        # same templates (and training and sampling the same hull)
        proposing = functools.cache(lambda: placement(ctx))
        hull = functools.cache(lambda: stability_hull(ctx))
        policy = ctx.run("trained_generator", lambda: train_gfn(ctx, env, proxy, training, proposing(), hull()),
                         lambda: load_checkpoint(ctx.workdir / "gfn.pt", env, settings=cfg.gfn))
        proposal = ctx.run("sampled", lambda: propose(ctx, training, proxy, env, policy, proposing(), hull()),
                           lambda: Proposal.load(ctx.workdir / "proposal.pt"))
        ctx.run("selected", lambda: store_batch(ctx, proposal, training), lambda: None)
        ctx.run("logged", lambda: log_batch(ctx, training), lambda: None)
        ctx.run("reviewed", lambda: review(ctx), lambda: None)
        if not waiting_for_review(ctx):
            ctx.run("labelled", lambda: label(ctx, proposing()), lambda: None)
            ctx.run("done", lambda: finish(ctx), lambda: None)
        return report(ctx)


def open_round(cfg: Config, store: Store, space: CrystalSpace, *, console: Console, progress: bool) -> RoundContext:
    """The campaign's unfinished round, or a new one with its MLflow parent run."""
    client = tracking.client_for(cfg.tracking_uri)
    experiment_id = tracking.ensure_experiment(client, cfg.campaign, artifact_location=cfg.tracking.artifact_location)
    config = cfg.model_dump(mode="json")
    with store.session() as session:
        campaign = get_or_create_campaign(session, cfg.campaign)
        row = latest_round(session, campaign)
        resumed = row is not None and row.stage != "done"
        if not resumed:
            row = start_round(session, campaign, config=config, seed=cfg.seed)
    with store.session() as session:  # the round row is committed before its MLflow run exists
        row = session.get_one(Round, row.id)
        if row.mlflow_run_id is None:
            row.mlflow_run_id = tracking.start_round_run(
                client, experiment_id, round_number=row.number, config=config,
                round_key=f"{cfg.campaign}/{row.number}/{row.started_at.isoformat()}")
        ctx = RoundContext(cfg=cfg, store=store, space=space, client=client, experiment_id=experiment_id,
                           campaign_id=row.campaign_id, round_id=row.id, number=row.number, run_id=row.mlflow_run_id,
                           stage=row.stage, workdir=Path(cfg.workdir) / cfg.campaign / f"round-{row.number}",
                           console=console, progress=progress)
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    if resumed:
        console.print(f"resuming round {ctx.number} after stage {ctx.stage or 'start'}")
    return ctx


def collect(ctx: RoundContext) -> None:
    """Act on reviews left in MLflow and store results of jobs still running from earlier runs."""
    reviews = label(ctx, placement(ctx)).reviews
    if reviews.approved or reviews.rejected:
        ctx.console.print(f"reviews read from MLflow: {reviews.approved} approved, {reviews.rejected} rejected, "
                          f"{reviews.pending} still pending")


def collect_pending(ctx: RoundContext) -> None:
    """A resumed round first stores what oracle jobs still pending have finished (its own cold-start
    design, queued batches); reviews and new submissions wait for their own stages."""
    ctx.console.print(f"[bold]round {ctx.number}[/bold] · collecting pending jobs")
    label_approved(ctx.store, ctx.client, campaign_id=ctx.campaign_id, settings=ctx.cfg.oracle,
                   progress=ctx.progress, submit=False)


def label_initial_design(ctx: RoundContext) -> Assembly | None:
    """Cold start: with no training data at all, label a space-filling design of valid crystals.

    Returns the training data when there is some (no design needed). A rerun of the stage
    (a killed round) finds the design it stored and labels what is left of it.
    """
    with ctx.store.session() as session:
        designed = bool(session.get_one(Round, ctx.round_id).candidates)
    place = functools.cache(lambda: placement(ctx))  # the design is placed and labelled with the same templates
    if not designed:
        assembly = assemble(ctx)
        size = ctx.cfg.data.cold_start_size
        if assembly.training is not None or not size:
            return assembly
        ctx.console.print(f"no training data (no Materials Project key or cache, no labels): labelling a "
                          f"space-filling design of {size} crystals with {ctx.cfg.oracle.name}")
        design = initial_design(ctx.space, ctx.cfg.gfn, size, seed=ctx.seed("designed"), placement=place())
        with ctx.store.session() as session:
            add_candidates(session, session.get_one(Round, ctx.round_id),
                           [NewCandidate(crystal, cif=structure.to(fmt="cif"), origin=origin(structure))
                            for crystal, structure in design])
    approve_round(ctx.store, ctx.client, round_id=ctx.round_id)
    label(ctx, place())
    return None


def design_pending(ctx: RoundContext) -> int:
    """Oracle jobs of this round's cold-start design still running (queued oracles, ``oracle.wait: false``).

    The proxy is fitted on the whole design: until its labels are in, the round stops here
    and the next ``aloop round`` collects them and goes on.
    """
    with ctx.store.session() as session:
        jobs = pending_jobs(session, session.get_one(Campaign, ctx.campaign_id))
        return sum(job.candidate.round_id == ctx.round_id for job in jobs)


def assemble(ctx: RoundContext) -> Assembly:
    return assemble_training_set(ctx.store, ctx.campaign_id, space=ctx.space, settings=ctx.cfg.data,
                                 target=label_property(ctx.cfg.proxy.target), seed=ctx.cfg.seed)


def training_data(ctx: RoundContext, assembly: Assembly | None) -> TrainingSet:
    """This round's training set (``assembly``, or assembled now); an error saying what to do when there is none."""
    assembly = assembly or assemble(ctx)
    if assembly.training is None:
        learned = label_property(ctx.cfg.proxy.target)
        raise RuntimeError(f"no {learned} labels to train the proxy on: set MP_API_KEY and run "
                           "`aloop data pull`, set data.local_path, import labels, or keep data.cold_start_size > 0 "
                           f"with an oracle that labels {learned}")
    ctx.console.print(f"training data: {assembly.describe()}")
    return assembly.training


def train_proxy(ctx: RoundContext, data: TrainingSet) -> Proxy:
    """Fit the proxy on a training split, log its held-out calibration, save it."""
    train_set, held_out = data.split(fraction=ctx.cfg.proxy.holdout_fraction, seed=ctx.seed("trained_proxy"))
    proxy = fit_proxy(train_set, ctx.cfg.proxy, seed=ctx.seed("trained_proxy"), progress=ctx.progress)
    if len(held_out):
        report = calibration(proxy, held_out)
        tracking.log_metrics(ctx.client, ctx.run_id, {f"proxy_{k}": v for k, v in report.as_dict().items()})
        tracking.log_figure(ctx.client, ctx.run_id, plot_calibration(report, title=f"round {ctx.number}"), "calibration")
        ctx.console.print(f"proxy on {len(held_out)} held-out points: MAE {report.mae:.3f}, "
                          f"90% coverage {report.coverage_90:.2f}")
    if (correction := proxy.correction) is not None:
        labels, offset = correction
        tracking.log_metrics(ctx.client, ctx.run_id, {"proxy_correction_labels": labels,
                                                      "proxy_correction_offset": offset})
        ctx.console.print(f"proxy correction from {labels} campaign labels: on average {offset:+.3f} from the "
                          "rest of the data's prediction")
    proxy.save(ctx.workdir / "proxy")
    tracking.log_proxy_model(ctx.client, ctx.experiment_id, ctx.run_id, ctx.workdir / "proxy",
                             example=train_set.crystals[:2].to_crystals())
    return proxy


def stability_hull(ctx: RoundContext) -> FormationHull | None:
    """For ``proxy.target: stability``: the hull the reward's energies above the hull are taken from (the
    oracle's known phases and labels, ``aloop.hull.formation_hull``); ``None`` for the other targets."""
    if ctx.cfg.proxy.target != "stability":
        return None
    return formation_hull(ctx.store, ctx.campaign_id, ctx.space.elements)


def train_gfn(ctx: RoundContext, env: CrystalEnv, proxy: Proxy, data: TrainingSet,
              place: Placement, hull: FormationHull | None) -> CrystalPolicy:
    """Train the Crystal-GFN on the acquisition reward (templates of ``place``, ``stability_hull``), warm-started
    from the previous round's policy."""
    reward = generator_reward(proxy, data, ctx.cfg.acquisition, hull, place)
    generator = train_generator(env, reward, ctx.cfg.gfn,
                                warm_start=ctx.workdir.parent / f"round-{ctx.number - 1}" / "gfn.pt",
                                progress=ctx.progress)
    ctx.console.print(f"generator: {generator.start}")
    history = generator.history
    tracking.log_curve(ctx.client, ctx.run_id, "gfn_loss", history.loss)
    tracking.log_curve(ctx.client, ctx.run_id, "gfn_log_z", history.log_z)
    tracking.log_curve(ctx.client, ctx.run_id, "gfn_mean_log_reward", history.mean_log_reward)
    tracking.log_figure(ctx.client, ctx.run_id, plot_training_curves(history.loss, history.log_z), "gfn_training")
    path = save_checkpoint(ctx.workdir / "gfn.pt", env, generator.policy, ctx.cfg.gfn)
    ctx.client.log_artifact(ctx.run_id, str(path), "generator")
    return generator.policy


def propose(ctx: RoundContext, data: TrainingSet, proxy: Proxy, env: CrystalEnv, policy: CrystalPolicy,
            place: Placement, hull: FormationHull | None) -> Proposal:
    """Sample the generator and choose the batch (``propose_batch``); log the samples, keep the proposal on disk."""
    with ctx.store.session() as session:
        campaign = session.get_one(Campaign, ctx.campaign_id)
        known = KnownMaterials.from_sources(
            crystals=data.crystals.to_crystals(),
            structures=[*candidate_structures(session, campaign), *relaxed_structures(session, campaign).values()])
    proposal = propose_batch(data, proxy, env, policy, known, acquisition=ctx.cfg.acquisition,
                             selection=ctx.cfg.selection, seed=ctx.seed("sampled"), hull=hull,
                             threads=ctx.cfg.gfn.threads, placement=place, substituted=substituted(ctx),
                             progress=ctx.progress)
    if len(proposal.temperatures) > 1:
        ctx.console.print(f"the generator's samples held too few distinct, novel crystals for the batch: drew "
                          f"{ctx.cfg.selection.n_samples:,} more at each temperature "
                          f"{', '.join(f'{t:g}' for t in proposal.temperatures[1:])}; batch of {len(proposal.chosen)}")
    report = diversity_report(proposal.samples, ctx.space)
    tracking.log_metrics(ctx.client, ctx.run_id, {
        "samples": len(proposal.samples), "sample_draws": len(proposal.temperatures),
        "samples_valid_fraction": float(proposal.valid.float().mean()),
        "substituted": 0 if proposal.substituted is None else len(proposal.substituted),
        "batch_substituted": proposal.chosen_substituted,
        "samples_unique_fraction": report.unique_fraction, "log_reward_mean": float(proposal.log_reward.mean()),
        "log_reward_max": float(proposal.log_reward.max())})
    tracking.log_figure(ctx.client, ctx.run_id, plot_diversity(report), "diversity")
    tracking.log_figure(ctx.client, ctx.run_id, plot_reward_histogram(proposal.log_reward.numpy()), "reward_histogram")
    proposal.save(ctx.workdir / "proposal.pt")
    return proposal


def substituted(ctx: RoundContext) -> list[SubstitutedStructure]:
    """With ``selection.substitution``: the ion-substitution structures of the configured data, said how many."""
    if not ctx.cfg.selection.substitution:
        return []
    start = time.perf_counter()
    pool = substitution_pool(ctx.space, ctx.cfg.data, threshold=ctx.cfg.selection.substitution_threshold,
                             progress=ctx.progress)
    ctx.console.print(f"ion substitution: {len(pool)} structures in the space, in {time.perf_counter() - start:.1f} s"
                      + ("" if pool else " (no Materials Project structures: set data.local_path or MP_API_KEY)"))
    return pool


def store_batch(ctx: RoundContext, proposal: Proposal, data: TrainingSet) -> None:
    """Store the proposal's batch as proposed candidates, in one transaction, and log its figures.

    A rerun after the write (a kill before the stage was recorded) finds the batch and stores nothing more.
    """
    chosen = list(proposal.chosen)
    mean, std = proposal.prediction.mean[chosen], proposal.prediction.std[chosen]
    acquisition = proposal.acquisition[chosen]
    tracking.log_metrics(ctx.client, ctx.run_id, {
        "batch_size": len(chosen), **{f"skipped_{k}": v for k, v in proposal.skipped.items()},
        **({"batch_acquisition_mean": float(acquisition.mean())} if chosen else {})})
    tracking.log_figure(ctx.client, ctx.run_id, plot_predicted_distribution(
        proposal.prediction.mean.numpy(), data.values.numpy(), target=label_property(ctx.cfg.proxy.target),
        selected=mean.numpy()),
        "predicted_distribution")
    with ctx.store.session() as session:
        round_ = session.get_one(Round, ctx.round_id)
        if any(c.proxy_mean is not None for c in round_.candidates):
            return
        add_candidates(session, round_, [
            NewCandidate(crystal, proxy_mean=float(m), proxy_std=float(s), acquisition=float(a),
                         cif=structure.to(fmt="cif"), origin=origin(structure))
            for crystal, m, s, a, structure in zip(proposal.batch, mean, std, acquisition, proposal.structures,
                                                   strict=True)])


def log_batch(ctx: RoundContext, data: TrainingSet) -> None:
    """One MLflow child run per candidate of the round, and the candidates table on the round run."""
    with ctx.store.session() as session:
        rows = session.get_one(Round, ctx.round_id).candidates
        crystals = [c.crystal for c in rows]
        distance = nearest_distance(featurize(CrystalBatch.from_crystals(crystals, ctx.space.elements)),
                                    featurize(data.crystals)).tolist()
        views = [tracking.CandidateView(
            candidate_id=str(c.id), crystal=crystal, proxy_mean=_or_nan(c.proxy_mean),
            proxy_std=_or_nan(c.proxy_std), acquisition=_or_nan(c.acquisition),
            nearest_known_feature_distance=d, state=c.state, review=c.review, origin=c.origin,
            structure=Structure.from_str(c.cif, fmt="cif") if c.cif else None)
            for c, crystal, d in zip(rows, crystals, distance, strict=True)]
    run_ids = tracking.log_candidates(ctx.client, ctx.experiment_id, ctx.run_id, round_number=ctx.number,
                                      candidates=views)
    with ctx.store.session() as session:
        for candidate in session.get_one(Round, ctx.round_id).candidates:
            candidate.mlflow_run_id = run_ids.get(str(candidate.id), candidate.mlflow_run_id)
    tracking.log_candidates_table(ctx.client, ctx.run_id, views)


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def review(ctx: RoundContext) -> None:
    """``auto`` approves the batch now; ``manual`` leaves it pending for the MLflow UI."""
    if ctx.cfg.review == "auto":
        approve_round(ctx.store, ctx.client, round_id=ctx.round_id)


def waiting_for_review(ctx: RoundContext) -> bool:
    """True while nobody has reviewed any candidate of a manual round's batch (decisions left in
    MLflow are applied first); once some are decided, the round labels those and the rest wait."""
    if ctx.cfg.review == "auto" or ctx.done("labelled"):
        return False
    apply_reviews(ctx.store, ctx.client, campaign_id=ctx.campaign_id)
    with ctx.store.session() as session:
        batch = [c.state for c in session.get_one(Round, ctx.round_id).candidates if c.proxy_mean is not None]
    return bool(batch) and all(state == "proposed" for state in batch)


def label(ctx: RoundContext, place: Placement) -> SubmitReport:
    """Send approved candidates to the oracle, store the labels, mirror states to MLflow (``label_approved``);
    an energy oracle first relaxes the known phases of the space it has not relaxed yet (``aloop.hull``).
    ``place`` places approved candidates that have no structure yet."""
    report = label_approved(ctx.store, ctx.client, campaign_id=ctx.campaign_id, settings=ctx.cfg.oracle,
                            known=known_phases(ctx.cfg.space, ctx.cfg.data, ctx.cfg.hull), placement=place,
                            progress=ctx.progress)
    print_hull(ctx.console, report.labelling)
    ctx.client.set_tag(ctx.run_id, "hull", report.labelling.hull)
    return report


def placement(ctx: RoundContext) -> Placement:
    """This round's placement (``campaign_placement``), its template count printed when it has templates."""
    start = time.perf_counter()
    found = campaign_placement(ctx.cfg, ctx.space, ctx.store, ctx.campaign_id)
    if found.pool:
        ctx.console.print(f"placement templates: {len(found.pool)}, indexed in {time.perf_counter() - start:.1f} s")
    return found


def campaign_placement(cfg: Config, space: CrystalSpace, store: Store, campaign_id: int) -> Placement:
    """The ``placement`` settings with the campaign's template pool (``templates: false``: none): Materials
    Project structures of the configured sources that fit the space, and every relaxed structure of the
    campaign (labelled candidates, relaxed known phases). ``aloop submit`` places with it too."""
    if not cfg.placement.templates:
        return Placement.from_settings(cfg.placement, None)
    with store.session() as session:
        relaxed = relaxed_structures(session, session.get_one(Campaign, campaign_id))
    return Placement.from_settings(cfg.placement, TemplatePool.build(known_templates(space, cfg.data), relaxed))


def finish(ctx: RoundContext) -> None:
    ctx.client.set_terminated(ctx.run_id)


def report(ctx: RoundContext) -> RoundReport:
    rank_by = "e_above_hull" if ctx.cfg.proxy.target == "stability" else "formation_energy_per_atom"
    return round_report(ctx.store, ctx.client, campaign_id=ctx.campaign_id, round_id=ctx.round_id,
                        run_id=ctx.run_id, timings=ctx.timings, tracking_uri=ctx.cfg.tracking_uri, rank_by=rank_by)
