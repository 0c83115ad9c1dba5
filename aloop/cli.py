"""The ``aloop`` command line: one subcommand per thing a user does."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from aloop.config import DEFAULT_CONFIG, Config, ConfigError, load_config

config_option = click.option(
    "--config", "config_path", type=click.Path(path_type=Path), default=DEFAULT_CONFIG,
    show_default=True, help="YAML config file.",
)
set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a config value, e.g. --set gfn.train_steps=200 (repeatable).",
)


def resolve_config(config_path: Path, overrides: tuple[str, ...]) -> Config:
    """Load the config or exit with status 2 and the error on stderr."""
    try:
        return load_config(config_path, overrides)
    except ConfigError as err:
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
    """Validate a config and print it as resolved (with overrides)."""
    import yaml

    cfg = resolve_config(config_path, overrides)
    click.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


@main.command("ui")
@config_option
@set_option
@click.option("--port", default=5000, show_default=True, help="Port of the MLflow UI.")
def ui(config_path: Path, overrides: tuple[str, ...], port: int) -> None:
    """Serve the MLflow UI on 127.0.0.1 for the campaign's tracking store."""
    import os

    cfg = resolve_config(config_path, overrides)
    click.echo(f"MLflow UI on http://127.0.0.1:{port} (tracking store {cfg.tracking_uri}); Ctrl-C stops it.")
    os.execv(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", cfg.tracking_uri,
                              "--host", "127.0.0.1", "--port", str(port)])
