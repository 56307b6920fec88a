"""Delivery of shareable data (governance §2.5 DL / SVC): what both sides compute alike.

A researcher asks a node for a dataset through the coordinator; the node decides from
the dataset's cell and delivers a download (a file or a column subset, in chunks) or
answers in-node service queries. Everything here is what the node and the researcher's
client must agree on byte for byte, so it lives once:

* the task kinds and their JSON payloads (as :mod:`scifed.tasks` for jobs);
* the researcher's signed access request: the node acts on the researcher's own word
  (purpose, conditions accepted, method, columns), not on the relaying coordinator's;
* the researcher's signed call under a grant (manifest, chunk or query, a fresh nonce and
  the time): a coordinator cannot call a grant on its own, in the researcher's name,
  nor replay a call, and a service query's SQL travels sealed to the node;
* the node's signed manifest of a download (sha256 of the whole file, its size, chunk
  size and each chunk's sha256), which the client checks before it trusts a byte;
* the contexts under which chunks, manifests and answers are sealed to the researcher,
  each naming the grant (and chunk number), so the coordinator, which sees only these
  ciphertexts, can neither read, swap, reorder nor replay one as another.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from enum import StrEnum
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from scifed.errors import UserError
from scifed.sealing import (
    SealKeyClaim,
    _certified_key,
    _signature_verifies,
    _verify_node_statement,
    canonical_json,
    verify_claim,
)
from scifed.tasks import B64, Message
from scifed.wire import now_ms

CHUNK_BYTES = 1024 * 1024  # one sealed, authenticated piece of a download
METHODS = ("download", "in_node_service")  # what a researcher may ask for over the wire
FORMATS = ("parquet", "csv")  # a column subset's file format
MAX_ANSWER_ROWS = 100_000  # rows one in-node service answer may hold
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # its JSON, well inside one sealed gRPC message
_ALG = "ecdsa-p256-sha256"
_REQUEST_DOMAIN = b"scifed-access-request-v1\0"
_MANIFEST_DOMAIN = b"scifed-delivery-manifest-v1\0"
_CALL_DOMAIN = b"scifed-delivery-call-v1\0"
CALLS = ("manifest", "chunk", "query")  # what a researcher's call under a grant asks for
# How long a signed call is good for, either side of the node's clock: the node keeps the
# nonces of this window, so a call is answered once, and an older one not at all.
CALL_MAX_AGE_MS = 5 * 60 * 1000
CALL_FIELDS = ("grant_id", "node", "researcher", "what", "index", "sealed_sha256", "nonce",
               "at_ms")
REQUEST_FIELDS = ("researcher", "record_id", "dataset", "method", "columns", "format",
                  "purpose", "conditions_accepted", "study", "nonce")
MANIFEST_FIELDS = ("grant_id", "node", "dataset_id", "record_id", "researcher", "method",
                   "columns", "format", "sha256", "size", "chunk_bytes", "chunks",
                   "chunk_sha256")


class AccessKind(StrEnum):
    """Task kinds of delivery, beside the job kinds of :class:`scifed.tasks.TaskKind`."""

    REQUEST = "access.request"    # decide a researcher's signed request: grant, hold, refuse
    LIST = "access.list"          # the researcher's grants at this node
    MANIFEST = "access.manifest"  # a download's signed manifest, sealed to the researcher
    CHUNK = "access.chunk"        # one chunk of a download, sealed to the researcher
    QUERY = "access.query"        # one in-node service query, answered sealed


# -- payloads -------------------------------------------------------------------------
class AccessRequest(Message):
    """A researcher's request as it reaches the node: the signed statement and the seal
    key claim (certificate included) that vouches for the signer and receives the data."""

    statement: dict
    signature: B64
    claim: dict


class GrantView(Message):
    """A grant as the researcher sees it (no data, no path)."""

    grant_id: str
    node: str
    dataset_id: str
    record_id: str
    researcher: str
    method: str
    columns: list[str]
    format: str
    state: str  # pending | granted | denied | expired | revoked
    reason: str = ""
    conditions: str = ""  # the officer's conditions of an approval
    expires_ms: int | None = None
    created_ms: int
    # the node's seal key claim (signed with its certificate key): what a service query
    # is sealed to, so the coordinator relays only its ciphertext
    node_claim: dict = {}

    def shown(self) -> dict:
        """The grant as a person reads it (without the node's key claim)."""
        return self.model_dump(exclude={"node_claim"})


class GrantRef(Message):
    """One call under a grant: the researcher's signed statement of it (``call``, see
    :func:`call_statement`), who the coordinator says asks (checked against the grant
    too), and for a query its SQL sealed to the node under :func:`query_context`."""

    grant_id: str
    researcher: str
    call: dict = {}
    signature: B64 = b""
    sealed_query: B64 = b""


class GrantList(Message):
    researcher: str


class GrantsReply(Message):
    grants: list[GrantView]


class SealedReply(Message):
    sealed: B64


# -- the researcher's request ---------------------------------------------------------
def request_statement(*, researcher: str, record_id: str, dataset: str, method: str,
                      columns: list[str], fmt: str, purpose: str,
                      conditions_accepted: list[str], study: str, nonce: str) -> dict:
    """What a researcher signs: exactly one request. ``conditions_accepted`` are the
    codes of the record's conditions of use (and its licence) the researcher accepts."""
    if method not in METHODS:
        raise UserError(f"no delivery method {method!r} over the network: choose "
                        f"{' or '.join(METHODS)} (offline transfer is recorded by the "
                        "data officer)")
    if fmt not in FORMATS:
        raise UserError(f"no format {fmt!r}: choose {' or '.join(FORMATS)}")
    if not purpose.strip():
        raise UserError("an access request needs a purpose (--purpose TEXT): the data "
                        "officer reads it")
    return {"researcher": researcher, "record_id": record_id, "dataset": dataset,
            "method": method, "columns": list(dict.fromkeys(columns)), "format": fmt,
            "purpose": purpose.strip(), "conditions_accepted": sorted(set(conditions_accepted)),
            "study": study, "nonce": nonce}


def _researcher_signs(domain: bytes, statement: dict, identity: Path, name: str) -> bytes:
    key, _ = _certified_key(identity / f"{name}.crt", identity / "researcher.key",
                            role="researcher", name=name)
    return key.sign(domain + canonical_json(statement), ec.ECDSA(hashes.SHA256()))


def sign_request(statement: dict, identity: Path, name: str) -> bytes:
    """The researcher's ECDSA signature over the statement, with their certificate key."""
    return _researcher_signs(_REQUEST_DOMAIN, statement, identity, name)


def verify_request(req: AccessRequest, ca_pem: bytes) -> tuple[dict, SealKeyClaim, bytes]:
    """The statement, the researcher's claim and seal key, if the claim is the
    certified researcher the statement names and the signature over it is theirs."""
    statement = req.statement
    if set(statement) != set(REQUEST_FIELDS):
        raise UserError("the access request does not have the fields of one")
    claim = SealKeyClaim.from_dict(req.claim)
    seal_public = verify_claim(claim, ca_pem, expect_role="researcher",
                               expect_name=str(statement["researcher"]))
    if not _signature_verifies(claim.cert_pem, req.signature,
                               _REQUEST_DOMAIN + canonical_json(statement),
                               whose=f"researcher {statement['researcher']!r}'s"):
        raise UserError(f"the access request is not signed by researcher "
                        f"{statement['researcher']!r}: it was changed after signing")
    return statement, claim, seal_public


# -- the researcher's calls under a grant ----------------------------------------------
def call_statement(*, grant_id: str, node: str, researcher: str, what: str, index: int = 0,
                   sealed_query: bytes = b"", nonce: str = "",
                   at_ms: int | None = None) -> dict:
    """What a researcher signs to make one call under a grant: which grant at which node,
    what (a manifest, chunk ``index``, or the query sealed as ``sealed_query``, named by
    its sha256: the SQL itself is not in clear), a fresh nonce and the time."""
    if what not in CALLS:
        raise UserError(f"no call {what!r} under a grant: {', '.join(CALLS)}")
    return {"grant_id": grant_id, "node": node, "researcher": researcher, "what": what,
            "index": index,
            "sealed_sha256": hashlib.sha256(sealed_query).hexdigest() if sealed_query else "",
            "nonce": nonce or uuid.uuid4().hex,
            "at_ms": now_ms() if at_ms is None else at_ms}


def sign_call(statement: dict, identity: Path, name: str) -> bytes:
    """The researcher's signature over one call, under a domain of its own (never valid
    as an access request)."""
    return _researcher_signs(_CALL_DOMAIN, statement, identity, name)


def verify_call(ref: GrantRef, *, what: str, node: str, researcher: str, cert_pem: bytes,
                now: int) -> dict:
    """The call's statement, if it is ``what`` under ``ref``'s grant at ``node``, signed
    with the key of ``cert_pem`` (the certificate the grant was made for), within
    :data:`CALL_MAX_AGE_MS` of ``now``, and names the sealed query it carries; else a
    UserError saying what is wrong (the nonce is the node's to check once)."""
    statement = ref.call
    if not statement and not ref.signature:
        raise UserError("the call is not signed by the researcher (each manifest, chunk "
                        "and query is a statement the researcher signs)")
    if set(statement) != set(CALL_FIELDS):
        raise UserError("the call does not have the fields of a signed call")
    expect = {"grant_id": ref.grant_id, "node": node, "researcher": researcher, "what": what,
              "sealed_sha256": hashlib.sha256(ref.sealed_query).hexdigest()
              if ref.sealed_query else ""}
    for field, value in expect.items():
        if statement[field] != value:
            raise UserError(f"the signed call names {field} {str(statement[field])[:80]!r}, "
                            f"not {value!r}")
    if not isinstance(statement["at_ms"], int) or not isinstance(statement["index"], int) \
            or not isinstance(statement["nonce"], str) or not statement["nonce"]:
        raise UserError("the signed call's index, nonce or time is malformed")
    if not _signature_verifies(cert_pem, ref.signature,
                               _CALL_DOMAIN + canonical_json(statement),
                               whose=f"researcher {researcher!r}'s"):
        raise UserError(f"the call is not signed by researcher {researcher!r} with the "
                        "certificate the grant was made for")
    age = now - statement["at_ms"]
    if abs(age) > CALL_MAX_AGE_MS:
        raise UserError(f"the call was signed {abs(age) // 1000} s "
                        f"{'ago' if age > 0 else 'ahead of the node clock'}; a call is good "
                        f"for {CALL_MAX_AGE_MS // 1000} s (check the clock, and call again)")
    return statement


# -- the node's manifest --------------------------------------------------------------
def sign_manifest(manifest: dict, *, node: str, cert_path: Path, key_path: Path) -> dict:
    """The node's signed statement of a download it prepared."""
    if set(manifest) != set(MANIFEST_FIELDS) or manifest["node"] != node:
        raise UserError(f"node {node} signs only a manifest of its own download")
    key, cert_pem = _certified_key(cert_path, key_path, role="node", name=node)
    signature = key.sign(_MANIFEST_DOMAIN + canonical_json(manifest), ec.ECDSA(hashes.SHA256()))
    return {"manifest": manifest, "alg": _ALG, "value": base64.b64encode(signature).decode(),
            "cert_pem": cert_pem.decode()}


def verify_manifest(signed: object, ca_pem: bytes, *, node: str, grant_id: str,
                    researcher: str, revoked: frozenset[int] | set[int] = frozenset()) -> dict:
    """The manifest, if node ``node`` signed it (a certificate the CA issued, not
    revoked) for this grant and researcher; else a UserError naming what is wrong."""
    what = f"the manifest of grant {grant_id}"
    manifest = _verify_node_statement(
        signed, ca_pem, node=node, expect={"grant_id": grant_id, "researcher": researcher},
        revoked=revoked, fields=dict.fromkeys(MANIFEST_FIELDS, object),
        domain=_MANIFEST_DOMAIN, what=what, kind="manifest", body="manifest", alg=_ALG,
        against="").statement
    if len(manifest["chunk_sha256"]) != manifest["chunks"]:
        raise UserError(f"{what} lists {len(manifest['chunk_sha256'])} chunk digests for "
                        f"{manifest['chunks']} chunks")
    return manifest


# -- what is sealed under which context ------------------------------------------------
def manifest_context(grant_id: str) -> bytes:
    return f"scifed-delivery-manifest|{grant_id}".encode()


def chunk_context(grant_id: str, sha256: str, index: int, chunks: int) -> bytes:
    """A chunk's context: the grant, the whole file's digest, its number and the count,
    so a chunk opens only as itself, in its place, of this file."""
    return f"scifed-delivery-chunk|{grant_id}|{sha256}|{index}/{chunks}".encode()


def answer_context(grant_id: str, query_sha256: str) -> bytes:
    return f"scifed-service-answer|{grant_id}|{query_sha256}".encode()


def query_context(grant_id: str, nonce: str) -> bytes:
    """A service query's SQL, sealed by the researcher to the node: it opens only under
    its grant, in the one call whose nonce the researcher signed."""
    return f"scifed-service-query|{grant_id}|{nonce}".encode()


def grants_json(grants: list[GrantView]) -> list[dict]:
    return [json.loads(g.model_dump_json(exclude={"node_claim"})) for g in grants]
