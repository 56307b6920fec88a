"""The CA's CRL as it travels to the nodes: verification, selection (never a lower
number), freshness, and the coordinator forwarding it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from coordinator import registry
from coordinator.server import CoordinatorCore
from node.audit import AuditLog
from node.store import NodeStore
from node.studies import PeerTrust
from protos.scifed.v1 import federation_pb2 as pb
from scifed.config import CoordinatorConfig, NodeConfig, TlsConfig
from scifed.errors import UserError
from scifed.pki import (
    CRL_VALIDITY,
    init_ca,
    load_crl,
    make_key_and_csr,
    newer_crl,
    refresh_crl,
    revoke,
    sign_csr,
)


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    init_ca(tmp_path / "ca")
    return tmp_path / "ca"


def ca_pem(ca: Path) -> bytes:
    return (ca / "ca.crt").read_bytes()


def crl_bytes(ca: Path) -> bytes:
    return (ca / "crl.pem").read_bytes()


def node(ca: Path, tmp_path: Path, name: str = "node-a") -> NodeConfig:
    pki = tmp_path / name / "pki"
    sign_csr(ca, make_key_and_csr(pki, name=name, role="node"), role="node",
             out_path=pki / f"{name}.crt")
    (tmp_path / name / "data").mkdir()
    return NodeConfig(name=name, platform="p", coordinator="in-memory",
                      data_dir=tmp_path / name / "data", state_dir=tmp_path / name / "state",
                      tls=TlsConfig(ca=ca / "ca.crt", cert=pki / f"{name}.crt",
                                    key=pki / "node.key"))


def trust(cfg: NodeConfig) -> PeerTrust:
    return PeerTrust(NodeStore(cfg.state_dir / "node.db"), cfg)


def audit(t: PeerTrust, action: str) -> list[dict]:
    return [e.details for e in AuditLog(t.store).entries() if e.action == action]


# -- verification ----------------------------------------------------------------------------
def test_a_crl_loads_as_pem_or_der_with_its_number_and_serials(ca, tmp_path):
    serial = sign_csr(ca, make_key_and_csr(tmp_path / "r", name="alice", role="researcher"),
                      role="researcher")
    assert serial.exists()
    first = load_crl(crl_bytes(ca), ca_pem(ca))
    assert (first.number, first.serials) == (1, frozenset())
    revoked = revoke(ca, name="alice")
    second = load_crl(crl_bytes(ca), ca_pem(ca))
    assert (second.number, second.serials) == (2, frozenset({revoked}))
    assert load_crl(second.der, ca_pem(ca)) == second  # DER as it travels
    assert second.next_update - second.this_update == CRL_VALIDITY == dt.timedelta(days=1)
    assert second.revoked(revoked) and not first.revoked(revoked)
    assert newer_crl(None, first) and newer_crl(first, second)
    assert not newer_crl(second, first) and not newer_crl(second, second)


def test_a_crl_of_another_ca_without_a_number_or_garbage_is_refused(ca, tmp_path):
    init_ca(tmp_path / "other")
    with pytest.raises(UserError, match="the CRL: the CRL is not signed by the federation CA"):
        load_crl(crl_bytes(tmp_path / "other"), ca_pem(ca))
    with pytest.raises(UserError, match="x: not a certificate revocation list"):
        load_crl(b"not a crl", ca_pem(ca), source="x")
    key = serialization.load_pem_private_key((ca / "ca.key").read_bytes(), password=None)
    issuer = x509.load_pem_x509_certificate(ca_pem(ca)).subject
    now = dt.datetime.now(dt.UTC)
    unnumbered = (x509.CertificateRevocationListBuilder().issuer_name(issuer)
                  .last_update(now).next_update(now + dt.timedelta(days=1))
                  .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    with pytest.raises(UserError, match="the CRL carries no CRL number"):
        load_crl(unnumbered, ca_pem(ca))


def test_refresh_signs_the_same_revocations_under_the_next_number(ca, tmp_path):
    sign_csr(ca, make_key_and_csr(tmp_path / "r", name="alice", role="researcher"),
             role="researcher")
    serial = revoke(ca, name="alice")
    before = load_crl(crl_bytes(ca), ca_pem(ca))
    assert refresh_crl(ca) == before.number + 1
    after = load_crl(crl_bytes(ca), ca_pem(ca))
    assert after.number == before.number + 1 and after.serials == {serial}
    assert after.this_update >= before.this_update


# -- the node's choice ------------------------------------------------------------------------
def test_the_node_keeps_the_newest_crl_and_never_goes_back(ca, tmp_path):
    t = trust(node(ca, tmp_path))
    assert t.current() is None
    first = crl_bytes(ca)
    assert t.offer(first, via="task").number == 1
    refresh_crl(ca)
    second = crl_bytes(ca)
    assert t.offer(second, via="heartbeat").number == 2
    for _ in range(3):  # a replay, with every task: refused, audited once
        assert t.offer(first, via="task").number == 2
    assert t.offer(b"", via="task").number == 2
    assert [d["number"] for d in audit(t, "crl.accept")] == [1, 2]
    refused = audit(t, "crl.refuse")
    assert len(refused) == 1 and refused[0]["held"] == 2 and refused[0]["number"] == 1
    # another part of the node (the link) holds its own PeerTrust on the same database
    assert trust(t.cfg).current().number == 2
    init_ca(tmp_path / "other")
    assert t.offer(crl_bytes(tmp_path / "other"), via="task").number == 2
    assert "not signed by the federation CA" in audit(t, "crl.refuse")[1]["reason"]


def test_the_node_seeds_its_crl_from_the_configured_file(ca, tmp_path):
    cfg = node(ca, tmp_path)
    cfg.tls.crl = ca / "crl.pem"
    assert trust(cfg).current().number == 1


def test_no_crl_a_stale_one_or_its_own_revocation_is_refused_with_one_message(ca, tmp_path):
    cfg = node(ca, tmp_path)
    t = trust(cfg)
    with pytest.raises(UserError) as none:
        t.fresh("job-1")
    assert str(none.value) == ("node node-a refuses tasks that trust other parties: it "
                               "holds no certificate revocation list of the federation CA "
                               "(the coordinator forwards it with every task)")
    t.offer(crl_bytes(ca), via="task")
    assert t.fresh().number == 1
    cfg.crl_max_age_seconds = 1e-3
    with pytest.raises(UserError, match=r"^node node-a refuses tasks that trust other "
                       r"parties: its newest certificate revocation list \(CRL number 1, "
                       r"signed .* UTC\) is [0-9.]+ (s|min) old, older than its limit "
                       r"crl_max_age_seconds = 0.001 \(0.0 s\); the coordinator forwards"):
        t.fresh("job-2")
    cfg.crl_max_age_seconds = 86400
    serial = revoke(ca, name="node-a", role="node")
    t.offer(crl_bytes(ca), via="task")
    with pytest.raises(UserError, match=f"^node node-a takes no tasks: its own certificate "
                                        f"\\(serial {serial}\\) is revoked \\(CRL number 2"):
        t.fresh("job-3")
    assert [e.subject for e in AuditLog(t.store).entries() if e.action == "trust.refuse"] \
        == ["job-1", "job-2", "job-3"]


# -- the coordinator's copy -------------------------------------------------------------------
def test_the_coordinator_forwards_the_newest_crl_with_tasks_registration_and_acks(ca,
                                                                                 tmp_path):
    core = CoordinatorCore(CoordinatorConfig(
        state_dir=tmp_path / "coord",
        tls=TlsConfig(ca=ca / "ca.crt", cert=ca / "coordinator.crt",
                      key=ca / "coordinator.key")))
    try:
        assert core.crl.number == 1  # crl.pem beside ca.crt
        old = crl_bytes(ca)
        refresh_crl(ca)
        core.crl_changed(crl_bytes(ca))
        core.crl_changed(old)  # an older file (a restored backup) does not go back
        assert core.crl.number == 2 and core.sessions.crl == core.crl.der
        session = core.sessions.open("node-a")
        task = core.sessions.send("node-a", "compute", b"{}")
        assert not task.done()
        assert session.outbox.get_nowait().task.crl == core.crl.der
        beat = pb.Heartbeat(sent_unix_ms=1)
        registry.upsert_node(core.db, name="node-a", platform="p", software_version="0",
                             cert_fingerprint="", seal_claim=None)
        assert core.link.heartbeat("node-a", beat, session).crl == core.crl.der
        assert core.link.heartbeat("node-a", beat, session).crl == b""  # sent already
        refresh_crl(ca)
        core.crl_changed(crl_bytes(ca))
        assert load_crl(core.link.heartbeat("node-a", beat, session).crl,
                        ca_pem(ca)).number == 3
    finally:
        core.db.close()
