"""Prepared downloads across all grants share one disk budget (``delivery_max_bytes``).

Each grant's first manifest copies its data into the node's state directory, and a
researcher may hold up to MAX_LIVE_GRANTS live grants of each dataset: many researchers
and datasets together filled the node's disk. A download that would take prepared
downloads beyond the bound is refused with what is used, the bound and how to free it,
leaving nothing behind; revoked and expired grants' files are removed. Real node and
coordinator cores, the in-memory link; sizes are the files' own, measured here."""

from __future__ import annotations

import pytest
from staff import staff_meta, staff_table

from coordinator import access_client as ac
from harness.approvers import officer_approves
from harness.inmemory import InMemoryFederation, researcher_client
from node.audit import AuditLog
from scifed.errors import UserError

NODE = "alpha"
ACCEPT = ["no_reidentification", "license:CC0-1.0"]


@pytest.fixture
def fed(tmp_path):
    with InMemoryFederation(tmp_path, [NODE]) as fed:
        table = staff_table().drop(columns="node")
        fed.add_dataset(NODE, table, staff_meta("G1", "OPEN"), "open")
        fed.add_dataset(NODE, table, staff_meta("G2", "CONDITIONAL"), "cond")
        fed.create_study("disk", {NODE: "cond"})
        fed.file_bytes = (fed.nodes[NODE].cfg.data_dir / "open.csv").stat().st_size
        yield fed


def core(fed):
    return fed.nodes[NODE]


def prepared(fed) -> dict[str, int]:
    folder = core(fed).cfg.state_dir / "deliveries"
    return {p.name: p.stat().st_size for p in folder.iterdir()} if folder.exists() else {}


def ask(client, name: str = "open", **kw):
    kw.setdefault("study", "disk" if name == "cond" else "")
    return ac.request_access(client, f"urn:sdn:{NODE}:ds:{name}", method="download",
                             purpose="methods paper", accept=ACCEPT, **kw)


def test_the_default_bound_is_in_the_config():
    from scifed.config import NodeConfig

    assert NodeConfig.model_fields["delivery_max_bytes"].default == 10 * 1024**3


def test_a_download_beyond_the_bound_is_refused_and_nothing_is_left(fed):
    core(fed).cfg.delivery_max_bytes = int(fed.file_bytes * 1.5)  # room for one copy
    alice, bob = researcher_client(fed), researcher_client(fed, "bob")
    first = ask(alice)
    ac.manifest(alice, first)
    assert sum(prepared(fed).values()) == fed.file_bytes
    before = prepared(fed)
    second = ask(bob)
    with pytest.raises(UserError, match="delivery_max_bytes") as exc:
        ac.download(bob, second, fed.root / "bob.csv")
    said = str(exc.value)
    assert f"hold {fed.file_bytes / 2**20:.2f} MiB ({fed.file_bytes} bytes) of" in said
    assert f"({core(fed).cfg.delivery_max_bytes} bytes)" in said
    assert "scifed node access revoke" in said
    assert prepared(fed) == before  # nothing half-written
    assert core(fed).delivery.grants.get(second.grant_id).extract is None
    assert any(d["grant_id"] == second.grant_id and "delivery_max_bytes" in d["reason"]
               for d in (e.details for e in AuditLog(core(fed).store).entries()
                         if e.action == "access.refused"))
    # a column subset is measured once written: too large, it is removed again
    subset = ask(bob, columns=["person_id", "salary", "department"], fmt="csv")
    with pytest.raises(UserError, match="delivery_max_bytes"):
        ac.manifest(bob, subset)
    assert prepared(fed) == before
    # the officer revokes alice's grant: its file goes, and bob's download fits
    core(fed).delivery.revoke(first.grant_id, "study ended", "officer")
    assert prepared(fed) == {}
    out = fed.root / "bob.csv"
    ac.download(bob, second, out)
    assert out.read_bytes() == (core(fed).cfg.data_dir / "open.csv").read_bytes()


def test_an_expired_grants_file_is_removed(fed):
    core(fed).cfg.delivery_max_bytes = int(fed.file_bytes * 1.5)
    alice = researcher_client(fed)
    grant = ask(alice, "cond")
    approvals = core(fed).approvals
    appr = next(a for a in approvals.list("pending") if a.job_id == grant.grant_id)
    officer_approves(approvals, appr.approval_id, expires_ms=None)
    ac.manifest(alice, grant)
    assert len(prepared(fed)) == 1
    with core(fed).store.tx() as con:  # the officer's approval runs out
        con.execute("UPDATE approvals SET expires_ms=1 WHERE approval_id=?",
                    (appr.approval_id,))
    other = ask(alice)  # another grant's download needs the space
    ac.manifest(alice, other)
    assert list(prepared(fed)) == [f"{other.grant_id}.data"]


def test_an_expired_grants_file_is_gone_after_one_heartbeat_without_a_restart(fed):
    """The node's heartbeat (its one periodic loop, node/link.py) sweeps: a grant that
    expires while the node runs frees its disk at the next beat, audited with the grant
    and the bytes, with no new download and no restart."""
    from node.link import CoordinatorLink

    node = core(fed)
    alice = researcher_client(fed)
    grant = ask(alice, "cond")
    appr = next(a for a in node.approvals.list("pending") if a.job_id == grant.grant_id)
    officer_approves(node.approvals, appr.approval_id, expires_ms=None)
    ac.manifest(alice, grant)
    ((name, size),) = prepared(fed).items()
    link = CoordinatorLink(node.cfg, published=list, handle=lambda task: None,
                           audit_head=node.audit.head, trust=node.studies.trust,
                           housekeeping=node.delivery.sweep)
    link._heartbeat()  # a beat while the grant is live removes nothing
    assert prepared(fed) == {name: size}
    with node.store.tx() as con:  # the officer's approval runs out
        con.execute("UPDATE approvals SET expires_ms=1 WHERE approval_id=?",
                    (appr.approval_id,))
    link._heartbeat()
    assert prepared(fed) == {}
    removed = [e.details for e in AuditLog(node.store).entries()
               if e.action == "access.extract.removed"]
    assert removed == [{"grant_id": grant.grant_id, "researcher": "alice", "bytes": size,
                        "state": "expired"}]
    link._heartbeat()  # removed once, audited once
    assert len([e for e in AuditLog(node.store).entries()
                if e.action == "access.extract.removed"]) == 1
