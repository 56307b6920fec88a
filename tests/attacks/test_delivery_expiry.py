"""An in-node service grant is automatic (no officer's approval, so no approval's expiry):
the officer gives it an end (`scifed node access expire GRANT --expires 30d --reason`),
which may only come sooner, and a query after it is refused with one message and
audited. Real node and coordinator cores on the in-memory link; time is driven by an end
in the past, not by waiting."""

from __future__ import annotations

import pytest
from staff import staff_meta, staff_table

from coordinator import access_client as ac
from harness.inmemory import InMemoryFederation, researcher_client
from node.audit import AuditLog
from scifed.errors import UserError
from scifed.wire import now_ms

NODE = "alpha"
ACCEPT = ["no_reidentification", "license:CC0-1.0"]
SQL = "SELECT department, count(*) AS n FROM data GROUP BY department"


@pytest.fixture
def fed(tmp_path):
    with InMemoryFederation(tmp_path, [NODE]) as fed:
        fed.add_dataset(NODE, staff_table().drop(columns="node"), staff_meta("G1", "OPEN"),
                        "open")
        yield fed


def audited(fed, action: str) -> list[dict]:
    return [e.details for e in AuditLog(fed.nodes[NODE].store).entries()
            if e.action == action]


def expire(fed, grant_id: str, at_ms: int, reason: str = "study ended"):
    """What the AccessExpire call of `scifed node access expire` runs at the node."""
    return fed.nodes[NODE].delivery.expire(grant_id, at_ms, reason, "officer")


def test_a_query_under_an_expired_service_grant_is_refused_and_audited(fed):
    alice = researcher_client(fed)
    grant = ac.request_access(alice, f"urn:sdn:{NODE}:ds:open", method="in_node_service",
                              purpose="methods paper", accept=ACCEPT)
    assert grant.state == "granted" and grant.expires_ms is None  # automatic, no end
    frame, _ = ac.query(alice, grant, SQL)
    assert len(frame) > 0
    later = now_ms() + 30 * 86_400_000
    expire(fed, grant.grant_id, later)
    (listed,) = ac.list_access(alice)[0]
    assert listed.expires_ms == later  # the researcher sees the end
    ac.query(alice, grant, SQL)  # still before it
    with pytest.raises(UserError, match="only bring its end sooner"):
        expire(fed, grant.grant_id, later + 1)
    expire(fed, grant.grant_id, now_ms() - 1)  # the end is now past
    answers = len(fed.nodes[NODE].delivery.grants.deliveries(grant.grant_id))
    with pytest.raises(UserError) as exc:
        ac.query(alice, grant, SQL)
    assert str(exc.value) == (f"node {NODE} refuses in_node_service under grant "
                              f"{grant.grant_id}: the grant expired")
    assert len(fed.nodes[NODE].delivery.grants.deliveries(grant.grant_id)) == answers
    refused = [d for d in audited(fed, "access.refused") if d["grant_id"] == grant.grant_id]
    assert [d["reason"] for d in refused] == ["the grant expired"]
    assert [d["reason"] for d in audited(fed, "access.expiry")] == ["study ended"] * 2


def test_an_expiry_needs_a_reason_and_a_live_grant(fed):
    alice = researcher_client(fed)
    grant = ac.request_access(alice, f"urn:sdn:{NODE}:ds:open", method="in_node_service",
                              purpose="methods paper", accept=ACCEPT)
    with pytest.raises(UserError, match="needs a reason"):
        expire(fed, grant.grant_id, now_ms() + 1000, reason=" ")
    fed.nodes[NODE].delivery.revoke(grant.grant_id, "done", "officer")
    with pytest.raises(UserError, match="revoked"):
        expire(fed, grant.grant_id, now_ms() + 1000)
    assert audited(fed, "access.expiry") == []
