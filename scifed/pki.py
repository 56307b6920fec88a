"""The federation PKI: one CA, enrolment by CSR, roles carried in certificates, a signed CRL.

Keys are ECDSA P-256 with SHA-256 signatures because gRPC (BoringSSL) handles them in
mTLS everywhere. A private key is written once, mode 0600, in the directory that asked
for it, and is never copied: members send a CSR and get a certificate back.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from scifed.at_rest import write_private as _write_private
from scifed.errors import UserError

ROLES = ("coordinator", "node", "researcher", "operator")
ORGANIZATION = "scifed"
URI_SCHEME = "scifed"
COORDINATOR_NAME = "coordinator"

# Names become file names and URI path segments, so keep them to a safe slug.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Certificates start a little in the past so a peer whose clock lags still accepts them.
_CLOCK_SKEW = dt.timedelta(minutes=5)
# A CRL's nextUpdate: the CA promises a newer one within a day. Nodes refuse tasks that
# trust other parties once their newest CRL is older than their ``crl_max_age_seconds``
# (24 h by default), so the CA re-signs it at least daily (:func:`refresh_crl`).
CRL_VALIDITY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Identity:
    """Who is at the other end of an mTLS connection, as the federation CA vouched."""

    name: str
    role: str
    serial: int
    fingerprint_sha256: str


def init_ca(
    ca_dir: Path,
    *,
    name: str = "scifed federation CA",
    coordinator_hosts: list[str] | None = None,
    days: int = 3650,
) -> None:
    """Create the CA, an empty CRL, the issued index and the coordinator's own key and cert.

    ``coordinator_hosts`` (default 127.0.0.1 and localhost) become the coordinator's IP or
    DNS SANs so clients verify it by address without a name override.
    """
    hosts = ["127.0.0.1", "localhost"] if coordinator_hosts is None else coordinator_hosts
    ca_dir.mkdir(parents=True, exist_ok=True)
    for existing in (ca_dir / "ca.key", ca_dir / "coordinator.key"):
        if existing.exists():
            raise UserError(f"{existing} already exists; refusing to replace the CA")
    san_hosts = [_host_name(h) for h in hosts]
    now = _now()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_subject)
        .issuer_name(ca_subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(ca_dir / "ca.key", _key_pem(ca_key))
    _write_public(ca_dir / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))

    index: dict = {"crl_number": 0, "certificates": []}
    coord_key = ec.generate_private_key(ec.SECP256R1())
    coord_cert = _issue(
        ca_key,
        ca_cert,
        index,
        coord_key.public_key(),
        COORDINATOR_NAME,
        "coordinator",
        san_hosts,
        days=825,
    )
    _write_private(ca_dir / "coordinator.key", _key_pem(coord_key))
    _write_public(ca_dir / "coordinator.crt", coord_cert.public_bytes(serialization.Encoding.PEM))
    _write_crl(ca_dir, ca_key, ca_cert, index)


def make_key_and_csr(
    out_dir: Path, *, name: str, role: str, hosts: list[str] | None = None
) -> Path:
    """Make ``{role}.key`` (0600) and ``{role}.csr`` (CN=name, O=scifed, OU=role).

    ``hosts`` requests IP/DNS SANs and is only meaningful for a coordinator renewing its
    server certificate. Returns the CSR path, the only file to send to the CA.
    """
    _check_role(role)
    _check_name(name)
    if hosts and role != "coordinator":
        raise UserError(f"host names are only for the coordinator, not role {role!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path = out_dir / f"{role}.key"
    if key_path.exists():
        raise UserError(f"{key_path} already exists; refusing to replace a private key")
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(_subject(name, role))
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_host_name(h) for h in hosts]), critical=False
        )
    csr = builder.sign(key, hashes.SHA256())
    _write_private(key_path, _key_pem(key))
    csr_path = out_dir / f"{role}.csr"
    _write_public(csr_path, csr.public_bytes(serialization.Encoding.PEM))
    return csr_path


def sign_csr(
    ca_dir: Path,
    csr_path: Path,
    *,
    role: str,
    out_path: Path | None = None,
    days: int = 825,
) -> Path:
    """Issue a certificate for a verified CSR whose OU matches ``role``; write ``{name}.crt``.

    A name may hold one active (unrevoked, unexpired) certificate per role, so a stolen
    identity cannot be silently doubled; revoke first to re-issue.
    """
    _check_role(role)
    csr = _load_csr(csr_path)
    name = _single_attr(csr.subject, NameOID.COMMON_NAME, csr_path, "common name")
    csr_role = _single_attr(csr.subject, NameOID.ORGANIZATIONAL_UNIT_NAME, csr_path, "OU (role)")
    if csr_role != role:
        raise UserError(f"{csr_path}: the CSR asks for role {csr_role!r} but --role is {role!r}")
    _check_name(name)
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise UserError(f"{csr_path}: the CSR key is not ECDSA P-256")

    ca_key, ca_cert = _load_ca(ca_dir)
    index = _load_index(ca_dir)
    now = _now()
    for entry in index["certificates"]:
        if (
            entry["name"] == name
            and entry["role"] == role
            and not entry["revoked"]
            and dt.datetime.fromisoformat(entry["not_after"]) > now
        ):
            raise UserError(
                f"{name!r} already holds active {role} certificate serial {entry['serial']}; "
                "revoke it first"
            )
    hosts: list[x509.GeneralName] = []
    if role == "coordinator":
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            san = x509.SubjectAlternativeName([])
        hosts = [g for g in san if isinstance(g, x509.DNSName | x509.IPAddress)]
    cert = _issue(ca_key, ca_cert, index, public_key, name, role, hosts, days=days)
    _save_index(ca_dir, index)
    target = out_path if out_path is not None else csr_path.with_name(f"{name}.crt")
    _write_public(target, cert.public_bytes(serialization.Encoding.PEM))
    return target


def revoke(
    ca_dir: Path,
    *,
    name: str | None = None,
    serial: int | None = None,
    role: str | None = None,
) -> int:
    """Revoke one active certificate, chosen by name (and role) or serial; rewrite the CRL."""
    if name is None and serial is None:
        raise UserError("revoke needs a name or a serial")
    if role is not None:
        _check_role(role)
    ca_key, ca_cert = _load_ca(ca_dir)
    index = _load_index(ca_dir)
    matches = [
        e
        for e in index["certificates"]
        if not e["revoked"]
        and (serial is None or e["serial"] == serial)
        and (name is None or e["name"] == name)
        and (role is None or e["role"] == role)
    ]
    wanted = ", ".join(
        f"{k}={v!r}"
        for k, v in (("name", name), ("serial", serial), ("role", role))
        if v is not None
    )
    if not matches:
        active = sorted({e["name"] for e in index["certificates"] if not e["revoked"]})
        raise UserError(f"no active certificate with {wanted} in {ca_dir / 'issued.json'} "
                        f"(active names: {', '.join(active) or 'none'})")
    if len(matches) > 1:
        roles = ", ".join(sorted(e["role"] for e in matches))
        raise UserError(f"{len(matches)} active certificates match {wanted} ({roles}); give a role")
    entry = matches[0]
    entry["revoked"] = True
    entry["revoked_at"] = _now().isoformat()
    _write_crl(ca_dir, ca_key, ca_cert, index)
    return entry["serial"]


def issued(ca_dir: Path) -> list[dict]:
    """Every certificate this CA issued: serial, name, role, not_after, revoked, revoked_at."""
    return _load_index(ca_dir)["certificates"]


def identity_from_cert_pem(pem: bytes) -> Identity:
    """Read the federation identity from a certificate the TLS layer has already verified."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise UserError("peer certificate is not a PEM X.509 certificate") from exc
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    ours = [urlsplit(u) for u in uris if u.startswith(f"{URI_SCHEME}://")]
    subject = cert.subject.rfc4514_string()
    if len(ours) != 1:
        raise UserError(f"certificate {subject!r} carries no single {URI_SCHEME}:// identity URI")
    role, name = ours[0].netloc, ours[0].path.removeprefix("/")
    if role not in ROLES or not _NAME_RE.match(name):
        raise UserError(f"certificate {subject!r} has a malformed identity URI {uris}")
    return Identity(
        name=name,
        role=role,
        serial=cert.serial_number,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
    )


