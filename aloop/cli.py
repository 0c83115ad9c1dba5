"""The ``aloop`` command line: one subcommand per thing a user does."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from aloop.config import DEFAULT_CONFIG, Config, ConfigError, label_property, load_config
from aloop.oracle import FAILURE_KINDS, TRANSIENT_KINDS

if TYPE_CHECKING:
    from aloop.store import Store

config_option = click.option(
    "--config", "config_path", type=click.Path(path_type=Path), default=DEFAULT_CONFIG,
    show_default=True, help="YAML config file.",
)
set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a config value, e.g. --set gfn.train_steps=200 (repeatable).",
)


def resolve_config(config_path: Path, overrides: tuple[str, ...], *, oracle: bool = False) -> Config:
    """Load the config or exit with status 2 and the error on stderr.

    Args:
        oracle: also check ``oracle.settings`` against the oracle's own ``Settings`` model
            (an unknown oracle lists the installed ones); for commands that will build the
            oracle, so that a bad setting stops them before the database or MLflow is touched.
    """
    try:
        cfg = load_config(config_path, overrides)
    except ConfigError as err:
        exit_config_error(err)
    if oracle:
        from aloop.oracle import OracleError, validate_settings  # torch and pymatgen: only when needed

        try:
            validate_settings(cfg.oracle.name, cfg.oracle.settings)
        except OracleError as err:
            exit_config_error(err)
    return cfg


def exit_config_error(err: Exception) -> NoReturn:
    """Print a config error (file or setting, key, value, rule) without a traceback and exit with status 2."""
    click.echo(f"aloop: config error\n{err}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aloop")
def main() -> None:
    """aloop: an active-learning loop for inorganic crystal discovery.

    Each round fits a GP proxy, trains a Crystal-GFN against an acquisition reward,
    proposes a diverse novel batch, logs it to MLflow for review and labels it with an
    oracle. Start with `aloop round`; review with `aloop ui`.
    """


@main.command("config")
@config_option
@set_option
def show_config(config_path: Path, overrides: tuple[str, ...]) -> None:
    """Validate a config (the oracle's settings included) and print it as resolved (with overrides)."""
    import yaml

    cfg = resolve_config(config_path, overrides, oracle=True)
    click.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def open_configured_store(cfg: Config) -> Store:
    """Open the experiment database (``ALOOP_DB_URL`` or ``store.url``) or exit with status 2."""
    from aloop.store import StoreError, open_store

    try:
        return open_store(cfg.db_url)
    except StoreError as err:
        click.echo(f"aloop: {err}", err=True)
        sys.exit(2)


def campaign_id_of(store: Store, name: str) -> int | None:
    """The id of campaign ``name`` in ``store``; ``None`` when it was never started (nothing is created)."""
    from aloop.store import find_campaign

    with store.session() as session:
        campaign = find_campaign(session, name)
        return None if campaign is None else campaign.id


@contextmanager
def campaign_lock(store: Store, cfg: Config) -> Iterator[None]:
    """Hold the campaign's round lock for the block, or exit with status 3 saying who holds it."""
    from aloop.store import LockHeld, RoundLock

    try:
        with RoundLock.acquire(store, cfg.campaign, ttl_s=cfg.store.lock_ttl_s):
            yield
    except LockHeld as err:
        click.echo(f"aloop: another round is running: {err}", err=True)
        sys.exit(3)


@main.group("db")
def db() -> None:
    """The experiment database (SQLite file by default, PostgreSQL by URL)."""


@db.command("upgrade")
@config_option
@set_option
def db_upgrade(config_path: Path, overrides: tuple[str, ...]) -> None:
    """Create the database or migrate it to the newest schema (also done on every open)."""
    store = open_configured_store(resolve_config(config_path, overrides))
    click.echo(f"{store.display_url}: schema at revision {store.revision()} (newest)")


@main.group("labels")
def labels() -> None:
    """Labels in and out of the experiment database."""


@labels.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@config_option
@set_option
def labels_import(file: Path, config_path: Path, overrides: tuple[str, ...]) -> None:
    """Import labels from CSV or JSON lines (fields: formula or cif, optional space_group and
    a,b,c,alpha,beta,gamma, optional wyckoff, property, value, optional uncertainty, source, fidelity).

    Rejected rows are printed as `line N: reason`. Exit status 0: every row stored;
    1: some rows rejected, the valid ones stored; 2: file unreadable, nothing stored.
    """
    from aloop.label_files import LabelsFileError, import_labels

    cfg = resolve_config(config_path, overrides)
    store = open_configured_store(cfg)
    try:
        report = import_labels(store, file, campaign=cfg.campaign)
    except LabelsFileError as err:
        click.echo(f"aloop: {err}", err=True)
        sys.exit(2)
    for error in report.rejected:
        click.echo(str(error), err=True)
    click.echo(f"{file}: stored {report.stored} labels, rejected {len(report.rejected)} rows "
               f"(campaign {cfg.campaign!r}, {store.display_url})")
    sys.exit(report.exit_code)


@labels.command("export")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="CSV file (default: stdout).")
@config_option
@set_option
def labels_export(out: Path | None, config_path: Path, overrides: tuple[str, ...]) -> None:
    """Write the campaign's labels as CSV in the import format."""
    from aloop.label_files import export_labels

    cfg = resolve_config(config_path, overrides)
    store = open_configured_store(cfg)
    if out is None:
        export_labels(store, sys.stdout, campaign=cfg.campaign)
        return
    with out.open("w", newline="") as handle:
        n = export_labels(store, handle, campaign=cfg.campaign)
    click.echo(f"{out}: {n} labels of campaign {cfg.campaign!r}", err=True)


