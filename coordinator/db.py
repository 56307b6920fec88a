"""The coordinator's database: engine and ORM models.

SQLite is the default backend, PostgreSQL the one for larger deployments. Both run the
same models; only full-text search differs: an FTS5 table on SQLite, a generated
``tsvector`` column on PostgreSQL. The schema itself is made and changed only by the
migrations in ``coordinator/migrations`` (a model change here needs a revision there).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from coordinator import migrations
from scifed.at_rest import private_sqlite

FTS_TABLE = "records_fts"
"""SQLite FTS5 table mirroring ``records``; column order matches ``FTS_WEIGHTS``."""

FTS_COLUMNS = ("title", "keywords", "subjects", "columns", "description")
FTS_WEIGHTS = (10.0, 5.0, 5.0, 3.0, 1.0)
"""bm25 weights per FTS column: a hit in the title says more than one in the description."""


class Base(DeclarativeBase):
    pass


class Node(Base):
    """A platform node enrolled with the coordinator."""

    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String, primary_key=True)
    platform: Mapped[str] = mapped_column(String)
    software_version: Mapped[str] = mapped_column(String)
    cert_fingerprint: Mapped[str] = mapped_column(String)
    connected: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen_ms: Mapped[int | None] = mapped_column(BigInteger)
    seal_claim: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The node's signed X25519 seal key; study keys are sealed to it by the lead node."""


class Record(Base):
    """One published catalog record (metadata only), owned by the node that synced it.

    The full record is kept as JSON; the columns beside it are copies made for filtering
    and listing without parsing JSON.
    """

    __tablename__ = "records"

    record_id: Mapped[str] = mapped_column(String, primary_key=True)
    node_name: Mapped[str] = mapped_column(ForeignKey("nodes.name", ondelete="CASCADE"), index=True)
    record_json: Mapped[dict[str, Any]] = mapped_column(JSON)
    title: Mapped[str] = mapped_column(String)
    grade: Mapped[str] = mapped_column(String, index=True)
    category: Mapped[str] = mapped_column(String, index=True)
    platform: Mapped[str] = mapped_column(String, index=True)
    stub: Mapped[bool] = mapped_column(Boolean)
    record_count: Mapped[int | None] = mapped_column(BigInteger)
    quality_grade: Mapped[str | None] = mapped_column(String(1), index=True)
    """A–D from the record's published quality summary; None without a quality report."""
    updated_ms: Mapped[int] = mapped_column(BigInteger)
    search_text: Mapped[str] = mapped_column(Text)
    """Lower-cased searchable text; LIKE runs on it where the full-text index cannot help."""


class TermKind(StrEnum):
    """Facet kinds in ``record_terms``; a new facet is a new member, not a new table."""

    SUBJECT = "subject"
    KEYWORD = "keyword"
    COLUMN = "column"


class RecordTerm(Base):
    """Exact-match facet values of a record, lower-cased so filters ignore case."""

    __tablename__ = "record_terms"
    __table_args__ = (Index("ix_record_terms_kind_value", "kind", "value_norm"),)

    record_id: Mapped[str] = mapped_column(
        ForeignKey("records.record_id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String, primary_key=True)
    value_norm: Mapped[str] = mapped_column(String, primary_key=True)


class Study(Base):
    """A joint study: invited nodes, the researchers working in it, its key version.

    The coordinator holds only the study's public BFV context; each member's copy of
    the secret context is sealed to that member and stored here as opaque bytes.
    """

    __tablename__ = "studies"

    study_id: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str] = mapped_column(String, unique=True)
    purpose: Mapped[str] = mapped_column(Text)
    min_nodes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String)  # scifed.states.StudyStatus
    created_by: Mapped[str] = mapped_column(String)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    key_version: Mapped[int] = mapped_column(BigInteger, default=0)
    lead_node: Mapped[str | None] = mapped_column(String)
    public_context: Mapped[bytes | None] = mapped_column(LargeBinary)


class StudyMember(Base):
    __tablename__ = "study_members"

    study_id: Mapped[str] = mapped_column(
        ForeignKey("studies.study_id", ondelete="CASCADE"), primary_key=True)
    node_name: Mapped[str] = mapped_column(ForeignKey("nodes.name"), primary_key=True)
    state: Mapped[str] = mapped_column(String)  # invited | accepted | declined
    datasets: Mapped[list[str]] = mapped_column(JSON, default=list)
    answered_ms: Mapped[int | None] = mapped_column(BigInteger)


class StudyResearcher(Base):
    __tablename__ = "study_researchers"

    study_id: Mapped[str] = mapped_column(
        ForeignKey("studies.study_id", ondelete="CASCADE"), primary_key=True)
    researcher: Mapped[str] = mapped_column(String, primary_key=True)


