"""Settings first: commands that build an oracle or a Crystal-GFN check its settings before anything is written.

Each command runs in an empty folder with the default stores (``sqlite:///aloop.db``,
``sqlite:///mlflow.db``, ``.aloop/``), so "nothing touched" is "the folder is still empty".
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from aloop.cli import main
from aloop.config import CONFIG_DIR

ORACLE_COMMANDS = [["config"], ["round", "--quiet"], ["submit", "--quiet"]]
GFN_COMMANDS = [["config"], ["round", "--quiet"], ["sample", "--n", "5", "--out", "samples.csv"]]


@pytest.fixture(autouse=True)
def _no_outside_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALOOP_DB_URL", "MLFLOW_TRACKING_URI", "MP_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def run_in_empty_folder(folder: Path, args: list[str], *overrides: str) -> tuple[Result, list[str]]:
    """``aloop ARGS --config smoke.yaml --set ...`` run in ``folder``; the result and what the folder holds after."""
    folder.mkdir()
    settings = [arg for override in overrides for arg in ("--set", override)]
    with CliRunner().isolated_filesystem(temp_dir=folder) as cwd:
        result = CliRunner().invoke(main, [*args, "--config", str(CONFIG_DIR / "smoke.yaml"), *settings])
        left = sorted(os.listdir(cwd))
    return result, left


def assert_config_error(result: Result, left: list[str], *expected: str) -> None:
    """Exit 2, the expected text on stderr, no traceback, nothing written."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.output.startswith("aloop: config error\n")
    for text in expected:
        assert text in result.output, result.output
    assert "Traceback" not in result.output
    assert left == []


@pytest.mark.parametrize("args", ORACLE_COMMANDS, ids=lambda args: args[0])
@pytest.mark.parametrize(("override", "expected"), [
    ("oracle.settings.fmax=-1", ["oracle.settings.fmax=-1 (oracle 'chgnet'): Input should be greater than 0"]),
    ("oracle.settings.colour=red", ["oracle.settings: unknown key 'colour' for oracle 'chgnet'", "'fmax'"]),
    ("oracle.name=nosuch", ["'nosuch'", "chgnet", "lookup"]),
])
def test_a_bad_oracle_setting_stops_the_command_before_anything_is_written(tmp_path: Path, args: list[str],
                                                                             override: str, expected: list[str]):
    result, left = run_in_empty_folder(tmp_path / "work", args, override)
    assert_config_error(result, left, *expected)


def test_config_prints_the_resolved_config_when_the_oracle_settings_are_valid(tmp_path: Path):
    result, left = run_in_empty_folder(tmp_path / "work", ["config"], "oracle.settings.fmax=0.2")
    assert result.exit_code == 0, result.output
    assert "fmax: 0.2" in result.output and left == []


def test_commands_that_build_no_oracle_ignore_its_settings(tmp_path: Path):
    result, left = run_in_empty_folder(tmp_path / "work", ["status"], "oracle.settings.fmax=-1")
    assert result.exit_code == 0, result.output
    assert "aloop.db" in left


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
@pytest.mark.parametrize("args", GFN_COMMANDS, ids=lambda args: args[0])
def test_cuda_on_a_machine_without_it_is_a_config_error(tmp_path: Path, args: list[str]):
    result, left = run_in_empty_folder(tmp_path / "work", args, "gfn.device=cuda")
    assert_config_error(result, left, "gfn.device='cuda'", "CUDA is not available on this machine",
                        "use 'auto' (CUDA when present, else CPU) or 'cpu'")