@main.command("status")
@config_option
@set_option
def status(config_path: Path, overrides: tuple[str, ...]) -> None:
    """Show the campaign: rounds with their stage, candidates by state, labels by source and property."""
    from rich.console import Console

    from aloop.status import campaign_status, print_status

    cfg = resolve_config(config_path, overrides)
    store = open_configured_store(cfg)
    with store.session() as session:
        status = campaign_status(session, cfg.campaign)
    print_status(status, Console(), database=store.display_url)


@main.command("round")
@config_option
@set_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--verbose", is_flag=True,
              help="Also show library warnings and log records here (round.log in the round's folder has them).")
def round_command(config_path: Path, overrides: tuple[str, ...], quiet: bool, verbose: bool) -> None:
    """Run one round (or resume the unfinished one): proxy, Crystal-GFN, batch, MLflow, oracle.

    Library warnings (pymatgen, torch, MLflow) go to round.log in the round's folder; the
    terminal gets their count and the log's path. Exit codes: 0 round done or waiting for
    review, 2 config error (oracle settings included), 3 another round holds the campaign's lock.
    """
    from rich.console import Console

    from aloop.oracle import OracleError
    from aloop.report import print_report
    from aloop.round import run_round
    from aloop.store import LockHeld

    cfg = resolve_config(config_path, overrides, oracle=True)
    console = Console(stderr=True)
    try:
        report = run_round(cfg, progress=not quiet, console=console, verbose=verbose)
    except OracleError as err:  # an oracle that fails to load once its settings are valid
        exit_config_error(err)
    except LockHeld as err:
        click.echo(f"aloop: another round is running: {err}", err=True)
        sys.exit(3)
    print_report(report, Console())


@main.command("submit")
@config_option
@set_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--verbose", is_flag=True,
              help="Also show library warnings and log records here (they always go to submit.log in the workdir).")
