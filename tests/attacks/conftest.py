"""Attacks on disclosure control, run through the real pipeline on the in-memory link."""

from __future__ import annotations

import pytest
from staff import federation


@pytest.fixture(scope="module")
def staff(tmp_path_factory):
    fed, df = federation(tmp_path_factory.mktemp("staff"))
    fed.table = df
    yield fed
    fed.__exit__(None, None, None)
