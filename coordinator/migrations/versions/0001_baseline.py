"""Baseline: the coordinator's schema as the last release before migrations made it.

Written out here, not derived from ``coordinator.db``, so the models may move on only with
a new revision. ``adopt`` brings a database made before migrations (by ``create_all``,
whichever release made it) to this revision without touching its rows.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _nodes() -> None:
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("platform", sa.String(), nullable=False),
        sa.Column("software_version", sa.String(), nullable=False),
        sa.Column("cert_fingerprint", sa.String(), nullable=False),
        sa.Column("connected", sa.Boolean(), nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger(), nullable=True),
        sa.Column("seal_claim", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )


def _records() -> None:
    op.create_table(
        "records",
        sa.Column("record_id", sa.String(), nullable=False),
        sa.Column("node_name", sa.String(), nullable=False),
        sa.Column("record_json", sa.JSON(), nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("grade", sa.String(), nullable=False),
        sa.Column("category", sa.String(), nullable=False),
        sa.Column("platform", sa.String(), nullable=False),
        sa.Column("stub", sa.Boolean(), nullable=False),
        sa.Column("record_count", sa.BigInteger(), nullable=True),
        sa.Column("quality_grade", sa.String(length=1), nullable=True),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["node_name"], ["nodes.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("record_id"),
    )
    for column in ("node_name", "grade", "category", "platform", "quality_grade"):
        op.create_index(f"ix_records_{column}", "records", [column])


def _record_terms() -> None:
    op.create_table(
        "record_terms",
        sa.Column("record_id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("value_norm", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["record_id"], ["records.record_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("record_id", "kind", "value_norm"),
    )
    op.create_index("ix_record_terms_kind_value", "record_terms", ["kind", "value_norm"])


def _studies() -> None:
    op.create_table(
        "studies",
        sa.Column("study_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("min_nodes", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("key_version", sa.BigInteger(), nullable=False),
        sa.Column("lead_node", sa.String(), nullable=True),
        sa.Column("public_context", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("study_id"),
        sa.UniqueConstraint("name"),
    )


def _study_members() -> None:
    op.create_table(
        "study_members",
        sa.Column("study_id", sa.String(), nullable=False),
        sa.Column("node_name", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("datasets", sa.JSON(), nullable=False),
        sa.Column("answered_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["studies.study_id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["node_name"], ["nodes.name"]),
        sa.PrimaryKeyConstraint("study_id", "node_name"),
    )


def _study_researchers() -> None:
    op.create_table(
        "study_researchers",
        sa.Column("study_id", sa.String(), nullable=False),
        sa.Column("researcher", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.study_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("study_id", "researcher"),
    )


def _study_key_shares() -> None:
    op.create_table(
        "study_key_shares",
        sa.Column("study_id", sa.String(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("node_name", sa.String(), nullable=False),
        sa.Column("sealed_secret", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.study_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("study_id", "version", "node_name"),
    )


def _jobs() -> None:
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("study_id", sa.String(), nullable=False),
        sa.Column("researcher", sa.String(), nullable=False),
        sa.Column("job_type", sa.String(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("seal_claim", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("phase", sa.String(), nullable=False),
        sa.Column("phase_round", sa.Integer(), nullable=True),
        sa.Column("phase_rounds", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("contributors", sa.JSON(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.Column("sealed_result", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["studies.study_id"]),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.create_index("ix_jobs_study_id", "jobs", ["study_id"])
    op.create_index("ix_jobs_researcher", "jobs", ["researcher"])


def _job_tasks() -> None:
    op.create_table(
        "job_tasks",
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("node_name", sa.String(), nullable=False),
        sa.Column("phase", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("sealed_reason", sa.LargeBinary(), nullable=True),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.job_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "node_name", "phase"),
    )


def _job_progress() -> None:
    op.create_table(
        "job_progress",
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("round", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.job_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "round"),
    )


def _audit_heads() -> None:
    op.create_table(
        "audit_heads",
        sa.Column("node_name", sa.String(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(), nullable=False),
        sa.Column("received_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("node_name", "seq"),
    )


def _coordinator_audit() -> None:
    op.create_table(
        "coordinator_audit",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("ix_coordinator_audit_action", "coordinator_audit", ["action"])
    op.create_index("ix_coordinator_audit_subject", "coordinator_audit", ["subject"])


TABLES: dict[str, Callable[[], None]] = {
    "nodes": _nodes,
    "records": _records,
    "record_terms": _record_terms,
    "studies": _studies,
    "study_members": _study_members,
    "study_researchers": _study_researchers,
    "study_key_shares": _study_key_shares,
    "jobs": _jobs,
    "job_tasks": _job_tasks,
    "job_progress": _job_progress,
    "audit_heads": _audit_heads,
    "coordinator_audit": _coordinator_audit,
}
"""Each table's creation, parents before children."""


def _search_index() -> None:
    """Full-text search beside ``records``: on SQLite an FTS5 table (trigram, so any 3+
    character substring of Chinese text matches) that the catalog keeps in step; on
    PostgreSQL a generated ``tsvector`` column with a GIN index, kept in step by the
    server. Idempotent, so ``adopt`` can run it on a database that may have it."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS records_fts USING fts5(record_id UNINDEXED, "
            "title, keywords, subjects, columns, description, tokenize='trigram')"
        )
    elif op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE records ADD COLUMN IF NOT EXISTS tsv tsvector "
            "GENERATED ALWAYS AS (to_tsvector('simple', search_text)) STORED"
        )
        op.execute("CREATE INDEX IF NOT EXISTS ix_records_tsv ON records USING GIN (tsv)")


def upgrade() -> None:
    for create in TABLES.values():
        create()
    _search_index()


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS records_fts")
    for table in reversed(TABLES):
        op.drop_table(table)


PRE_MIGRATION_COLUMNS: tuple[tuple[str, Callable[[], sa.Column]], ...] = (
    ("nodes", lambda: sa.Column("seal_claim", sa.JSON(), nullable=True)),
    ("records", lambda: sa.Column("quality_grade", sa.String(length=1), nullable=True)),
    ("jobs", lambda: sa.Column("phase_round", sa.Integer(), nullable=True)),
    ("jobs", lambda: sa.Column("phase_rounds", sa.Integer(), nullable=True)),
    ("job_tasks", lambda: sa.Column("sealed_reason", sa.LargeBinary(), nullable=True)),
)
"""Columns that releases before migrations added to an existing table (nullable: their
``create_all`` added them to a database made by an older one, without an index)."""

PRE_MIGRATION_INDEXES = (("ix_records_quality_grade", "records", "quality_grade"),)
"""Indexes of those columns, which the old way of adding them left out."""


def adopt() -> None:
    """Bring a database made by ``create_all`` before migrations to this revision: the
    tables, columns and indexes its release did not have yet are added; nothing is
    dropped or rewritten. The caller stamps it at this revision afterwards."""
    inspector = sa.inspect(op.get_bind())
    present = set(inspector.get_table_names())
    for table, create in TABLES.items():
        if table not in present:
            create()
    for table, make in PRE_MIGRATION_COLUMNS:
        column = make()
        if table in present and column.name not in {
            c["name"] for c in inspector.get_columns(table)
        }:
            op.add_column(table, column)
    for name, table, column in PRE_MIGRATION_INDEXES:
        if table in present and name not in {i["name"] for i in inspector.get_indexes(table)}:
            op.create_index(name, table, [column])
    _search_index()
