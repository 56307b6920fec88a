"""Seal bytes to one party's X25519 key, which its federation certificate vouches for.

Study keys and released results travel through the coordinator, which must not read them
or swap in a key of its own. Each node and researcher therefore keeps an X25519 "seal key"
(``seal.key``, 0600, never copied) beside its P-256 certificate key, and publishes the
public half in a claim signed with the certificate key. A sender checks the claim against
the federation CA, then seals: ephemeral X25519, HKDF-SHA256, ChaCha20-Poly1305.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from scifed.errors import UserError
from scifed.pki import identity_from_cert_pem

SEAL_KEY_FILE = "seal.key"
_CLAIM_DOMAIN = b"scifed-seal-key-v1\0"
_SEAL_INFO = b"scifed-seal-v1"
_KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16


def ensure_seal_key(dir: Path) -> bytes:
    """Create ``seal.key`` (0600) on first use and return the raw 32-byte public key."""
    path = dir / SEAL_KEY_FILE
    dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = load_seal_key(dir)
    else:
        key = X25519PrivateKey.generate()
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
    return _raw_public(key.public_key())


def load_seal_key(dir: Path) -> X25519PrivateKey:
    """Read ``seal.key`` from ``dir``; a missing or foreign key is a UserError."""
    path = dir / SEAL_KEY_FILE
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise UserError(f"{path}: no seal key here; create it first") from None
    except (TypeError, ValueError):
        key = None
    if not isinstance(key, X25519PrivateKey):
        raise UserError(f"{path}: not an unencrypted PEM X25519 private key")
    return key


@dataclass(frozen=True)
class SealKeyClaim:
    """A party's seal public key, signed with its certificate key so a relay (the coordinator)
    cannot swap it."""

    name: str
    role: str
    seal_public: bytes
    signature: bytes
    cert_pem: bytes

    def to_dict(self) -> dict:
        """JSON-able form: binary fields base64, the certificate as PEM text."""
        return {
            "name": self.name,
            "role": self.role,
            "seal_public": base64.b64encode(self.seal_public).decode(),
            "signature": base64.b64encode(self.signature).decode(),
            "cert_pem": self.cert_pem.decode(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> SealKeyClaim:
        """Inverse of :meth:`to_dict`; a missing or mistyped field is a UserError."""
        try:
            fields = {k: d[k] for k in ("name", "role", "seal_public", "signature", "cert_pem")}
        except (KeyError, TypeError) as exc:
            raise UserError(f"seal key claim lacks field {exc}") from None
        if not all(isinstance(v, str) for v in fields.values()):
            raise UserError("seal key claim fields must all be strings")
        try:
            seal_public = base64.b64decode(fields["seal_public"], validate=True)
            signature = base64.b64decode(fields["signature"], validate=True)
        except binascii.Error as exc:
            raise UserError(f"seal key claim has invalid base64 ({exc})") from None
        return cls(
            name=fields["name"],
            role=fields["role"],
            seal_public=seal_public,
            signature=signature,
            cert_pem=fields["cert_pem"].encode(),
        )


def make_claim(dir: Path, *, name: str, role: str, cert_path: Path, key_path: Path) -> SealKeyClaim:
    """Sign this party's seal public key (made on first use) with its certificate key."""
    seal_public = ensure_seal_key(dir)
    cert_pem = _read(cert_path)
    identity = identity_from_cert_pem(cert_pem)
    if (identity.role, identity.name) != (role, name):
        raise UserError(
            f"{cert_path} is the certificate of {identity.role} {identity.name!r}, "
            f"not {role} {name!r}"
        )
    try:
        key = serialization.load_pem_private_key(_read(key_path), password=None)
    except (TypeError, ValueError):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UserError(f"{key_path}: not an unencrypted PEM ECDSA private key")
    cert = x509.load_pem_x509_certificate(cert_pem)
    if cert.public_key() != key.public_key():
        raise UserError(f"{key_path} is not the key of the certificate {cert_path}")
    signature = key.sign(_claim_message(role, name, seal_public), ec.ECDSA(hashes.SHA256()))
    return SealKeyClaim(
        name=name, role=role, seal_public=seal_public, signature=signature, cert_pem=cert_pem
    )


