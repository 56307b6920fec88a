"""Seal bytes to one party's X25519 key, which its federation certificate vouches for.

Study keys and released results travel through the coordinator, which must not read them
or swap in a key of its own. Each node and researcher therefore keeps an X25519 "seal key"
(``seal.key``, 0600, never copied) beside its P-256 certificate key, and publishes the
public half in a claim signed with the certificate key. A sender checks the claim against
the federation CA, then seals: ephemeral X25519, HKDF-SHA256, ChaCha20-Poly1305.

A seal is anonymous: anyone holding a member's public seal key (the coordinator does) can
seal a key of its own to it. So a study key travels as a :class:`SignedKeyShare`: the
lead's :class:`KeyStatement` (study, version, membership, key id, public context hash),
signed with the lead's certificate key, with the certificate, beside the sealed secret.
The statement travels beside the seal, not inside it, so the coordinator can check a
lead's reply before storing it; the seal binds the statement's hash as associated data,
so a sealed secret opens only together with the statement it was made with. What makes a
planted key fail is the member's check that the key it opened is the one the statement
names (its key id and public context hash), under a signature that chains to the CA.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
import struct
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from scifed.chain import canonical
from scifed.errors import UserError
from scifed.pki import identity_from_cert_pem, verify_certificate

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
    key, cert_pem = _certified_key(cert_path, key_path, role=role, name=name)
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
    identity = verify_certificate(claim.cert_pem, ca_cert_pem, who=who)
    if (identity.role, identity.name) != (claim.role, claim.name):
        raise UserError(f"{who}: its certificate belongs to {identity.role} {identity.name!r}")
    if claim.role != expect_role:
        raise UserError(f"{who}: expected a {expect_role}")
    if expect_name is not None and claim.name != expect_name:
        raise UserError(f"{who}: expected {expect_role} {expect_name!r}")
    if len(claim.seal_public) != _KEY_BYTES:
        raise UserError(f"{who}: the seal key is not 32 bytes")
    if not _claim_signed(claim.cert_pem, claim.signature,
                         _claim_message(claim.role, claim.name, claim.seal_public), f"{who}: its"):
        raise UserError(f"{who}: the signature over the seal key does not verify")
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


# -- study keys, signed by the lead ------------------------------------------------------
_STATEMENT_DOMAIN = b"scifed-study-key-statement-v1\0"
_SHARE_MAGIC = b"SFKS"
_SHARE_VERSION = 1
_SHARE_HEADER = struct.Struct(">4sBI")  # magic, version, length of the JSON part
_HEX64 = frozenset("0123456789abcdef")
_STATEMENT_FIELDS = frozenset({"study_id", "key_version", "lead", "members", "membership",
                               "key_id", "public_context_sha256"})


def membership_hash(members: Iterable[str]) -> str:
    """Which membership a key was made for: SHA-256 of the sorted member names, one a
    line. (The coordinator keeps no membership epoch; its key version moves on with
    every membership change, and this hash says which membership the version is for.)"""
    return hashlib.sha256("\n".join(sorted(members)).encode()).hexdigest()


@dataclass(frozen=True)
class KeyStatement:
    """What a study's lead signs, with its node certificate key, for each key it makes."""

    study_id: str
    key_version: int
    lead: str
    members: tuple[str, ...]     # sorted: every node the key is sealed to, the lead too
    key_id: str                  # hex, scifed.he.StudyKey.key_id
    public_context_sha256: str   # hex, of the public context the coordinator sums with

    @classmethod
    def of(cls, *, study_id: str, key_version: int, lead: str, members: Iterable[str],
           key_id: bytes, public_context: bytes) -> KeyStatement:
        return cls(study_id=study_id, key_version=key_version, lead=lead,
                   members=tuple(sorted(set(members))), key_id=key_id.hex(),
                   public_context_sha256=hashlib.sha256(public_context).hexdigest())

    @property
    def membership(self) -> str:
        return membership_hash(self.members)

    def to_dict(self) -> dict:
        return {"study_id": self.study_id, "key_version": self.key_version,
                "lead": self.lead, "members": list(self.members),
                "membership": self.membership, "key_id": self.key_id,
                "public_context_sha256": self.public_context_sha256}

    @classmethod
    def from_dict(cls, d: object) -> KeyStatement:
        """Inverse of :meth:`to_dict`; anything else is a UserError."""
        if not isinstance(d, dict) or set(d) != _STATEMENT_FIELDS:
            raise UserError("the key statement does not have the fields of one")
        members = d["members"]
        texts = [d[k] for k in ("study_id", "lead", "membership", "key_id",
                                "public_context_sha256")]
        if (not all(isinstance(v, str) for v in texts) or type(d["key_version"]) is not int
                or not isinstance(members, list)
                or not all(isinstance(m, str) for m in members)):
            raise UserError("the key statement has a field of the wrong type")
        statement = cls(study_id=d["study_id"], key_version=d["key_version"], lead=d["lead"],
                        members=tuple(members), key_id=d["key_id"],
                        public_context_sha256=d["public_context_sha256"])
        if list(statement.members) != sorted(set(members)):
            raise UserError("the key statement's members are not sorted and distinct")
        if d["membership"] != statement.membership:
            raise UserError("the key statement's membership hash is not that of its members")
        if not (len(statement.public_context_sha256) == 64
                and set(statement.public_context_sha256) <= _HEX64):
            raise UserError("the key statement's public context hash is not SHA-256 hex")
        return statement

    def message(self) -> bytes:
        """The bytes signed: a domain tag and the canonical JSON."""
        return _STATEMENT_DOMAIN + json.dumps(self.to_dict(), sort_keys=True,
                                              separators=(",", ":")).encode()

    def digest(self) -> str:
        return hashlib.sha256(self.message()).hexdigest()

    def names(self, key_id: bytes, public_context: bytes) -> bool:
        """Whether this statement is about the key with this id and public context."""
        return (key_id.hex() == self.key_id
                and hashlib.sha256(public_context).hexdigest() == self.public_context_sha256)


