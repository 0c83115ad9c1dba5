"""Wall time of one `aloop round` from an empty folder, and of each of its stages.

Protocol: `aloop round --config CONFIG --quiet` runs as a child process in a fresh
temporary folder (new experiment database, new MLflow store, no Materials Project key,
so the first round starts cold), exactly as `make round` would after installation; the
aloop cache (`~/.cache/aloop`: space tables, MLflow's empty schema) is kept, as on any
machine after its first round. Time per stage is the round's own (`time_<stage>_s` on
the MLflow round run); "start" is process start to the first stage (imports, stores,
lock), "outside stages" the rest (training-set assembly between stages, summary, exit).
Each repeat is a fresh folder. ``--compare key=value`` then runs one more round with those overrides too
and compares it with the first repeat: the cold-start design's crystals and labels, and the batch's
crystals (e.g. ``--compare oracle.settings.batch_size=1``: which labels the batched relaxer changes).

    python -m benchmarks.round_timing [--config configs/smoke.yaml] [--repeats 2] [--set key=value ...]
        [--compare key=value ...]

Prints a markdown table and writes ``benchmarks/results/round_timing[-<config>].md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient
from sqlalchemy import select

from aloop.round import STAGES
from aloop.store import Candidate, open_store
from aloop.tracking import KIND_TAG
from benchmarks.round_resume import REPO, launch


def time_round(config: Path, overrides: tuple[str, ...]) -> dict:
    """Seconds of one cold round in a fresh folder: total, start, each stage, outside stages; and the folder."""
    folder = Path(tempfile.mkdtemp(prefix="round_timing-"))
    load = os.getloadavg()[0]
    run = launch(config, folder, overrides=overrides)
    if run.code != 0:
        raise SystemExit(f"aloop round exited with {run.code}:\n{run.output[-3000:]}")
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    [parent] = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  filter_string=f"tags.`{KIND_TAG}` = 'round'")
    stages = {s: parent.data.metrics.get(f"time_{s}_s", 0.0) for s in STAGES}
    start = min(run.starts.values())
    return {"total": run.seconds, "start": start, **stages,
            "outside stages": run.seconds - start - sum(stages.values()), "load": load, "folder": folder}


def round_labels(folder: Path) -> dict[str, dict[str, tuple[str, float | None]]]:
    """A finished cold round's candidates, the cold-start ``design`` (no proxy prediction) and the ``batch``:
    canonical hash -> (state, CHGNet energy per atom or None)."""
    store = open_store(f"sqlite:///{folder / 'aloop.db'}")
    try:
        with store.session() as session:
            found: dict[str, dict[str, tuple[str, float | None]]] = {}
            for candidate in session.scalars(select(Candidate)):
                energy = next((label.value for label in candidate.labels
                               if label.property == "energy_per_atom" and label.status == "ok"), None)
                part = "design" if candidate.proxy_mean is None else "batch"
                found.setdefault(part, {})[candidate.canonical_hash] = (candidate.state, energy)
            return found
    finally:
        store.close()


def compare(first: Path, second: Path) -> list[str]:
    """Markdown lines: how the second round's candidates and labels differ from the first's."""
    rounds_a, rounds_b = round_labels(first), round_labels(second)
    lines = []
    for part in ("design", "batch"):
        a, b = rounds_a.get(part, {}), rounds_b.get(part, {})
        shared = sorted(set(a) & set(b))
        energies = [(a[h][1], b[h][1]) for h in shared]
        both = [abs(x - y) for x, y in energies if x is not None and y is not None]
        changed = sum((x is None) != (y is None) for x, y in energies)
        lines.append(f"| {part} | {len(a)} | {len(b)} | {len(shared)} | {changed} | {len(both)} | "
                     f"{sum(d > 0.005 for d in both)} | {max(both, default=float('nan')):.4f} |")
    return ["| candidates | first | second | same crystals | labelled in one only | labelled in both | "
            "abs dE > 0.005 eV/atom | max abs dE |", "|---|---|---|---|---|---|---|---|", *lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "smoke.yaml")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override, key=value")
    parser.add_argument("--compare", action="append", default=[],
                        help="also run one round with this override too and compare its candidates and labels")
    args = parser.parse_args()
    config = args.config.resolve()
    name = config.relative_to(REPO) if config.is_relative_to(REPO) else config
    runs = []
    for i in range(args.repeats):
        runs.append(time_round(config, tuple(args.overrides)))
        print(f"repeat {i + 1}: {runs[-1]['total']:.1f} s (load {runs[-1]['load']:.2f})", flush=True)
    rows = ["total", "start", *STAGES, "outside stages"]
    header = ["", *(f"repeat {i + 1} (s)" for i in range(len(runs))), "median (s)"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        values = [r[row] for r in runs]
        table.append(f"| {row} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {statistics.median(values):.1f} |")
    table.append("| load average (1 min) at start | " + " | ".join(f"{r['load']:.2f}" for r in runs) + " | |")
    sets = "".join(f" --set {o}" for o in args.overrides)
    compared = ""
    if args.compare:
        other = time_round(config, (*args.overrides, *args.compare))
        changes = "".join(f" --set {o}" for o in args.compare)
        compared = (f"\n## Against a round with{changes}\n\nThat round took {other['total']:.1f} s (labelling "
                    f"{other['labelled']:.1f} s, the design {other['designed']:.1f} s). Same seed: the design is the "
                    "same crystals; the batch differs where a changed design label changed the proxy.\n\n" + "\n".join(compare(runs[0]["folder"], other["folder"])) + "\n")
        sets += "".join(f" --compare {o}" for o in args.compare)
    text = f"""# Time of one round ({name}{sets})

`python -m benchmarks.round_timing --config {name} --repeats {args.repeats}{sets}`

Machine: {platform.node()}, {os.cpu_count()} cores shared with other users, Python {platform.python_version()};
load average {os.getloadavg()[0]:.2f} at the end.

Protocol: {__doc__.split("Protocol: ")[1].split("python -m")[0].strip()}

{chr(10).join(table)}
{compared}"""
    suffix = ("" if config.name == "smoke.yaml" else f"-{config.stem}") + ("-overrides" if args.overrides else "")
    (REPO / "benchmarks" / "results" / f"round_timing{suffix}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
