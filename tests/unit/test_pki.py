"""The federation PKI, including a real gRPC mTLS handshake on loopback."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from scifed.errors import UserError
from scifed.pki import (
    ROLES,
    identity_from_cert_pem,
    init_ca,
    issued,
    load_crl_serials,
    make_key_and_csr,
    revoke,
    sign_csr,
)
from scifed.sealing import ensure_seal_key


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    ca = tmp_path / "ca"
    init_ca(ca)
    return ca


def _enrol(ca_dir: Path, home: Path, name: str, role: str) -> Path:
    """What a member does: make a key and CSR at home, have the CA sign it."""
    return sign_csr(ca_dir, make_key_and_csr(home, name=name, role=role), role=role)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_ca_makes_ca_crl_index_and_coordinator(ca_dir: Path) -> None:
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert load_crl_serials(ca_dir / "crl.pem", ca_dir / "ca.crt") == set()

    coord = x509.load_pem_x509_certificate((ca_dir / "coordinator.crt").read_bytes())
    coord.verify_directly_issued_by(ca)
    san = coord.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    eku = coord.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    identity = identity_from_cert_pem((ca_dir / "coordinator.crt").read_bytes())
    assert (identity.name, identity.role) == ("coordinator", "coordinator")

    with pytest.raises(UserError, match="ca.key"):
        init_ca(ca_dir)


@pytest.mark.parametrize("role", ROLES)
def test_csr_signed_for_each_role(ca_dir: Path, tmp_path: Path, role: str) -> None:
    home = tmp_path / "home"
    csr_path = make_key_and_csr(home, name="platform-a", role=role)
    assert csr_path == home / f"{role}.csr"
    cert_path = sign_csr(ca_dir, csr_path, role=role)
    assert cert_path == home / "platform-a.crt"

    pem = cert_path.read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == role
    eku = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert (ExtendedKeyUsageOID.SERVER_AUTH in eku) == (role == "coordinator")

    identity = identity_from_cert_pem(pem)
    assert (identity.name, identity.role, identity.serial) == (
        "platform-a",
        role,
        cert.serial_number,
    )
    assert len(identity.fingerprint_sha256) == 64


def test_coordinator_csr_keeps_requested_hosts(ca_dir: Path, tmp_path: Path) -> None:
    csr = make_key_and_csr(
        tmp_path / "c2", name="coord-b", role="coordinator", hosts=["10.0.0.5", "fed.example"]
    )
    cert = x509.load_pem_x509_certificate(sign_csr(ca_dir, csr, role="coordinator").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert san.get_values_for_type(x509.DNSName) == ["fed.example"]


def test_role_mismatch_refused(ca_dir: Path, tmp_path: Path) -> None:
    csr = make_key_and_csr(tmp_path, name="alice", role="researcher")
    with pytest.raises(UserError, match="'researcher'.*'operator'"):
        sign_csr(ca_dir, csr, role="operator")


def test_unknown_role_refused(ca_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown role 'admin'"):
        make_key_and_csr(tmp_path, name="alice", role="admin")
    csr = make_key_and_csr(tmp_path, name="alice", role="researcher")
    with pytest.raises(UserError, match="unknown role 'admin'"):
        sign_csr(ca_dir, csr, role="admin")


def test_not_a_csr_and_existing_key_refused(ca_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="ca.crt: not a PEM certificate signing request"):
        sign_csr(ca_dir, ca_dir / "ca.crt", role="node")
    make_key_and_csr(tmp_path, name="n1", role="node")
    with pytest.raises(UserError, match="node.key already exists"):
        make_key_and_csr(tmp_path, name="n1", role="node")


def test_reissuing_active_name_refused_until_revoked(ca_dir: Path, tmp_path: Path) -> None:
    first = _enrol(ca_dir, tmp_path / "a", "platform-a", "node")
    csr = make_key_and_csr(tmp_path / "b", name="platform-a", role="node")
    with pytest.raises(UserError, match="'platform-a' already holds active node certificate"):
        sign_csr(ca_dir, csr, role="node")

    serial = revoke(ca_dir, name="platform-a")
    assert serial == x509.load_pem_x509_certificate(first.read_bytes()).serial_number
    sign_csr(ca_dir, csr, role="node")


def test_revoke_lists_serial_in_verified_crl(ca_dir: Path, tmp_path: Path) -> None:
    alice = _enrol(ca_dir, tmp_path / "alice", "alice", "researcher")
    _enrol(ca_dir, tmp_path / "bob", "bob", "researcher")
    serial = identity_from_cert_pem(alice.read_bytes()).serial

    assert revoke(ca_dir, serial=serial) == serial
    assert load_crl_serials(ca_dir / "crl.pem", ca_dir / "ca.crt") == {serial}
    assert {(e["name"], e["revoked"]) for e in issued(ca_dir)} == {
        ("coordinator", False),
        ("alice", True),
        ("bob", False),
    }
    with pytest.raises(UserError, match="no active certificate with name='alice'"):
        revoke(ca_dir, name="alice")
    with pytest.raises(UserError, match="no active certificate"):
        revoke(ca_dir, name="nobody")


def test_crl_from_another_ca_rejected(ca_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    init_ca(other, name="rogue CA")
    with pytest.raises(UserError, match="crl.pem: CRL is not signed by the CA"):
        load_crl_serials(other / "crl.pem", ca_dir / "ca.crt")


def test_cert_without_identity_uri_rejected(ca_dir: Path) -> None:
    with pytest.raises(UserError, match="no single scifed:// identity URI"):
        identity_from_cert_pem((ca_dir / "ca.crt").read_bytes())


def test_private_keys_are_0600(ca_dir: Path, tmp_path: Path) -> None:
    make_key_and_csr(tmp_path / "n", name="n1", role="node")
    ensure_seal_key(tmp_path / "n")
    for key in (
        ca_dir / "ca.key",
        ca_dir / "coordinator.key",
        tmp_path / "n" / "node.key",
        tmp_path / "n" / "seal.key",
    ):
        assert _mode(key) == 0o600, key


def test_seal_key_created_once(tmp_path: Path) -> None:
    public = ensure_seal_key(tmp_path)
    assert len(public) == 32
    assert ensure_seal_key(tmp_path) == public


# --- real mTLS with grpcio -------------------------------------------------------------

_METHOD = "/scifed.test.Probe/WhoAmI"


def _who_am_i(request: bytes, context: grpc.ServicerContext) -> bytes:
    identity = identity_from_cert_pem(context.auth_context()["x509_pem_cert"][0])
    return f"{identity.name} {identity.role}".encode()


@pytest.fixture
def mtls_port(ca_dir: Path) -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.unary_unary_rpc_method_handler(_who_am_i)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("scifed.test.Probe", {"WhoAmI": handler})]
    )
    credentials = grpc.ssl_server_credentials(
        [((ca_dir / "coordinator.key").read_bytes(), (ca_dir / "coordinator.crt").read_bytes())],
        root_certificates=(ca_dir / "ca.crt").read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield port
    server.stop(grace=None)


def _call(channel: grpc.Channel) -> bytes:
    with channel:
        return channel.unary_unary(_METHOD)(b"", timeout=10)


def _mtls_channel(port: int, ca_crt: Path, key: Path, cert: Path) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca_crt.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)


def test_mtls_node_with_ca_signed_cert_is_identified(
    mtls_port: int, ca_dir: Path, tmp_path: Path
) -> None:
    home = tmp_path / "node-a"
    cert = _enrol(ca_dir, home, "platform-a", "node")
    channel = _mtls_channel(mtls_port, ca_dir / "ca.crt", home / "node.key", cert)
    assert _call(channel) == b"platform-a node"


def test_mtls_client_from_another_ca_refused(mtls_port: int, ca_dir: Path, tmp_path: Path) -> None:
    rogue = tmp_path / "rogue"
    init_ca(rogue)
    cert = _enrol(rogue, tmp_path / "mallory", "platform-a", "node")
    # The client trusts the real CA, so only the server's check of the client cert can fail.
    channel = _mtls_channel(mtls_port, ca_dir / "ca.crt", tmp_path / "mallory" / "node.key", cert)
    with pytest.raises(grpc.RpcError) as caught:
        _call(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_plaintext_client_refused(mtls_port: int) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _call(grpc.insecure_channel(f"127.0.0.1:{mtls_port}"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_remembered_certificate_check_still_checks_issuer_and_clock(
        ca_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """verify_certificate remembers that the CA signed a certificate, never that it is
    valid: another CA is refused for the same certificate, and once the clock passes the
    certificate's end the next check refuses, though the signature check is cached."""
    import datetime as dt

    from scifed import pki

    pem = _enrol(ca_dir, tmp_path / "home", "alice", "researcher").read_bytes()
    ca_pem = (ca_dir / "ca.crt").read_bytes()
    other = tmp_path / "other"
    init_ca(other, name="rogue CA")
    assert pki.verify_certificate(pem, ca_pem, who="claim").name == "alice"
    assert pki.verify_certificate(pem, ca_pem, who="claim").name == "alice"  # remembered
    with pytest.raises(UserError, match="claim: its certificate was not issued by the"):
        pki.verify_certificate(pem, (other / "ca.crt").read_bytes(), who="claim")
    with pytest.raises(UserError, match="not PEM X.509"):
        pki.verify_certificate(b"junk", ca_pem, who="claim")
    end = x509.load_pem_x509_certificate(pem).not_valid_after_utc

    class Later(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return end + dt.timedelta(days=1)

    monkeypatch.setattr(pki.dt, "datetime", Later)
    with pytest.raises(UserError, match="claim: its certificate is valid only from"):
        pki.verify_certificate(pem, ca_pem, who="claim")