@dataclass(frozen=True)
class SignedKeyShare:
    """One member's copy of a study key as the coordinator stores and relays it: the
    lead's statement, signature and certificate beside the secret sealed to the member
    (the statement's hash bound into the seal as associated data)."""

    statement: KeyStatement
    signature: bytes
    cert_pem: bytes
    sealed: bytes

    def dumps(self) -> bytes:
        """magic, version, JSON length, JSON (statement, signature, certificate), seal:
        binary, so the 60 kB sealed secret is not base64 twice inside a task header."""
        head = json.dumps({"statement": self.statement.to_dict(),
                           "signature": base64.b64encode(self.signature).decode(),
                           "cert_pem": self.cert_pem.decode()},
                          sort_keys=True, separators=(",", ":")).encode()
        return _SHARE_HEADER.pack(_SHARE_MAGIC, _SHARE_VERSION, len(head)) + head + self.sealed

    @classmethod
    def loads(cls, blob: bytes) -> SignedKeyShare:
        """Inverse of :meth:`dumps`; anything else (a bare seal, say) is a UserError."""
        size = _SHARE_HEADER.size
        if len(blob) < size or blob[:4] != _SHARE_MAGIC:
            raise UserError("the share carries no key statement signed by a lead")
        _, version, length = _SHARE_HEADER.unpack_from(blob)
        if version != _SHARE_VERSION or len(blob) < size + length:
            raise UserError(f"the share is of an unknown format (version {version}) "
                            "or cut short")
        try:
            head = json.loads(blob[size:size + length])
            statement = KeyStatement.from_dict(head["statement"])
            signature = base64.b64decode(head["signature"], validate=True)
            cert_pem = head["cert_pem"].encode()
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise UserError("the share's key statement is malformed") from None
        return cls(statement, signature, cert_pem, blob[size + length:])


def share_context(context: bytes, statement: KeyStatement) -> bytes:
    """The associated data of a signed share's seal: what it is (study, version,
    recipient) and the statement it travels with."""
    return context + b"|statement|" + statement.digest().encode()


def sign_key_shares(statement: KeyStatement, secret: bytes,
                    recipients: dict[str, tuple[bytes, bytes]], *, cert_path: Path,
                    key_path: Path) -> dict[str, bytes]:
    """As the study's lead: sign ``statement`` with this node's certificate key and seal
    ``secret`` to each recipient (node -> (seal public key, seal context))."""
    key, cert_pem = _certified_key(cert_path, key_path, role="node", name=statement.lead)
    if set(recipients) != set(statement.members):
        raise UserError(f"the key statement names members {list(statement.members)}, "
                        f"the shares go to {sorted(recipients)}")
    signature = key.sign(statement.message(), ec.ECDSA(hashes.SHA256()))
    return {node: SignedKeyShare(statement, signature, cert_pem,
                                 seal(public, secret,
                                      context=share_context(context, statement))).dumps()
            for node, (public, context) in recipients.items()}


