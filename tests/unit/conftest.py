"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from coordinator.db import Database


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Database]:
    """The coordinator's database on SQLite and on PostgreSQL (a schema of its own)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'coord.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    database = Database(url)
    yield database
    database.close()