class StudyKeyShare(Base):
    """One member's sealed copy of one version of the study's secret context."""

    __tablename__ = "study_key_shares"

    study_id: Mapped[str] = mapped_column(
        ForeignKey("studies.study_id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    node_name: Mapped[str] = mapped_column(String, primary_key=True)
    sealed_secret: Mapped[bytes] = mapped_column(LargeBinary)


class Job(Base):
    """A researcher's federated job; its result is stored sealed, never in clear."""

    __tablename__ = "jobs"

    job_id: Mapped[str] = mapped_column(String, primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.study_id"), index=True)
    researcher: Mapped[str] = mapped_column(String, index=True)
    job_type: Mapped[str] = mapped_column(String)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    seal_claim: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String)  # scifed.states.JobStatus
    phase: Mapped[str] = mapped_column(String, default="")  # scifed.states.Phase: name
    phase_round: Mapped[int | None] = mapped_column(Integer, default=0)
    phase_rounds: Mapped[int | None] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    contributors: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)
    sealed_result: Mapped[bytes | None] = mapped_column(LargeBinary)
    # how often a coordinator restart re-ran the job, and its study (key version and
    # accepted members) when it first ran: a re-run in a changed study fails
    restarts: Mapped[int | None] = mapped_column(Integer, default=0)  # null: none
    run_study: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class JobTask(Base):
    """Progress of one node in one phase of a job (what `scifed job watch` shows)."""

    __tablename__ = "job_tasks"

    job_id: Mapped[str] = mapped_column(
        ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True)
    node_name: Mapped[str] = mapped_column(String, primary_key=True)
    phase: Mapped[str] = mapped_column(String, primary_key=True)
    state: Mapped[str] = mapped_column(String)  # scifed.states.TaskState
    detail: Mapped[str] = mapped_column(Text, default="")
    sealed_reason: Mapped[bytes | None] = mapped_column(LargeBinary)  # to the researcher
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class JobProgress(Base):
    """A training round's pooled metrics, sealed to the researcher by the release node
    (`scifed job watch` opens them); the coordinator cannot read them."""

    __tablename__ = "job_progress"

    job_id: Mapped[str] = mapped_column(
        ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_ms: Mapped[int] = mapped_column(BigInteger)


class AuditHead(Base):
    """A node's audit chain head as reported with a heartbeat or a task result: later
    evidence that the node's history up to `seq` hashed to `hash`."""

    __tablename__ = "audit_heads"

    node_name: Mapped[str] = mapped_column(String, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[str] = mapped_column(String)
    received_ms: Mapped[int] = mapped_column(BigInteger)



class CoordinatorAuditEntry(Base):
    """One entry of the coordinator's own hash chain (coordinator/audit.py): what it did
    (a study created, a study key activated, a job submitted or ended) chained by SHA-256.
    `details` is kept as the canonical JSON text that was hashed, so both backends give
    back the same bytes."""

    __tablename__ = "coordinator_audit"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String)
    action: Mapped[str] = mapped_column(String, index=True)
    subject: Mapped[str] = mapped_column(String, index=True)
    details: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


POOL_SIZE, POOL_OVERFLOW = 16, 112  # SQLite connections kept, and more at a peak
BUSY_TIMEOUT_MS = 10_000  # how long a SQLite write waits for another writer's lock


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        # 0600 before the first connection turns WAL on: SQLite gives -wal and -shm the
        # database file's mode (an in-memory or URI database is left to its caller)
        private_sqlite(Path(database))
    # The gRPC server calls in from several threads; the pool hands each its own
    # connection. A job's fan-out writes task rows from a thread per node, so the pool
    # holds enough for a large federation without queueing.
    engine = create_engine(url, connect_args={"check_same_thread": False},
                           pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets searches read while a node's sync writes. synchronous=NORMAL: a commit
        # is not fsynced (the WAL is, at each checkpoint), so a power cut may lose the
        # last transactions but never corrupts the file. The coordinator's records are
        # re-derivable or re-sent by the nodes, whose own ledgers stay fully synchronous.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_MS)}")
        cursor.close()

    return engine


class Database:
    """The coordinator's state store; brings its schema to this release's on open
    (:func:`coordinator.migrations.upgrade`), keeping the rows it holds."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = (
            _sqlite_engine(url) if url.startswith("sqlite") else create_engine(url)
        )
        self.dialect: str = self.engine.dialect.name
        try:
            migrations.upgrade(self.engine)
        except BaseException:
            self.engine.dispose()
            raise
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed if the block succeeds, rolled back if it raises."""
        with self._sessions.begin() as session:
            yield session

    def close(self) -> None:
        """Release pooled connections (tests drop their schema afterwards)."""
        self.engine.dispose()