def check_signature(share: SignedKeyShare) -> None:
    """The statement is signed by the node its certificate names, and that node is the
    statement's lead. Says nothing about who issued the certificate
    (:func:`verify_key_share` does)."""
    identity = identity_from_cert_pem(share.cert_pem)
    if (identity.role, identity.name) != ("node", share.statement.lead):
        raise UserError(f"it is signed with the certificate of {identity.role} "
                        f"{identity.name!r}, not of node {share.statement.lead!r}")
    if not _signature_verifies(share.cert_pem, share.signature, share.statement.message(),
                               whose="the lead's"):
        raise UserError("the lead's signature over the key statement does not verify")


def _signature_verifies(cert_pem: bytes, signature: bytes, message: bytes, *,
                        whose: str) -> bool:
    """Whether ``signature`` is the ECDSA P-256 / SHA-256 signature of ``message`` by the
    key of the certificate (``whose`` names its holder in the error for a key that is not
    ECDSA). Says nothing about who issued the certificate."""
    public_key = x509.load_pem_x509_certificate(cert_pem).public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise UserError(f"{whose} certificate key is not ECDSA")
    try:
        public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


@functools.lru_cache(maxsize=1024)
def _claim_signed(cert_pem: bytes, signature: bytes, message: bytes, whose: str) -> bool:
    """:func:`_signature_verifies` for a seal key claim, remembered: a job's compute, its
    unmask and every round of its release hand each node the claims of all the others
    (a hundred nodes: 99 ECDSA verifications a task, the most of a node's CPU in a
    round), and a claim's bytes verify the same way every time. Its certificate's issuer
    and validity are checked at every call (:func:`verify_claim`)."""
    return _signature_verifies(cert_pem, signature, message, whose=whose)


def verify_key_share(share: SignedKeyShare, ca_cert_pem: bytes, *, study_id: str,
                     key_version: int, member: str, study_nodes: Collection[str],
                     revoked: Collection[int] = ()) -> KeyStatement:
    """A member's check of a share before it opens it: the statement is for this study,
    version and member; it keys only ``study_nodes`` (the study's nodes as this member's
    officer accepted them) and its lead is one of them; the lead's certificate chains to
    the CA, is in date, not ``revoked`` and is the lead's node certificate; the lead's
    signature verifies.

    Raises a UserError with the reason. That the opened key is the one the statement
    names is the caller's to check after opening (:meth:`KeyStatement.names`).
    """
    st = share.statement
    if (st.study_id, st.key_version) != (study_id, key_version):
        raise UserError(f"the statement is about key v{st.key_version} of study "
                        f"{st.study_id}")
    accepted = f"as this node's officer accepted it ({', '.join(sorted(study_nodes))})"
    if st.lead not in study_nodes:
        raise UserError(f"its signer {st.lead!r} is not a node of the study {accepted}")
    if member not in st.members or st.lead not in st.members:
        raise UserError(f"the statement keys {', '.join(st.members)}: not both this node "
                        f"and its lead {st.lead}")
    strangers = sorted(set(st.members) - set(study_nodes))
    if strangers:
        raise UserError(f"the key is also sealed to {', '.join(strangers)}, not a node of "
                        f"the study {accepted}")
    identity = verify_certificate(share.cert_pem, ca_cert_pem, who=f"signer {st.lead!r}")
    if identity.serial in revoked:
        raise UserError(f"the certificate of {identity.role} {identity.name!r} "
                        f"(serial {identity.serial}) has been revoked")
    check_signature(share)
    return st


def open_key_share(share: SignedKeyShare, private_key: X25519PrivateKey, *,
                   context: bytes) -> bytes:
    """The secret a share seals, opened under the statement it travels with."""
    return open_sealed(private_key, share.sealed,
                       context=share_context(context, share.statement))


def _seal_key(shared: bytes, eph_public: bytes, recipient_public: bytes, context: bytes) -> bytes:
    # Salting with both public keys binds the key to this exchange (as HPKE does).
    return HKDF(
        algorithm=hashes.SHA256(),
        length=_KEY_BYTES,
        salt=eph_public + recipient_public,
        info=_SEAL_INFO + context,
    ).derive(shared)


