"""The pipeline on the in-memory link: the real coordinator driver against real node
runners in this process (real PKI, sealing, BFV, SQLite), penguins split by island."""

from __future__ import annotations

import pytest
from inmemory_cases import build


@pytest.fixture(scope="module")
def fed(tmp_path_factory, penguins, penguins_meta):
    fed = build(tmp_path_factory.mktemp("inmemory"), penguins, penguins_meta)
    yield fed
    fed.__exit__(None, None, None)
