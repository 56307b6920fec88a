"""The officer's controls against a real node SQLite file: the budget ledger under
races and crashes, the audit chain under tampering, the differencing guard, the approval
queue's roles and the refused-query allowance."""

from __future__ import annotations

import multiprocessing as mp
import os
import sqlite3
import threading

import numpy as np
import pandas as pd
import pytest

from harness.approvers import Approver, decide, register, signed
from node.alerts import RefusalMonitor
from node.approvals import Approvals, parse_expiry
from node.audit import AuditLog
from node.budget import BudgetLedger
from node.data import DataFile
from node.guard import audit_and_record, refine, smallest_atom
from node.policy import effective, load_override
from node.store import NodeStore
from scifed.approver_keys import new_key
from scifed.errors import NotFound, UserError
from scifed.filters import compile_filter
from scifed.wire import now_ms


@pytest.fixture
def store(tmp_path) -> NodeStore:
    return NodeStore(tmp_path / "node.db")


def _mask(path, filter_sql):
    with DataFile(path, filter_sql) as data:
        return data.masks([])[:, 0]


def charge(store: NodeStore, job: str, eps: float, researcher: str = "alice",
           produce=lambda con: b"out") -> bytes:
    return BudgetLedger(store).charge_and_release(
        job_id=job, dataset_id="ds", researcher=researcher, epsilon=eps, delta=0.0,
        annual_budget=1.0, researcher_budget=None, produce=produce)


def _racer(path, job, barrier, results):
    store = NodeStore(path)
    barrier.wait()
    try:
        charge(store, job, 0.6)
        results.put((job, "won"))
    except UserError as exc:
        results.put((job, str(exc)))