def _certified_key(cert_path: Path, key_path: Path, *, role: str,
                   name: str) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """This party's certificate key and certificate PEM, checked to belong together and
    to name ``role`` ``name``. The files are read at every call (a renewed certificate
    counts at once); their parse is kept by content, since parsing the certificate's
    extensions was most of a signed delivery call (docs/benchmarks.md, delivery)."""
    cert_pem, key_pem = _read(cert_path), _read(key_path)
    return _parsed_certified_key(cert_pem, key_pem, role, name, str(cert_path),
                                 str(key_path)), cert_pem


@functools.lru_cache(maxsize=16)
def _parsed_certified_key(cert_pem: bytes, key_pem: bytes, role: str, name: str,
                          cert_path: str, key_path: str) -> ec.EllipticCurvePrivateKey:
    identity = identity_from_cert_pem(cert_pem)
    if (identity.role, identity.name) != (role, name):
        raise UserError(
            f"{cert_path} is the certificate of {identity.role} {identity.name!r}, "
            f"not {role} {name!r}"
        )
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (TypeError, ValueError):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UserError(f"{key_path}: not an unencrypted PEM ECDSA private key")
    cert = x509.load_pem_x509_certificate(cert_pem)
    if cert.public_key() != key.public_key():
        raise UserError(f"{key_path} is not the key of the certificate {cert_path}")
    return key


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


def refused_at(node: str) -> str:
    """All a sealed refusal says in clear, wherever it is recorded (the coordinator's
    database, a Flower run's failure file): the relays learn no decision detail."""
    return f"refused at node {node}"


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
        error = error.replace(refused_at(node), said)
    return error, reasons


def progress_context(job_id: str, round_no: int) -> bytes:
    """Binds a round's live training metrics to their job and round."""
    return f"scifed-progress|{job_id}|{round_no}".encode()


# -- results, signed by the release node -------------------------------------------------
# A seal is anonymous, so a result that only travels sealed could be made by anyone who
# holds the researcher's seal key (the coordinator does). A released result is therefore
# a signed document: the result as the job type released it, its ``provenance`` (which
# job and spec, study key version, researcher, contributors and their datasets, the
# release node's policy cell and the rules it applied, the DP report, the release node's
# audit head, the time), and a ``signature`` field: the release node's ECDSA P-256
# signature over the canonical JSON of everything else, with its node certificate. The
# whole document is sealed to the researcher, who checks it with :func:`verify_result`.
RESULT_SIGNATURE = "signature"
RESULT_PROVENANCE = "provenance"
_RESULT_DOMAIN = b"scifed-result-v1\0"
_RESULT_ALG = "ECDSA-P256-SHA256"
_PROVENANCE_TYPES = {"job_id": str, "stage": str, "round": int, "researcher": str,
                     "released_by": str, "contributors": list, "spec_sha256": str}


class UnsignedResult(UserError):
    """A result that carries no signature of a release node."""


def canonical_json(value: object) -> bytes:
    """The bytes a signature covers: the value as JSON reads it back (keys text, tuples
    lists), keys sorted, no spaces — the same on the node that signs and the researcher
    who checks."""
    return canonical(json.loads(json.dumps(value))).encode()


def canonical_sha256(value: object) -> str:
    """SHA-256 hex of :func:`canonical_json` (a job spec's hash, as a release names it)."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


def _result_message(document: dict) -> bytes:
    return _RESULT_DOMAIN + canonical_json(
        {k: v for k, v in document.items() if k != RESULT_SIGNATURE})


def result_digest(document: dict) -> str:
    """SHA-256 hex of the bytes a result's signature covers (the release node's audit
    entry records it)."""
    return hashlib.sha256(_result_message(document)).hexdigest()


def sign_result(document: dict, *, node: str, cert_path: Path, key_path: Path) -> dict:
    """As the release node: ``document`` (result and provenance, JSON-able) with its
    ``signature`` field, made with this node's certificate key."""
    key, cert_pem = _certified_key(cert_path, key_path, role="node", name=node)
    unsigned = json.loads(canonical_json(
        {k: v for k, v in document.items() if k != RESULT_SIGNATURE}))
    signature = key.sign(_result_message(unsigned), ec.ECDSA(hashes.SHA256()))
    return {**unsigned, RESULT_SIGNATURE: {"alg": _RESULT_ALG,
                                           "value": base64.b64encode(signature).decode(),
                                           "cert_pem": cert_pem.decode()}}


