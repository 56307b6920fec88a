"""Each test is an attack a researcher made on G2 data (k = 5) through `scifed job submit`,
and asserts what the attacker learns stays within the rule: no released answer, alone or
combined with earlier ones, determines a value held by fewer than k rows."""

from __future__ import annotations

import json

import numpy as np
from staff import NODES, K, attempt, federation, stats

from coordinator.db import Job, JobTask


def _values(table, column: str) -> set[str]:
    return {str(v) for v in table[column]}


def _released_text(result: dict | None, refusal: str) -> str:
    return json.dumps(result or {}) + refusal


# -- 1. group counts name every value --------------------------------------------------
def test_group_counts_never_release_identifier_or_numeric_labels(staff):
    for column in ("person_id", "zip_code", "salary", "age"):
        result, refusal = attempt(staff, stats(group_counts=[column]))
        text = _released_text(result, refusal)
        leaked = [v for v in _values(staff.table, column) if f'"{v}"' in text]
        assert not leaked, (column, leaked[:5])
        assert result is None and column in refusal


def test_group_labels_come_from_the_declared_enumeration(staff):
    result, refusal = attempt(staff, stats(group_counts=["department"]))
    assert result is not None, refusal
    groups = result["groups"]["department"]
    counts = staff.table.department.value_counts()
    assert dict(zip(groups["values"], groups["counts"], strict=True)) == counts.to_dict(), \
        [(t.node, t.phase, t.state, t.detail) for t in staff.last_view.tasks]


# -- 3. a tracker beats the pairwise guard ----------------------------------------------
def test_a_three_query_tracker_cannot_isolate_one_salary(tmp_path):
    staff, table = federation(tmp_path)  # a fresh history: nothing released before
    alpha = table[table.node == "alpha"].reset_index(drop=True)
    target = alpha.loc[30]
    t = int(target.person_id)
    lo, hi = t - 10, t + 10
    sums = []
    for flt in (f"person_id >= {lo} and person_id <= {hi}",
                f"person_id >= {lo} and person_id <= {t}",
                f"person_id >= {t} and person_id <= {hi}"):
        result, refusal = attempt(staff, stats(columns=["salary"], measures=["sum"],
                                               filter=flt))
        sums.append(None if result is None else result["columns"]["salary"]["sum"])
    staff.__exit__(None, None, None)
    assert sums[0] is not None and sums[1] is not None  # harmless alone: answered
    if sums[2] is not None:
        recovered = sums[1] + sums[2] - sums[0]
        assert abs(recovered - float(target.salary)) > 1.0, "the tracker isolated one salary"


# -- 5. the coordinator learns from side channels -----------------------------------------
def test_the_coordinator_keeps_no_refusal_detail(tmp_path):
    fed, table = federation(tmp_path)  # a fresh history: nothing released before
    try:
        # two selections one row apart: the second is refused by every node's auditor
        top = table.sort_values("salary").iloc[-1]
        first, refusal = attempt(fed, stats(columns=["age"], filter="salary > 100000"))
        assert first is not None, refusal
        _, refusal = attempt(fed, stats(columns=["age"], filter=f"salary > 100000 and "
                                                                f"salary < {top.salary}"))
        assert refusal
        opened = " ".join(t.detail for t in fed.last_view.tasks)  # opened by the researcher
        assert "query auditing" in opened
        with fed.coordinator.db.session() as s:
            stored = [j.error for j in s.query(Job).all()]
            stored += [t.detail for t in s.query(JobTask).all()]
        assert any(f"refused at node {top.node}" in text for text in stored)
        for text in stored:
            assert "fewer than" not in text and "auditing" not in text and "k=" not in text
    finally:
        fed.__exit__(None, None, None)


def test_the_catalog_publishes_no_column_summary_of_g2_data(staff):
    from coordinator.catalog import get_record

    record, _ = get_record(staff.coordinator.db, "urn:sdn:alpha:ds:staff")
    for field in record.get("fields", []):
        for key in ("min", "max", "mean", "std", "distinct_count"):
            assert field.get(key) is None, (field["name"], key, field.get(key))


# -- 6. two contributors ---------------------------------------------------------------------
def test_two_contributors_are_refused_by_default(tmp_path):
    """With two contributors the release node takes its own vector from the sum and reads
    the other node's: an exact result needs three."""
    fed, df = federation(tmp_path, min_nodes=2)
    try:
        result, refusal = attempt(fed, stats(nodes=NODES[:2], columns=["salary"]))
        assert result is None and "3" in refusal and "contributors" in refusal, refusal
        result, refusal = attempt(fed, stats(nodes=NODES, columns=["salary"]))
        assert result is not None, refusal
        assert result["columns"]["salary"]["count"] == len(df)
    finally:
        fed.__exit__(None, None, None)


# -- 2. quantiles are order statistics ----------------------------------------------------
def test_quantiles_never_return_an_extreme_or_one_persons_salary(staff):
    salaries = staff.table.salary.to_numpy()
    result, refusal = attempt(staff, stats(quantiles={"salary": [0.0, 1.0]}))
    assert result is None or not result.get("quantiles"), "min / max released at G2"
    group = staff.table[staff.table.department == "physics"]
    probs = [round(i / (len(group) - 1), 6) for i in range(len(group))]
    result, refusal = attempt(staff, stats(quantiles={"salary": probs[:12]},
                                           filter="department == 'physics'"))
    released = (result or {}).get("quantiles", {}).get("salary", {})
    exact = set(np.round(salaries, 2))
    assert not [v for v in released.values() if v is not None and round(v, 2) in exact]
    result, refusal = attempt(staff, stats(quantiles={"salary": [0.5]}))
    assert result is not None, refusal
    median = result["quantiles"]["salary"]["0.5"]
    near = np.abs(salaries - median) <= 0.5 * result["quantile_resolution"]["salary"]
    assert near.sum() >= K  # the released value is shared by at least k people
