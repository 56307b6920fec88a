"""Shared fixtures: real data from packages, and a real federation on loopback."""

from __future__ import annotations

from pathlib import Path

import palmerpenguins
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def penguins() -> pd.DataFrame:
    return palmerpenguins.load_penguins()


@pytest.fixture(scope="session")
def penguins_meta() -> dict:
    return yaml.safe_load((REPO / "configs" / "datasets" / "penguins.yaml").read_text())
