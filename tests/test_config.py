"""Config loading: real defaults, overrides, and errors that say where and what."""

from pathlib import Path

import pytest
import yaml

from aloop.config import CONFIG_DIR, Config, ConfigError, load_config


def test_default_yaml_matches_model_defaults():
    # configs/default.yaml is the documented source of defaults; the models must agree.
    assert load_config(CONFIG_DIR / "default.yaml") == Config()


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    assert isinstance(load_config(path), Config)


def test_dotted_override_parses_yaml_values():
    cfg = load_config(CONFIG_DIR / "smoke.yaml",
                      ["gfn.train_steps=200", "space.elements=[Fe, O]", "space.space_groups=null"])
    assert cfg.gfn.train_steps == 200
    assert cfg.space.elements == ["Fe", "O"]
    assert cfg.space.space_groups is None


@pytest.mark.parametrize(
    "override, expected",
    [
        ("gfn.train_steps=-5", ["gfn.train_steps=-5", "greater than 0"]),
        ("gfn.train_steps=lots", ["gfn.train_steps='lots'", "integer"]),
        ("gfn.trainsteps=5", ["unknown key 'gfn.trainsteps'", "train_steps"]),
        ("proxy.target=bandgap", ["proxy.target='bandgap'", "formation_energy_per_atom"]),
        ("space.elements=[Fe, Xx]", ["Xx"]),
        ("space.point_symmetries=[bad]", ["space.point_symmetries.0='bad'", "'centrosymmetric'",
                                          "'non_centrosymmetric_polar'", "'non_centrosymmetric_non_polar'"]),
        ("space.lattice.length={min: 5, max: 2}", ["space.lattice.length", "min=5.0 must be below max=2.0"]),
    ],
)
def test_bad_values_name_file_key_value_and_expectation(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIG_DIR / "smoke.yaml", [override])
    message = str(err.value)
    assert "smoke.yaml" in message
    for fragment in expected:
        assert fragment in message


def test_unknown_key_in_file(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"gfn": {"train_stepz": 3}}))
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'gfn.train_stepz'"):
        load_config(path)


def test_unreadable_and_malformed_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("gfn: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(Exception):
        cfg.seed = 3  # type: ignore[misc]


def test_environment_overrides_urls(monkeypatch):
    monkeypatch.setenv("ALOOP_DB_URL", "sqlite:////tmp/x.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/m.db")
    cfg = Config()
    assert cfg.db_url == "sqlite:////tmp/x.db"
    assert cfg.tracking_uri == "sqlite:////tmp/m.db"
