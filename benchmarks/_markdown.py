"""Markdown output shared by the benchmarks: a table from rows, a report file with its command."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def table(rows: Sequence[Mapping[str, object]], formats: Mapping[str, str] | None = None) -> str:
    """A markdown table with the rows' keys as columns; ``formats`` maps a column to a format spec."""
    formats = formats or {}
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(format(row[k], formats.get(k, "")) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def write_report(name: str, *sections: str, module: str | None = None) -> Path:
    """Print and write ``results/<name>.md``: the command that made it (``benchmarks.<module>``, by default the
    report's name), then ``sections``."""
    command = " ".join([f"python -m benchmarks.{module or name}", *sys.argv[1:]])
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    machine = f"Machine: {os.cpu_count()} cores; 1/5/15-minute load average at the end: {load}"
    text = "\n\n".join([f"Command: `{command}`", machine, *sections]) + "\n"
    path = RESULTS / f"{name}.md"
    RESULTS.mkdir(exist_ok=True)
    path.write_text(text)
    print(text)
    return path
