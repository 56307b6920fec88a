"""Each test is an attack a researcher made on G2 data (k = 5) through `scifed job submit`,
and asserts what the attacker learns stays within the rule: no released answer, alone or
combined with earlier ones, determines a value held by fewer than k rows."""

from __future__ import annotations

import json
import re

import numpy as np
from staff import NODES, K, approve_until_done, attempt, federation, stats

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
        # refused, naming the column — or, after a run of refusals, held for the officer
        assert result is None and (column in refusal or "alert" in refusal), refusal


def test_group_labels_come_from_the_declared_enumeration(staff):
    result, refusal = attempt(staff, stats(group_counts=["department"]))
    assert result is not None, refusal
    groups = result["groups"]["department"]
    counts = staff.table.department.value_counts()
    assert dict(zip(groups["values"], groups["counts"], strict=True)) == counts.to_dict(), \
        [(t.node, t.phase, t.state, t.detail) for t in staff.last_view.tasks]


def test_a_near_unique_undeclared_category_cannot_be_grouped(staff):
    result, refusal = attempt(staff, stats(group_counts=["office"]))
    assert result is None and "office" in refusal and "levels" in refusal, refusal
    text = _released_text(result, refusal)
    assert not [v for v in _values(staff.table, "office") if v in text]


def test_a_label_only_one_person_holds_is_never_named(tmp_path):
    """At G1/CONDITIONAL (k = 3, no query auditing) the node suppresses the director's
    cell, which pools to 0: the label itself must not reach the researcher either."""
    fed, table = federation(tmp_path, grade="G1", category="CONDITIONAL")
    try:
        result, refusal = attempt(fed, stats(group_counts=["title"]))
        assert result is not None, refusal
        groups = result["groups"]["title"]
        assert "director" not in json.dumps(result)
        assert groups["withheld_levels"] == 1
        # the director's node also withheld its smallest other cell (secondary
        # suppression), so pooled counts are at most pandas' and the report says so
        counts = table.title.value_counts().drop("director")
        assert sorted(groups["values"]) == sorted(counts.index)
        assert all(c <= counts[v] for v, c in zip(groups["values"], groups["counts"],
                                                  strict=True))
        assert result["suppression"]["local"] == {"groups.title": 1}
    finally:
        fed.__exit__(None, None, None)


