"""Attacks on the `pca` type at G2 / CONDITIONAL (k = 5, query auditing): the released
column means of two PCA jobs differ by one person when their filters differ by that
person, and a filter can aim at one person; both are refused at the node, and an
identifier column never enters a decomposition."""

from __future__ import annotations

import pytest
import yaml
from staff import NODES, attempt

COLUMNS = ["age", "salary"]
TARGET = 100_006  # a person at alpha


def pca(filter: str | None = None, columns=COLUMNS) -> str:
    job = {"study": "staff", "type": "pca", "datasets": {n: "staff" for n in NODES},
           "pca": {"columns": list(columns)}}
    if filter:
        job["filter"] = filter
    return yaml.safe_dump(job, sort_keys=False)


def test_differencing_two_decompositions_cannot_give_one_salary(staff):
    """n·mean over everyone minus (n − 1)·mean over everyone but the target is the
    target's salary. The first release is answered; the second would leave the target
    alone in an atom of the node's partition, so the query auditor refuses it."""
    everyone, why = attempt(staff, pca())
    assert everyone is not None, why
    table = staff.table
    assert everyone["n"] == len(table)
    assert everyone["means"][1] * everyone["n"] == \
        pytest.approx(table.salary.sum(), rel=1e-12)
    others, why = attempt(staff, pca(f"person_id != {TARGET}"))
    assert others is None, "the difference of the two releases names one salary"
    assert "salary" not in why and str(TARGET) not in why.replace(f"!= {TARGET}", "")
    target = table.loc[table.person_id == TARGET, "salary"].item()
    assert f"{target:.2f}" not in why


def test_a_filter_aimed_at_one_person_is_refused_without_a_count(staff):
    result, why = attempt(staff, pca(f"person_id == {TARGET}"))
    assert result is None
    assert "1 row" not in why and "one row" not in why, why
    assert not [s for core in staff.nodes.values() for s in core.gate.ledger.spent()]


def test_an_identifier_column_never_enters_a_decomposition(staff):
    result, why = attempt(staff, pca(columns=["person_id", "salary"]))
    assert result is None
    assert "pca.columns: column 'person_id' identifies people or records" in why, why