def verify_certificate(cert_pem: bytes, ca_cert_pem: bytes, *, who: str) -> Identity:
    """Check a certificate that did not come over mTLS (it travels inside a signed
    message): issued by this CA, both in their validity period; return its identity.

    ``who`` starts each message ("seal key claim of node 'a'"). Revocation is the
    caller's to check (:func:`load_crl_serials`) with the CRL it trusts. The signature
    check of a (certificate, CA) pair is remembered (:func:`_issued`); the validity
    periods are checked against the clock at every call.
    """
    try:
        identity, windows = _issued(bytes(cert_pem), bytes(ca_cert_pem))
    except _NotPem as exc:
        raise UserError(f"{who}: a certificate is not PEM X.509 ({exc})") from None
    except _NotIssued:
        raise UserError(f"{who}: its certificate was not issued by the federation CA") from None
    now = dt.datetime.now(dt.UTC)
    for label, before, after in windows:
        if not before <= now <= after:
            raise UserError(f"{who}: {label} is valid only from {before:%Y-%m-%d %H:%M} "
                            f"to {after:%Y-%m-%d %H:%M} UTC")
    return identity


class _NotPem(ValueError):
    pass


class _NotIssued(ValueError):
    pass


@functools.lru_cache(maxsize=1024)
def _issued(cert_pem: bytes, ca_cert_pem: bytes) -> tuple[Identity, tuple]:
    """(identity, validity periods of the CA and the certificate) of a certificate the
    CA signed; raises otherwise (failures are not remembered). The same few certificates
    (researchers, nodes) are checked on every task of every job: an ECDSA verification
    and two PEM parses each time."""
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise _NotPem(str(exc)) from None
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise _NotIssued from None
    windows = tuple((label, c.not_valid_before_utc, c.not_valid_after_utc)
                    for c, label in ((ca_cert, "the CA certificate"),
                                     (cert, "its certificate")))
    return identity_from_cert_pem(cert_pem), windows