def test_other_members_never_read_a_label_fewer_than_k_rows_hold(tmp_path):
    """The vocabulary phase lines every node's categories up, so each node used to seal
    its labels for the members and every member opened the union: the director's title,
    one person's, reached the other two platforms. An undeclared label now travels as a
    tag under a key of the job; only the labels whose pooled count reached k are asked
    for, in one more round, and the director's never is."""
    from node.release import vocabulary_union
    from scifed.tasks import ComputeRequest, RoundRequest, TaskKind

    fed, table = federation(tmp_path, grade="G1", category="CONDITIONAL")
    try:
        result, refusal = attempt(fed, stats(group_counts=["title", "department"]))
        assert result is not None, refusal
        job_id = fed.last_view.job_id
        for node in NODES:
            sent = [ComputeRequest.loads(t.payload) for t in fed.links[node].tasks
                    if t.kind == TaskKind.COMPUTE]
            req = next(r for r in sent if r.job_id == job_id)
            key = fed.nodes[node].studies.key(req.study_id, req.key_version)
            union = vocabulary_union(key, job_id, req.vocabularies)
            assert "director" not in json.dumps(union), node
            assert all(v.startswith("\x00tag:") for v in union["title"])
            # a declared enumeration is public: it travels as itself
            assert set(union["department"]) <= set(table.department)
            asked = [RoundRequest.loads(t.payload) for t in fed.links[node].tasks
                     if t.kind == TaskKind.ROUND]
            asked = [a.query for a in asked if a.job_id == job_id]
            assert len(asked) == 1  # one round: the labels behind the tags k rows hold
        counts = table.title.value_counts().drop("director")
        groups = result["groups"]["title"]
        assert sorted(groups["values"]) == sorted(counts.index)
        assert "director" not in json.dumps(result)
        department = result["groups"]["department"]
        assert dict(zip(department["values"], department["counts"], strict=True)) == \
            table.department.value_counts().to_dict()
    finally:
        fed.__exit__(None, None, None)


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
        below = int(top.salary // 1000 * 1000)  # salary's grid: steps of 1000 at G2
        assert (table.salary >= below).sum() == 1
        first, refusal = attempt(fed, stats(columns=["age"], filter="salary > 100000"))
        assert first is not None, refusal
        _, refusal = attempt(fed, stats(columns=["age"], filter=f"salary > 100000 and "
                                                                f"salary < {below}"))
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
def test_quantiles_never_return_an_extreme_or_one_persons_salary(tmp_path):
    # Keyed once all three nodes have accepted. With min_nodes=2 the study key could be
    # made for alpha and beta while gamma's acceptance was still in flight, leaving gamma
    # without a key: two contributors, and the median below refused (the intermittent
    # failure of this test).
    staff, table = federation(tmp_path, min_nodes=len(NODES))
    staff.table = table
    try:
        salaries = staff.table.salary.to_numpy()
        result, refusal = attempt(staff, stats(quantiles={"salary": [0.0, 1.0]}))
        assert result is None or not result.get("quantiles"), "min / max released at G2"
        group = staff.table[staff.table.department == "physics"]
        probs = [round(i / (len(group) - 1), 6) for i in range(len(group))]
        # p = i/(n−1) names the group's order statistics; ten of them (the cap), skipping
        # p = 0, so that the query reaches the margin and the rounding rather than a refusal
        result, refusal = attempt(staff, stats(quantiles={"salary": probs[1:11]},
                                               filter="department == 'physics'"))
        released = (result or {}).get("quantiles", {}).get("salary", {})
        exact = set(np.round(salaries, 2))
        assert not [v for v in released.values() if v is not None and round(v, 2) in exact]
        result, refusal = attempt(staff, stats(quantiles={"salary": [0.5]}))
        assert result is not None, (refusal, [(t.node, t.phase, t.state, t.detail)
                                              for t in staff.last_view.tasks])
        median = result["quantiles"]["salary"]["0.5"]
        near = np.abs(salaries - median) <= 0.5 * result["quantile_resolution"]["salary"]
        assert near.sum() >= K  # the released value is shared by at least k people
    finally:
        staff.__exit__(None, None, None)


# -- 4. refusals are an oracle ------------------------------------------------------------
def test_a_binary_search_on_refusals_is_stopped_by_an_alert(tmp_path):
    """The attacker moves a salary threshold and watches which queries are refused, then
    probes one person at a time (everyone above the threshold but them). A node whose
    selection holds fewer than k rows answers as if it held none (node/gate.py), so the
    threshold search itself draws few refusals; the differencing probes are refused by
    the auditor. The refusals name no count, and after a run of them the researcher's
    jobs on the dataset wait for the officer (audited), who clears the alert by
    approving."""
    import time

    from scifed.states import TaskState

    fed, table = federation(tmp_path)
    try:
        # the run of refusals that raises the alert: a setting of each node's policy
        run = {core.gate.policies.effective(core.registry.list()[0].record).refusal_run
               for core in fed.nodes.values()}
        assert run == {3}, run  # the G2/CONDITIONAL default
        (run,) = run
        first, refusal = attempt(fed, stats(columns=["age"], filter="salary > 100000"))
        assert first is not None, refusal
        lo, hi, refused, held = 100000.0, 160000.0, 0, None
        above = table[table.salary > 100000].person_id.tolist()
        probes = [f"salary > {-(-(lo + hi) // 2000) * 1000:.0f}"]
        probes += [f"salary > 100000 and person_id != {p}" for p in above]
        for flt in probes[:23]:
            job_id = fed.submit(stats(columns=["age"], filter=flt))
            deadline = time.monotonic() + 20
            while True:
                view = fed.job(job_id)
                waiting = [t for t in view.tasks if t.state == TaskState.WAITING]
                if view.status.stopped or waiting:
                    break
                assert time.monotonic() < deadline
                time.sleep(0.02)
            if waiting:
                held = (job_id, waiting)
                break
            details = " ".join(t.detail for t in view.tasks)
            if "query auditing" in details:
                refused += 1
                rules = re.sub(r"k=\d+|at least \d+ contributors", "", details)
                assert not any(c.isdigit() for c in rules), details
        assert held is not None, "the researcher was never held"
        # each node counts its own refusals: at most a run at each before one holds it
        assert refused <= run * len(NODES)
        job_id, waiting = held
        assert all("alert" in t.detail for t in waiting)
        for node, core in fed.nodes.items():
            actions = [e.action for e in core.audit.entries()]
            if any(t.node == node for t in waiting):
                assert "alert.raise" in actions
        # the officers look and approve: the alerts clear, the held job goes on
        approve_until_done(fed, job_id)
        assert all("alert.clear" in [e.action for e in fed.nodes[t.node].audit.entries()]
                   for t in waiting)
    finally:
        fed.__exit__(None, None, None)


def test_a_release_node_cannot_ask_a_k_row_node_for_sums_of_values(tmp_path, monkeypatch):
    """An exact release (k ≤ 1) asks the sums of keys over a bracket of the quantile
    search, and a bracket that holds one value sums to that value. A release node that
    deviates and asks the same of G2 nodes (k = 5), in a bracket around the top salary,
    would read one person's salary. Each node refuses a round with sums unless it
    releases exactly, so the job fails before any node reads its rows for it, and the
    refusal names no value."""
    from jobs.stats import quantile_grid as grid
    from jobs.stats.quantiles import SUM_DIGITS, QuantileSearch

    staff, table = federation(tmp_path, min_nodes=len(NODES))
    try:
        top = float(table.salary.max())
        ask, learn, read = QuantileSearch.query, QuantileSearch.learn, []

        def deviating_query(self):  # the top salary alone in (just below it, it]
            q = ask(self)
            q["sums"] = {"salary": [[grid.key(top) - 1, grid.key(top)]]}
            return q

        def deviating_learn(self, total):  # keep the sum, learn the rest as usual
            read.append(total[-SUM_DIGITS:].tolist())
            learn(self, total[:-SUM_DIGITS])

        monkeypatch.setattr(QuantileSearch, "query", deviating_query)
        monkeypatch.setattr(QuantileSearch, "learn", deviating_learn)
        result, refusal = attempt(staff, stats(quantiles={"salary": [0.5]}))
        assert not read, f"a k = 5 node summed values for the release node: {read}"
        assert result is None
        assert "releases quantiles rounded to k=5 rows, so it sums no values" in refusal
        assert f"{top}" not in refusal and f"{top:.2f}" not in refusal
    finally:
        staff.__exit__(None, None, None)
