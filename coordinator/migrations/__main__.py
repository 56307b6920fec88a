"""Draft a schema revision after changing the models in ``coordinator/db.py``::

    python -m coordinator.migrations revision "jobs get a priority"

writes ``versions/NNNN_jobs_get_a_priority.py`` from what autogenerate finds between the
models and a scratch SQLite database migrated to head (``--database URL`` compares with
another database at head instead, e.g. a PostgreSQL schema). Read the draft before
committing it: autogenerate misses renames and server-side details, and the full-text
search objects (raw DDL in the baseline) are left out on purpose.
"""

from __future__ import annotations

import argparse
import tempfile

from alembic import command
from sqlalchemy import create_engine

from coordinator import migrations
from coordinator.db import Database


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m coordinator.migrations")
    commands = parser.add_subparsers(dest="command", required=True)
    revision = commands.add_parser("revision", help="draft the next revision")
    revision.add_argument("message", help="what the revision changes")
    revision.add_argument("--empty", action="store_true",
                          help="an empty revision to fill by hand (no autogenerate)")
    revision.add_argument("--database", help="SQLAlchemy URL to compare with (default: a "
                          "scratch SQLite database)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database or f"sqlite:///{scratch}/head.db"
        Database(url).close()  # at head: autogenerate compares with the newest schema
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                command.revision(migrations.config(connection), message=args.message,
                                 autogenerate=not args.empty,
                                 rev_id=f"{int(migrations.head()) + 1:04d}")
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