@dataclass(frozen=True)
class VerifiedResult:
    """What :func:`verify_result` established about a result."""

    signer: str        # the release node whose certificate signed it
    serial: int        # that certificate's serial
    provenance: dict   # as signed
    spec_checked: bool = False  # the spec's hash was compared with the researcher's own
    # (node, certificate serial) of each contributor whose attestation of its contribution
    # was checked (of a training model: every node whose round update reached it); empty
    # where the provenance lists none (a result released before contributions were
    # attested)
    attested: tuple[tuple[str, int], ...] = ()

    def summary(self) -> str:
        p = self.provenance
        attested = (f"each contributor's attestation of its contribution checked "
                    f"({len(self.attested)} signatures of node certificates)" if self.attested
                    else "contributions not attested (" + str(p.get(
                        "unattested", "released before contributions were attested")) + ")")
        return (f"signed by node {self.signer} (certificate serial {self.serial}, issued by "
                "the federation CA); job " + p["job_id"] + ", contributors "
                + ", ".join(p["contributors"]) + "; spec sha256 " + p["spec_sha256"][:16]
                + ("… (matches your job spec)" if self.spec_checked else "…")
                + f"; {attested}; released at {p.get('released_at', '?')}")


def verify_result(document: object, ca_cert_pem: bytes, *, job_id: str,
                  stage: str = "final", round_no: int = 0, researcher: str | None = None,
                  reported_contributors: Collection[str] | None = None,
                  spec_sha256: str | None = None, spec_nodes: Collection[str] | None = None,
                  revoked: Collection[int] = ()) -> VerifiedResult:
    """The researcher's check of an opened result before it is believed: it is signed
    with a node certificate the CA issued (in date, not ``revoked``), by the release node
    its provenance names; the signature covers the result and its provenance; it is the
    result of ``job_id`` (this ``stage`` and round) released to ``researcher``; its signer
    is among its contributors; those are the ``reported_contributors`` (what the
    coordinator says); and, given the researcher's own spec (its :func:`canonical_sha256`
    and the nodes it names), the release is of that spec and its contributors are among
    those nodes. Where the provenance lists the contributors' attestations (every
    aggregate job's and training model's does), each must verify for this job under a
    node certificate the CA issued (not ``revoked``), one per contributor (a training
    model's: one per node whose round update reached it, a round or final-evaluation
    attestation, every final contributor among them), and name the datasets, audit
    heads and DP the provenance lists.

    Raises :class:`UnsignedResult` for a result without a signature, else a UserError
    naming what is wrong."""
    what = f"the result of job {job_id}"
    if not isinstance(document, dict):
        raise UserError(f"{what} is not a result document")
    block = document.get(RESULT_SIGNATURE)
    if block is None:
        raise UnsignedResult(f"{what}: this result carries no signature (released before "
                             "results were signed, or not by a release node), so nothing "
                             "says who made it")
    try:
        alg, cert_pem = block["alg"], block["cert_pem"].encode()
        signature = base64.b64decode(block["value"], validate=True)
    except (KeyError, TypeError, AttributeError, binascii.Error):
        raise UserError(f"{what}: its signature field is malformed") from None
    if alg != _RESULT_ALG:
        raise UserError(f"{what} is signed with {alg!r}, not {_RESULT_ALG}")
    identity = verify_certificate(cert_pem, ca_cert_pem, who=f"the signer of {what}")
    name = identity.name
    if identity.role != "node":
        raise UserError(f"{what} is signed with the certificate of {identity.role} "
                        f"{name!r}, not of a node")
    if identity.serial in revoked:
        raise UserError(f"{what} is signed with the certificate of node {name!r} "
                        f"(serial {identity.serial}), which has been revoked")
    if not _signature_verifies(cert_pem, signature, _result_message(document),
                               whose=f"node {name!r}'s"):
        raise UserError(f"{what}: the signature of node {name!r} does not verify: the "
                        "result or its provenance was altered after it was signed")
    prov = document.get(RESULT_PROVENANCE)
    if not (isinstance(prov, dict)
            and all(isinstance(prov.get(k), t) for k, t in _PROVENANCE_TYPES.items())
            and all(isinstance(c, str) for c in prov["contributors"])):
        raise UserError(f"{what} is signed by node {name!r} but carries no provenance")
    if prov["released_by"] != name:
        raise UserError(f"{what} is signed by node {name!r}, but its provenance names "
                        f"{prov['released_by']!r} as the release node")
    if prov["job_id"] != job_id:
        raise UserError(f"{what}: node {name!r} signed it as the result of job "
                        f"{prov['job_id']}, not of this job (a replay)")
    if prov["stage"] != stage or (stage == "progress" and prov["round"] != round_no):
        raise UserError(f"{what}: node {name!r} signed it as a {prov['stage']} release "
                        f"(round {prov['round']}), not as the {stage} one")
    if researcher is not None and prov["researcher"] != researcher:
        raise UserError(f"{what} was released to researcher {prov['researcher']!r}, not "
                        f"to {researcher!r}")
    signed = sorted(set(prov["contributors"]))
    if name not in signed:
        raise UserError(f"{what}: its signer, node {name!r}, is not among the contributors "
                        f"it names ({', '.join(signed) or 'none'})")
    if reported_contributors is not None and sorted(set(reported_contributors)) != signed:
        raise UserError(f"{what}: the coordinator reports contributors "
                        f"{', '.join(sorted(set(reported_contributors))) or 'none'}, the "
                        f"result node {name!r} signed names {', '.join(signed)}: the "
                        "coordinator's record of the job was altered")
    if spec_sha256 is not None and prov["spec_sha256"] != spec_sha256:
        raise UserError(f"{what}: node {name!r} released a job whose spec (sha256 "
                        f"{prov['spec_sha256'][:16]}…) is not the one you submitted "
                        f"(sha256 {spec_sha256[:16]}…)")
    strangers = sorted(set(signed) - set(spec_nodes)) if spec_nodes is not None else []
    if strangers:
        raise UserError(f"{what} names contributors {', '.join(strangers)} that your job "
                        "spec does not name")
    attested = (_check_attestations(prov, ca_cert_pem, what, name, revoked)
                if "attestations" in prov else ())
    return VerifiedResult(name, identity.serial, prov, spec_checked=spec_sha256 is not None,
                          attested=attested)