def load_crl_serials(crl_path: Path, ca_cert_path: Path) -> set[int]:
    """Return the revoked serials of a CRL, after checking the CA signed it."""
    try:
        ca_pem = _read(ca_cert_path)
        return set(load_crl(_read(crl_path), ca_pem, source=str(crl_path)).serials)
    except UserError as exc:
        if "not signed by the federation CA" in str(exc):
            raise UserError(f"{crl_path}: CRL is not signed by the CA in {ca_cert_path}") \
                from None
        raise


@dataclass(frozen=True)
class Crl:
    """A certificate revocation list the federation CA signed (checked), as parties pass
    it on: the coordinator to the nodes, with every task and heartbeat."""

    number: int                    # the CRL number: each new CRL the CA signs is higher
    this_update: dt.datetime       # when the CA signed it (UTC)
    next_update: dt.datetime | None
    serials: frozenset[int]        # the revoked certificate serials
    der: bytes                     # the signed CRL as it travels
    # when each serial was revoked, as the CA recorded it
    revoked_on: tuple[tuple[int, dt.datetime], ...] = ()

    def age_seconds(self, now: dt.datetime | None = None) -> float:
        return ((now or dt.datetime.now(dt.UTC)) - self.this_update).total_seconds()

    def describe(self) -> str:
        return f"CRL number {self.number}, signed {self.this_update:%Y-%m-%d %H:%M:%S} UTC"

    def revoked(self, serial: int) -> bool:
        return serial in self.serials


def load_crl(data: bytes, ca_cert_pem: bytes, *, source: str = "the CRL") -> Crl:
    """A CRL (DER or PEM) after checking that the federation CA signed it and that it
    carries a CRL number; anything else is a UserError starting with ``source``."""
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    except ValueError:
        raise UserError(f"{source}: the CA certificate is not PEM X.509") from None
    try:
        crl = (x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----")
               else x509.load_der_x509_crl(data))
    except ValueError:
        raise UserError(f"{source}: not a certificate revocation list") from None
    if crl.issuer != ca_cert.subject or not crl.is_signature_valid(ca_cert.public_key()):
        raise UserError(f"{source}: the CRL is not signed by the federation CA")
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        raise UserError(f"{source}: the CRL carries no CRL number") from None
    return Crl(number=number, this_update=crl.last_update_utc,
               next_update=crl.next_update_utc,
               serials=frozenset(r.serial_number for r in crl),
               der=crl.public_bytes(serialization.Encoding.DER),
               revoked_on=tuple((r.serial_number, r.revocation_date_utc) for r in crl))


