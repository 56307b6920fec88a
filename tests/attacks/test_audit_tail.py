"""Attacks on the tail of a node's audit chain, through the in-memory federation.

The chain's hashes catch an edit, a deletion or a reordering in the middle. The tail is
the weak end: delete the last entries, or rewrite them and re-hash, and the chain left is
consistent in itself; wipe the table and "0 entries" is a consistent chain too. Only a
head recorded elsewhere tells. Heads used to travel with task results only, so an entry
made between tasks (here the officer's policy change after a job) was anchored nowhere:
each attack below passed `verify` against the heads the results had left (the first
assertion of each keeps that). The node now sends its head with every heartbeat and the
coordinator keeps it; `audit verify --against-coordinator` (NodeAdmin.AuditVerify, the
code path of the CLI) then names the first entry that disagrees.

The last test attacks the coordinator's own chain the same way.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from staff import stats

from coordinator import audit as coordinator_audit
from coordinator import registry
from coordinator.db import AuditHead, CoordinatorAuditEntry, Job
from node.admin import NodeAdminServicer
from node.audit import AuditLog
from node.policy import PolicyBook
from protos.scifed.v1 import node_admin_pb2 as pb
from scifed.chain import canonical, entry_hash

NODE = "alpha"


class _Context:
    def abort(self, code, details):
        raise AssertionError(f"{code}: {details}")


def against_coordinator(fed, node: str = NODE, *, against: bool = True) -> dict:
    """What `scifed node audit verify [--against-coordinator]` reports."""
    core = fed.nodes[node]
    admin = NodeAdminServicer(core.registry, fed.links[node], core.studies, core.approvals)
    reply = admin.AuditVerify(pb.AuditVerifyRequest(against_coordinator=against), _Context())
    return json.loads(reply.json)


def result_heads(fed, node: str = NODE) -> list[tuple[int, str]]:
    return [(h.seq, h.hash) for h in registry.audit_heads(fed.coordinator.db, node)]


@contextmanager
def node_db(fed, node: str = NODE) -> Iterator[sqlite3.Connection]:
    """The insider's own connection to the node's database."""
    con = sqlite3.connect(fed.nodes[node].cfg.state_dir / "node.db")
    try:
        with con:
            yield con
    finally:
        con.close()


@pytest.fixture
def tail(staff):
    """A job ran (its results carried heads), then the officer tightened the policy: an
    entry after the last task result. Returns (federation, the policy entry's seq, the
    heads the coordinator held from results alone)."""
    staff.run(stats(group_counts=["department"]))
    core = staff.nodes[NODE]
    record = core.registry.get("staff").record
    PolicyBook(core.store).set(record, "min_cell_count: 10\n", "tight.yaml", "officer")
    seq, digest = core.audit.head()
    assert core.audit.entries()[-1].action == "policy.set"
    from_results = result_heads(staff)
    assert max(s for s, _ in from_results) < seq  # no result anchors the policy change
    staff.links[NODE].heartbeat()  # ...the next heartbeat does
    assert (seq, digest) in result_heads(staff)
    v = against_coordinator(staff)
    assert v["ok"] and v["coordinator_head_seq"] == seq, v
    return staff, seq, from_results


def test_deleting_the_entry_after_the_last_result_is_caught(tail):
    fed, seq, from_results = tail
    with node_db(fed) as con:
        con.execute("DELETE FROM audit WHERE seq = ?", (seq,))
    log = fed.nodes[NODE].audit
    assert log.verify().ok  # consistent in itself
    assert log.verify(from_results).ok  # the attack: what the results anchored agrees
    v = against_coordinator(fed)
    assert not v["ok"]
    assert v["problem"].startswith(f"entry {seq} is missing"), v["problem"]
    assert f"the chain ends at entry {seq - 1}" in v["problem"]
    assert f"entry {seq} is the first that disagrees" in v["problem"]


def test_rewriting_and_rehashing_the_tail_is_caught(tail):
    """The insider loosens the policy and rewrites its audit entry to match, re-hashing
    it so the chain stays consistent."""
    fed, seq, from_results = tail
    with node_db(fed) as con:
        con.execute("DELETE FROM policy_overrides")
        prev, ts, actor, subject = con.execute(
            "SELECT prev_hash, ts_ms, actor, subject FROM audit WHERE seq = ?",
            (seq,)).fetchone()
        body = {"seq": seq, "ts_ms": ts, "actor": actor, "action": "policy.reset",
                "subject": subject, "details": {}}
        con.execute("UPDATE audit SET action = 'policy.reset', details = ?, hash = ? "
                    "WHERE seq = ?", (canonical({}), entry_hash(prev, body), seq))
    log = fed.nodes[NODE].audit
    assert log.verify().ok
    assert log.verify(from_results).ok  # the attack
    v = against_coordinator(fed)
    assert not v["ok"]
    assert v["problem"].startswith(f"entry {seq} differs from the chain head the "
                                   "coordinator recorded"), v["problem"]
    assert f"entries 1-{seq - 1} agree" in v["problem"] and "rewritten" in v["problem"]


def test_a_rewrite_deeper_down_names_the_first_disagreeing_entry(tail):
    """Rewrite an early entry and re-hash everything after it: every later head
    disagrees; the check names the first one and how far the chain still agrees."""
    fed, seq, _ = tail
    heads = [s for s, _ in result_heads(fed)]
    target = heads[1]  # below it, heads[0] still agrees
    with node_db(fed) as con:
        rows = con.execute("SELECT seq, ts_ms, actor, action, subject, details FROM audit "
                           "WHERE seq >= ? ORDER BY seq", (target,)).fetchall()
        prev = con.execute("SELECT prev_hash FROM audit WHERE seq = ?",
                           (target,)).fetchone()[0]
        for n, ts, actor, action, subject, details in rows:
            details = json.loads(details)
            if n == target:
                details = {**details, "forged": True}
            body = {"seq": n, "ts_ms": ts, "actor": actor, "action": action,
                    "subject": subject, "details": details}
            digest = entry_hash(prev, body)
            con.execute("UPDATE audit SET details = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                        (canonical(details), prev, digest, n))
            prev = digest
    assert fed.nodes[NODE].audit.verify().ok
    v = against_coordinator(fed)
    assert not v["ok"]
    assert v["problem"].startswith(f"entry {target} differs"), v["problem"]
    assert f"entries 1-{heads[0]} agree" in v["problem"]


def test_wiping_the_audit_table_is_caught(tail):
    fed, seq, _ = tail
    with node_db(fed) as con:
        con.execute("DELETE FROM audit")
    local = against_coordinator(fed, against=False)
    assert local["ok"] and local["entries"] == 0  # the attack: "intact: 0 entries"
    v = against_coordinator(fed)
    assert not v["ok"]
    assert v["problem"].startswith(f"the coordinator holds a head at seq {seq}"), v["problem"]
    assert "the chain has 0 entries" in v["problem"]


def test_a_wiped_table_is_caught_on_heartbeat_heads_alone(staff):
    """A node that never ran a job: only heartbeats anchored its chain."""
    fed = staff
    core = fed.nodes[NODE]
    with fed.coordinator.db.session() as s:  # drop what the key generation's results left
        s.query(AuditHead).filter_by(node_name=NODE).delete()
    assert core.audit.entries() and not result_heads(fed)
    fed.links[NODE].heartbeat()
    seq, _ = core.audit.head()
    with node_db(fed) as con:
        con.execute("DELETE FROM audit")
    v = against_coordinator(fed)
    assert not v["ok"] and f"holds a head at seq {seq}" in v["problem"], v


def test_heartbeats_keep_one_head_per_position(tail):
    """A node heartbeats every few seconds: the coordinator adds a row only when the
    head moved, and keeps the first hash it saw for a position."""
    fed, seq, _ = tail
    before = result_heads(fed)
    for _ in range(5):
        fed.links[NODE].heartbeat()
    assert result_heads(fed) == before
    registry.record_audit_head(fed.coordinator.db, NODE, seq, "f" * 64, 0)  # a later lie
    assert dict(result_heads(fed))[seq] == dict(before)[seq]


def test_an_entry_newer_than_the_last_heartbeat_is_not_yet_anchored(tail):
    """The guarantee's edge, stated: what the node wrote after its last heartbeat (at
    most heartbeat_seconds of history) is anchored by the next one, not before."""
    fed, seq, _ = tail
    core = fed.nodes[NODE]
    PolicyBook(core.store).reset(core.registry.get("staff").record, "officer")
    with node_db(fed) as con:
        con.execute("DELETE FROM audit WHERE seq = ?", (seq + 1,))
    assert against_coordinator(fed)["ok"]


def test_the_coordinators_own_chain_records_the_job_and_catches_a_cut_tail(staff):
    """Studies, key versions, job submissions and ends go into the coordinator's chain;
    deleting the last entry (the job's end, its release record) or swapping the sealed
    result it recorded is caught by `scifed coordinator audit verify`."""
    view, _ = staff.run(stats(group_counts=["department"]))
    db = staff.coordinator.db
    actions = [(e.action, e.subject) for e in coordinator_audit.entries(db)]
    assert ("job.submit", view.job_id) in actions and ("job.end", view.job_id) in actions
    assert {a for a, _ in actions} >= {"study.create", "study.key.activate"}
    end = next(e for e in coordinator_audit.entries(db) if e.action == "job.end")
    with db.session() as s:
        sealed = s.get(Job, view.job_id).sealed_result
    assert end.details["status"] == "done" and end.seq == coordinator_audit.head(db)[0]
    assert end.details["result_sha256"] == hashlib.sha256(sealed).hexdigest()
    assert coordinator_audit.verify(db).ok

    with db.session() as s:  # a different sealed result in place of the released one
        s.get(Job, view.job_id).sealed_result = sealed[:-1] + bytes([sealed[-1] ^ 1])
    v = coordinator_audit.verify(db)
    assert not v.ok and "sealed result differs" in v.problem, v.problem
    with db.session() as s:
        s.get(Job, view.job_id).sealed_result = sealed
        last = s.get(CoordinatorAuditEntry, end.seq)
        s.delete(last)  # the tail: the job's end
    v = coordinator_audit.verify(db)
    assert not v.ok and f"job {view.job_id} ended done but has no job.end entry" in v.problem


def test_a_node_rewrite_does_not_disturb_other_nodes(tail):
    fed, _, _ = tail
    with node_db(fed) as con:
        con.execute("DELETE FROM audit")
    for other in ("beta", "gamma"):
        fed.links[other].heartbeat()
        assert against_coordinator(fed, other)["ok"]
    assert AuditLog(fed.nodes["beta"].store).verify(result_heads(fed, "beta")).ok
