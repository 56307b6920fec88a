"""Attacks of a deviating coordinator on the calls made under a researcher's grant
(node/delivery/desk.py): it calls a grant on its own, in the researcher's name (running
service queries the researcher never asked, spending the grant and filling the audit
chain), replays a call it relayed, or reads a query's text. Real node and coordinator
cores, real PKI and sealing, the in-memory link. Before the defence, a manifest, chunk
or query named a grant and the researcher as the coordinator said: the coordinator's own
`SELECT * FROM data` under alice's grant was answered (sealed to her) and audited as
hers, and the SQL of every query travelled in clear through it."""

from __future__ import annotations

import json

import pytest
from staff import staff_meta, staff_table

from coordinator import access_client as ac
from harness.inmemory import InMemoryFederation, researcher_client
from node.audit import AuditLog
from scifed.delivery import (
    CALL_MAX_AGE_MS,
    AccessKind,
    GrantRef,
    call_statement,
    query_context,
    sign_call,
)
from scifed.errors import UserError
from scifed.sealing import SealKeyClaim, seal
from scifed.wire import now_ms

NODE = "alpha"
ACCEPT = ["no_reidentification", "license:CC0-1.0"]
SQL = "SELECT department, count(*) AS n FROM data GROUP BY department"


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    fed = InMemoryFederation(tmp_path_factory.mktemp("calls"), [NODE]).__enter__()
    fed.table = staff_table().drop(columns="node")
    fed.add_dataset(NODE, fed.table, staff_meta("G1", "OPEN"), "open")
    yield fed
    fed.__exit__(None, None, None)


def core(fed):
    return fed.nodes[NODE]


def grant_of(fed, method: str):
    return ac.request_access(researcher_client(fed), f"urn:sdn:{NODE}:ds:open",
                             method=method, purpose="methods paper", accept=ACCEPT)


def audited(fed, action: str) -> list[dict]:
    return [e.details for e in AuditLog(core(fed).store).entries() if e.action == action]


def delivered(fed, grant_id: str) -> int:
    return len(core(fed).delivery.grants.deliveries(grant_id))


def send(fed, kind: str, ref: GrantRef) -> bytes:
    """What the coordinator sends the node, as it wishes (no interceptor, no client)."""
    return fed.coordinator.access._ask(NODE, kind, ref.dumps())


def coordinator_made(fed, grant, what: str, *, signer: str | None = None, index: int = 0,
                     sql: str = "", at_ms: int | None = None) -> GrantRef:
    """A call the coordinator builds itself: every field right, the SQL sealed to the
    node's seal key (it holds the node's claim), signed by nobody or by ``signer``."""
    node_public = SealKeyClaim.from_dict(grant.node_claim).seal_public
    nonce = f"n{now_ms()}{index}{what}"
    sealed = seal(node_public, sql.encode(), context=query_context(grant.grant_id, nonce)) \
        if sql else b""
    statement = call_statement(grant_id=grant.grant_id, node=NODE, researcher="alice",
                               what=what, index=index, sealed_query=sealed, nonce=nonce,
                               at_ms=at_ms)
    signature = b""
    if signer is not None:
        client = researcher_client(fed, signer)
        signature = sign_call(statement, client.identity.path, signer)
    return GrantRef(grant_id=grant.grant_id, researcher="alice", call=statement,
                    signature=signature, sealed_query=sealed)


CASES = [("manifest", AccessKind.MANIFEST, "download", {}),
         ("chunk", AccessKind.CHUNK, "download", {"index": 0}),
         ("query", AccessKind.QUERY, "in_node_service", {"sql": "SELECT * FROM data"})]


@pytest.mark.parametrize(("what", "kind", "method", "extra"), CASES,
                         ids=[c[0] for c in CASES])
