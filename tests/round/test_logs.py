"""A round's library warnings go to round.log in its folder; the terminal gets their count and the log's path."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import FinishedRound


def test_a_round_logs_library_warnings_and_shows_only_their_count(smoke_round: FinishedRound) -> None:
    log = Path(smoke_round.cfg.workdir) / smoke_round.cfg.campaign / f"round-{smoke_round.report.round}" / "round.log"
    text = log.read_text()
    assert "UserWarning: Issues encountered while parsing CIF" in text  # pymatgen, placing and logging candidates
    assert "UserWarning" not in smoke_round.terminal and "parsing CIF" not in smoke_round.terminal
    count = len(re.findall(r"^\S+ \S+ (?:WARNING|ERROR|CRITICAL) (?!aloop|oracles)", text, flags=re.MULTILINE))
    assert count > 0 and f"{count} library warning{'s' if count > 1 else ''} in {log}" in smoke_round.terminal
    assert "round 1 · labelled" in smoke_round.terminal  # aloop's own stage lines stay
