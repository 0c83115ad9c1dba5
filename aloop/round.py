"""One round of the active-learning loop, top to bottom (``run_round``).

collect finished oracle jobs and reviews -> training set (Materials Project + labels;
a space-filling design labelled by the oracle when there is nothing) -> fit the proxy
and log its calibration -> acquisition reward -> train the Crystal-GFN, warm-started
from the previous round -> sample -> select a valid, novel, diverse batch -> log it to
MLflow -> review gate -> label the approved candidates with the oracle -> summary.

Each stage's output is persisted (store rows, files in the round's folder, MLflow runs)
and the last stage completed is recorded on the round row, so a killed round continues
at the first unfinished stage, with the same seeds and no duplicated rows.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from mlflow.tracking import MlflowClient
from rich.console import Console
from sqlalchemy import select

from aloop import tracking
from aloop.acquisition import acquisition_values, log_reward_fn
from aloop.config import Config
from aloop.data import Entries, MPQuery, TrainingSet, load_cache, read_local, to_training_set
from aloop.executor import open_executor
from aloop.gfn import CheckpointError, CrystalEnv, build_policy, load_checkpoint, save_checkpoint, train
from aloop.gfn import sample as sample_crystals
from aloop.labelling import label_candidates
from aloop.oracle import Oracle, load_oracle
from aloop.plots import plot_predicted_distribution, plot_reward_histogram, plot_training_curves
from aloop.proxy import Proxy, calibration, fit_proxy, plot_calibration
from aloop.review import apply_reviews, approve_round, mirror_states
from aloop.selection import (KnownMaterials, farthest_point_indices, nearest_distance, placed_structure,
                             select_diverse)
from aloop.space import CrystalBatch, CrystalSpace, diversity_report, plot_diversity
from aloop.space import valid_mask
from aloop.space.features import featurize
from aloop.store import (Candidate, NewCandidate, RoundLock, Store, add_candidates, get_or_create_campaign,
                         labelled_data, latest_round, open_store, start_round)
from aloop.store.models import Round
from aloop.summary import RoundSummary, summarise

T = TypeVar("T")

DESIGN_SPARE = 3
"""The cold-start design is picked from this many times its size of farthest-point crystals,
in farthest-point order, skipping those whose atoms cannot be placed."""
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


def run_round(cfg: Config, *, progress: bool = True, console: Console | None = None) -> RoundSummary:
    """Run (or resume) one round of the campaign in ``cfg`` and return its summary.

    Raises:
        LockHeld: another round of this campaign is running on the same database.
    """
    console = console or Console(stderr=True)
    space = CrystalSpace.from_settings(cfg.space)
    store = open_store(cfg.db_url)
    with RoundLock.acquire(store, cfg.campaign, ttl_s=cfg.store.lock_ttl_s), \
            open_executor(kind=cfg.oracle.executor, scheduler_address=cfg.oracle.scheduler_address,
                          max_workers=cfg.oracle.workers) as executor:
        oracle = load_oracle(cfg.oracle.name, cfg.oracle.settings, executor=executor)
        ctx = open_round(cfg, store, space, console=console, progress=progress)
        ctx.run("collected", lambda: collect(ctx, oracle), lambda: None)
        ctx.run("designed", lambda: label_initial_design(ctx, oracle), lambda: None)
        training = training_data(ctx)
        proxy = ctx.run("trained_proxy", lambda: train_proxy(ctx, training), lambda: Proxy.load(ctx.workdir / "proxy"))
        reward = log_reward_fn(proxy, cfg.acquisition, target=cfg.proxy.target, best_f=best_observed(ctx, training))
        env = CrystalEnv.from_space(space, cfg.gfn)
        policy = ctx.run("trained_generator", lambda: train_generator(ctx, env, reward),
                         lambda: load_checkpoint(ctx.workdir / "gfn.pt", env, settings=cfg.gfn))
        samples = ctx.run("sampled", lambda: sample(ctx, env, policy, reward), lambda: load_samples(ctx))
        ctx.run("selected", lambda: select_batch(ctx, samples, proxy, training), lambda: None)
        ctx.run("logged", lambda: log_batch(ctx, training), lambda: None)
        ctx.run("reviewed", lambda: review(ctx), lambda: None)
        if not awaiting_review(ctx):
            ctx.run("labelled", lambda: label(ctx, oracle), lambda: None)
            ctx.run("done", lambda: finish(ctx), lambda: None)
        return summarise(ctx.store, ctx.client, campaign_id=ctx.campaign_id, round_id=ctx.round_id,
                         run_id=ctx.run_id, timings=ctx.timings, tracking_uri=cfg.tracking_uri)


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


def collect(ctx: RoundContext, oracle: Oracle) -> None:
    """Act on reviews left in MLflow and store results of jobs still running from earlier rounds."""
    outcome = apply_reviews(ctx.store, ctx.client, campaign_id=ctx.campaign_id)
    if outcome.approved or outcome.rejected:
        ctx.console.print(f"reviews read from MLflow: {outcome.approved} approved, {outcome.rejected} rejected, "
                          f"{outcome.pending} still pending")
    label_candidates(ctx.store, ctx.cfg.campaign, oracle, wait=ctx.cfg.oracle.wait,
                     poll_interval_s=ctx.cfg.oracle.poll_interval_s, progress=ctx.progress)


def label_initial_design(ctx: RoundContext, oracle: Oracle) -> None:
    """Cold start: with no training data at all, label a space-filling design of valid crystals.

    A rerun of the stage (a killed round) finds the design it stored and labels what is left of it.
    """
    if not has_candidates(ctx) and not store_initial_design(ctx, oracle):
        return
    approve_round(ctx.store, ctx.client, round_id=ctx.round_id)
    label(ctx, oracle)


def has_candidates(ctx: RoundContext) -> bool:
    with ctx.store.session() as session:
        return session.scalar(select(Candidate.id).where(Candidate.round_id == ctx.round_id).limit(1)) is not None


def store_initial_design(ctx: RoundContext, oracle: Oracle) -> bool:
    """Store the space-filling design as candidates when there is no data; ``False`` when there is."""
    data, _ = assemble_training_set(ctx)
    if data is not None or not ctx.cfg.data.cold_start_size:
        return False
    size = ctx.cfg.data.cold_start_size
    ctx.console.print(f"no training data (no Materials Project key or cache, no labels): labelling a "
                      f"space-filling design of {size} crystals with {oracle.name}")
    env = CrystalEnv.from_space(ctx.space, ctx.cfg.gfn)
    pool = sample_crystals(env, build_policy(env, ctx.cfg.gfn), max(50 * size, 1000), seed=ctx.seed("designed"))
    pool = pool.to("cpu")
    pool = pool[valid_mask(pool, ctx.space)]
    order = farthest_point_indices(featurize(pool), DESIGN_SPARE * size, seed=ctx.seed("designed"))
    design = []
    for crystal in pool[order].to_crystals():  # the most spread first; those pyxtal cannot fill are passed over
        if (structure := placed_structure(crystal)) is not None:
            design.append(NewCandidate(crystal, cif=structure.to(fmt="cif")))
        if len(design) == size:
            break
    with ctx.store.session() as session:
        add_candidates(session, session.get_one(Round, ctx.round_id), design)
    return True


def assemble_training_set(ctx: RoundContext) -> tuple[TrainingSet | None, dict[str, int]]:
    """Materials Project (cache, local folder) and every label in the store, inside the space.

    Returns:
        the training set (``None`` when there is no data at all) and the entries dropped
        by reason (outside the space, missing target, ...).
    """
    cfg, target = ctx.cfg, ctx.cfg.proxy.target
    sources = [e for e in (load_cache(MPQuery.from_settings(cfg.space, cfg.data.mp), cache_dir=Path(cfg.data.mp.cache_dir)),
                           read_local(Path(cfg.data.local_path)) if cfg.data.local_path else None) if e is not None]
    sources += store_entries(ctx, target)
    conversions = [to_training_set(entries, target=target, space=ctx.space) for entries in sources if len(entries)]
    dropped: Counter = Counter()
    for conversion in conversions:
        dropped.update(conversion.dropped)
    kept = [c.training for c in conversions if len(c.training)]
    if not kept:
        return None, dict(dropped)
    data = TrainingSet.concat(kept)
    if cfg.data.max_entries and len(data) > cfg.data.max_entries:
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.seed))
        data = data.subset(order[: cfg.data.max_entries].sort().values)
    return data, dict(dropped)


def store_entries(ctx: RoundContext, target: str) -> list[Entries]:
    """The campaign's ``target`` labels with a crystal, one ``Entries`` per oracle (its own fidelity).

    Ordered by crystal, not by when the labels arrived: oracle jobs finishing in another
    order (several workers, a resumed round) give the same training set and the same round.
    """
    with ctx.store.session() as session:
        points = sorted((p for p in labelled_data(session, get_or_create_campaign(session, ctx.cfg.campaign),
                                                  property=target) if p.crystal is not None),
                        key=lambda p: (p.crystal.canonical_hash, p.value))
    by_oracle: dict[str, list] = {}
    for point in points:
        by_oracle.setdefault(point.oracle, []).append(point)
    return [Entries(source=oracle, ids=tuple(f"{oracle}-{i}" for i in range(len(rows))),
                    crystals=CrystalBatch.from_crystals([p.crystal for p in rows], ctx.space.elements),
                    properties={target: np.array([p.value for p in rows], dtype=np.float64)})
            for oracle, rows in sorted(by_oracle.items())]


def training_data(ctx: RoundContext) -> TrainingSet:
    """The training set of this round; an error saying what to do when there is none."""
    data, dropped = assemble_training_set(ctx)
    if data is None:
        raise RuntimeError(f"no {ctx.cfg.proxy.target} labels to train the proxy on: set MP_API_KEY and run "
                           "`aloop data pull`, set data.local_path, import labels, or keep data.cold_start_size > 0 "
                           f"with an oracle that labels {ctx.cfg.proxy.target}")
    counts = Counter(data.row_sources())
    ctx.console.print(f"training data: {len(data)} entries ({dict(counts)}); dropped: {dropped or 'none'}")
    return data


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
    proxy.save(ctx.workdir / "proxy")
    tracking.log_proxy_model(ctx.client, ctx.experiment_id, ctx.run_id, ctx.workdir / "proxy",
                             example=train_set.crystals[:2].to_crystals())
    return proxy


def best_observed(ctx: RoundContext, data: TrainingSet) -> float:
    """Best target value seen so far (lowest formation energy, or closest band gap to target)."""
    y = data.values
    if ctx.cfg.proxy.target == "band_gap":
        return float(-(y - ctx.cfg.acquisition.band_gap_target).abs().min())
    return float(y.min())


def train_generator(ctx: RoundContext, env: CrystalEnv, reward: Callable[[CrystalBatch], torch.Tensor]):  # noqa: ANN201
    """Train the Crystal-GFN against the reward, warm-started from the previous round's policy."""
    previous = ctx.workdir.parent / f"round-{ctx.number - 1}" / "gfn.pt"
    policy = build_policy(env, ctx.cfg.gfn)
    if previous.exists():
        try:
            policy = load_checkpoint(previous, env, settings=ctx.cfg.gfn)
            ctx.console.print(f"warm start from {previous}")
        except CheckpointError as err:
            ctx.console.print(f"[yellow]cold start of the generator: {err}[/yellow]")
    history = train(env, policy, reward, steps=ctx.cfg.gfn.train_steps, settings=ctx.cfg.gfn, progress=ctx.progress)
    tracking.log_curve(ctx.client, ctx.run_id, "gfn_loss", history.loss)
    tracking.log_curve(ctx.client, ctx.run_id, "gfn_log_z", history.log_z)
    tracking.log_curve(ctx.client, ctx.run_id, "gfn_mean_log_reward", history.mean_log_reward)
    tracking.log_figure(ctx.client, ctx.run_id, plot_training_curves(history.loss, history.log_z), "gfn_training")
    path = save_checkpoint(ctx.workdir / "gfn.pt", env, policy, ctx.cfg.gfn)
    ctx.client.log_artifact(ctx.run_id, str(path), "generator")
    return policy