def open_result(seal_key: X25519PrivateKey, blob: bytes, ca_cert_pem: bytes, *,
                job_id: str, allow_unsigned: bool = False,
                **checks) -> tuple[dict, VerifiedResult | None]:
    """Open a job's sealed result and :func:`verify_result` it (``checks`` are that
    function's keywords). An unsigned result is refused unless ``allow_unsigned`` (then
    the verification is None: nothing vouches for it)."""
    plain = open_sealed(seal_key, blob, context=result_context(job_id))
    try:
        document = json.loads(plain)
    except (ValueError, RecursionError):
        raise UserError(f"the result of job {job_id} is not JSON") from None
    try:
        return document, verify_result(document, ca_cert_pem, job_id=job_id, **checks)
    except UnsignedResult:
        if allow_unsigned and isinstance(document, dict):
            return document, None
        raise


# -- contributions, attested by the nodes that made them ---------------------------------
# The coordinator holds every node's ciphertext and the public context, so it could sum
# any of them (leave one out, count one twice, take another job's) and hand the release
# node the sum as a job's pooled result. Each contributing node therefore signs, with its
# node certificate key, a statement of what it contributed: the job, the stage (compute,
# or a further round and the query it answered), itself, the study key version, the
# SHA-256 of its ciphertext, its dataset (id, sha256, version, schema hash), its audit
# head, the DP it applied and its policy's k and fewest contributors. The release node
# sums only ciphertexts so attested for the job, one per contributor the task names
# (node/release.py), and signs the compute attestations into the result's provenance, so
# the researcher checks each of them too (:func:`verify_result`).
ATTESTATION_FIELDS = {"job_id": str, "stage": str, "round": int, "query_sha256": str,
                      "node": str, "study_id": str, "key_version": int, "researcher": str,
                      "spec_sha256": str, "ciphertext_sha256": str, "dataset": dict,
                      "audit_head": dict, "dp": (dict, type(None)), "k": int,
                      "min_contributors": int, "masked_with": list, "attempt": int,
                      # the contributor's own cell asks for its officer's output review
                      "output_review": bool,
                      # training rounds: the digest of the global model (and pooled
                      # metrics) this update was trained from; "" elsewhere
                      "trained_from": str}
_ATTESTATION_DOMAIN = b"scifed-contribution-v2\0"
_DATASET_FIELDS = ("dataset_id", "record_id", "sha256", "version", "schema_hash")


def attestation_message(statement: dict) -> bytes:
    """The bytes a contribution's attestation signs: a domain tag, the canonical JSON."""
    return _ATTESTATION_DOMAIN + canonical_json(statement)