def newer_crl(current: Crl | None, offered: Crl) -> bool:
    """Whether ``offered`` replaces ``current``: only a higher CRL number does, so a relay
    that replays an older CRL cannot take a revocation back."""
    return current is None or offered.number > current.number


def refresh_crl(ca_dir: Path) -> int:
    """Sign the CRL again (the same revocations, the next number, a new thisUpdate and
    nextUpdate) so nodes keep a fresh one; returns its number. Run it at least once per
    the nodes' ``crl_max_age_seconds`` (daily by default), e.g. from a timer."""
    ca_key, ca_cert = _load_ca(ca_dir)
    index = _load_index(ca_dir)
    _write_crl(ca_dir, ca_key, ca_cert, index)
    return index["crl_number"]


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    index: dict,
    public_key: ec.EllipticCurvePublicKey,
    name: str,
    role: str,
    hosts: list[x509.GeneralName],
    *,
    days: int,
) -> x509.Certificate:
    """Sign a leaf certificate and record it in ``index`` (the caller saves the index)."""
    now = _now()
    # A leaf never outlives its CA: peers would reject the chain anyway.
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if role == "coordinator":
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    san = [x509.UniformResourceIdentifier(f"{URI_SCHEME}://{role}/{name}"), *hosts]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_subject(name, role))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    index["certificates"].append(
        {
            "serial": cert.serial_number,
            "name": name,
            "role": role,
            "not_after": not_after.isoformat(),
            "revoked": False,
            "revoked_at": None,
        }
    )
    return cert


def _write_crl(
    ca_dir: Path, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, index: dict
) -> None:
    """Sign a fresh CRL listing every revoked serial, then persist it and the index."""
    now = _now()
    index["crl_number"] += 1
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + CRL_VALIDITY)
        .add_extension(x509.CRLNumber(index["crl_number"]), critical=False)
    )
    for entry in index["certificates"]:
        if entry["revoked"]:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(entry["serial"])
                .revocation_date(dt.datetime.fromisoformat(entry["revoked_at"]))
                .build()
            )
    crl = builder.sign(ca_key, hashes.SHA256())
    _save_index(ca_dir, index)
    _write_public(ca_dir / "crl.pem", crl.public_bytes(serialization.Encoding.PEM))


def _load_ca(ca_dir: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key_path = ca_dir / "ca.key"
    if not key_path.exists():
        raise UserError(f"{ca_dir}: no ca.key here; initialise the federation CA first")
    try:
        key = serialization.load_pem_private_key(_read(key_path), password=None)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{key_path}: not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UserError(f"{key_path}: not an ECDSA private key")
    return key, _load_cert(ca_dir / "ca.crt")


def _load_index(ca_dir: Path) -> dict:
    path = ca_dir / "issued.json"
    try:
        return json.loads(_read(path))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc


def _save_index(ca_dir: Path, index: dict) -> None:
    _write_public(ca_dir / "issued.json", (json.dumps(index, indent=2) + "\n").encode())


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path))
    except ValueError as exc:
        raise UserError(f"{path}: not a PEM X.509 certificate") from exc


def _load_csr(path: Path) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(_read(path))
    except ValueError as exc:
        raise UserError(f"{path}: not a PEM certificate signing request") from exc
    if not csr.is_signature_valid:
        raise UserError(f"{path}: the CSR signature does not verify")
    return csr


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise UserError(f"{path}: no such file") from exc
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from exc


def _single_attr(name: x509.Name, oid: x509.ObjectIdentifier, path: Path, label: str) -> str:
    values = name.get_attributes_for_oid(oid)
    if len(values) != 1:
        raise UserError(f"{path}: the CSR subject must have exactly one {label}")
    return str(values[0].value)


def _subject(name: str, role: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        ]
    )


def _host_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        if not host or any(c.isspace() or c in "/:@" for c in host):
            raise UserError(f"{host!r} is neither an IP address nor a DNS name") from None
        return x509.DNSName(host)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise UserError(
            f"name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting alphanumeric"
        )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted: gRPC loads the key directly; file mode 0600 is the protection.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_public(path: Path, data: bytes) -> None:
    """Replace a file atomically so readers never see a half-written CRL or index."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)
