"""`aloop sample` writes exactly the documented columns, with log_reward only given a checkpoint."""

import pandas as pd
import yaml
from click.testing import CliRunner

from aloop.cli import main
from aloop.config import load_config
from aloop.gfn import build_policy, save_checkpoint

from .conftest import SMALL, TINY_SPACE

COLUMNS = ["formula", "space_group", "a", "b", "c", "alpha", "beta", "gamma", "wyckoff"]


def _config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "space": {"elements": ["Na", "F"], "max_atoms_per_element": 4, "space_groups": [221, 225]},
        "gfn": SMALL.model_dump(mode="json"),
    }))
    assert load_config(path).space == load_config(None, TINY_SPACE).space
    return path


def test_sample_without_checkpoint_writes_the_columns(tmp_path):
    out = tmp_path / "out" / "samples.csv"
    result = CliRunner().invoke(main, ["sample", "--config", str(_config(tmp_path)), "--n", "40", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert list(table.columns) == COLUMNS and len(table) == 40
    assert set(table.formula) <= {"Na1 F1", "Na3 F3", "Na4 F4"} and set(table.space_group) <= {221, 225}
    assert (table[table.space_group == 225].formula == "Na4 F4").all()
    assert (table.a == table.c).all() and (table.alpha == 90).all()


def test_sample_with_checkpoint_adds_log_reward_and_rejects_another_space(tmp_path, tiny_env, small_env):
    checkpoint = save_checkpoint(tmp_path / "gfn.pt", tiny_env, build_policy(tiny_env, SMALL), SMALL)
    out = tmp_path / "samples.csv"
    args = ["sample", "--config", str(_config(tmp_path)), "--n", "30", "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--checkpoint", str(checkpoint)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert list(table.columns) == [*COLUMNS, "log_reward"]
    assert table.log_reward.notna().all()
    other = save_checkpoint(tmp_path / "other.pt", small_env, build_policy(small_env, SMALL), SMALL)
    result = CliRunner().invoke(main, [*args, "--checkpoint", str(other)])
    assert result.exit_code == 2 and "another crystal space" in result.output