def sign_attestation(statement: dict, *, node: str, cert_path: Path, key_path: Path) -> dict:
    """As a contributing node: the attestation of ``statement`` (its fields are
    :data:`ATTESTATION_FIELDS`), signed with this node's certificate key."""
    if statement.get("node") != node or set(statement) != set(ATTESTATION_FIELDS):
        raise UserError(f"node {node} attests only a statement of its own contribution "
                        "with the fields of one")
    return _sign_node_statement(statement, _ATTESTATION_DOMAIN, node=node,
                                cert_path=cert_path, key_path=key_path)


def _sign_node_statement(statement: dict, domain: bytes, *, node: str, cert_path: Path,
                         key_path: Path) -> dict:
    key, cert_pem = _certified_key(cert_path, key_path, role="node", name=node)
    signed = json.loads(canonical_json(statement))
    signature = key.sign(domain + canonical_json(signed), ec.ECDSA(hashes.SHA256()))
    return {"statement": signed, "alg": _RESULT_ALG,
            "value": base64.b64encode(signature).decode(), "cert_pem": cert_pem.decode()}


@dataclass(frozen=True)
class VerifiedAttestation:
    """What :func:`verify_attestation` established about one contribution."""

    node: str
    serial: int        # the serial of the node certificate that signed it
    statement: dict    # as signed


def verify_attestation(attestation: object, ca_cert_pem: bytes, *, node: str,
                       expect: dict, revoked: Collection[int] = ()) -> VerifiedAttestation:
    """Check ``node``'s attestation of a contribution: signed with a node certificate
    the CA issued (in date, not ``revoked``) naming ``node``, the signature over the
    statement verifies, the statement has the fields of one and says what ``expect``
    says (job, stage, round, study, key version, ...). The ciphertext's hash is the
    caller's to compare. Raises a UserError naming what is wrong."""
    return _verify_node_statement(
        attestation, ca_cert_pem, node=node, expect=expect, revoked=revoked,
        fields=ATTESTATION_FIELDS, domain=_ATTESTATION_DOMAIN,
        what=f"the attestation of {node}'s contribution", kind="attestation")


def _verify_node_statement(signed: object, ca_cert_pem: bytes, *, node: str, expect: dict,
                           revoked: Collection[int], fields: dict, domain: bytes, what: str,
                           kind: str, body: str = "statement", alg: str = _RESULT_ALG,
                           against: str = " as this release") -> VerifiedAttestation:
    """A statement ``node`` signed with its certificate key under ``domain`` (an
    attestation, a review verdict, a delivery's manifest — kept under ``body``), checked
    as :func:`verify_attestation` says."""
    if not (isinstance(signed, dict) and isinstance(signed.get(body), dict)
            and all(isinstance(signed.get(k), str) for k in ("alg", "value", "cert_pem"))):
        raise UserError(f"{what} is missing or malformed")
    if signed["alg"] != alg:
        raise UserError(f"{what} is signed with {signed['alg']!r}, not {alg}")
    cert_pem = signed["cert_pem"].encode()
    identity = verify_certificate(cert_pem, ca_cert_pem, who=what)
    if (identity.role, identity.name) != ("node", node):
        raise UserError(f"{what} is signed with the certificate of {identity.role} "
                        f"{identity.name!r}, not of node {node!r}")
    if identity.serial in revoked:
        raise UserError(f"{what} is signed with the certificate of node {node!r} (serial "
                        f"{identity.serial}), which has been revoked")
    try:
        signature = base64.b64decode(signed["value"], validate=True)
    except binascii.Error:
        raise UserError(f"{what}: its signature is not base64") from None
    statement = signed[body]
    if not _signature_verifies(cert_pem, signature, domain + canonical_json(statement),
                               whose=f"node {node!r}'s"):
        raise UserError(f"the signature of {node}'s {kind} does not verify: it was "
                        f"altered after {node} signed it")
    if set(statement) != set(fields) or not all(
            isinstance(statement[k], t) and not (t is int and isinstance(statement[k], bool))
            for k, t in fields.items()):
        raise UserError(f"{what} does not have the fields of one")
    if statement["node"] != node:
        raise UserError(f"{what} names node {statement['node']!r}")
    if "job_id" in expect and statement["job_id"] != expect["job_id"]:
        raise UserError(f"{what} is of job {statement['job_id']}, not of this job")
    for field, value in expect.items():
        if canonical_json(statement[field]) != canonical_json(value):
            raise UserError(f"{what} names {field} {statement[field]!r}, not "
                            f"{value!r}{against}")
    return VerifiedAttestation(node, identity.serial, statement)