def sample(ctx: RoundContext, env: CrystalEnv, policy, reward: Callable[[CrystalBatch], torch.Tensor]  # noqa: ANN001
           ) -> CrystalBatch:
    """Draw the round's samples, log their diversity and rewards, keep them on disk."""
    batch = sample_crystals(env, policy, ctx.cfg.selection.n_samples, seed=ctx.seed("sampled"),
                            progress=ctx.progress).to("cpu")
    log_reward = reward(batch.to(env.device)).cpu()
    report = diversity_report(batch, ctx.space)
    tracking.log_metrics(ctx.client, ctx.run_id, {
        "samples": len(batch), "samples_valid_fraction": float(valid_mask(batch, ctx.space).float().mean()),
        "samples_unique_fraction": report.unique_fraction, "log_reward_mean": float(log_reward.mean()),
        "log_reward_max": float(log_reward.max())})
    tracking.log_figure(ctx.client, ctx.run_id, plot_diversity(report), "diversity")
    tracking.log_figure(ctx.client, ctx.run_id, plot_reward_histogram(log_reward.numpy()), "reward_histogram")
    path = ctx.workdir / "samples.pt"
    torch.save({"elements": batch.elements, "space_group": batch.space_group, "counts": batch.counts,
                "lattice": batch.lattice}, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return batch


def load_samples(ctx: RoundContext) -> CrystalBatch:
    data = torch.load(ctx.workdir / "samples.pt", weights_only=True)
    return CrystalBatch(tuple(data["elements"]), data["space_group"], data["counts"], data["lattice"])


def select_batch(ctx: RoundContext, samples: CrystalBatch, proxy: Proxy, data: TrainingSet) -> None:
    """Keep valid samples, rank them by acquisition, pick a diverse novel batch, store it as proposed.

    The batch is written last, in one transaction; a rerun after that (a kill before the
    stage was recorded) finds it and selects nothing more.
    """
    with ctx.store.session() as session:
        if session.scalar(select(Candidate.id).where(Candidate.round_id == ctx.round_id,
                                                     Candidate.proxy_mean.is_not(None)).limit(1)) is not None:
            return
    samples = samples[valid_mask(samples, ctx.space)]
    acquisition = acquisition_values(proxy, ctx.cfg.acquisition, samples, target=ctx.cfg.proxy.target,
                                     best_f=best_observed(ctx, data)).numpy()
    crystals = samples.to_crystals()
    selection = select_diverse(
        crystals, acquisition, size=ctx.cfg.selection.batch_size, known=known_materials(ctx, data),
        to_structure=placed_structure, chemsys_penalty=ctx.cfg.selection.chemsys_penalty,
        space_group_penalty=ctx.cfg.selection.space_group_penalty)
    predicted, _ = proxy.predict(samples, observation_noise=False)
    mean, std = proxy.predict(samples[torch.tensor(selection.indices, dtype=torch.long)], observation_noise=False)
    tracking.log_metrics(ctx.client, ctx.run_id, {
        "batch_size": len(selection.indices), **{f"skipped_{k}": v for k, v in selection.skipped.items()},
        **({"batch_acquisition_mean": float(acquisition[selection.indices].mean())} if selection.indices else {})})
    tracking.log_figure(ctx.client, ctx.run_id, plot_predicted_distribution(
        predicted.numpy(), data.values.numpy(), target=ctx.cfg.proxy.target, selected=mean.numpy()),
        "predicted_distribution")
    with ctx.store.session() as session:
        add_candidates(session, session.get_one(Round, ctx.round_id), [
            NewCandidate(crystals[i], proxy_mean=float(m), proxy_std=float(s), acquisition=float(acquisition[i]),
                         cif=structure.to(fmt="cif"))
            for i, m, s, structure in zip(selection.indices, mean, std, selection.structures, strict=True)])


def known_materials(ctx: RoundContext, data: TrainingSet) -> KnownMaterials:
    """The training set's crystals (by composition and group) and every candidate's structure."""
    from pymatgen.core import Structure

    known = KnownMaterials()
    known.add_crystals(data.crystals.to_crystals())
    with ctx.store.session() as session:
        for cif in session.scalars(select(Candidate.cif).where(Candidate.campaign_id == ctx.campaign_id,
                                                               Candidate.cif.is_not(None))):
            known.add(Structure.from_str(cif, fmt="cif"))
    return known


def log_batch(ctx: RoundContext, data: TrainingSet) -> None:
    """One MLflow child run per candidate of the round, and the candidates table on the round run."""
    from pymatgen.core import Structure

    with ctx.store.session() as session:
        rows = list(session.scalars(select(Candidate).where(Candidate.round_id == ctx.round_id)
                                    .order_by(Candidate.id)))
        crystals = [c.crystal for c in rows]
        distance = nearest_distance(featurize(CrystalBatch.from_crystals(crystals, ctx.space.elements)),
                                    featurize(data.crystals)).tolist()
        views = [tracking.CandidateView(
            candidate_id=str(c.id), crystal=crystal, proxy_mean=_or_nan(c.proxy_mean),
            proxy_std=_or_nan(c.proxy_std), acquisition=_or_nan(c.acquisition),
            nearest_known_feature_distance=d, state=c.state, review=c.review,
            structure=Structure.from_str(c.cif, fmt="cif") if c.cif else None)
            for c, crystal, d in zip(rows, crystals, distance, strict=True)]
    run_ids = tracking.log_candidates(ctx.client, ctx.experiment_id, ctx.run_id, round_number=ctx.number,
                                      candidates=views)
    with ctx.store.session() as session:
        for candidate in session.scalars(select(Candidate).where(Candidate.round_id == ctx.round_id)):
            candidate.mlflow_run_id = run_ids.get(str(candidate.id), candidate.mlflow_run_id)
    tracking.log_candidates_table(ctx.client, ctx.run_id, views)


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def review(ctx: RoundContext) -> None:
    """``auto`` approves the batch now; ``manual`` leaves it pending for the MLflow UI."""
    if ctx.cfg.review == "auto":
        approve_round(ctx.store, ctx.client, round_id=ctx.round_id)


def awaiting_review(ctx: RoundContext) -> bool:
    """True while a manual round has candidates nobody has reviewed yet."""
    if ctx.cfg.review == "auto" or ctx.done("labelled"):
        return False
    outcome = apply_reviews(ctx.store, ctx.client, campaign_id=ctx.campaign_id)
    return outcome.pending > 0 and not outcome.approved and not outcome.rejected


def label(ctx: RoundContext, oracle: Oracle) -> None:
    """Send approved candidates to the oracle, store the labels, mirror states to MLflow."""
    label_candidates(ctx.store, ctx.cfg.campaign, oracle, wait=ctx.cfg.oracle.wait,
                     poll_interval_s=ctx.cfg.oracle.poll_interval_s, progress=ctx.progress)
    mirror_states(ctx.store, ctx.client, campaign_id=ctx.campaign_id)


def finish(ctx: RoundContext) -> None:
    ctx.client.set_terminated(ctx.run_id)
