"""The coordinator's schema migrations, on SQLite and PostgreSQL: a database made by an
earlier release (before migrations, by ``create_all``) is upgraded keeping every row; the
models never drift from the migrated schema without a revision."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import op
from alembic.autogenerate import compare_metadata
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext

from coordinator import catalog, migrations, registry, studies
from coordinator.db import Base, Database
from scifed.errors import UserError

SCHEMAS = Path(__file__).parent / "data" / "schemas"
LAST_BEFORE_MIGRATIONS = "09748c6"
"""The last release whose ``create_all`` made the schema (the baseline writes it out)."""
FIRST_STUDIES = "efc9503"
"""An early release: no quality grades, job phases, refusal reasons, progress or audit."""

ROWS: dict[str, dict[str, Any]] = {
    "nodes": {"name": "alpha", "platform": "platform-alpha", "software_version": "0.1.0",
              "cert_fingerprint": "sha256:alpha", "connected": False, "last_seen_ms": 1_000,
              "seal_claim": {"cert_pem": "PEM", "key": "x25519"}},
    "records": {"record_id": "alpha/penguins", "node_name": "alpha",
                "record_json": {"id": "alpha/penguins", "title": {"en": "Palmer penguins"}},
                "title": "Palmer penguins", "grade": "G1", "category": "OPEN",
                "platform": "platform-alpha", "stub": False, "record_count": 344,
                "quality_grade": "A", "updated_ms": 1_001,
                "search_text": "palmer penguins 帕尔默企鹅"},
    "record_terms": {"record_id": "alpha/penguins", "kind": "keyword",
                     "value_norm": "penguins"},
    "studies": {"study_id": "s-1", "name": "penguins", "purpose": "size by island",
                "min_nodes": 2, "status": "active", "created_by": "operator",
                "created_ms": 1_002, "key_version": 1, "lead_node": "alpha",
                "public_context": b"\x00public BFV context\xff"},
    "study_members": {"study_id": "s-1", "node_name": "alpha", "state": "accepted",
                      "datasets": ["penguins"], "answered_ms": 1_003},
    "study_researchers": {"study_id": "s-1", "researcher": "alice"},
    "study_key_shares": {"study_id": "s-1", "version": 1, "node_name": "alpha",
                         "sealed_secret": b"\x01sealed secret context"},
    "jobs": {"job_id": "j-1", "study_id": "s-1", "researcher": "alice", "job_type": "stats",
             "spec": {"type": "stats", "stats": {"count": True}},
             "seal_claim": {"name": "alice"}, "status": "done", "phase": "compute",
             "phase_round": 1, "phase_rounds": 1, "error": "", "contributors": ["alpha"],
             "created_ms": 1_004, "updated_ms": 1_005, "sealed_result": b"\x02sealed result",
             "restarts": 1, "run_study": {"key_version": 1, "members": ["alpha"]}},
    "job_tasks": {"job_id": "j-1", "node_name": "alpha", "phase": "compute", "state": "done",
                  "detail": "", "sealed_reason": b"\x03sealed reason", "updated_ms": 1_006},
    "job_progress": {"job_id": "j-1", "round": 1, "sealed": b"\x04round 1",
                     "created_ms": 1_007},
    "audit_heads": {"node_name": "alpha", "seq": 7, "hash": "ab" * 32,
                    "received_ms": 1_008},
    "coordinator_audit": {"seq": 1, "ts_ms": 1_009, "actor": "operator",
                          "action": "study.create", "subject": "s-1",
                          "details": '{"name":"penguins"}', "prev_hash": "0" * 64,
                          "hash": "f" * 64},
}
"""One row in every coordinator table (parents first), with every column filled."""


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'coordinator.db'}"
    return request.getfixturevalue("postgres_url")


def run_script(url: str, sql: str) -> None:
    """Run an SQL script as the earlier release's create_all ran its DDL."""
    engine = sa.create_engine(url)
    try:
        raw = engine.raw_connection()
        try:
            if engine.dialect.name == "sqlite":
                raw.executescript(sql)
            else:
                raw.cursor().execute(sql)
            raw.commit()
        finally:
            raw.close()
    finally:
        engine.dispose()


