"""The coordinator's schema migrations (Alembic), run by :class:`coordinator.db.Database`
whenever it opens a database.

This directory is the Alembic script directory (``env.py``, ``script.py.mako``,
``versions/``), found as package data, so an installed coordinator migrates without an
``alembic.ini``. A model change in ``coordinator/db.py`` needs a new revision in
``versions/`` (``python -m coordinator.migrations revision "what changed"`` drafts one);
a test compares the models with the migrated schema and fails without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from scifed.errors import UserError

# this directory by its path, not as the resource "coordinator:migrations": a process
# started in a directory that holds a folder named `coordinator` (a state directory) would
# resolve that resource there
SCRIPT_LOCATION = str(Path(__file__).resolve().parent)
BASELINE = "0001"
"""The revision that writes out the schema of the last release before migrations."""

_SEARCH_COLUMN = ("records", "tsv")
_SEARCH_INDEX = "ix_records_tsv"


def include_object(obj: Any, name: str | None, type_: str, reflected: bool,
                   compare_to: Any) -> bool:
    """What autogenerate compares with the models: everything but the full-text search
    objects, which the baseline makes in raw DDL and no model declares (SQLite's FTS5
    table and its shadow tables, PostgreSQL's generated ``tsv`` column and its index)."""
    from coordinator.db import FTS_TABLE  # db imports this module

    if type_ == "table":
        return not (name == FTS_TABLE or (name or "").startswith(f"{FTS_TABLE}_"))
    if type_ == "column":
        return (obj.table.name, name) != _SEARCH_COLUMN
    if type_ == "index":
        return name != _SEARCH_INDEX
    return True


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for this package, handing ``env.py`` ``connection``."""
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.attributes["connection"] = connection
    return cfg


@cache
def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    """The newest revision this release knows."""
    revision = scripts().get_current_head()
    assert revision is not None, "no revisions in coordinator/migrations/versions"
    return revision


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """One connection holding one transaction for a whole migration, so it applies
    entirely or not at all, and two processes opening the same database migrate it one
    after the other.

    On SQLite the transaction is ``BEGIN IMMEDIATE`` (the write lock at once) with foreign
    keys off, as SQLite's procedure for altering a table asks: a revision that copies a
    table must not cascade the drop of the old copy into its children. The keys are
    checked before the commit and turned on again. On PostgreSQL (transactional DDL) an
    advisory lock per schema serialises concurrent upgrades.
    """
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        try:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                connection.commit()
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            elif connection.dialect.name == "postgresql":
                connection.execute(text(
                    "SELECT pg_advisory_xact_lock(hashtext('scifed coordinator schema'), "
                    "hashtext(coalesce(current_schema(), '')))"))
            yield connection
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration broke foreign keys: {broken[:5]}")
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


def _made_before_migrations(connection: Connection) -> bool:
    """Tables of ours but no version table: ``create_all`` of an earlier release."""
    return "nodes" in inspect(connection).get_table_names()


def upgrade(engine: Engine) -> None:
    """Bring the database to this release's schema, keeping its rows: a new database gets
    every revision; one made before migrations is adopted at the baseline, then upgraded;
    one at head is left alone. A database that a newer release migrated is refused."""
    with migration_connection(engine) as connection:
        context = MigrationContext.configure(connection)
        current = context.get_current_revision()
        if current == head():
            return
        if current is None and _made_before_migrations(connection):
            with Operations.context(context):
                scripts().get_revision(BASELINE).module.adopt()
            context.stamp(scripts(), BASELINE)
        elif current is not None:
            try:
                scripts().get_revision(current)
            except CommandError:
                raise UserError(
                    f"the coordinator database {engine.url.render_as_string()} has schema "
                    f"revision {current!r}, which this release (newest revision "
                    f"{head()!r}) does not know: a newer scifed made it; run that release"
                ) from None
        command.upgrade(config(connection), "head")
