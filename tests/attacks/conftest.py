"""Attacks on disclosure control, run through the real pipeline on the in-memory link."""

from __future__ import annotations

import pytest
from staff import federation


@pytest.fixture
def staff(tmp_path):
    """A fresh federation per attack: a history of refusals (which raises alerts) or of
    released row sets (which the auditor remembers) must not leak between attacks."""
    fed, df = federation(tmp_path)
    fed.table = df
    yield fed
    fed.__exit__(None, None, None)