def made_by(release: str, url: str) -> dict[str, dict[str, Any]]:
    """A database as ``release`` made it, one row in each of its tables; the rows as
    stored (only the columns that release had)."""
    dialect = sa.make_url(url).get_backend_name()
    run_script(url, (SCHEMAS / f"{release}.{dialect}.sql").read_text())
    engine = sa.create_engine(url)
    stored: dict[str, dict[str, Any]] = {}
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.begin() as connection:
            for name, row in ROWS.items():
                if name not in meta.tables:
                    continue
                table = meta.tables[name]
                stored[name] = {k: v for k, v in row.items() if k in table.columns}
                connection.execute(table.insert().values(stored[name]))
            if dialect == "sqlite":
                connection.execute(sa.text(
                    "INSERT INTO records_fts (record_id, title, keywords, subjects, columns, "
                    "description) VALUES ('alpha/penguins', 'palmer penguins 帕尔默企鹅', "
                    "'penguins', 'ecology', 'species', '')"))
    finally:
        engine.dispose()
    return stored


def rows(database: Database) -> dict[str, dict[str, Any]]:
    """Every table's single row, read back through the current models."""
    out: dict[str, dict[str, Any]] = {}
    with database.session() as session:
        for table in Base.metadata.sorted_tables:
            found = session.execute(sa.select(table)).mappings().all()
            assert len(found) <= 1, table.name
            if found:
                out[table.name] = dict(found[0])
    return out


def drift(database: Database) -> list[Any]:
    """What autogenerate finds between the models and the database's schema."""
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={
            "include_object": migrations.include_object, "compare_type": True})
        return compare_metadata(context, Base.metadata)


def revision(database: Database) -> str | None:
    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@pytest.fixture
def opened(url: str) -> Iterator[Database]:
    database = Database(url)
    yield database
    database.close()


def test_a_new_database_is_migrated_to_head_and_matches_the_models(
    opened: Database,
) -> None:
    assert revision(opened) == migrations.head()
    assert drift(opened) == []


def test_a_model_change_without_a_revision_is_caught(opened: Database) -> None:
    """The check above is not vacuous: a column in the models that no revision adds,
    and a type changed in the models, both show up."""
    changed = sa.MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["jobs"].append_column(sa.Column("priority", sa.Integer, nullable=True))
    changed.tables["studies"].c.purpose.type = sa.Integer()
    with opened.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={
            "include_object": migrations.include_object, "compare_type": True})
        found = compare_metadata(context, changed)
    assert {describe(d) for d in found} == {("add_column", "jobs", "priority"),
                                            ("modify_type", "studies", "purpose")}


def describe(diff: Any) -> tuple[str, str, str]:
    """(kind, table, column) of one autogenerate difference."""
    if isinstance(diff, list):  # changes to one existing column come grouped
        [(kind, _schema, table, column, *_)] = diff
        return kind, table, column
    kind, _schema, table, column = diff
    return kind, table, column.name


@pytest.mark.parametrize("release", [LAST_BEFORE_MIGRATIONS, FIRST_STUDIES])
def test_a_database_made_before_migrations_is_upgraded_keeping_its_rows(
    url: str, release: str
) -> None:
    stored = made_by(release, url)
    database = Database(url)
    try:
        assert revision(database) == migrations.head()
        assert drift(database) == []
        after = rows(database)
        for table, row in stored.items():
            assert {k: after[table][k] for k in row} == row, table
        # columns and tables the release did not have yet are there, empty
        assert set(after) == set(stored)
        for table, row in stored.items():
            assert {k: v for k, v in after[table].items() if k not in row} == {
                k: None for k in ROWS[table] if k not in row}, table
        # and the coordinator reads it: catalog search (full-text index kept), registry,
        # studies; and writes to every table the release lacked
        assert [h.record_id for h in catalog.search(database, query="penguins")] == [
            "alpha/penguins"]
        assert [n.name for n in registry.list_nodes(database, now_ms=0,
                                                    offline_after_ms=1)] == ["alpha"]
        assert studies.get_study(database, "penguins").status == "active"
        with database.session() as session:
            for table in Base.metadata.sorted_tables:
                if table.name not in stored:
                    session.execute(table.insert().values(ROWS[table.name]))
        assert set(rows(database)) == set(ROWS)
    finally:
        database.close()


