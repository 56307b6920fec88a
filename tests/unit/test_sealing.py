"""Sealing to a party's X25519 key and the certificate-signed claims that publish it."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from scifed.errors import UserError
from scifed.pki import init_ca, make_key_and_csr, sign_csr
from scifed.sealing import (
    SealKeyClaim,
    ensure_seal_key,
    load_seal_key,
    make_claim,
    open_sealed,
    seal,
    verify_claim,
)


def _enrol(ca_dir: Path, home: Path, name: str, role: str) -> SealKeyClaim:
    """What a member does: key and CSR at home, CA signs, member signs its seal key."""
    cert = sign_csr(ca_dir, make_key_and_csr(home, name=name, role=role), role=role)
    return make_claim(home, name=name, role=role, cert_path=cert, key_path=home / f"{role}.key")


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    init_ca(tmp_path / "ca")
    return tmp_path / "ca"


def test_seal_key_created_once_and_private(tmp_path: Path) -> None:
    public = ensure_seal_key(tmp_path / "n")
    assert len(public) == 32
    assert ensure_seal_key(tmp_path / "n") == public
    assert stat.S_IMODE(os.stat(tmp_path / "n" / "seal.key").st_mode) == 0o600
    assert load_seal_key(tmp_path / "n").public_key().public_bytes_raw() == public


def test_load_seal_key_missing_or_invalid(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no seal key"):
        load_seal_key(tmp_path)
    (tmp_path / "seal.key").write_bytes(b"not a key")
    with pytest.raises(UserError, match="not an unencrypted PEM X25519"):
        load_seal_key(tmp_path)
    with pytest.raises(UserError):
        ensure_seal_key(tmp_path)


def test_seal_round_trip_5mb(tmp_path: Path) -> None:
    public = ensure_seal_key(tmp_path)
    payload = os.urandom(5 * 1024 * 1024)
    blob = seal(public, payload, context=b"study s1 key")
    assert len(blob) == 32 + 12 + len(payload) + 16
    assert open_sealed(load_seal_key(tmp_path), blob, context=b"study s1 key") == payload


def test_open_refuses_wrong_context_key_or_tampering(tmp_path: Path) -> None:
    public = ensure_seal_key(tmp_path)
    private = load_seal_key(tmp_path)
    blob = seal(public, b"secret context", context=b"ctx")
    tampered = [blob[:i] + bytes([blob[i] ^ 1]) + blob[i + 1 :] for i in (0, 32, 50, len(blob) - 1)]
    for bad in [*tampered, blob[:40]]:
        with pytest.raises(UserError, match="sealed message"):
            open_sealed(private, bad, context=b"ctx")
    with pytest.raises(UserError, match="could not be authenticated"):
        open_sealed(private, blob, context=b"other ctx")
    with pytest.raises(UserError, match="could not be authenticated"):
        open_sealed(X25519PrivateKey.generate(), blob, context=b"ctx")


def test_valid_claim_verifies_after_json_round_trip(ca_dir: Path, tmp_path: Path) -> None:
    claim = _enrol(ca_dir, tmp_path / "a", "node-a", "node")
    relayed = SealKeyClaim.from_dict(json.loads(json.dumps(claim.to_dict())))
    assert relayed == claim
    ca_pem = (ca_dir / "ca.crt").read_bytes()
    assert verify_claim(relayed, ca_pem, expect_role="node", expect_name="node-a") == (
        ensure_seal_key(tmp_path / "a")
    )
    assert verify_claim(relayed, ca_pem, expect_role="node") == claim.seal_public


def test_researcher_claim_verifies(ca_dir: Path, tmp_path: Path) -> None:
    claim = _enrol(ca_dir, tmp_path / "r", "alice", "researcher")
    ca_pem = (ca_dir / "ca.crt").read_bytes()
    assert verify_claim(claim, ca_pem, expect_role="researcher", expect_name="alice")


def test_swapped_seal_key_refused(ca_dir: Path, tmp_path: Path) -> None:
    claim = _enrol(ca_dir, tmp_path / "a", "node-a", "node")
    swapped = dataclasses.replace(claim, seal_public=ensure_seal_key(tmp_path / "relay"))
    with pytest.raises(UserError, match="signature over the seal key does not verify"):
        verify_claim(swapped, (ca_dir / "ca.crt").read_bytes(), expect_role="node")


def test_a_claim_verified_before_does_not_vouch_for_an_altered_copy(ca_dir: Path,
                                                                   tmp_path: Path) -> None:
    """Claim checks are remembered (every task of a job carries the same claims): what is
    remembered is the exact bytes, so a relay that swaps the seal key or the signature of
    a claim a node accepted a moment ago is still refused."""
    claim = _enrol(ca_dir, tmp_path / "a", "node-a", "node")
    ca_pem = (ca_dir / "ca.crt").read_bytes()
    for _ in range(2):
        assert verify_claim(claim, ca_pem, expect_role="node") == claim.seal_public
    other = _enrol(ca_dir, tmp_path / "b", "node-b", "node")
    for altered in (dataclasses.replace(claim, seal_public=other.seal_public),
                    dataclasses.replace(claim, signature=other.signature)):
        with pytest.raises(UserError, match="signature over the seal key does not verify"):
            verify_claim(altered, ca_pem, expect_role="node")


def test_wrong_expectations_refused(ca_dir: Path, tmp_path: Path) -> None:
    claim = _enrol(ca_dir, tmp_path / "a", "node-a", "node")
    ca_pem = (ca_dir / "ca.crt").read_bytes()
    with pytest.raises(UserError, match="expected node 'node-b'"):
        verify_claim(claim, ca_pem, expect_role="node", expect_name="node-b")
    with pytest.raises(UserError, match="expected a researcher"):
        verify_claim(claim, ca_pem, expect_role="researcher")
    renamed = dataclasses.replace(claim, name="node-b")
    with pytest.raises(UserError, match="certificate belongs to node 'node-a'"):
        verify_claim(renamed, ca_pem, expect_role="node", expect_name="node-b")


def test_certificate_from_another_ca_refused(ca_dir: Path, tmp_path: Path) -> None:
    init_ca(tmp_path / "rogue-ca")
    claim = _enrol(tmp_path / "rogue-ca", tmp_path / "a", "node-a", "node")
    with pytest.raises(UserError, match="not issued by the federation CA"):
        verify_claim(claim, (ca_dir / "ca.crt").read_bytes(), expect_role="node")


def test_make_claim_checks_certificate_and_key(ca_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "a"
    cert = sign_csr(ca_dir, make_key_and_csr(home, name="node-a", role="node"), role="node")
    make_key_and_csr(tmp_path / "b", name="node-b", role="node")
    with pytest.raises(UserError, match="not node 'node-x'"):
        make_claim(home, name="node-x", role="node", cert_path=cert, key_path=home / "node.key")
    with pytest.raises(UserError, match="is not the key of the certificate"):
        make_claim(
            home, name="node-a", role="node", cert_path=cert, key_path=tmp_path / "b" / "node.key"
        )


def test_claim_from_dict_refuses_malformed() -> None:
    with pytest.raises(UserError, match="lacks field"):
        SealKeyClaim.from_dict({"name": "n"})
    bad = {"name": "n", "role": "node", "seal_public": "!!", "signature": "", "cert_pem": ""}
    with pytest.raises(UserError, match="invalid base64"):
        SealKeyClaim.from_dict(bad)


def test_seal_refuses_a_non_key() -> None:
    with pytest.raises(UserError, match="not X25519"):
        seal(b"short", b"x", context=b"c")