def submit(config_path: Path, overrides: tuple[str, ...], quiet: bool, verbose: bool) -> None:
    """Label the approved candidates now, without a new round.

    Reads the review tags from MLflow (approved and rejected candidates move on), sends the
    approved candidates to the configured oracle, collects jobs still pending and stores
    the labels. Library warnings go to <workdir>/<campaign>/submit.log; the terminal gets
    their count. Exit codes: 0 done (also when there is nothing to label), 2 config or
    oracle settings error, 3 a round of the campaign is running.
    """
    from rich.console import Console

    from aloop.hull import known_phases
    from aloop.labelling import label_approved, print_hull
    from aloop.logs import library_log
    from aloop.round import campaign_placement
    from aloop.space import CrystalSpace
    from aloop.tracking import client_for

    cfg = resolve_config(config_path, overrides, oracle=True)
    store = open_configured_store(cfg)
    campaign_id = campaign_id_of(store, cfg.campaign)
    console = Console()
    if campaign_id is None:
        console.print(f"campaign {cfg.campaign!r} has no candidates in {store.display_url}: nothing to label")
        return
    with library_log(verbose=verbose) as log:
        log.open(Path(cfg.workdir) / cfg.campaign / "submit.log")
        with campaign_lock(store, cfg):
            placement = campaign_placement(cfg, CrystalSpace.from_settings(cfg.space), store, campaign_id)
            report = label_approved(store, client_for(cfg.tracking_uri), campaign_id=campaign_id,
                                    settings=cfg.oracle, known=known_phases(cfg.space, cfg.data, cfg.hull),
                                    placement=placement, progress=not quiet)
    reviews, labelling = report.reviews, report.labelling
    console.print(f"reviews: {reviews.approved} approved, {reviews.rejected} rejected, {reviews.pending} pending")
    if labelling.submitted or labelling.labelled or labelling.failed or labelling.pending:
        console.print(f"{cfg.oracle.name}: {labelling.submitted} submitted, {labelling.labelled} labelled, "
                      f"{labelling.failed} failed, {labelling.pending} still pending"
                      + (f", {labelling.resubmitted} resubmitted" if labelling.resubmitted else ""))
        print_hull(console, labelling)
    else:
        console.print("nothing to label: no approved candidates and no pending oracle jobs")
    console.print(log.summary(), soft_wrap=True, markup=False)


@main.command("retry")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(FAILURE_KINDS),
              help=f"A failure kind to send again (repeatable). Default: {', '.join(TRANSIENT_KINDS)}.")
@click.option("--round", "round_number", type=click.IntRange(min=1), help="Only candidates proposed by this round.")
@config_option
@set_option
def retry(kinds: tuple[str, ...], round_number: int | None, config_path: Path, overrides: tuple[str, ...]) -> None:
    """Send failed candidates to the oracle again (failed -> approved).

    Moves the failed candidates whose latest failure is of a chosen kind back to approved;
    their failures stay as history. `aloop submit` or `make round` labels them again. Exit
    codes: 0 done (also when none matched), 2 config error, 3 a round of the campaign is running.
    """
    from collections import Counter

    from rich.console import Console

    from aloop.retry import current_failures, retry_failed
    from aloop.review import mirror_states
    from aloop.tracking import client_for

    cfg = resolve_config(config_path, overrides)
    kinds = kinds or TRANSIENT_KINDS
    store = open_configured_store(cfg)
    campaign_id = campaign_id_of(store, cfg.campaign)
    moved: list[int] = []
    if campaign_id is not None:
        with campaign_lock(store, cfg):
            with store.session() as session:
                kind_of = {f.candidate_id: f.kind for f in current_failures(session, campaign_id,
                                                                            round_number=round_number)}
            moved = retry_failed(store, campaign_id, kinds=kinds, round_number=round_number)
    console = Console()
    where = f"campaign {cfg.campaign!r}" + (f" round {round_number}" if round_number else "")
    if not moved:
        console.print(f"{where}: no failed candidates of kinds {', '.join(kinds)}: nothing to retry")
        return
    mirror_states(store, client_for(cfg.tracking_uri), campaign_id=campaign_id)
    console.print(f"{where}: {len(moved)} failed candidates moved back to approved")
    for kind, n in sorted(Counter(kind_of[i] for i in moved).items()):
        console.print(f"  {kind}: {n}")
    console.print("`aloop submit` or `make round` labels them again")


