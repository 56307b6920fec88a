"""Fixtures shared by the unit tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from coordinator.db import Database

PG_CONNINFO = "host=127.0.0.1 port=5432 user=postgres dbname=test"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Database]:
    """The coordinator's database on SQLite and on PostgreSQL (a schema of its own)."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'coord.db'}")
        yield database
        database.close()
        return
    try:
        admin = psycopg.connect(PG_CONNINFO, connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}")
    schema = f"scifed_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            database = Database(f"{PG_URL}?options=-csearch_path%3D{schema}")
            yield database
            database.close()
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
