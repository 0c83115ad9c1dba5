"""SIGKILL of `aloop round` at every stage boundary and in the middle of every long stage, then rerun.

Protocol: an uninterrupted `aloop round --config CONFIG --quiet` in a fresh folder is the
reference (its stage start times give each stage's duration). Then, for every kill point,
a fresh folder: `aloop round` starts as a child process; the round prints
``round 1 · <stage>`` when a stage starts, and the child is killed with SIGKILL either at
once (``boundary``: the previous stage is recorded, this one has just begun) or after half
the stage's reference duration (``middle``). The same command is then run again to the end.
One more point kills twice: in the middle of ``labelled`` (jobs of the killed process are
lost), then in the middle of the resumed round's collection of those pending jobs
(``round 1 · collecting pending jobs``), before the run to the end.
Both stores are compared: candidates (canonical hash and state) and labels (hash,
property, status) must be the same as the reference's. Duplicates counted: candidates
with the same hash, labels with the same (candidate, oracle, property), candidates with
two finished oracle jobs, MLflow round runs per round beyond one, child runs per
candidate beyond one, and metric steps logged twice.

    python -m benchmarks.round_resume [--config configs/smoke.yaml] [--points boundary,middle]

Prints a markdown table and writes ``benchmarks/results/round_resume.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient
from sqlalchemy import func, select

from aloop.round import STAGES
from aloop.store import Candidate, Label, OracleJob, open_store
from aloop.store.models import Round
from aloop.tracking import CANDIDATE_TAG, KIND_TAG, ROUND_TAG

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "round_resume.md"
STAGE_LINE = re.compile(r"^round (\d+) · (.+)$")
LONG_STAGES = ("designed", "trained_proxy", "trained_generator", "sampled", "selected", "logged", "labelled")
"""Stages that take long enough to be killed in the middle."""


@dataclass(frozen=True)
class Run:
    """One `aloop round` process: exit code, wall time, and when each stage started (s after launch)."""

    code: int
    seconds: float
    starts: dict[str, float]
    output: str


def launch(config: Path, folder: Path, *, kill_at: tuple[str, float] | None = None,
           overrides: tuple[str, ...] = ()) -> Run:
    """Run `aloop round` in ``folder``; with ``kill_at=(stage, delay_s)``, SIGKILL it ``delay_s`` after that stage starts."""
    env = {k: v for k, v in os.environ.items() if k not in ("MP_API_KEY", "ALOOP_DB_URL", "MLFLOW_TRACKING_URI")}
    start = time.perf_counter()
    sets = [arg for override in overrides for arg in ("--set", override)]
    child = subprocess.Popen([sys.executable, "-c", "from aloop.cli import main; main()", "round", "--config",
                              str(config), *sets, "--quiet"], cwd=folder, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    starts: dict[str, float] = {}
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        for line in child.stderr:
            lines.append(line)
            match = STAGE_LINE.match(line.strip())
            if match:
                stage = match.group(2).replace(" ", "_")
                starts[stage] = time.perf_counter() - start
                if kill_at is not None and stage == kill_at[0]:
                    started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if kill_at is not None:
        while not started.wait(0.01):
            if child.poll() is not None:
                break
        if started.is_set():
            time.sleep(kill_at[1])
            child.send_signal(signal.SIGKILL)
    code = child.wait()
    reader.join(timeout=10)
    return Run(code, time.perf_counter() - start, starts, "".join(lines))


@dataclass(frozen=True)
class Outcome:
    candidates: list[tuple[str, str]]
    labels: list[tuple[str, str, str]]
    stage: str | None
    duplicates: dict[str, int]
    resubmitted: int


def inspect(folder: Path) -> Outcome:
    """The campaign in ``folder``: candidates and labels by crystal, and every duplicate found."""
    store = open_store(f"sqlite:///{folder / 'aloop.db'}")
    with store.session() as session:
        candidates = sorted((c.canonical_hash, c.state) for c in session.scalars(select(Candidate)))
        labels = sorted((c.canonical_hash, lab.property, lab.status) for lab, c in
                        session.execute(select(Label, Candidate).join(Candidate)).tuples())
        stage = session.scalars(select(Round.stage).order_by(Round.number.desc())).first()
        label_keys = Counter(session.execute(select(Label.candidate_id, Label.oracle, Label.property)
                                             .where(Label.candidate_id.is_not(None))).tuples())
        done_jobs = Counter(session.scalars(select(OracleJob.candidate_id).where(OracleJob.status == "done")))
        lost = session.scalar(select(func.count()).select_from(OracleJob).where(OracleJob.status == "lost"))
    store.close()
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=50_000)
    rounds = Counter(r.data.tags.get(ROUND_TAG) for r in runs if r.data.tags.get(KIND_TAG) == "round")
    children = Counter((r.data.tags.get("mlflow.parentRunId"), r.data.tags[CANDIDATE_TAG])
                       for r in runs if CANDIDATE_TAG in r.data.tags)
    repeated_steps = 0
    for run in runs:
        for key in run.data.metrics:
            steps = Counter(m.step for m in client.get_metric_history(run.info.run_id, key))
            repeated_steps += sum(n - 1 for n in steps.values())
    duplicates = {
        "candidates": sum(n - 1 for n in Counter(h for h, _ in candidates).values()),
        "labels": sum(n - 1 for n in label_keys.values()),
        "labelled_twice": sum(n - 1 for n in done_jobs.values()),
        "round_runs": sum(n - 1 for n in rounds.values()),
        "child_runs": sum(n - 1 for n in children.values()),
        "metric_steps": repeated_steps,
    }
    return Outcome(candidates, labels, stage, duplicates, int(lost or 0))


def counts(outcome: Outcome) -> str:
    states = Counter(s for _, s in outcome.candidates)
    ok = sum(1 for *_, status in outcome.labels if status == "ok")
    return f"{len(outcome.candidates)} ({states['labelled']} labelled) / {ok} ok labels"


def row(stage: str, kind: str, killed: Run, at_kill: str | None, rerun: Run, outcome: Outcome,
        reference: Outcome) -> tuple[str, ...]:
    """One line of the table: the kill, the rerun, and the rerun's store against the reference's."""
    same = outcome.candidates == reference.candidates and outcome.labels == reference.labels
    dup = {k: v for k, v in outcome.duplicates.items() if v}
    return (stage, kind, f"{killed.seconds:.1f}", "killed" if killed.code == -signal.SIGKILL else f"exit {killed.code}",
            at_kill or "none", f"{rerun.code}", f"{rerun.seconds:.1f}", counts(outcome), "yes" if same else "**no**",
            ", ".join(f"{k} {v}" for k, v in dup.items()) or "none", str(outcome.resubmitted))


def double_kill(config: Path, root: Path, reference: Outcome, *, delay: float) -> tuple[str, ...]:
    """Kill in the middle of ``labelled``, then in the middle of the next run's collection of its pending jobs."""
    folder = root / "collecting-pending-jobs"
    folder.mkdir()
    launch(config, folder, kill_at=("labelled", delay))
    killed = launch(config, folder, kill_at=("collecting_pending_jobs", delay))
    at_kill = inspect(folder).stage
    rerun = launch(config, folder)
    return row("collecting pending jobs", "middle, after labelled-middle", killed, at_kill, rerun, inspect(folder),
               reference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "smoke.yaml")
    parser.add_argument("--points", default="boundary,middle", help="boundary, middle or both")
    args = parser.parse_args()
    config = args.config.resolve()
    kinds = args.points.split(",")
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="round_resume-"))

    (root / "reference").mkdir()
    reference_run = launch(config, root / "reference")
    if reference_run.code != 0:
        sys.exit(f"the uninterrupted round failed ({reference_run.code}):\n{reference_run.output[-3000:]}")
    reference = inspect(root / "reference")
    starts = [reference_run.starts[s] for s in STAGES]
    duration = {s: end - begin for s, begin, end in zip(STAGES, starts, [*starts[1:], reference_run.seconds],
                                                        strict=True)}
    points = [(stage, kind) for stage in STAGES for kind in kinds if kind == "boundary" or stage in LONG_STAGES]

    rows = []
    for stage, kind in points:
        folder = root / f"{stage}-{kind}"
        folder.mkdir()
        killed = launch(config, folder, kill_at=(stage, 0.0 if kind == "boundary" else duration[stage] / 2))
        at_kill = inspect(folder).stage
        rerun = launch(config, folder)
        rows.append(row(stage, kind, killed, at_kill, rerun, inspect(folder), reference))
        print(" | ".join(rows[-1]), flush=True)
    rows.append(double_kill(config, root, reference, delay=duration["labelled"] / 2))
    print(" | ".join(rows[-1]), flush=True)

    header = ("stage", "kill point", "killed after (s)", "child", "stage recorded at kill", "rerun exit",
              "rerun (s)", "candidates / labels", "same as uninterrupted", "duplicates", "jobs lost and resubmitted")
    table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                      + ["| " + " | ".join(row) + " |" for row in rows])
    reference_line = (f"uninterrupted: {counts(reference)}, {reference_run.seconds:.1f} s; stage durations (s): "
                      + ", ".join(f"{s} {d:.1f}" for s, d in duration.items()))
    load_after = os.getloadavg()
    text = f"""# Round resume after SIGKILL

`python -m benchmarks.round_resume --config {config.relative_to(REPO) if config.is_relative_to(REPO) else config}`

Machine: {platform.node()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}; load average
{load_before[0]:.2f} before, {load_after[0]:.2f} after.

Protocol: {__doc__.split("Protocol: ")[1].split("python -m")[0].strip()}

{reference_line}

{table}
"""
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
