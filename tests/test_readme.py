"""Every command of README.md's ```bash blocks, run as written: a broken README command fails a test.

A README command line is run by ``run_readme(line, values, overrides=...)``, which only

- appends ``--set`` overrides (``make``: ``ARGS="--set ..."``) that put the database, the
  MLflow store, the workdir and the Materials Project cache under the test's folder and make
  rounds tiny (the sizes of ``configs/smoke.yaml``); an override never repeats a key the line
  sets itself, so the README's value is the one run;
- replaces the placeholders of ``PLACEHOLDERS`` by real values;
- runs ``[optional part]`` without it, or with it when asked (a test runs both).

``RUN_BY`` names the test that runs each README command and ``EXCEPTIONS`` the few run
elsewhere; ``export VAR=...`` lines are environment, not commands. The first meta-test fails
on a README command in neither table; the last one fails when a test that ran did not run
its README commands (``EXECUTED``, filled by ``run_readme``).

The fast tests share one campaign (``campaign``: one tiny round of the default config,
stopped for review) and call ``aloop.cli.main`` in-process; the rounds with the CHGNet
oracle on the restriction presets and ``make round`` run the installed console script and
``make`` and are marked ``slow``.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from data.mp_server import VALID_KEY, FakeMaterialsProject, fixture_documents, serve
from mlflow.tracking import MlflowClient
from proxy.test_cli import FAST, write_csv
from pymatgen.core import Composition
from round.conftest import smoke_overrides
from sqlalchemy import func, select

from aloop.cli import main
from aloop.config import CONFIG_DIR, load_config
from aloop.oracle import TRANSIENT_KINDS
from aloop.retry import current_failures
from aloop.store import REFERENCE_SOURCE, Candidate, Label, Material, OracleJob, Store, find_campaign, open_store
from aloop.store.models import Round
from aloop.space.wyckoff import parse_sites, site_errors
from aloop.tracking import REVIEW_TAG

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
ALOOP = Path(sys.executable).with_name("aloop")
OUTSIDE_CONFIGURATION = ("ALOOP_DB_URL", "MLFLOW_TRACKING_URI", "MP_API_KEY")

RUN_BY = {
    "make round": "test_make_round",
    "aloop round --config configs/fe-o.yaml --set gfn.train_steps=200": "test_preset_round",
    "aloop config --config configs/smoke.yaml": "test_config_prints_the_resolved_config",
    "aloop round --config configs/fe-o.yaml": "test_preset_round",
    "aloop round --config configs/li-mn-o.yaml": "test_preset_round",
    "aloop round --config configs/cubic.yaml": "test_preset_round",
    "aloop round --config configs/lattice-range.yaml": "test_preset_round",
    "aloop sample --n 1000 --out samples.csv [--checkpoint .aloop/default/round-1/gfn.pt]":
        "test_sample_with_and_without_the_round_checkpoint",
    "aloop data pull": "test_data_pull_fills_the_cache",
    "aloop data pull --config configs/fe-o.yaml": "test_data_pull_fills_the_cache",
    "aloop proxy fit --data train.csv --out proxy/": "test_proxy_fit_then_eval",
    "aloop proxy eval --model proxy/ --data test.csv": "test_proxy_fit_then_eval",
    "aloop proxy eval --model proxy/ --data test.csv --json": "test_proxy_fit_then_eval",
    "aloop review": "test_review_then_submit",
    "aloop review --approve 12,15 --reject 13": "test_review_then_submit",
    "aloop review --approve all": "test_review_then_submit",
    "aloop submit": "test_review_then_submit",  # and test_retry_then_submit
    "aloop db upgrade": "test_db_upgrade_creates_the_database",
    "aloop status": "test_labels_import_export_and_status",
    "aloop labels import labels.csv": "test_labels_import_export_and_status",
    "aloop labels export --out all.csv": "test_labels_import_export_and_status",
    "aloop retry": "test_retry_then_submit",
    "aloop retry --kind not_converged --round 3": "test_retry_then_submit",
}
"""README command -> the test of this module that runs it."""

EXCEPTIONS = {
    "make test": "the test suite itself: CI's .ci/run runs `make test`, then `make test-slow`",
    "make ui": "only execs `aloop ui --config $(CONFIG)` (default stores, no ARGS) and serves until Ctrl-C; "
               "tests/round/test_ui.py runs `aloop ui` and opens its page in Chromium",
}
"""README commands run elsewhere: why, and where."""

PLACEHOLDERS = {
    "labels.csv": "the README's ```csv example, written to the test's folder",
    "all.csv": "a file in the test's folder",
    "train.csv": "200 synthetic Li-Mn-O crystals with a known target (tests/proxy/test_cli.py's write_csv)",
    "test.csv": "60 more of them",
    "proxy/": "a folder in the test's folder",
    "samples.csv": "a file in the test's folder",
    ".aloop/default/round-1/gfn.pt": "the Crystal-GFN checkpoint of the campaign's round 1 (its workdir)",
    "12,15": "the first two candidates awaiting review",
    "13": "the third",
    "3": "round 1, the campaign's only round",
}
"""README placeholder -> what a test puts in its place."""


def readme_commands(text: str) -> list[str]:
    """The command lines of ```bash blocks, in order, once each: comments stripped, continuation
    lines joined, the ``.venv/bin/`` prefix dropped."""
    commands: list[str] = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE):
        pending = ""
        for raw in block.splitlines():
            line = pending + re.sub(r"(^|\s)#.*$", "", raw).strip()
            if line.endswith("\\"):
                pending = line[:-1].strip() + " "
                continue
            pending = ""
            if line:
                commands.append(line.removeprefix(".venv/bin/"))
    return list(dict.fromkeys(commands))


def command_kind(line: str) -> str:
    """``aloop``, ``make``, ``export`` (environment, not a command) or ``other``."""
    word = line.split()[0]
    return word if word in ("aloop", "make", "export") else "other"


def yaml_overrides(path: Path, *sections: str) -> list[str]:
    """``KEY=VALUE`` overrides of every value of these sections of a config file (JSON values, which YAML reads)."""
    def leaves(prefix: str, value: object) -> Iterator[str]:
        if isinstance(value, dict):
            for key, inner in value.items():
                yield from leaves(f"{prefix}.{key}", inner)
        else:
            yield f"{prefix}={json.dumps(value)}"

    config = yaml.safe_load(path.read_text())
    return [override for section in sections for override in leaves(section, config[section])]


SMOKE = CONFIG_DIR / "smoke.yaml"
TINY = yaml_overrides(SMOKE, "data", "proxy", "gfn", "selection", "oracle")
"""The sizes (and oracle settings) of the smoke config: a round in seconds."""
SMOKE_SPACE = yaml_overrides(SMOKE, "space")
"""The smoke config's crystal space (Li-Mn-O, few atoms): a cold start with three elemental references."""
SMOKE_CONFIG = load_config(SMOKE)


@dataclass(frozen=True)
class Ran:
    """What a README command did."""

    exit_code: int
    output: str
    """stdout and stderr."""


EXECUTED: set[tuple[str, bool]] = set()
"""(README command, with its [optional part]) of every ``run_readme`` call of this session."""
RAN: set[tuple[str, str | None]] = set()
"""(test name, README command it was parametrized with) of every test of this module that ran."""


def environment(extra: Mapping[str, str]) -> dict[str, str | None]:
    """No outside database, tracking store or key (``None`` unsets), wide tables, and ``extra``."""
    return {**dict.fromkeys(OUTSIDE_CONFIGURATION), "COLUMNS": "200", **extra}


def invoke(args: Sequence[str], env: Mapping[str, str] = {}) -> Ran:
    """``aloop ARGS`` in this process, from the repository root."""
    with contextlib.chdir(REPO):
        result = CliRunner().invoke(main, list(args), env=environment(env))
    return Ran(result.exit_code, result.output)


def run_readme(line: str, values: Mapping[str, str] = {}, *, overrides: Sequence[str] = (), optional: bool = False,
               script: bool = False, env: Mapping[str, str] = {}) -> Ran:
    """Run README command ``line`` from the repository root, placeholders replaced by ``values``.

    Args:
        values: placeholder (a word of ``line``, a key of ``PLACEHOLDERS``) -> its value.
        overrides: ``KEY=VALUE`` appended as ``--set`` options (``make``: as ``ARGS``), but for
            keys the line sets itself.
        optional: keep the line's ``[...]`` part (without its brackets); else drop it.
        script: run the installed console script ``.venv/bin/aloop`` (``make`` always runs
            in a process of its own); else ``aloop.cli.main`` in this process.
    """
    assert line in readme_commands(README.read_text()), f"not a README command (any more?): {line!r}"
    words = shlex.split(re.sub(r"\[([^]]*)]", r"\1" if optional else "", line))
    assert set(values) <= set(PLACEHOLDERS) and set(values) <= set(words), f"{sorted(values)} in {line!r}?"
    words = [values.get(word, word) for word in words]
    own = {word.split("=")[0] for previous, word in itertools.pairwise(words) if previous == "--set"}
    extra = [arg for override in overrides if override.split("=")[0] not in own for arg in ("--set", override)]
    if words[0] == "make" or script:
        command = [*words, f"ARGS={shlex.join(extra)}"] if words[0] == "make" else [str(ALOOP), *words[1:], *extra]
        settings = {k: v for k, v in {**os.environ, **environment(env)}.items() if v is not None}
        done = subprocess.run(command, check=False, cwd=REPO, env=settings, capture_output=True, text=True, timeout=580)
        ran = Ran(done.returncode, done.stdout + done.stderr)
    else:
        ran = invoke([*words[1:], *extra], env)
    EXECUTED.add((line, optional))
    return ran


@pytest.fixture(autouse=True)
def _record_ran(request: pytest.FixtureRequest) -> None:
    callspec = getattr(request.node, "callspec", None)
    RAN.add((request.node.originalname, callspec.params.get("line") if callspec else None))


@dataclass(frozen=True)
class Campaign:
    """Campaign ``default`` of the default config: stores under ``root``, one round stopped for review."""

    root: Path
    overrides: tuple[str, ...]

    def store(self) -> Store:
        return open_store(f"sqlite:///{self.root / 'aloop.db'}")

    def states(self) -> dict[int, str]:
        store = self.store()
        with store.session() as session:
            states = {c.id: c.state for c in session.scalars(select(Candidate))}
        store.close()
        return states

    def job_counts(self) -> dict[int, int]:
        """Oracle jobs of each candidate."""
        store = self.store()
        with store.session() as session:
            query = select(OracleJob.candidate_id, func.count()).group_by(OracleJob.candidate_id)
            counts = {candidate_id: n for candidate_id, n in session.execute(query)}
        store.close()
        return counts


@pytest.fixture(scope="session")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Campaign:
    """``aloop round --set review=manual`` on the default config, smoke-sized and in the smoke space,
    with relaxations cut at 30 steps so that some stop unconverged (``aloop retry`` has work to do)."""
    root = tmp_path_factory.mktemp("campaign")
    overrides = (*smoke_overrides(root), *TINY, *SMOKE_SPACE, "oracle.settings={fmax: 0.3, max_steps: 30}")
    round_ = invoke(["round", "--quiet", *(arg for o in (*overrides, "review=manual") for arg in ("--set", o))])
    assert round_.exit_code == 0 and "waiting for review" in round_.output, round_.output[-3000:]
    return Campaign(root, overrides)


def test_every_readme_command_is_run_here_or_excepted() -> None:
    text = README.read_text()
    fences = re.findall(r"^```(\S*)\n.*?^```", text, flags=re.DOTALL | re.MULTILINE)
    assert not set(fences) & {"sh", "shell", "console", "zsh"}, "shell commands go in ```bash blocks, read here"
    commands = readme_commands(text)
    environment_lines = [line for line in commands if command_kind(line) == "export"]
    assert all(re.fullmatch(r"export [A-Z_]+=\S+", line) for line in environment_lines), environment_lines
    run = [line for line in commands if command_kind(line) != "export"]  # aloop, make and any other command
    nobody = [line for line in run if line not in RUN_BY and line not in EXCEPTIONS]
    assert not nobody, f"README commands that no test runs: add each to RUN_BY (with a test) or EXCEPTIONS: {nobody}"
    assert not set(RUN_BY) & set(EXCEPTIONS)
    stale = (set(RUN_BY) | set(EXCEPTIONS)) - set(run)
    assert not stale, f"no longer README commands: {sorted(stale)}"
    assert {test for test in RUN_BY.values() if not callable(globals().get(test))} == set()


