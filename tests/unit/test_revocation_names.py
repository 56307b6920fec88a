"""The revocations the operator sees: the CA's CRL as the coordinator holds it, each
revoked serial named from the certificates the coordinator has seen (callers since it
started, and the seal key claims in its database), dated as the CA's own index dates it;
a serial it never saw stays listed, unnamed."""

from __future__ import annotations

import datetime as dt

from coordinator import registry
from coordinator.db import Database
from coordinator.revocations import SeenCertificates, revoked
from scifed.pki import (
    identity_from_cert_pem,
    init_ca,
    issued,
    load_crl,
    make_key_and_csr,
    revoke,
    sign_csr,
)


def issue(tmp_path, ca, name: str, role: str) -> bytes:
    csr = make_key_and_csr(tmp_path / name, name=name, role=role)
    return sign_csr(ca, csr, role=role).read_bytes()


def test_revoked_certificates_named_from_what_the_coordinator_has_seen(tmp_path):
    ca = tmp_path / "ca"
    init_ca(ca, coordinator_hosts=["127.0.0.1"])
    mallory = issue(tmp_path, ca, "mallory", "researcher")
    beta = issue(tmp_path, ca, "beta", "node")
    issue(tmp_path, ca, "trudy", "researcher")  # never calls the coordinator
    issue(tmp_path, ca, "alice", "researcher")  # not revoked
    db = Database(f"sqlite:///{tmp_path / 'coord.db'}")
    try:
        registry.upsert_node(db, name="beta", platform="Beta", software_version="0.1.0",
                             cert_fingerprint="f", seal_claim={
                                 "name": "beta", "role": "node", "cert_pem": beta.decode()})
        seen = SeenCertificates()
        seen.saw(identity_from_cert_pem(mallory))
        for name in ("mallory", "beta", "trudy"):
            revoke(ca, name=name)
        crl = load_crl((ca / "crl.pem").read_bytes(), (ca / "ca.crt").read_bytes())
        got = revoked(crl, db, seen)
    finally:
        db.close()
    index = {e["serial"]: e for e in issued(ca)}
    assert {r.serial for r in got} == {s for s, e in index.items() if e["revoked"]}
    assert sorted((r.name, r.role) for r in got) == [
        ("", ""), ("beta", "node"), ("mallory", "researcher")]
    assert {r.name for r in got if r.name} == {index[r.serial]["name"] for r in got if r.name}
    unnamed = next(r for r in got if not r.name)
    assert index[unnamed.serial]["name"] == "trudy"  # listed all the same, by serial
    for r in got:  # the CRL's dates are the CA's (to the second)
        when = dt.datetime.fromisoformat(index[r.serial]["revoked_at"])
        assert abs(r.revoked_ms / 1000 - when.timestamp()) < 1
    assert [r.revoked_ms for r in got] == sorted((r.revoked_ms for r in got), reverse=True)
    assert seen.names().keys() >= {r.serial for r in got if r.name}  # found once, kept


def test_no_crl_revokes_nothing(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'coord.db'}")
    try:
        assert revoked(None, db, SeenCertificates()) == []
    finally:
        db.close()
