"""Shared fixtures: real data from packages, and a real federation on loopback."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import palmerpenguins
import pandas as pd
import psycopg
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def penguins() -> pd.DataFrame:
    return palmerpenguins.load_penguins()


@pytest.fixture(scope="session")
def penguins_meta() -> dict:
    return yaml.safe_load((REPO / "configs" / "datasets" / "penguins.yaml").read_text())


@pytest.fixture(scope="session")
def weather_meta() -> dict:
    return yaml.safe_load((REPO / "configs" / "datasets" / "seattle_weather.yaml").read_text())


PG_CONNINFO = "host=127.0.0.1 port=5432 user=postgres dbname=test"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REQUIRE_POSTGRES = "SCIFED_REQUIRE_POSTGRES"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL on the machine's PostgreSQL (127.0.0.1:5432, trust, database
    ``test``) whose search_path is a fresh schema of this test's own, dropped after it.

    Without a reachable server the test is skipped, saying why; with
    ``SCIFED_REQUIRE_POSTGRES=1`` (CI, where PostgreSQL runs) it fails instead."""
    try:
        admin = psycopg.connect(PG_CONNINFO, connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL not reachable at 127.0.0.1:5432 (database test): {exc}"
        if os.environ.get(REQUIRE_POSTGRES) == "1":
            pytest.fail(f"{reason}; {REQUIRE_POSTGRES}=1 requires it")
        pytest.skip(reason)
    schema = f"scifed_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{PG_URL}?options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