def verify_claim(
    claim: SealKeyClaim, ca_cert_pem: bytes, *, expect_role: str, expect_name: str | None = None
) -> bytes:
    """Check the claim's certificate (issued by this CA, in its validity period, naming the
    expected party) and its signature; return the 32-byte seal public key.

    Revocation is the caller's to check (``pki.load_crl_serials``) with the CRL it trusts.
    """
    who = f"seal key claim of {claim.role} {claim.name!r}"
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
        cert = x509.load_pem_x509_certificate(claim.cert_pem)
    except ValueError as exc:
        raise UserError(f"{who}: a certificate is not PEM X.509 ({exc})") from None
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise UserError(f"{who}: its certificate was not issued by the federation CA") from None
    now = dt.datetime.now(dt.UTC)
    for c, label in ((ca_cert, "the CA certificate"), (cert, "its certificate")):
        if not c.not_valid_before_utc <= now <= c.not_valid_after_utc:
            raise UserError(
                f"{who}: {label} is valid only from {c.not_valid_before_utc:%Y-%m-%d %H:%M} "
                f"to {c.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
            )
    identity = identity_from_cert_pem(claim.cert_pem)
    if (identity.role, identity.name) != (claim.role, claim.name):
        raise UserError(f"{who}: its certificate belongs to {identity.role} {identity.name!r}")
    if claim.role != expect_role:
        raise UserError(f"{who}: expected a {expect_role}")
    if expect_name is not None and claim.name != expect_name:
        raise UserError(f"{who}: expected {expect_role} {expect_name!r}")
    if len(claim.seal_public) != _KEY_BYTES:
        raise UserError(f"{who}: the seal key is not 32 bytes")
    public_key = cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise UserError(f"{who}: its certificate key is not ECDSA")
    try:
        public_key.verify(
            claim.signature,
            _claim_message(claim.role, claim.name, claim.seal_public),
            ec.ECDSA(hashes.SHA256()),
        )
    except InvalidSignature:
        raise UserError(f"{who}: the signature over the seal key does not verify") from None
    return claim.seal_public


def seal(recipient_public: bytes, plaintext: bytes, *, context: bytes) -> bytes:
    """Encrypt to a seal public key: eph_pub(32) || nonce(12) || ChaCha20-Poly1305 ciphertext.

    ``context`` names what is sealed (e.g. study and job id) and is authenticated, so a blob
    cannot be replayed as something else.
    """
    ephemeral = X25519PrivateKey.generate()
    try:
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    except ValueError as exc:
        raise UserError(f"cannot seal to a key that is not X25519 ({exc})") from None
    eph_public = _raw_public(ephemeral.public_key())
    key = _seal_key(shared, eph_public, recipient_public, context)
    nonce = os.urandom(_NONCE_BYTES)
    return eph_public + nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, context)


def open_sealed(private_key: X25519PrivateKey, blob: bytes, *, context: bytes) -> bytes:
    """Open :func:`seal` output; a wrong key or context, or any tampering, is a UserError."""
    if len(blob) < _KEY_BYTES + _NONCE_BYTES + _TAG_BYTES:
        raise UserError("sealed message is too short")
    eph_public = blob[:_KEY_BYTES]
    nonce = blob[_KEY_BYTES : _KEY_BYTES + _NONCE_BYTES]
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(eph_public))
        key = _seal_key(shared, eph_public, _raw_public(private_key.public_key()), context)
        return ChaCha20Poly1305(key).decrypt(nonce, blob[_KEY_BYTES + _NONCE_BYTES :], context)
    except (InvalidTag, ValueError):
        raise UserError("sealed message could not be authenticated") from None


def _seal_key(shared: bytes, eph_public: bytes, recipient_public: bytes, context: bytes) -> bytes:
    # Salting with both public keys binds the key to this exchange (as HPKE does).
    return HKDF(
        algorithm=hashes.SHA256(),
        length=_KEY_BYTES,
        salt=eph_public + recipient_public,
        info=_SEAL_INFO + context,
    ).derive(shared)


def _claim_message(role: str, name: str, seal_public: bytes) -> bytes:
    return _CLAIM_DOMAIN + role.encode() + b"\0" + name.encode() + b"\0" + seal_public


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None


def result_context(job_id: str) -> bytes:
    """Binds a sealed result to its job, so a result cannot be replayed as another's."""
    return f"scifed-result|{job_id}".encode()


def refusal_context(job_id: str, node: str) -> bytes:
    """Binds a node's sealed refusal reason to its job and node."""
    return f"scifed-refusal|{job_id}|{node}".encode()


def open_refusals(seal_key, job_id: str, error: str,
                  sealed: dict[str, bytes]) -> tuple[str, dict[str, str]]:
    """The researcher's side of sealed refusals: each node's reason opened, and the job's
    error with every "refused at node X" the coordinator recorded replaced by it."""
    reasons = {}
    for node, blob in sealed.items():
        try:
            reasons[node] = open_sealed(seal_key, blob,
                                        context=refusal_context(job_id, node)).decode()
        except UserError:
            continue  # not sealed to this researcher: leave the coordinator's words
        said = reasons[node] if reasons[node].startswith(f"node {node}") else \
            f"node {node}: {reasons[node]}"
        error = error.replace(f"refused at node {node}", said)
    return error, reasons


def progress_context(job_id: str, round_no: int) -> bytes:
    """Binds a round's live training metrics to their job and round."""
    return f"scifed-progress|{job_id}|{round_no}".encode()