# -- output review by another contributor's officer --------------------------------------
# A contributor whose own cell asks for output review receives the signed result sealed
# to its seal key (``review_context``), has its officer decide, and answers the release
# node with a verdict signed by its node key: the job, itself, the release node, the
# sha256 of the very bytes it reviewed, release or withhold, its review and who decided.
VERDICT_FIELDS = {"job_id": str, "node": str, "release_node": str, "result_sha256": str,
                  "decision": str, "review_id": str, "reviewed_by": list}
_VERDICT_DOMAIN = b"scifed-review-verdict-v1\0"


def review_context(job_id: str, node: str) -> bytes:
    """Binds a result sealed for ``node``'s output review to its job and that node."""
    return f"scifed-review|{job_id}|{node}".encode()


def sign_verdict(statement: dict, *, node: str, cert_path: Path, key_path: Path) -> dict:
    """As a reviewing contributor: its verdict on a result (:data:`VERDICT_FIELDS`)."""
    if statement.get("node") != node or set(statement) != set(VERDICT_FIELDS):
        raise UserError(f"node {node} signs only a verdict of its own review with the "
                        "fields of one")
    return _sign_node_statement(statement, _VERDICT_DOMAIN, node=node, cert_path=cert_path,
                                key_path=key_path)


def verify_verdict(verdict: object, ca_cert_pem: bytes, *, node: str, expect: dict,
                   revoked: Collection[int] = ()) -> dict:
    """``node``'s verdict checked (signed by its certificate, for what ``expect`` says:
    job, release node, result hash); its statement."""
    return _verify_node_statement(
        verdict, ca_cert_pem, node=node, expect=expect, revoked=revoked,
        fields=VERDICT_FIELDS, domain=_VERDICT_DOMAIN,
        what=f"the output-review verdict of {node}", kind="verdict").statement


def attested_dataset(statement: dict) -> dict:
    """A contributor's dataset as its attestation names it (what a provenance lists)."""
    d = statement["dataset"]
    return {k: d.get(k, "") for k in _DATASET_FIELDS if k != "dataset_id"}


def _check_attestations(prov: dict, ca_cert_pem: bytes, what: str, signer: str,
                        revoked: Collection[int]) -> tuple[tuple[str, int], ...]:
    """The researcher's check of the contributors' attestations a provenance lists: one
    per contributor, each verifying for this job, study, key version, researcher and
    spec, and the datasets, audit heads and DP the provenance names are what each
    contributor attested. Returns (node, certificate serial) of each."""
    attestations = prov["attestations"]
    contributors = sorted(set(prov["contributors"]))
    # a training model: each node's latest round attestation, of every node whose update
    # reached it — the final contributors and any that dropped after a round
    trained = prov.get("job_type") == "train"
    if not isinstance(attestations, dict) or (
            not set(contributors) <= set(attestations) if trained
            else sorted(attestations) != contributors):
        raise UserError(f"{what}: node {signer!r} signed attestations of "
                        f"{', '.join(sorted(attestations or {})) or 'no node'}, but names "
                        f"contributors {', '.join(contributors)}")
    expect = {k: prov.get(k) for k in ("job_id", "study_id", "key_version", "researcher",
                                        "spec_sha256")}
    datasets, heads = prov.get("datasets") or {}, prov.get("audit_heads") or {}
    dp = prov.get("dp") or {}
    checked = []
    for node in sorted(attestations) if trained else contributors:
        given = attestations[node]
        stage = given.get("statement") if trained and isinstance(given, dict) else None
        stage = stage if isinstance(stage, dict) else {}
        where = ({"stage": stage.get("stage")} if stage.get("stage") in ("train", "evaluate")
                 else {"stage": "train or evaluate"}) if trained else {"stage": "compute",
                                                                        "round": 0}
        try:
            v = verify_attestation(attestations[node], ca_cert_pem, node=node,
                                   expect={**expect, **where}, revoked=revoked)
        except UserError as exc:
            raise UserError(f"{what}: {exc}") from None
        st = v.statement
        listed = datasets.get(node) or {}
        if any(listed.get(k) != val for k, val in attested_dataset(st).items()):
            raise UserError(f"{what}: the dataset it lists for {node} is not the one {node} "
                            "attested")
        if heads.get(node) != st["audit_head"]:
            raise UserError(f"{what}: the audit head it lists for {node} is not the one "
                            f"{node} attested")
        if canonical_json(dp.get(node)) != canonical_json(st["dp"]):
            raise UserError(f"{what}: the DP it lists for {node} is not what {node} attested")
        checked.append((node, v.serial))
    return tuple(checked)
