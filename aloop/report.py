"""The closing report of a round: what was proposed, what was labelled, the best so far."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from mlflow.tracking import MlflowClient
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from aloop.hull import campaign_hull
from aloop.store import Campaign, Candidate, Label, Round, Store, pending_jobs
from aloop.tracking import candidates_url

RANKINGS = {"formation_energy_per_atom": "lowest formation energy", "e_above_hull": "lowest energy above the hull"}
"""Label properties the best crystals can be ranked by, and how the table says it."""


@dataclass(frozen=True)
class BestCrystal:
    """One of the campaign's best labelled crystals: its formation energy and energy above the hull (eV/atom)."""

    formula: str
    space_group: int
    formation_energy_per_atom: float
    e_above_hull: float | None
    oracle: str
    round: int


@dataclass(frozen=True)
class RoundReport:
    """A round as a person wants it at the end of ``aloop round``."""

    round: int
    stage: str | None
    candidates_by_state: dict[str, int]
    labels_ok: int
    labels_failed: int
    best: list[BestCrystal]
    run_id: str
    experiment: str
    tracking_uri: str
    timings: dict[str, float]
    pending_jobs: int = 0
    """Oracle jobs of the campaign still running (queued DFT): the next round or ``aloop submit`` collects them."""
    review_url: str = ""
    """The round's candidate runs in the MLflow UI of ``make ui`` (``aloop.tracking.candidates_url``)."""
    ranked_by: str = "formation_energy_per_atom"
    """The property ``best`` is ranked by (``RANKINGS``)."""
    hull: str = ""
    """What the E_hull values are measured against (``aloop.hull.campaign_hull``)."""

    @property
    def waiting_for_review(self) -> bool:
        return self.stage != "done" and self.candidates_by_state.get("proposed", 0) > 0

    @property
    def waiting_for_labels(self) -> bool:
        """A cold start whose design is still with the oracle: no proxy can be fitted yet."""
        return self.stage == "designed" and self.pending_jobs > 0


def round_report(store: Store, client: MlflowClient, *, campaign_id: int, round_id: int, run_id: str,
                 timings: dict[str, float], tracking_uri: str, top: int = 5,
                 rank_by: str = "formation_energy_per_atom") -> RoundReport:
    """Read the round's outcome and the campaign's best labelled crystals (by ``rank_by``) from the store."""
    with store.session() as session:
        row = session.get_one(Round, round_id)
        states = Counter(session.scalars(select(Candidate.state).where(Candidate.round_id == round_id)))
        statuses = Counter(session.scalars(select(Label.status).join(Candidate).where(
            Candidate.round_id == round_id, Label.property.in_(["formation_energy_per_atom", "*"]))))
        best_rows = session.execute(
            select(Label, Candidate, Round.number).join(Candidate, Label.candidate_id == Candidate.id)
            .join(Round, Candidate.round_id == Round.id)
            .where(Candidate.campaign_id == campaign_id, Label.property == rank_by, Label.status == "ok")
            .order_by(Label.value, Candidate.id).limit(top)).all()
        values = {(lab.candidate_id, lab.oracle, lab.property): lab.value for lab in session.scalars(
            select(Label).where(Label.candidate_id.in_([c.id for _, c, _ in best_rows]),
                                Label.property.in_(list(RANKINGS)), Label.status == "ok"))}
        best = [BestCrystal(c.formula, c.space_group, values[(c.id, lab.oracle, "formation_energy_per_atom")],
                            values.get((c.id, lab.oracle, "e_above_hull")), lab.oracle, n)
                for lab, c, n in best_rows if (c.id, lab.oracle, "formation_energy_per_atom") in values]
        stage = row.stage
        pending = len(pending_jobs(session, session.get_one(Campaign, campaign_id)))
    experiment = client.get_experiment(client.get_run(run_id).info.experiment_id).name
    review_url = candidates_url(client, client.get_run(run_id).info.experiment_id, round_number=row.number)
    return RoundReport(round=row.number, stage=stage, candidates_by_state=dict(states),
                       labels_ok=statuses["ok"], labels_failed=statuses["failed"], best=best, run_id=run_id,
                       experiment=experiment, tracking_uri=tracking_uri, timings=dict(timings), pending_jobs=pending,
                       review_url=review_url, ranked_by=rank_by, hull=campaign_hull(store, campaign_id))


def print_report(report: RoundReport, console: Console) -> None:
    """Tell the story of the round in a few lines and tables."""
    states = ", ".join(f"{n} {s}" for s, n in sorted(report.candidates_by_state.items())) or "none"
    console.print(f"\n[bold]round {report.round}[/bold]: stage {report.stage}; candidates: {states}; "
                  f"labels this round: {report.labels_ok} ok, {report.labels_failed} failed")
    if report.timings:
        console.print("time per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items()))
    if report.best:
        table = Table(title=f"best crystals so far ({RANKINGS[report.ranked_by]})")
        for column in ("formula", "space group", "E_f (eV/atom)", "E_hull (eV/atom)", "oracle", "round"):
            table.add_column(column)
        for b in report.best:
            hull = "" if b.e_above_hull is None else f"{b.e_above_hull:.3f}"
            table.add_row(b.formula, str(b.space_group), f"{b.formation_energy_per_atom:.3f}", hull, b.oracle,
                          str(b.round))
        console.print(table)
    if report.hull:
        console.print(f"E_hull against: {report.hull}")
    console.print(f"MLflow: `make ui`, experiment {report.experiment!r}, run round-{report.round} "
                  f"({report.run_id}) on {report.tracking_uri}")
    if report.review_url:
        console.print(f"candidates of round {report.round}: {report.review_url}", soft_wrap=True)
    if report.waiting_for_labels:
        console.print(f"[bold yellow]waiting for the oracle[/bold yellow]: {report.pending_jobs} jobs of the "
                      "cold-start design are pending; the proxy needs their labels. Run `make round` again later: "
                      "it collects them and goes on")
    elif report.pending_jobs:
        console.print(f"{report.pending_jobs} oracle jobs pending: the next `make round` (or `aloop submit`) "
                      "collects them")
    if report.waiting_for_review:
        console.print("[bold yellow]waiting for review[/bold yellow]: set the tag aloop.review to approved or "
                      "rejected on the candidate runs, then run `make round` (or `aloop submit`) again")