def test_readme_commands_strips_comments_joins_continuations_and_drops_the_venv_prefix() -> None:
    text = ("```bash\nexport X=1   # a comment\n.venv/bin/aloop review \\\n  --approve all  # all\n"
            "# only a comment\nmake round\nmake round\n```\n```yaml\nnot: bash\n```\n")
    assert readme_commands(text) == ["export X=1", "aloop review --approve all", "make round"]
    assert [command_kind(line) for line in readme_commands(text)] == ["export", "aloop", "make"]


def test_config_prints_the_resolved_config() -> None:
    ran = run_readme("aloop config --config configs/smoke.yaml")

    assert ran.exit_code == 0, ran.output
    assert yaml.safe_load(ran.output) == SMOKE_CONFIG.model_dump(mode="json")


def test_db_upgrade_creates_the_database(tmp_path: Path) -> None:
    ran = run_readme("aloop db upgrade", overrides=smoke_overrides(tmp_path))

    assert ran.exit_code == 0, ran.output
    store = open_store(f"sqlite:///{tmp_path / 'aloop.db'}")
    revision = store.revision()
    store.close()
    assert revision and f"{tmp_path / 'aloop.db'}: schema at revision {revision} (newest)" in ran.output


def test_review_then_submit(campaign: Campaign) -> None:
    store = campaign.store()
    with store.session() as session:
        waiting = {c.id: c.mlflow_run_id for c in session.scalars(select(Candidate).where(
            Candidate.state == "proposed", Candidate.mlflow_run_id.is_not(None)).order_by(Candidate.id))}
    store.close()
    assert len(waiting) >= 3, waiting
    client = MlflowClient(tracking_uri=f"sqlite:///{campaign.root / 'mlflow.db'}")

    def tags() -> dict[int, str]:
        return {i: client.get_run(run).data.tags.get(REVIEW_TAG) for i, run in waiting.items()}

    listed = run_readme("aloop review", overrides=campaign.overrides)
    assert listed.exit_code == 0, listed.output
    assert f"awaiting review ({len(waiting)})" in listed.output
    assert all(re.search(rf"│ {i} +│", listed.output) for i in waiting), listed.output

    a, b, c, *rest = waiting
    decided = run_readme("aloop review --approve 12,15 --reject 13", {"12,15": f"{a},{b}", "13": str(c)},
                         overrides=campaign.overrides)
    assert decided.exit_code == 0, decided.output
    assert "3 decisions written to MLflow" in decided.output
    assert tags() == {a: "approved", b: "approved", c: "rejected", **dict.fromkeys(rest, "pending")}

    everything = run_readme("aloop review --approve all", overrides=campaign.overrides)
    assert everything.exit_code == 0 and f"{len(rest)} decisions written" in everything.output, everything.output
    assert tags() == {a: "approved", b: "approved", c: "rejected", **dict.fromkeys(rest, "approved")}  # `all`: the pending

    submitted = run_readme("aloop submit", overrides=campaign.overrides)
    assert submitted.exit_code == 0, submitted.output
    assert f"reviews: {len(waiting) - 1} approved, 1 rejected, 0 pending" in submitted.output
    assert f"chgnet: {len(waiting) - 1} submitted" in submitted.output
    states, jobs = campaign.states(), campaign.job_counts()
    assert states[c] == "rejected" and not jobs.get(c)
    approved = [i for i in waiting if i != c]
    assert {states[i] for i in approved} <= {"labelled", "failed"} and all(jobs.get(i) for i in approved)


