"""The delivery rules (node/delivery/rules.py) against the table of docs/governance.md
§2.10, cell by cell, and the record's own narrowing: embargo and delivery_methods."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from node.delivery import rules
from scifed.grading import VALID_PAIRS, Access, default_delivery_methods

DOCS = Path(__file__).resolve().parents[2] / "docs" / "governance.md"
SYMBOL = {"A": Access.AUTO, "R": Access.APPROVAL, "–": Access.FORBIDDEN}


def documented() -> dict[tuple[str, str], tuple[str, str, str]]:
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("### 2.10 Delivery"):text.index("## 3. AI-readiness")]
    out = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 4 or not re.match(r"G\d", cells[0]):
            continue
        for part in cells[0].split(", "):
            grade, *category = part.split()
            for pair in VALID_PAIRS:
                if pair[0] == grade and (not category or pair[1] == category[0]):
                    out[pair] = (cells[1][0], cells[2][0], cells[3][0])
    return out


def record(grade: str, category: str, **extra) -> dict:
    return {"security_grade": grade, "sharing_category": category,
            "delivery_methods": default_delivery_methods(grade, category), **extra}


def test_the_documented_table_covers_every_valid_cell():
    assert set(documented()) == VALID_PAIRS


@pytest.mark.parametrize("cell", sorted(VALID_PAIRS))
def test_each_cell_decides_as_documented(cell):
    download, service, offline = documented()[cell]
    rec = record(*cell)
    assert rules.online_access(rec, "download", "2026-01-01").access is SYMBOL[download]
    assert rules.online_access(rec, "in_node_service", "2026-01-01").access is SYMBOL[service]
    assert rules.offline_access(rec).refused is (offline == "–")


def test_embargo_and_the_officers_narrowing_stop_a_download():
    rec = record("G2", "OPEN", embargo_until="2026-06-01")
    assert "embargo" in rules.online_access(rec, "download", "2026-05-31").reason
    assert rules.online_access(rec, "download", "2026-06-01").access is Access.AUTO
    assert not rules.rows_allowed(rec, "2026-05-31")  # nor rows through the service
    narrowed = record("G1", "OPEN", delivery_methods=["metadata_only", "in_node_service"])
    assert rules.online_access(narrowed, "download", "2026-01-01").refused
    assert not rules.rows_allowed(narrowed, "2026-01-01")
    assert rules.offline_access(narrowed).refused