def parse_ids(text: str, option: str) -> list[int] | str:
    """``3,5,8`` -> ids, ``all`` -> ``"all"``; exit 2 on anything else."""
    if text.strip().lower() == "all":
        return "all"
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        click.echo(f"aloop: {option} takes candidate ids like 3,5,8 or 'all', not {text!r}", err=True)
        sys.exit(2)


@main.command("review")
@click.option("--approve", default="", metavar="IDS",
              help="Candidate ids to approve: 3,5,8, or all (every candidate whose tag is still pending).")
@click.option("--reject", default="", metavar="IDS",
              help="Candidate ids to reject: 3,5,8, or all (every candidate whose tag is still pending).")
@config_option
@set_option
def review(approve: str, reject: str, config_path: Path, overrides: tuple[str, ...]) -> None:
    """List the candidates awaiting review, or approve/reject them from the terminal.

    Decisions are written to the same MLflow tags (aloop.review) the UI edits; the next
    `aloop submit` or `make round` acts on them. Exit status 2: an id not awaiting review.
    """
    from rich.console import Console
    from rich.table import Table

    from aloop.review import awaiting_review, set_reviews
    from aloop.store import get_or_create_campaign
    from aloop.tracking import client_for

    cfg = resolve_config(config_path, overrides)
    store = open_configured_store(cfg)
    with store.session() as session:
        campaign_id = get_or_create_campaign(session, cfg.campaign).id
    client = client_for(cfg.tracking_uri)
    waiting = awaiting_review(store, client, campaign_id=campaign_id)
    decisions: dict[int, str] = {}
    for decision, text, option in (("approved", approve, "--approve"), ("rejected", reject, "--reject")):
        ids = parse_ids(text, option)
        decisions |= dict.fromkeys([c.id for c, tag in waiting if tag == "pending"] if ids == "all" else ids, decision)
    if decisions:
        try:
            set_reviews(store, client, campaign_id=campaign_id, decisions=decisions)
        except ValueError as err:
            click.echo(f"aloop: {err}", err=True)
            sys.exit(2)
        waiting = awaiting_review(store, client, campaign_id=campaign_id)
    table = Table(title=f"{cfg.campaign}: candidates awaiting review ({len(waiting)})")
    for column in ("id", "formula", "space group", "Wyckoff sites", "predicted", "acquisition", "review", "MLflow run"):
        table.add_column(column)
    for candidate, tag in waiting:
        predicted = "-" if candidate.proxy_mean is None else f"{candidate.proxy_mean:.3f} ± {candidate.proxy_std:.3f}"
        acquisition = "-" if candidate.acquisition is None else f"{candidate.acquisition:.3f}"
        table.add_row(str(candidate.id), candidate.formula, str(candidate.space_group), candidate.wyckoff or "-",
                      predicted, acquisition, tag, candidate.mlflow_run_id)
    console = Console()
    console.print(table)
    if decisions:
        console.print(f"{len(decisions)} decisions written to MLflow; `aloop submit` or `make round` acts on them")


@main.command("ui")
@config_option
@set_option
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True,
              help="Port of the MLflow UI.")
def ui(config_path: Path, overrides: tuple[str, ...], port: int) -> None:
    """Serve the MLflow UI on 127.0.0.1 for the campaign's tracking store.

    First prints the link to the latest round's candidate runs (formula, space group, review
    tag, prediction, acquisition and novelty as columns), then serves until Ctrl-C.

    Exit status 0: stopped by Ctrl-C (or SIGTERM); 1: the UI could not serve, the reason on
    stderr (the port is taken, or the server stopped on its own, e.g. dying at start); 2: a
    config, database or tracking-store error (nothing served).
    """
    import socket

    cfg = resolve_config(config_path, overrides)
    try:
        with socket.socket() as probe:  # the server binds the same way (SO_REUSEADDR)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
    except OSError as err:
        click.echo(f"aloop: cannot serve the MLflow UI on 127.0.0.1:{port}: {err.strerror} (another `aloop ui` "
                   "or server holds the port?); choose another with --port", err=True)
        sys.exit(1)
    from mlflow.exceptions import MlflowException

    try:
        link = _review_link(cfg, port)
    except MlflowException as err:
        click.echo(f"aloop: tracking store {cfg.tracking_uri}: {err.message}", err=True)
        sys.exit(2)
    click.echo(f"MLflow UI on http://127.0.0.1:{port} (tracking store {cfg.tracking_uri}); Ctrl-C stops it.\n{link}")
    sys.exit(_serve_mlflow_ui(cfg.tracking_uri, port))


