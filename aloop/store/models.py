"""The experiment database as SQLAlchemy 2.0 ORM models.

One vocabulary with the rest of aloop: a ``Campaign`` has ``Round``s; a round proposes
``Candidate``s; an oracle answers with ``Label``s (one per candidate or external
``Material``, oracle and property); ``OracleJob`` remembers what was submitted where, and
``RoundLease`` (the row behind ``aloop.store.RoundLock``) keeps two rounds of one campaign
from running at once. Times are UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymatgen.core import Composition
from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from aloop.space.crystal import Crystal
from aloop.space.wyckoff import parse_sites

CANDIDATE_STATES = ("proposed", "approved", "rejected", "submitted", "labelled", "failed")
REVIEW_STATES = ("pending", "approved", "rejected")
LABEL_STATUSES = ("ok", "failed", "superseded")
"""``superseded``: a failure whose candidate ``aloop retry`` sent to the oracle again (kept as history)."""
JOB_STATUSES = ("pending", "done", "failed", "lost")


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and read back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware UTC time")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Declarative base of the experiment database."""

    metadata = MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Campaign(Base):
    """A named series of rounds sharing one search space and one database."""

    __tablename__ = "campaign"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    rounds: Mapped[list[Round]] = relationship(back_populates="campaign", order_by="Round.number")


