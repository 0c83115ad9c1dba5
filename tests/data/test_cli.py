"""`aloop data pull` against the local stand-in of the Materials Project API."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from aloop.cli import main

from .mp_server import VALID_KEY, FakeMaterialsProject


def pull(fake_mp: FakeMaterialsProject, cache: Path, *overrides: str) -> object:
    return CliRunner().invoke(main, ["data", "pull", "--set", f"data.mp.endpoint={fake_mp.url}",
                                     "--set", f"data.mp.cache_dir={cache}",
                                     *(arg for o in overrides for arg in ("--set", o))])


def test_pull_writes_the_cache_and_reports_the_space(fake_mp: FakeMaterialsProject, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MP_API_KEY", VALID_KEY)
    result = pull(fake_mp, tmp_path, "data.scope=space")
    assert result.exit_code == 0, result.output
    assert "6 entries" in result.output and "database 2025.09.25" in result.output
    assert "kept 4 of 6 entries (source mp)" in result.output
    assert VALID_KEY not in result.output and len(list(tmp_path.glob("summary-*.json.gz"))) == 1


def test_pull_follows_the_scope(fake_mp: FakeMaterialsProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MP_API_KEY", VALID_KEY)
    result = pull(fake_mp, tmp_path, "data.scope=all")
    assert result.exit_code == 0, result.output
    assert "7 entries" in result.output  # Cs Cl too, outside the default space
    assert ("kept 7 of 7 entries (source mp): 4 inside the space, 3 outside (too_few_elements 1, "
            "too_many_atoms_of_element 1, unknown_element 1)") in result.output


def test_errors_exit_with_status_2_and_leave_no_cache(fake_mp: FakeMaterialsProject, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    no_key = pull(fake_mp, tmp_path)
    assert no_key.exit_code == 2 and "MP_API_KEY is not set" in no_key.output
    monkeypatch.setenv("MP_API_KEY", "x" * 32)
    bad_key = pull(fake_mp, tmp_path)
    assert bad_key.exit_code == 2 and "rejected the API key" in bad_key.output
    assert not any(tmp_path.iterdir())
