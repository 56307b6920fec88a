"""The refused-query allowance is a policy setting: an officer who lowers
`refusal_allowance` holds a researcher after that many refusals, through the real
pipeline (coordinator, gate, approval queue) on the in-memory federation of G2 /
CONDITIONAL staff data (default allowance 10 a year, 3 in a row)."""

from __future__ import annotations

import time

import pytest
from staff import NODES, approve_until_done, attempt, federation, stats

from scifed.errors import UserError
from scifed.states import TaskState

REFUSED = stats(group_counts=["person_id"])  # an identifier cannot be grouped
ANSWERED = stats(group_counts=["department"])


def _set_policy(fed, text: str) -> None:
    """Each node's officer: `scifed node policy set staff --file strict.yaml`."""
    for core in fed.nodes.values():
        core.gate.policies.set(_record(core), text, "strict.yaml", "officer")


def _record(core) -> dict:
    (row,) = core.registry.list()
    return row.record


def _outcomes(core) -> list[tuple[str, int]]:
    with core.store.tx() as con:
        return [(r["job_id"], r["refused"]) for r in con.execute(
            "SELECT job_id, refused FROM query_outcomes ORDER BY seq")]


def _ask(fed, spec: str, *, refused: bool) -> None:
    """Run a query that is answered (or refused) at every node, and wait until each
    node has counted it."""
    result, refusal = attempt(fed, spec)
    assert (result is None) == refused, refusal
    assert "held" not in refusal, refusal
    job_id = fed.last_view.job_id
    deadline = time.monotonic() + 20
    while not all(any(j == job_id for j, _ in _outcomes(c)) for c in fed.nodes.values()):
        assert time.monotonic() < deadline, {n: _outcomes(c) for n, c in fed.nodes.items()}
        time.sleep(0.02)


def _held(fed, spec: str) -> tuple[str, list]:
    """Submit; the job's tasks wait for the officers: (job id, the waiting tasks)."""
    job_id = fed.submit(spec)
    deadline = time.monotonic() + 20
    while True:
        view = fed.job(job_id)
        waiting = [t for t in view.tasks if t.state == TaskState.WAITING]
        if len(waiting) == len(NODES):
            return job_id, waiting
        assert not view.status.stopped, (view.status, view.error)
        assert time.monotonic() < deadline, [(t.node, t.state, t.detail) for t in view.tasks]
        time.sleep(0.02)


def _alert_reasons(fed) -> dict[str, list[str]]:
    return {n: [e.details["reason"] for e in c.audit.entries() if e.action == "alert.raise"]
            for n, c in fed.nodes.items()}


@pytest.fixture
def fed(tmp_path):
    fed, _ = federation(tmp_path)
    yield fed
    fed.__exit__(None, None, None)


def test_a_tightened_allowance_holds_the_researcher_at_its_count(fed):
    """Allowance 2: a refusal, an answer, a refusal — no run of 3, but the allowance is
    spent, so the next job waits for the officers, who clear the alert by approving."""
    with pytest.raises(UserError, match="only tighten"):  # raising it is refused
        _set_policy(fed, "refusal_allowance: 11\n")
    _set_policy(fed, "refusal_allowance: 2\n")
    for core in fed.nodes.values():
        shown = {r[0]: r[1:] for r in core.gate.policies.effective(_record(core)).rows()}
        assert shown["refusal_allowance"] == ("2", "override strict.yaml")
        assert shown["refusal_run"][0] == "3"

    _ask(fed, REFUSED, refused=True)
    _ask(fed, ANSWERED, refused=False)
    assert _alert_reasons(fed) == {n: [] for n in NODES}
    _ask(fed, REFUSED, refused=True)
    assert _alert_reasons(fed) == {n: ["2 refused queries this year (allowance 2)"]
                                   for n in NODES}

    job_id, waiting = _held(fed, ANSWERED)
    assert all("alert: 2 refused queries this year" in t.detail for t in waiting), waiting
    approve_until_done(fed, job_id)
    assert fed.wait(job_id).status == "done"
    for core in fed.nodes.values():
        assert "alert.clear" in [e.action for e in core.audit.entries()]
    # cleared: the count starts again, and the next query is answered without a hold
    _ask(fed, REFUSED, refused=True)
    _ask(fed, ANSWERED, refused=False)


def test_lowering_the_allowance_holds_a_researcher_already_past_it(fed):
    """Two refusals under the default allowance (10) hold no one; the officers lower it to
    2, and the researcher's next job waits for them (the alert raised at that task)."""
    for _ in range(2):
        _ask(fed, REFUSED, refused=True)
        _ask(fed, ANSWERED, refused=False)
    assert _alert_reasons(fed) == {n: [] for n in NODES}
    _set_policy(fed, "refusal_allowance: 2\n")
    job_id, waiting = _held(fed, ANSWERED)
    assert all("alert: 2 refused queries this year (allowance 2)" in t.detail
               for t in waiting), waiting
    assert _alert_reasons(fed) == {n: ["2 refused queries this year (allowance 2)"]
                                   for n in NODES}
    fed.coordinator.jobs.cancel(job_id, fed.researcher)


def test_a_training_data_check_is_no_count_oracle_and_counts_as_a_query(tmp_path):
    """A train job's data check used to answer any filter with exact counts ("only 1
    usable row(s)", "1 row(s) … outside the job's classes") and counted toward nothing:
    it ran outside the allowance. Now its refusals name no count, and each counts as a
    refused query (the run of three raises the alert)."""
    import re

    import yaml

    fed, _ = federation(tmp_path)
    # the in-memory coordinator runs no SuperLink; the check phase comes before any use
    # of it (jobs/train/coordinate.py), and this placeholder fails the test if touched
    class NoSuperLink:
        def __getattr__(self, name):
            raise AssertionError(f"the Flower SuperLink was used: {name}")

    fed.coordinator.jobs.flower = NoSuperLink()
    train = {"features": ["age"], "label": "title", "task": "classification",
             "classes": ["researcher", "engineer", "technician"],
             "model": {"kind": "logistic_regression"}, "rounds": 1, "min_node_classes": 1}
    try:
        for flt in ("salary >= 150000", "title == 'director'", "salary >= 140000"):
            spec = yaml.safe_dump({"study": "staff", "type": "train", "filter": flt,
                                   "datasets": {n: "staff" for n in NODES},
                                   "train": train}, sort_keys=False)
            result, refusal = attempt(fed, spec)
            assert result is None, flt
            # the researcher's opened reasons: no count of the rows the filter matched
            assert not re.search(r"only \d+ usable|\d+ row\(s\)|takes only \d+", refusal), \
                refusal
        counted = {n: sum(r for _, r in _outcomes(c)) for n, c in fed.nodes.items()}
        assert any(counted.values()), counted
    finally:
        fed.__exit__(None, None, None)
