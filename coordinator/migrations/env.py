"""Alembic's environment for the coordinator's schema, run only through
:mod:`coordinator.migrations` (which hands over an open connection inside the transaction
it holds); there is no offline (``--sql``) mode and no alembic.ini."""

from __future__ import annotations

from alembic import context

from coordinator.db import Base
from coordinator.migrations import include_object

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the coordinator's migrations through coordinator.migrations")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    include_object=include_object,
    compare_type=True,
    # SQLite alters a table by copying it; batch mode writes revisions that way
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