def test_a_call_the_researcher_did_not_sign_is_refused_and_audited(fed, what, kind,
                                                                     method, extra):
    grant = grant_of(fed, method)
    if what == "chunk":
        ac.manifest(researcher_client(fed), grant)  # alice prepared the download
    before = delivered(fed, grant.grant_id)
    refused = len(audited(fed, "access.refused"))
    unsigned = GrantRef(grant_id=grant.grant_id, researcher="alice")
    with pytest.raises(UserError, match="not signed by the researcher"):
        send(fed, kind, unsigned)
    with pytest.raises(UserError, match="not signed by researcher 'alice'"):
        send(fed, kind, coordinator_made(fed, grant, what, **extra))
    # signed, but by another researcher's key (mallory, who colludes with the relay)
    with pytest.raises(UserError, match="not signed by researcher 'alice' with the "
                       "certificate the grant was made for"):
        send(fed, kind, coordinator_made(fed, grant, what, signer="mallory", **extra))
    assert delivered(fed, grant.grant_id) == before  # nothing spent in alice's name
    refusals = audited(fed, "access.refused")[refused:]
    assert len(refusals) == 3 and all(d["grant_id"] == grant.grant_id for d in refusals)
    assert all(d["researcher"] == "alice" for d in refusals)
    assert "not signed" in refusals[0]["reason"]
    # a call signed by alice for one thing is not another: a chunk call as a manifest
    other = {"manifest": "chunk", "chunk": "manifest", "query": "manifest"}[what]
    with pytest.raises(UserError, match=f"names what '{other}', not '{what}'"):
        send(fed, kind, ac.signed_ref(researcher_client(fed), grant, other))


def test_a_replayed_or_stale_call_is_refused(fed):
    """The coordinator keeps a query alice signed and sends it again (a second answer,
    a second charge on the dataset's audited answers), or sends one signed long ago."""
    alice = researcher_client(fed)
    grant = grant_of(fed, "in_node_service")
    ref = ac.signed_ref(alice, grant, "query", sql=SQL)
    send(fed, AccessKind.QUERY, ref)  # alice's own call, relayed once
    answers = len(audited(fed, "access.answer"))
    with pytest.raises(UserError, match="answered once"):
        send(fed, AccessKind.QUERY, ref)
    assert len(audited(fed, "access.answer")) == answers
    old = coordinator_made(fed, grant, "query", signer="alice", sql=SQL,
                           at_ms=now_ms() - CALL_MAX_AGE_MS - 60_000)
    with pytest.raises(UserError, match="signed 3[0-9]{2} s ago"):
        send(fed, AccessKind.QUERY, old)
    reasons = [d["reason"] for d in audited(fed, "access.refused")
               if d["grant_id"] == grant.grant_id]
    assert any("nonce was seen" in r for r in reasons)
    assert any("good for 300 s" in r for r in reasons)
    # the researcher's own calls go on: each is signed afresh
    frame, _ = ac.query(alice, grant, SQL)
    assert frame.set_index("department").n.sort_index().tolist() == \
        fed.table.groupby("department").size().tolist()


def test_the_coordinator_relays_no_query_text(fed):
    """A recorder at the coordinator of every payload it relays for a query (the call
    to the node, its answer, its refusal) finds none of the query's text, neither of an
    answered query nor of a refused one whose reason quotes it."""
    alice = researcher_client(fed)
    grant = grant_of(fed, "in_node_service")
    relay = fed.coordinator.access
    seen: list[bytes] = []
    ask = relay._ask

    def recorder(node, kind, payload):
        seen.append(payload)
        try:
            out = ask(node, kind, payload)
        except UserError as exc:
            seen.append(str(exc).encode())
            raise
        seen.append(out)
        return out
    relay._ask = recorder
    try:
        answered = "SELECT department AS zebra_dept, count(*) AS okapi_n FROM data " \
                   "GROUP BY department"
        frame, _ = ac.query(alice, grant, answered)
        assert sorted(frame.zebra_dept) == sorted(fed.table.department.unique())
        with pytest.raises(UserError, match="narwhal_col"):
            ac.query(alice, grant, "SELECT narwhal_col FROM data")
    finally:
        relay._ask = ask
    assert len(seen) >= 4
    for probe in (b"zebra_dept", b"okapi_n", b"narwhal_col", b"SELECT", b"GROUP BY"):
        assert not any(probe in blob for blob in seen), probe
    # the node's audit chain names the query by its sha256 only
    assert "zebra_dept" not in json.dumps(audited(fed, "access.answer"))