def _review_link(cfg: Config, port: int) -> str:
    """Where reviewing starts: the latest round's candidate runs, else the experiment, else why there is none."""
    from aloop.store import find_campaign, latest_round
    from aloop.tracking import candidates_url, client_for, experiment_url, find_experiment

    client = client_for(cfg.tracking_uri)
    experiment_id = find_experiment(client, cfg.campaign)
    if experiment_id is None:
        return f"campaign {cfg.campaign!r} has no MLflow experiment yet: `make round` starts it"
    store = open_configured_store(cfg)
    try:
        with store.session() as session:
            campaign = find_campaign(session, cfg.campaign)
            latest = None if campaign is None else latest_round(session, campaign)
            number = None if latest is None else latest.number
    finally:
        store.close()
    if number is None:
        return f"campaign {cfg.campaign!r}, no round yet: {experiment_url(experiment_id, port=port)}"
    return f"round {number}'s candidates: {candidates_url(client, experiment_id, round_number=number, port=port)}"


def _serve_mlflow_ui(tracking_uri: str, port: int) -> int:
    """Run ``mlflow ui`` in its own process group until a signal stops it; returns ``aloop ui``'s exit status.

    SIGINT (Ctrl-C), SIGTERM and SIGHUP are passed on to the whole group (the server and its
    workers), as a terminal's Ctrl-C would; the server ending without one is a failure.
    """
    import contextlib
    import os
    import signal
    import subprocess

    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
                               "--host", "127.0.0.1", "--port", str(port)], process_group=0)
    stopped: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        stopped.append(signum)
        with contextlib.suppress(ProcessLookupError):  # the group is gone already
            os.killpg(server.pid, signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    status = server.wait()
    if stopped:
        return 0
    click.echo(f"aloop: the MLflow UI server stopped on its own (exit status {status}); its log above says why",
               err=True)
    return 1


@main.command("sample")
@config_option
@set_option
@click.option("--n", "n", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Number of crystals.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="CSV file to write.")
@click.option("--checkpoint", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Trained Crystal-GFN; without it the untrained (uniform) generator samples.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Above 1 flattens the policy, below 1 sharpens it.")
@click.option("--seed", type=int, default=None, help="Random seed (default: the config's seed).")
def sample_command(config_path: Path, overrides: tuple[str, ...], n: int, out: Path, checkpoint: Path | None,
                   temperature: float, seed: int | None) -> None:
    """Sample crystals from the Crystal-GFN into a CSV file.

    Columns: formula (full cell, e.g. "Fe4 O6"), space_group, a, b, c (Angstrom), alpha,
    beta, gamma (degrees), wyckoff (the Wyckoff sites, e.g. "Fe:12c O:18e"; empty when the
    generator decided none); with --checkpoint also log_reward, the generator's own
    estimate log Z + log P_F of the log reward it was trained on.
    """
    from aloop.gfn.checkpoint import CheckpointError
    from aloop.gfn.export import sample_table

    cfg = resolve_config(config_path, overrides)
    try:
        table = sample_table(cfg, n=n, checkpoint=checkpoint, temperature=temperature,
                             seed=cfg.seed if seed is None else seed, progress=True)
    except CheckpointError as err:
        click.echo(f"aloop: {err}", err=True)
        sys.exit(2)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    click.echo(f"wrote {len(table)} crystals to {out}")


@main.group("data")
def data_group() -> None:
    """Materials Project data: the local cache of mp-api searches."""


@data_group.command("pull")
@config_option
@set_option
def data_pull(config_path: Path, overrides: tuple[str, ...]) -> None:
    """Search the Materials Project for the configured space and (re)write the local cache.

    The API key is read from MP_API_KEY only. Exit status 0: cache written; 2: no key, a
    rejected key, a network or server error (the cache is left as it was).
    """
    from aloop.data import MPError, MPQuery, load_cache, pull, to_training_set
    from aloop.space import CrystalSpace

    cfg = resolve_config(config_path, overrides)
    query = MPQuery.from_settings(cfg.space, cfg.data.mp, scope=cfg.data.scope)
    cache_dir = Path(cfg.data.mp.cache_dir)
    try:
        report = pull(query, cache_dir=cache_dir)
    except MPError as err:
        click.echo(f"aloop: {err}", err=True)
        sys.exit(2)
    click.echo(f"{report.path}: {report.entries} entries ({report.unconverted} without a symmetric cell), "
               f"database {report.db_version or 'unknown'}, pulled {report.pulled_at}")
    learned = label_property(cfg.proxy.target)
    conversion = to_training_set(load_cache(query, cache_dir=cache_dir), target=learned,
                                 space=CrystalSpace.from_settings(cfg.space), scope=cfg.data.scope)
    click.echo(f"in the configured scope {cfg.data.scope} ({learned}): {conversion.describe()}")


@main.group("proxy")
def proxy_group() -> None:
    """The proxy on its own: fit it on a CSV of labelled crystals, evaluate it on another."""


data_file_option = click.option(
    "--data", "data_file", type=click.Path(path_type=Path), required=True,
    help="CSV: material_id, cif or (formula, space_group, a, b, c, alpha, beta, gamma), and "
         "formation_energy_per_atom or band_gap; optionally source.")


@proxy_group.command("fit")
@data_file_option
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("proxy"), show_default=True,
              help="Folder to save the fitted proxy in.")
@click.option("--target", type=click.Choice(["formation_energy_per_atom", "band_gap"]), default=None,
              help="Label column (default: the CSV's; formation_energy_per_atom when it has both).")
@config_option
@set_option
def proxy_fit(data_file: Path, out: Path, target: str | None, config_path: Path, overrides: tuple[str, ...]) -> None:
    """Fit the proxy (the config's proxy settings) on a CSV and save it. Exit status 2: unusable CSV."""
    from aloop.data.table import TableError, read_table
    from aloop.proxy import fit_proxy

    cfg = resolve_config(config_path, overrides)
    try:
        train = read_table(data_file, target=target)
    except TableError as err:
        click.echo(f"aloop: {err}", err=True)
        sys.exit(2)
    proxy = fit_proxy(train, cfg.proxy.model_copy(update={"target": train.target}), seed=cfg.seed, progress=True)
    proxy.save(out)
    noise = ", ".join(f"{source} {std:.3g}" for source, std in proxy.noise_std.items())
    click.echo(f"{out}: proxy of {train.target} fitted on {len(train)} crystals (label noise std: {noise})")


@proxy_group.command("eval")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help="Folder written by `aloop proxy fit` (or a round's proxy).")
@data_file_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def proxy_eval(model_dir: Path, data_file: Path, as_json: bool) -> None:
    """Held-out metrics of a saved proxy on a CSV: MAE, RMSE, NLL, 50%/90% interval coverage and the
    Spearman correlation of |error| with the predicted std. Exit status 2: unreadable model or CSV.
    """
    import json

    from rich.console import Console
    from rich.table import Table

    from aloop.data.table import TableError, read_table
    from aloop.proxy import Proxy, ProxyError, calibration

    try:
        proxy = Proxy.load(model_dir)
        result = calibration(proxy, read_table(data_file, target=proxy.target))
    except (ProxyError, TableError) as err:
        click.echo(f"aloop: {err}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    table = Table(title=f"proxy {model_dir} on {data_file} ({proxy.target})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.as_dict().items():
        table.add_row(name, str(value) if name == "n" else f"{value:.4f}")
    Console().print(table)
