"""What the coordinator enforces of the CA's revocations, for the operator to see.

A CRL lists serials only; the names are in the CA's own index, which stays with the CA.
The coordinator names each revoked serial from the certificates it holds itself: those
in the nodes' and the jobs' seal key claims (kept in its database), and those of every
caller since it started (:class:`SeenCertificates`, told by the mTLS interceptor). A
serial it has never seen is listed without a name: revoked all the same.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy import select

from coordinator.db import Database, Job, Node
from scifed.pki import Crl, Identity

MAX_SEEN = 100_000  # identities remembered in memory (a federation has far fewer)


@dataclass(frozen=True)
class Revoked:
    serial: int
    name: str  # empty: a certificate the coordinator has not seen
    role: str
    revoked_ms: int


class SeenCertificates:
    """serial -> (name, role) of every certificate that has called the coordinator since it
    started (the interceptor's ``on_peer``): a dict write per new certificate only."""

    def __init__(self) -> None:
        self._by_serial: dict[int, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def saw(self, ident: Identity) -> None:
        if ident.serial in self._by_serial or len(self._by_serial) >= MAX_SEEN:
            return
        with self._lock:
            self._by_serial[ident.serial] = (ident.name, ident.role)

    def remember(self, names: dict[int, tuple[str, str]]) -> None:
        with self._lock:
            for serial, who in names.items():
                self._by_serial.setdefault(serial, who)

    def names(self) -> dict[int, tuple[str, str]]:
        with self._lock:
            return dict(self._by_serial)


def _claimed(claim: object) -> tuple[int, tuple[str, str]] | None:
    """(serial, (name, role)) of a stored seal key claim's certificate; None if unreadable."""
    if not isinstance(claim, dict) or not claim.get("cert_pem"):
        return None
    try:
        cert = x509.load_pem_x509_certificate(claim["cert_pem"].encode())
    except ValueError:
        return None
    return cert.serial_number, (str(claim.get("name", "")), str(claim.get("role", "")))


def stored_names(db: Database, wanted: set[int]) -> dict[int, tuple[str, str]]:
    """Names of the ``wanted`` serials among the certificates in the coordinator's
    database (nodes' and researchers' seal key claims)."""
    found: dict[int, tuple[str, str]] = {}
    with db.session() as s:
        claims = [*s.scalars(select(Node.seal_claim)), *s.scalars(select(Job.seal_claim))]
    for claim in claims:
        if len(found) == len(wanted):
            break
        got = _claimed(claim)
        if got is not None and got[0] in wanted:
            found[got[0]] = got[1]
    return found


def revoked(crl: Crl | None, db: Database, seen: SeenCertificates) -> list[Revoked]:
    """The certificates ``crl`` revokes, newest revocation first, named where known."""
    if crl is None:
        return []
    names = {s: n for s, n in seen.names().items() if s in crl.serials}
    missing = set(crl.serials) - set(names)
    if missing:
        found = stored_names(db, missing)
        seen.remember(found)  # a claim's certificate is parsed once, not at every look
        names.update(found)
    when = dict(crl.revoked_on)
    out = [Revoked(serial, *names.get(serial, ("", "")),
                   int(when[serial].timestamp() * 1000) if serial in when else 0)
           for serial in crl.serials]
    return sorted(out, key=lambda r: (-r.revoked_ms, r.serial))
