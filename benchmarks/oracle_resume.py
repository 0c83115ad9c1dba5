"""SIGKILL in the middle of a labelling batch, then resume: every candidate labelled exactly once.

A child process labels 16 approved rock-salt candidates with the CHGNet oracle into a
fresh SQLite store; it is killed with SIGKILL once about half of them are labelled, and
a second child resumes. Counts come from the store: labels per (candidate, property),
finished jobs per candidate, jobs lost with the killed process and submitted again, and
whether every label written before the kill is still the same row with the same value.

    python -m benchmarks.oracle_resume [--candidates 16]

Prints a table and writes ``benchmarks/results/oracle_resume.md``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pymatgen.core import Composition
from sqlalchemy import func, select

from aloop.space import Crystal
from benchmarks._markdown import table, write_report
from aloop.store import (
    Candidate, Label, NewCandidate, OracleJob, Store, add_candidates, get_or_create_campaign, open_store,
    start_round, transition)

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import sys
from aloop.executor import open_executor
from aloop.labelling import label_candidates
from aloop.oracle import load_oracle
from aloop.store import find_campaign, open_store
store = open_store(sys.argv[1])
with store.session() as session:
    campaign_id = find_campaign(session, "resume").id
with open_executor() as executor:
    oracle = load_oracle("chgnet", {"max_steps": 100, "batch_size": 1}, executor=executor)
    label_candidates(store, campaign_id, oracle, poll_interval_s=0.05)
"""


def approve(store: Store, count: int) -> list[int]:
    """``count`` rock-salt candidates (NaCl, LiCl, KCl, NaF at spread lattice constants), approved."""
    pairs = [("Na4Cl4", 5.69), ("Li4Cl4", 5.13), ("K4Cl4", 6.29), ("Na4F4", 4.63)]
    crystals = [Crystal(225, Composition(f), (a * s,) * 3 + (90.0,) * 3)
                for s in [0.96 + 0.02 * k for k in range(count // len(pairs) + 1)]
                for f, a in pairs][:count]
    with store.session() as session:
        campaign = get_or_create_campaign(session, "resume")
        added = add_candidates(session, start_round(session, campaign, config={}, seed=0),
                               [NewCandidate(c) for c in crystals])
        for candidate in added:
            transition(candidate, "approved")
        return [c.id for c in added]


def snapshot(store: Store) -> dict[tuple[int, str], tuple[int, str | None, float | None]]:
    with store.session() as session:
        return {(r.candidate_id, r.property): (r.id, r.job_id, r.value)
                for r in session.scalars(select(Label).where(Label.candidate_id.is_not(None)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", type=int, default=16)
    args = parser.parse_args()
    url = f"sqlite:///{tempfile.mkdtemp()}/resume.db"
    store = open_store(url)
    ids = approve(store, args.candidates)
    child = subprocess.Popen([sys.executable, "-c", CHILD, url], cwd=REPO)
    while child.poll() is None and len({c for c, _ in snapshot(store)}) < len(ids) // 2:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    before = snapshot(store)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD, url], cwd=REPO, check=True)
    resume_s = time.perf_counter() - start
    after = snapshot(store)
    with store.session() as session:
        finished = dict(session.execute(select(OracleJob.candidate_id, func.count()).where(
            OracleJob.status.in_(["done", "failed"])).group_by(OracleJob.candidate_id)).tuples().all())
        lost = session.scalar(select(func.count()).select_from(OracleJob).where(OracleJob.status == "lost"))
        duplicates = session.execute(select(Label.candidate_id, Label.property).where(
            Label.candidate_id.is_not(None)).group_by(Label.candidate_id, Label.property)
            .having(func.count() > 1)).all()
        states = [session.get_one(Candidate, i).state for i in ids]
    row = {
        "candidates": len(ids),
        "labelled_before_kill": len({c for c, _ in before}),
        "lost_jobs_resubmitted": lost,
        "labelled_or_failed_after_resume": sum(s in ("labelled", "failed") for s in states),
        "finished_jobs_per_candidate": sorted(set(finished.get(i, 0) for i in ids)),
        "duplicate_labels": len(duplicates),
        "labels_before_kill_unchanged": all(after[k] == v for k, v in before.items()),
        "resume_seconds": round(resume_s, 1),
    }
    write_report("oracle_resume", __doc__.split("\n\n")[1].replace("\n", " "),
                 table([{"measure": key, "value": value} for key, value in row.items()]))


if __name__ == "__main__":
    main()