def test_two_jobs_racing_for_the_last_budget_exactly_one_wins(store):
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(store.path, j, barrier, results))
             for j in ("job-a", "job-b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    outcomes = dict(results.get(timeout=5) for _ in procs)
    assert sorted(v == "won" for v in outcomes.values()) == [False, True]
    loser = next(v for v in outcomes.values() if v != "won")
    assert "0.4 of the annual 1 is left" in loser
    assert sum(s.epsilon for s in BudgetLedger(store).spent("ds") if s.researcher is None) \
        == pytest.approx(0.6)


def _crash_after_commit(path):
    store = NodeStore(path)
    charge(store, "job-c", 0.3, produce=lambda con: b"noisy answer")
    os._exit(17)  # dies before the answer leaves the node


def test_crash_between_charge_and_release_neither_loses_nor_doubles(store):
    p = mp.get_context("fork").Process(target=_crash_after_commit, args=(store.path,))
    p.start()
    p.join(30)
    assert p.exitcode == 17
    calls = []
    # The retried task gets the same answer back and pays nothing more.
    again = charge(store, "job-c", 0.3, produce=lambda con: calls.append(1) or b"other")
    assert again == b"noisy answer" and calls == []
    with sqlite3.connect(store.path) as con:
        assert con.execute("SELECT count(*), sum(epsilon) FROM budget_charges").fetchone() \
            == (1, pytest.approx(0.3))


def test_failure_before_commit_charges_nothing(store):
    def boom(con):
        raise RuntimeError("crash while computing")

    with pytest.raises(RuntimeError):
        charge(store, "job-d", 0.5, produce=boom)
    assert BudgetLedger(store).spent("ds") == []
    assert charge(store, "job-d", 0.5) == b"out"


def test_budget_refusal_says_what_is_left_and_researcher_budget(store):
    charge(store, "j1", 0.7)
    with pytest.raises(UserError) as exc:
        charge(store, "j2", 0.5)
    assert "0.3 of the annual 1 is left" in str(exc.value)
    ledger = BudgetLedger(store)
    with pytest.raises(UserError) as exc:
        ledger.charge_and_release(job_id="j3", dataset_id="ds", researcher="bob",
                                  epsilon=0.2, delta=0, annual_budget=1.0,
                                  researcher_budget=0.1, produce=lambda con: b"")
    assert "bob's privacy budget" in str(exc.value)


def test_threads_racing_in_one_process_also_serialise(store):
    wins, errors = [], []

    def go(job):
        try:
            charge(store, job, 0.4)
            wins.append(job)
        except UserError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=go, args=(f"t{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 2 and len(errors) == 4


# -- audit chain --------------------------------------------------------------------------
@pytest.fixture
def chain(store) -> AuditLog:
    log = AuditLog(store)
    for i in range(6):
        log.append("officer", "dataset.add", f"ds{i}", {"i": i})
    return log


def tamper(store, sql, *args):
    con = sqlite3.connect(store.path)
    if sql == "REORDER":  # entries 3 and 4 swap places, each keeping its own hashes
        cols = "ts_ms, actor, action, subject, details, prev_hash, hash"
        r3, r4 = (con.execute(f"SELECT {cols} FROM audit WHERE seq=?", (n,)).fetchone()
                  for n in (3, 4))
        sets = ", ".join(f"{c.strip()}=?" for c in cols.split(","))
        con.execute(f"UPDATE audit SET {sets} WHERE seq=3", r4)
        con.execute(f"UPDATE audit SET {sets} WHERE seq=4", r3)
    else:
        con.execute(sql, args)
    con.commit()
    con.close()


def test_intact_chain_verifies(chain):
    v = chain.verify()
    assert v.ok and v.entries == 6 and v.head_seq == 6


@pytest.mark.parametrize("sql,args,needle", [
    ("UPDATE audit SET details=? WHERE seq=3", ('{"i":99}',), "entry 3 was altered"),
    ("UPDATE audit SET actor=? WHERE seq=5", ("mallory",), "entry 5 was altered"),
    ("DELETE FROM audit WHERE seq=2", (), "entry 2 is missing"),
    ("REORDER", (), "entry 3"),
])
def test_editing_deleting_or_reordering_is_detected(store, chain, sql, args, needle):
    tamper(store, sql, *args)
    v = chain.verify()
    assert not v.ok and needle in v.problem


def test_a_rewritten_and_rehashed_history_is_caught_by_recorded_heads(store, chain):
    recorded = [chain.head()]  # what the coordinator kept with a task result
    tamper(store, "DELETE FROM audit WHERE seq >= 4")
    log = AuditLog(store)
    log.append("mallory", "dataset.add", "other", {})  # a consistent, re-hashed chain
    log.append("mallory", "dataset.add", "other2", {})
    log.append("mallory", "dataset.add", "other3", {})
    assert log.verify().ok  # internally consistent...
    v = log.verify(recorded)
    assert not v.ok and "rewritten" in v.problem  # ...but not what the coordinator saw


def test_export_formats(chain):
    jsonl = chain.export("jsonl").splitlines()
    assert len(jsonl) == 6 and '"action":"dataset.add"' in jsonl[0]
    assert chain.export("csv").splitlines()[0].startswith("seq,ts_ms,actor")
    with pytest.raises(UserError):
        chain.export("xml")


# -- query auditing ------------------------------------------------------------------------
def _audit(store, job: str, sets, k: int = 5, sha: str = "s") -> None:
    with store.tx() as con:
        audit_and_record(con, job_id=job, dataset_id="ds", sha256=sha,
                         sets=np.column_stack(sets), k=k, node="n1")


def test_a_differencing_pair_is_refused_without_saying_by_how_much(store, tmp_path, penguins):
    path = tmp_path / "p.csv"
    penguins.to_csv(path, index=False)
    types = {"body_mass_g": "number", "island": "string", "species": "string"}
    first = _mask(path, compile_filter("island == 'Biscoe'", types))
    assert first.sum() == (penguins.island == "Biscoe").sum()
    # Same selection minus the one heaviest Biscoe penguin: differs by 1 row.
    heaviest = penguins[penguins.island == "Biscoe"].body_mass_g.max()
    second = _mask(path, compile_filter(
        f"island == 'Biscoe' and (body_mass_g < {heaviest} or body_mass_g is None)", types))
    _audit(store, "j1", [first])
    with pytest.raises(UserError) as exc:
        _audit(store, "j2", [second])
    message = str(exc.value)
    assert "fewer than k=5 rows" in message
    assert not any(c.isdigit() for c in message.replace("k=5", "").replace("n1", ""))
    # Far enough apart, or a new version of the file: allowed; a retry is not re-counted.
    _audit(store, "j3", [_mask(path, compile_filter("island == 'Dream'", types))])
    _audit(store, "j4", [second], sha="s2")
    _audit(store, "j1", [second])


def test_a_tracker_of_three_queries_is_refused_at_the_third():
    """Q1 = [0, 20], Q2 = [0, 10], Q3 = [10, 20]: pairwise they differ by ≥ 10 rows, but
    Q2 + Q3 − Q1 is row 10 alone."""
    rows = np.arange(60)
    q1, q2, q3 = (rows >= 0) & (rows <= 20), rows <= 10, (rows >= 10) & (rows <= 20)
    labels = refine(np.zeros(60, dtype=np.uint64), np.column_stack([q1, q2]))
    assert smallest_atom(labels) >= 5
    assert smallest_atom(refine(labels, q3[:, None])) == 1


def test_the_partition_persists_and_refuses_across_jobs(store):
    rows = np.arange(60)
    _audit(store, "a", [rows <= 20])
    _audit(store, "b", [rows <= 10])
    with pytest.raises(UserError, match="query auditing"):
        _audit(store, "c", [(rows >= 10) & (rows <= 20)])
    _audit(store, "d", [rows <= 30])  # whole atoms of ≥ 5 rows: answered


# -- approval queue -----------------------------------------------------------------------
def request(appr: Approvals, job: str, grade: str):
    return appr.request(job_id=job, dataset_id="ds", study_id="st", job_type="stats",
                        researcher="alice", grade=grade, reason="G4 needs approval", spec={})


def test_liaison_cannot_approve_g4_and_officer_can(store):
    appr = Approvals(store, "node-a")
    of, sec = register(appr, "of", "officer"), register(appr, "sec", "security_lead")
    li = register(appr, "li", "liaison", countersign=(of, sec))
    a = request(appr, "job-1", "G4")
    with pytest.raises(UserError) as exc:
        decide(appr, li, a.approval_id)
    assert "liaison may decide up to G3" in str(exc.value)
    with pytest.raises(UserError) as exc:
        decide(appr, sec, a.approval_id)
    assert "approved by the officer" in str(exc.value)
    assert appr.get(a.approval_id).state == "pending"
    assert decide(appr, of, a.approval_id).state == "approved"
    b = request(appr, "job-2", "G3")
    assert decide(appr, li, b.approval_id).state == "approved"
    c = request(appr, "job-3", "G5")  # dual approval
    assert decide(appr, of, c.approval_id).state == "pending"
    with pytest.raises(UserError, match="already approved"):
        decide(appr, of, c.approval_id)  # the same person cannot count twice
    assert decide(appr, sec, c.approval_id).state == "approved"
    d = request(appr, "job-4", "G5")  # a security lead and a liaison are not enough
    assert decide(appr, sec, d.approval_id).state == "pending"
    with pytest.raises(UserError, match="liaison may decide up to G3"):
        decide(appr, li, d.approval_id)
    assert appr.get(d.approval_id).state == "pending"


def test_bad_approval_input_changes_nothing(store):
    appr = Approvals(store, "node-a")
    of = register(appr, "of", "officer")
    a = request(appr, "job-1", "G2")
    with pytest.raises(NotFound):
        appr.decide("ap-nope", **signed(appr, of, a.approval_id))
    with pytest.raises(UserError) as exc:
        decide(appr, of, a.approval_id, approve=False)
    assert "needs a reason" in str(exc.value)
    with pytest.raises(UserError, match="must be signed"):
        appr.decide(a.approval_id, approve=True, by="of")  # a name alone
    with pytest.raises(UserError, match="'stranger' is not a registered approver"):
        decide(appr, Approver("stranger", "officer", new_key()), a.approval_id)
    with pytest.raises(UserError):
        parse_expiry("next tuesday")
    assert appr.get(a.approval_id).state == "pending"
    assert [e.action for e in AuditLog(store).entries()] == ["approver.add",
                                                             "approval.request"]
    decide(appr, of, a.approval_id, approve=False, reason="purpose unclear")
    with pytest.raises(UserError) as exc:
        decide(appr, of, a.approval_id)
    assert "already denied" in str(exc.value)


def test_an_expired_approval_no_longer_admits_the_task(store):
    appr = Approvals(store, "node-a")
    of = register(appr, "of", "officer")
    a = request(appr, "job-1", "G2")
    decide(appr, of, a.approval_id, expires_ms=now_ms() + 60_000)
    with store.tx() as con:  # time passes
        con.execute("UPDATE approvals SET expires_ms=? WHERE approval_id=?",
                    (now_ms() - 1, a.approval_id))
    assert request(appr, "job-1", "G2").state == "expired"
    actions = [e.action for e in AuditLog(store).entries()]
    assert actions == ["approver.add", "approval.request", "approval.approve",
                       "approval.expired"]


def test_a_second_approver_cannot_extend_the_first_ones_expiry(store):
    appr = Approvals(store, "node-a")
    of, sec = register(appr, "of", "officer"), register(appr, "sec", "security_lead")
    a = request(appr, "job-1", "G5")
    soon = now_ms() + 60_000
    decide(appr, of, a.approval_id, expires_ms=soon)
    assert decide(appr, sec, a.approval_id, expires_ms=soon + 10**9).expires_ms == soon


def test_mask_matches_pandas(tmp_path):
    df = pd.DataFrame({"x": [1.0, None, 3.0, 4.0], "c": ["a", "b", None, "a"]})
    p = tmp_path / "d.csv"
    df.to_csv(p, index=False)
    m = _mask(p, compile_filter("x > 1 or c == 'b'", {"x": "number", "c": "string"}))
    np.testing.assert_array_equal(m, ((df.x > 1) | (df.c == "b")).to_numpy())


# -- the refused-query allowance (node/alerts.py), with the numbers of the policy --------
def _alerts(store: NodeStore) -> list[dict]:
    return [e.details for e in AuditLog(store).entries() if e.action == "alert.raise"]


def test_an_officers_lower_allowance_raises_the_alert_at_its_count(store):
    """Allowance 2 (the override): the 2nd refusal raises the alert, though an answered
    query between means no run; the cell's default (10) would not."""
    strict = effective("G2", "CONDITIONAL", load_override("refusal_allowance: 2", "o.yaml"))
    default = effective("G2", "CONDITIONAL")
    monitor = RefusalMonitor(store)
    for policy, dataset in ((strict, "ds-strict"), (default, "ds-default")):
        numbers = {"allowance": policy.refusal_allowance, "run": policy.refusal_run}
        monitor.refused("alice", dataset, "j1", **numbers)
        assert monitor.open_alert("alice", dataset, "j2", **numbers) is None
        monitor.answered("alice", dataset, "j2")
        monitor.refused("alice", dataset, "j3", **numbers)
    assert monitor.open_alert("alice", "ds-default", "j4", allowance=10, run=3) is None
    reason = monitor.open_alert("alice", "ds-strict", "j4", allowance=2, run=3)
    assert reason == "2 refused queries this year (allowance 2)"
    assert [(a["researcher"], a["job_id"]) for a in _alerts(store)] == [("alice", "j3")]
    with pytest.raises(UserError, match="only tighten"):  # and it cannot loosen
        effective("G2", "CONDITIONAL", load_override("refusal_allowance: 20", "o.yaml"))


def test_a_run_of_refusals_raises_the_alert_at_the_policys_run(store):
    monitor = RefusalMonitor(store)
    monitor.refused("alice", "ds", "j1", allowance=10, run=2)
    monitor.answered("alice", "ds", "j2")
    monitor.refused("alice", "ds", "j3", allowance=10, run=2)
    assert monitor.open_alert("alice", "ds", "j4", allowance=10, run=2) is None
    monitor.refused("alice", "ds", "j4", allowance=10, run=2)
    assert monitor.open_alert("alice", "ds", "j5", allowance=10, run=2) == \
        "2 refused queries in a row (limit 2)"
    assert monitor.open_alert("bob", "ds", "j6", allowance=10, run=2) is None


def test_lowering_the_allowance_holds_a_researcher_already_past_it(store):
    """Refusals counted under the default; the officer lowers the allowance: the next
    task finds the alert (raised then, audited) and, once cleared, the count restarts."""
    monitor = RefusalMonitor(store)
    for job, refused in (("j1", True), ("j2", False), ("j3", True), ("j4", False)):
        if refused:
            monitor.refused("alice", "ds", job, allowance=10, run=3)
        else:
            monitor.answered("alice", "ds", job)
    assert monitor.open_alert("alice", "ds", "j5", allowance=10, run=3) is None
    assert _alerts(store) == []
    assert monitor.open_alert("alice", "ds", "j5", allowance=2, run=3) == \
        "2 refused queries this year (allowance 2)"
    assert [a["job_id"] for a in _alerts(store)] == ["j5"]
    assert monitor.open_alert("alice", "ds", "j6", allowance=2, run=3) is not None
    assert len(_alerts(store)) == 1  # one open alert, not one per task
    assert [(a["researcher"], a["state"]) for a in monitor.list("open")] == [("alice", "open")]
    monitor.clear("alice", "ds", "j5")
    assert monitor.open_alert("alice", "ds", "j7", allowance=2, run=3) is None
    (cleared,) = monitor.list("cleared")  # what `scifed node alerts list` and the console show
    assert cleared["reason"] == "2 refused queries this year (allowance 2)"
    assert cleared["cleared_ms"] >= cleared["created_ms"] and monitor.list("open") == []