def test_labels_import_export_and_status(campaign: Campaign, tmp_path: Path) -> None:
    [example] = re.findall(r"^```csv\n(.*?)^```", README.read_text(), flags=re.DOTALL | re.MULTILINE)
    (tmp_path / "labels.csv").write_text(example)

    imported = run_readme("aloop labels import labels.csv", {"labels.csv": str(tmp_path / "labels.csv")},
                          overrides=campaign.overrides)

    assert imported.exit_code == 0, imported.output
    assert "stored 2 labels, rejected 0 rows (campaign 'default'" in imported.output

    exported = run_readme("aloop labels export --out all.csv", {"all.csv": str(tmp_path / "all.csv")},
                          overrides=campaign.overrides)

    assert exported.exit_code == 0, exported.output
    with (tmp_path / "all.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert f"{len(rows)} labels of campaign 'default'" in exported.output
    store = campaign.store()
    with store.session() as session:
        ok = session.scalar(select(func.count()).select_from(Label).where(Label.status == "ok"))
        references = session.scalar(select(func.count()).select_from(Label).join(Material).where(
            Label.status == "ok", Material.source == REFERENCE_SOURCE))
    store.close()
    assert references == 3 and len(rows) == ok - references  # the hull's Li, Mn, O references stay out
    by_formula = {(row["formula"].replace(" ", ""), row["property"]): row for row in rows}  # "Na4 Cl4"
    assert float(by_formula["Na4Cl4", "formation_energy_per_atom"]["value"]) == -2.1
    assert by_formula["Na4Cl4", "formation_energy_per_atom"]["source"] == "import"
    assert by_formula["Fe2O3", "band_gap"]["source"] == "lab"
    assert any(row["source"].startswith("chgnet") and row["space_group"] for row in rows)

    status = run_readme("aloop status", overrides=campaign.overrides)

    assert status.exit_code == 0, status.output
    store = campaign.store()
    with store.session() as session:
        [stage] = session.scalars(select(Round.stage))
    store.close()
    assert "campaign default" in status.output and re.search(rf"│ 1 +│ {stage} +│", status.output), status.output
    assert re.search(r"│ lab +│ band_gap +│ 1 ", status.output), status.output


def test_retry_then_submit(campaign: Campaign) -> None:
    store = campaign.store()
    with store.session() as session:
        campaign_id = find_campaign(session, "default").id
        transient = [f.candidate_id for f in current_failures(session, campaign_id) if f.kind in TRANSIENT_KINDS]
        not_converged = [f.candidate_id for f in current_failures(session, campaign_id, round_number=1)
                         if f.kind == "not_converged"]
    store.close()
    jobs = campaign.job_counts()

    default = run_readme("aloop retry", overrides=campaign.overrides)

    assert default.exit_code == 0, default.output
    assert (f"{len(transient)} failed candidates moved back" if transient else "nothing to retry") in default.output
    assert not_converged, "the smoke round left no not_converged failure: the next command would have nothing to do"

    asked = run_readme("aloop retry --kind not_converged --round 3", {"3": "1"}, overrides=campaign.overrides)

    assert asked.exit_code == 0, asked.output
    assert f"round 1: {len(not_converged)} failed candidates moved back to approved" in asked.output
    assert f"not_converged: {len(not_converged)}" in asked.output
    moved = not_converged + transient
    assert {campaign.states()[i] for i in moved} == {"approved"}

    submitted = run_readme("aloop submit", overrides=campaign.overrides)

    assert submitted.exit_code == 0, submitted.output
    assert f"chgnet: {len(moved)} submitted" in submitted.output
    states, again = campaign.states(), campaign.job_counts()
    assert all(states[i] in {"labelled", "failed"} and again[i] == jobs[i] + 1 for i in moved)  # a new job each


def test_sample_with_and_without_the_round_checkpoint(campaign: Campaign, tmp_path: Path) -> None:
    line = "aloop sample --n 1000 --out samples.csv [--checkpoint .aloop/default/round-1/gfn.pt]"
    checkpoint = campaign.root / "work" / "default" / "round-1" / "gfn.pt"
    columns = ["formula", "space_group", "a", "b", "c", "alpha", "beta", "gamma", "wyckoff"]
    for optional, extra in ((False, []), (True, ["log_reward"])):
        out = tmp_path / f"samples-{optional}.csv"
        values = {"samples.csv": str(out)} | ({".aloop/default/round-1/gfn.pt": str(checkpoint)} if optional else {})

        ran = run_readme(line, values, overrides=campaign.overrides, optional=optional)

        assert ran.exit_code == 0, ran.output
        assert f"wrote 1000 crystals to {out}" in ran.output
        with out.open() as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 1000 and list(rows[0]) == columns + extra
        assert {e for row in rows for e in re.findall(r"[A-Z][a-z]?", row["formula"])} <= {"Li", "Mn", "O"}
        for row in rows:  # every sample has Wyckoff sites that hold its cell's atoms
            group, counts = int(row["space_group"]), {el.symbol: int(n) for el, n in Composition(row["formula"]).items()}
            sites = parse_sites(row["wyckoff"], group)
            assert sites and site_errors(sites, group, counts) == [], row


def test_proxy_fit_then_eval(tmp_path: Path) -> None:
    train, test = write_csv(tmp_path / "train.csv", seed=0, n=200), write_csv(tmp_path / "test.csv", seed=1, n=60)
    model = tmp_path / "proxy"
    fast = [override for option, override in itertools.pairwise(FAST) if option == "--set"]

    fitted = run_readme("aloop proxy fit --data train.csv --out proxy/",
                        {"train.csv": str(train), "proxy/": str(model)}, overrides=fast)

    assert fitted.exit_code == 0, fitted.output
    assert "proxy of formation_energy_per_atom fitted on 200 crystals" in fitted.output and any(model.iterdir())
    values = {"proxy/": str(model), "test.csv": str(test)}
    table = run_readme("aloop proxy eval --model proxy/ --data test.csv", values)
    assert table.exit_code == 0, table.output
    assert all(name in table.output for name in ("mae", "coverage_90", "spearman_err_std")) and "60" in table.output
    as_json = run_readme("aloop proxy eval --model proxy/ --data test.csv --json", values)
    assert as_json.exit_code == 0, as_json.output
    metrics = json.loads(as_json.output)
    assert metrics["n"] == 60 and set(metrics) == {"n", "mae", "rmse", "nll", "coverage_50", "coverage_90",
                                                   "spearman_err_std"}


@pytest.fixture
def fake_mp() -> Iterator[FakeMaterialsProject]:
    """tests/data's stand-in for the Materials Project API, on 127.0.0.1."""
    with serve(fixture_documents()) as state:
        yield state


def test_data_pull_fills_the_cache(fake_mp: FakeMaterialsProject, tmp_path: Path) -> None:
    cache = tmp_path / "mp_cache"
    overrides = [*smoke_overrides(tmp_path), f"data.mp.endpoint={fake_mp.url}"]
    key = {"MP_API_KEY": VALID_KEY}  # the README's `export MP_API_KEY=...`

    default = run_readme("aloop data pull", overrides=overrides, env=key)

    assert default.exit_code == 0, default.output
    [written] = cache.glob("summary-*.json.gz")
    # data.scope neighbours (default): materials sharing an element with the space, those inside it counted apart
    assert f"{written}: 7 entries" in default.output
    assert "kept 7 of 7 entries (source mp): 4 inside the space, 3 outside" in default.output

    fe_o = run_readme("aloop data pull --config configs/fe-o.yaml", overrides=overrides, env=key)

    assert fe_o.exit_code == 0, fe_o.output
    [other] = set(cache.glob("summary-*.json.gz")) - {written}  # another space, another query
    assert f"{other}: 4 entries" in fe_o.output and "kept 4 of 4 entries (source mp): 0 inside the space" in fe_o.output
    assert VALID_KEY not in default.output + fe_o.output and len(fake_mp.requests) >= 2


def round_stages(root: Path) -> tuple[str, list[str], list[dict]]:
    """Campaign name, stage and config of every round of the database under ``root``."""
    store = open_store(f"sqlite:///{root / 'aloop.db'}")
    with store.session() as session:
        rounds = list(session.scalars(select(Round).order_by(Round.number)))
        stages, configs = [r.stage for r in rounds], [r.config for r in rounds]
    store.close()
    return configs[0]["campaign"] if configs else "", stages, configs


PRESET_ROUNDS = [line for line, test in RUN_BY.items() if test == "test_preset_round"]


@pytest.mark.slow
@pytest.mark.parametrize("line", PRESET_ROUNDS)
def test_preset_round(line: str, tmp_path: Path) -> None:
    words = shlex.split(line)
    preset = load_config(REPO / words[words.index("--config") + 1])

    # relaxations up to 200 steps: at the smoke's 50 every cold-start crystal of Li-Mn-O's larger cells
    # (lengths up to 20 A) can stop unconverged, leaving no label to train on
    relaxation = "oracle.settings={fmax: 0.3, max_steps: 200}"
    ran = run_readme(line, overrides=[*smoke_overrides(tmp_path), *TINY, relaxation], script=True)

    assert ran.exit_code == 0, ran.output[-3000:]
    assert "round 1: stage done" in " ".join(ran.output.split()), ran.output[-3000:]
    campaign, stages, [config] = round_stages(tmp_path)
    assert (campaign, stages) == (preset.campaign, ["done"])
    assert config["space"] == preset.space.model_dump(mode="json")
    assert config["gfn"]["train_steps"] == (200 if "gfn.train_steps=200" in line else SMOKE_CONFIG.gfn.train_steps)


@pytest.mark.slow
def test_make_round(tmp_path: Path) -> None:
    ran = run_readme("make round", overrides=[*smoke_overrides(tmp_path), *TINY])

    assert ran.exit_code == 0, ran.output[-3000:]
    assert "round 1: stage done" in " ".join(ran.output.split()), ran.output[-3000:]
    campaign, stages, [config] = round_stages(tmp_path)
    assert (campaign, stages) == ("default", ["done"])
    assert config["space"] == load_config(CONFIG_DIR / "default.yaml").space.model_dump(mode="json")
    assert config["selection"]["batch_size"] == SMOKE_CONFIG.selection.batch_size


@pytest.mark.parametrize("tier", ["fast", pytest.param("slow", marks=pytest.mark.slow)])
def test_the_tests_that_ran_ran_their_readme_commands(tier: str) -> None:
    """Last in the module, in both tiers: a test that ran must have run each README command ``RUN_BY`` gives it."""
    due = {(line, optional) for line, test in RUN_BY.items() if (test, None) in RAN or (test, line) in RAN
           for optional in ({False, True} if "[" in line else {False})}
    assert not due - EXECUTED, f"README commands their test did not run (or did not reach): {sorted(due - EXECUTED)}"
