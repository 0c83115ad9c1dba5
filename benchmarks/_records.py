"""Per-candidate benchmark records as JSON lines: appended as each result finishes, so a killed run carries on."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path


def read_lines(path: Path) -> list[dict]:
    """The records of ``path`` in order; none when it does not exist yet."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def append_lines(path: Path, records: Iterable[dict]) -> None:
    """Append ``records`` to ``path``, one JSON object per line."""
    with path.open("a") as out:
        out.writelines(json.dumps(record) + "\n" for record in records)