def test_reopening_an_upgraded_database_changes_nothing(url: str) -> None:
    made_by(FIRST_STUDIES, url)
    Database(url).close()
    again = Database(url)
    try:
        assert revision(again) == migrations.head()
        assert rows(again)["records"]["quality_grade"] is None
    finally:
        again.close()


def test_a_database_from_a_newer_release_is_refused_untouched(opened: Database) -> None:
    with opened.session() as session:
        session.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    url = opened.engine.url.render_as_string(hide_password=False)
    with pytest.raises(UserError, match=r"schema revision '9999'.*newer scifed made it"):
        Database(url)
    assert revision(opened) == "9999"
    assert drift(opened) == []


def test_a_revision_that_copies_a_table_on_sqlite_keeps_its_children(tmp_path: Path) -> None:
    """SQLite alters a table by copying it and dropping the old one; with foreign keys on,
    that drop would cascade into every child (a job's tasks and progress). Migrations run
    with them off, checked before the commit, and on again after."""
    url = f"sqlite:///{tmp_path / 'coordinator.db'}"
    made_by(LAST_BEFORE_MIGRATIONS, url)
    database = Database(url)
    try:
        with migrations.migration_connection(database.engine) as connection:
            with Operations.context(MigrationContext.configure(connection)):
                with op.batch_alter_table("jobs", recreate="always") as batch:
                    batch.alter_column("error", existing_type=sa.Text(), nullable=False)
        assert set(rows(database)) == set(ROWS)
        with database.session() as session:
            assert session.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        database.close()


def test_a_migration_that_breaks_a_foreign_key_on_sqlite_is_rolled_back(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'coordinator.db'}"
    made_by(LAST_BEFORE_MIGRATIONS, url)
    database = Database(url)
    try:
        with pytest.raises(RuntimeError, match="broke foreign keys"):
            with migrations.migration_connection(database.engine) as connection:
                connection.execute(sa.text("DELETE FROM jobs"))
        assert set(rows(database)) == set(ROWS)
    finally:
        database.close()


def test_processes_opening_a_new_database_at_once_migrate_it_one_after_the_other(
    url: str,
) -> None:
    """A coordinator and an operator command starting together on an empty database:
    one migrates, the others wait for it and find the schema current."""
    start = threading.Barrier(4)

    def open_database(_: int) -> str | None:
        start.wait()
        database = Database(url)
        try:
            return revision(database)
        finally:
            database.close()

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(open_database, range(4))) == [migrations.head()] * 4


def test_a_migration_that_fails_midway_changes_nothing(url: str) -> None:
    """DDL included: a revision that fails half done leaves the database as it was."""
    stored = made_by(FIRST_STUDIES, url)
    engine = sa.create_engine(url)
    try:
        before = sorted(sa.inspect(engine).get_table_names())
        with pytest.raises(ValueError, match="half done"):
            with migrations.migration_connection(engine) as connection:
                with Operations.context(MigrationContext.configure(connection)):
                    op.create_table("half", sa.Column("x", sa.Integer))
                    op.add_column("jobs", sa.Column("priority", sa.Integer))
                    op.execute("DELETE FROM job_tasks")
                raise ValueError("half done")
        inspector = sa.inspect(engine)
        assert sorted(inspector.get_table_names()) == before
        assert "priority" not in {c["name"] for c in inspector.get_columns("jobs")}
    finally:
        engine.dispose()
    database = Database(url)
    try:
        after = rows(database)
        assert all({k: after[t][k] for k in row} == row for t, row in stored.items())
    finally:
        database.close()


def test_a_coordinator_started_beside_a_folder_named_coordinator_finds_its_migrations(
        tmp_path):
    """The coordinator's state directory is often called `coordinator`, and the process
    runs from its parent: the migrations are found by their own path, not as a resource
    of whatever `coordinator` the working directory offers."""
    import os
    import subprocess
    import sys

    (tmp_path / "coordinator").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [sys.executable, "-c", "from coordinator.db import Database; "
         "Database('sqlite:///coordinator/c.db'); print('migrated')"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "migrated" in run.stdout, run.stderr[-2000:]
