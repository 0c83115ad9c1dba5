"""`aloop proxy fit` and `aloop proxy eval` on small CSVs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from aloop.cli import main
from aloop.space.composition import is_wyckoff_compatible

from .conftest import random_crystals, truth

FAST = ["--set", "proxy.min_steps=150", "--set", "proxy.hidden_dims=[32]", "--set", "proxy.inducing_points=32",
        "--set", "proxy.epochs=1"]


def write_csv(path: Path, *, seed: int, n: int) -> Path:
    """``n`` synthetic crystals whose counts fit their group's Wyckoff positions (the CSV reader checks that)."""
    batch = random_crystals(8 * n, seed=seed)
    fits = [i for i, c in enumerate(batch.to_crystals())
            if is_wyckoff_compatible(c.space_group, [int(x) for x in c.composition.values()])]
    batch = batch[torch.tensor(fits[:n])]
    crystals = batch.to_crystals()
    pd.DataFrame({
        "material_id": [f"syn-{seed}-{i}" for i in range(n)],
        "formula": [c.formula.replace(" ", "") for c in crystals],
        "space_group": [c.space_group for c in crystals],
        **{k: [c.lattice[j] for c in crystals] for j, k in enumerate(("a", "b", "c", "alpha", "beta", "gamma"))},
        "formation_energy_per_atom": truth(batch).tolist(),
    }).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    result = CliRunner().invoke(main, ["proxy", "fit", "--data", str(write_csv(root / "train.csv", seed=0, n=200)),
                                       "--out", str(root / "model"), *FAST])
    assert result.exit_code == 0, result.output
    assert "proxy of formation_energy_per_atom fitted on 200 crystals" in result.output
    return root / "model", write_csv(root / "test.csv", seed=1, n=60)


def test_eval_prints_one_json_object(fitted: tuple[Path, Path]) -> None:
    model, test = fitted
    result = CliRunner().invoke(main, ["proxy", "eval", "--model", str(model), "--data", str(test), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert set(metrics) == {"n", "mae", "rmse", "nll", "coverage_50", "coverage_90", "spearman_err_std"}
    assert metrics["n"] == 60 and 0 <= metrics["coverage_90"] <= 1 and metrics["rmse"] >= metrics["mae"] > 0


def test_eval_prints_a_table(fitted: tuple[Path, Path]) -> None:
    model, test = fitted
    result = CliRunner().invoke(main, ["proxy", "eval", "--model", str(model), "--data", str(test)])
    assert result.exit_code == 0, result.output
    assert "coverage_90" in result.output and "spearman_err_std" in result.output and "60" in result.output


def test_unreadable_inputs_exit_with_status_2(fitted: tuple[Path, Path], tmp_path: Path) -> None:
    model, test = fitted
    runner = CliRunner()
    missing = runner.invoke(main, ["proxy", "eval", "--model", str(model), "--data", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2 and "cannot read as CSV" in missing.output
    no_model = runner.invoke(main, ["proxy", "eval", "--model", str(tmp_path), "--data", str(test)])
    assert no_model.exit_code == 2 and "not a saved proxy" in no_model.output
    (tmp_path / "bad.csv").write_text("material_id,formula\nx,NaCl\n")
    bad_fit = runner.invoke(main, ["proxy", "fit", "--data", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "m")])
    assert bad_fit.exit_code == 2 and "lack" in bad_fit.output and not (tmp_path / "m").exists()