class Round(Base):
    """One pass of the loop; ``stage`` is the last stage it completed (``None``: none yet)."""

    __tablename__ = "round"
    __table_args__ = (UniqueConstraint("campaign_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Snapshot of the resolved config the round ran with (``Config.model_dump(mode='json')``)."""
    seed: Mapped[int] = mapped_column(Integer, default=0)
    stage: Mapped[str | None] = mapped_column(String(64))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None]

    campaign: Mapped[Campaign] = relationship(back_populates="rounds")
    candidates: Mapped[list[Candidate]] = relationship(back_populates="round", order_by="Candidate.id")


class Candidate(Base):
    """A crystal proposed by a round, with its proxy prediction, review and lifecycle state.

    ``state`` changes only through ``aloop.store.transition``; ``version`` makes a
    concurrent change of the same row fail instead of being lost.
    """

    __tablename__ = "candidate"
    __table_args__ = (
        UniqueConstraint("campaign_id", "canonical_hash"),
        CheckConstraint(_in("state", CANDIDATE_STATES), name="state"),
        CheckConstraint(_in("review", REVIEW_STATES), name="review"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), index=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("round.id", ondelete="CASCADE"), index=True)
    space_group: Mapped[int] = mapped_column(Integer)
    formula: Mapped[str] = mapped_column(String(200))
    """Cell formula (``Composition.formula``, e.g. ``'Fe4 O6'``): the composition stage."""
    a: Mapped[float] = mapped_column(Float)
    b: Mapped[float] = mapped_column(Float)
    c: Mapped[float] = mapped_column(Float)
    alpha: Mapped[float] = mapped_column(Float)
    beta: Mapped[float] = mapped_column(Float)
    gamma: Mapped[float] = mapped_column(Float)
    canonical_hash: Mapped[str] = mapped_column(String(64))
    wyckoff: Mapped[str | None] = mapped_column(Text)
    """The Wyckoff sites (``Crystal.wyckoff``, e.g. ``'Li:4a Mn:4b O:8c O:8c'``); ``None`` without an
    assignment (rows stored before revision 0003 included)."""
    cif: Mapped[str | None] = mapped_column(Text)
    """The structure sent to the oracle (pyxtal placement), once built."""
    origin: Mapped[str | None] = mapped_column(String(200))
    """Where its atoms came from (``aloop.proposal.origin``, e.g. ``'template mp-1234'``); ``None`` for rows
    stored before revision 0004 and crystals stored without atoms."""
    proxy_mean: Mapped[float | None] = mapped_column(Float)
    proxy_std: Mapped[float | None] = mapped_column(Float)
    acquisition: Mapped[float | None] = mapped_column(Float)
    review: Mapped[str] = mapped_column(String(16), default="pending")
    state: Mapped[str] = mapped_column(String(16), default="proposed", index=True)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    round: Mapped[Round] = relationship(back_populates="candidates")
    labels: Mapped[list[Label]] = relationship(back_populates="candidate", order_by="Label.id")
    jobs: Mapped[list[OracleJob]] = relationship(back_populates="candidate", order_by="OracleJob.id")

    __mapper_args__ = {"version_id_col": version}

    @property
    def crystal(self) -> Crystal:
        """The stored crystal: space group, composition, lattice, and its sites when it has them."""
        return Crystal(self.space_group, Composition(self.formula),
                       (self.a, self.b, self.c, self.alpha, self.beta, self.gamma),
                       parse_sites(self.wyckoff or "", self.space_group))


class Material(Base):
    """An external material (Materials Project, a lab's file): composition, maybe a crystal.

    ``key`` identifies it within a campaign: the crystal's canonical hash when space group
    and lattice are known, else ``composition:<cell formula>``.
    """

    __tablename__ = "material"
    __table_args__ = (UniqueConstraint("campaign_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(250))
    formula: Mapped[str] = mapped_column(String(200))
    space_group: Mapped[int | None] = mapped_column(Integer)
    a: Mapped[float | None] = mapped_column(Float)
    b: Mapped[float | None] = mapped_column(Float)
    c: Mapped[float | None] = mapped_column(Float)
    alpha: Mapped[float | None] = mapped_column(Float)
    beta: Mapped[float | None] = mapped_column(Float)
    gamma: Mapped[float | None] = mapped_column(Float)
    wyckoff: Mapped[str | None] = mapped_column(Text)
    """The Wyckoff sites (``Crystal.wyckoff``), ``None`` when unknown (always without a space group)."""
    cif: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    labels: Mapped[list[Label]] = relationship(back_populates="material", order_by="Label.id")

    @property
    def lattice(self) -> tuple[float, float, float, float, float, float] | None:
        """(a, b, c, alpha, beta, gamma) in Angstrom and degrees, ``None`` if unknown."""
        values = (self.a, self.b, self.c, self.alpha, self.beta, self.gamma)
        return None if any(v is None for v in values) else values  # type: ignore[return-value]

    @property
    def crystal(self) -> Crystal | None:
        """The material as a ``Crystal`` (with its sites when known), ``None`` without space group or lattice."""
        if self.space_group is None or self.lattice is None:
            return None
        return Crystal(self.space_group, Composition(self.formula), self.lattice,
                       parse_sites(self.wyckoff or "", self.space_group))


class Label(Base):
    """One oracle's answer for one property of a candidate or of a material.

    Keyed by (candidate or material, oracle, property): storing it again updates the row.
    A failed evaluation has ``status='failed'``, a ``reason``, a ``failure_kind`` and no value;
    once its candidate is retried the failure stays as history with ``status='superseded'``.
    """

    __tablename__ = "label"
    __table_args__ = (
        UniqueConstraint("candidate_id", "oracle", "property"),
        UniqueConstraint("material_id", "oracle", "property"),
        CheckConstraint("(candidate_id IS NULL) <> (material_id IS NULL)", name="one_subject"),
        CheckConstraint(_in("status", LABEL_STATUSES), name="status"),
        CheckConstraint("status <> 'ok' OR value IS NOT NULL", name="ok_has_value"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int | None] = mapped_column(ForeignKey("candidate.id", ondelete="CASCADE"), index=True)
    material_id: Mapped[int | None] = mapped_column(ForeignKey("material.id", ondelete="CASCADE"), index=True)
    oracle: Mapped[str] = mapped_column(String(100))
    fidelity: Mapped[float] = mapped_column(Float)
    property: Mapped[str] = mapped_column(String(100))
    value: Mapped[float | None] = mapped_column(Float)
    uncertainty: Mapped[float | None] = mapped_column(Float)
    structure: Mapped[str | None] = mapped_column(Text)
    """The relaxed structure as CIF (or pymatgen JSON), ``None`` when the oracle does not relax."""
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    """Raw oracle metadata (JSON): model version, steps, convergence, provenance."""
    status: Mapped[str] = mapped_column(String(16), default="ok")
    reason: Mapped[str | None] = mapped_column(Text)
    failure_kind: Mapped[str | None] = mapped_column(String(32))
    """Why a failed evaluation failed, one of ``aloop.oracle.FAILURE_KINDS`` (``None`` when ok, or
    for failures stored before revision 0002)."""
    job_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    candidate: Mapped[Candidate | None] = relationship(back_populates="labels")
    material: Mapped[Material | None] = relationship(back_populates="labels")


class OracleJob(Base):
    """A submission of a candidate to an oracle; ``status`` pending until polled to an end."""

    __tablename__ = "oracle_job"
    __table_args__ = (
        UniqueConstraint("oracle", "job_id"),
        CheckConstraint(_in("status", JOB_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidate.id", ondelete="CASCADE"), index=True)
    oracle: Mapped[str] = mapped_column(String(100))
    job_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    failure_kind: Mapped[str | None] = mapped_column(String(32))
    """The ``FAILURE_KINDS`` entry of a ``failed`` (or ``lost``) job; kept when its candidate is retried."""
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    candidate: Mapped[Candidate] = relationship(back_populates="jobs")


class RoundLease(Base):
    """The lease that lets one round at a time run per campaign (taken by ``RoundLock``)."""

    __tablename__ = "round_lock"

    campaign: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    """Who holds it, for people: ``host pid N``."""
    token: Mapped[str] = mapped_column(String(64))
    """Random per acquisition: only the holder's heartbeat and release touch the row."""
    acquired_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    expires_at: Mapped[datetime]
