"""The researcher's side of delivery, for the `scifed access` commands and the web
console: request access, list grants, download a grant to a file, query in the node.

Every call under a grant (manifest, chunk, query) is a statement the researcher signs
(:func:`scifed.delivery.call_statement`), so the coordinator cannot make one on its own;
a query's SQL is sealed to the node's seal key (its claim checked against the federation
CA and the CRL), and its answer or refusal comes back sealed to the researcher.

A download is checked before anything is trusted: the node's signed manifest (its
certificate from the federation CA, for this grant and this researcher), each chunk
opened with the researcher's seal key under the context of its grant, file digest and
number, and its sha256 against the manifest; the whole file's sha256 at the end. An
interrupted download leaves ``OUT.part`` and ``OUT.part.json`` (the manifest); the next
call checks the chunks already there and asks only for the rest.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from coordinator.client import Client
from protos.scifed.v1 import coordinator_pb2 as pb
from scifed.delivery import (
    AccessRequest,
    GrantRef,
    GrantsReply,
    GrantView,
    SealedReply,
    answer_context,
    call_statement,
    chunk_context,
    manifest_context,
    query_context,
    request_statement,
    sign_call,
    sign_request,
    verify_manifest,
)
from scifed.errors import UserError
from scifed.pki import identity_from_cert_pem
from scifed.sealing import SealKeyClaim, load_seal_key, make_claim, open_sealed, seal, verify_claim
from scifed.sentences import rebuild, say

Progress = Callable[[int, int], None]  # (bytes verified so far, total bytes)


def conditions(record: dict) -> list[dict]:
    """What a request must accept: each condition of use, and the licence."""
    out = [{"code": c["code"], "text": c.get("text", "")}
           for c in record.get("conditions_of_use", [])]
    out.append({"code": f"license:{record.get('license', '')}",
                "text": f"the licence {record.get('license', '')}"})
    return out


def require_accepted(record: dict, accepted: Iterable[str]) -> list[str]:
    """The codes a request accepts, once they cover every condition of use and the
    licence of ``record``; else a UserError naming each one still to accept."""
    accepted = list(accepted)
    missing = [t for t in conditions(record) if t["code"] not in accepted]
    if missing:
        raise UserError(say("access.accept", missing="; ".join(
            f"{t['code']} ({t['text']})" for t in missing)))
    return accepted


def _study_id(client: Client, study: str) -> str:
    if not study:
        return ""
    for s in client.studies():
        if study in (s.name, s.study_id):
            return s.study_id
    raise UserError(f"you are in no study '{study}' (`scifed study list` shows yours)")


def request_access(client: Client, record_id: str, *, method: str, purpose: str,
                   accept: Iterable[str], columns: Iterable[str] = (), fmt: str = "parquet",
                   study: str = "") -> GrantView:
    """Sign and send one access request; the node's decision comes back as the grant
    (granted, pending the officer's approval), or its refusal as a UserError."""
    me = client.identity.cfg.name
    statement = request_statement(
        researcher=me, record_id=record_id, dataset=record_id, method=method,
        columns=list(columns), fmt=fmt, purpose=purpose, conditions_accepted=list(accept),
        study=_study_id(client, study), nonce=uuid.uuid4().hex)
    d = client.identity.path
    claim = make_claim(d, name=me, role="researcher", cert_path=d / f"{me}.crt",
                       key_path=d / "researcher.key").to_dict()
    req = AccessRequest(statement=statement, signature=sign_request(statement, d, me),
                        claim=claim)
    r = client.stub.RequestAccess(pb.AccessCall(record_id=record_id, payload=req.dumps()),
                                  timeout=client.timeout)
    return GrantView.loads(r.payload)


def list_access(client: Client, record_id: str = "") -> tuple[list[GrantView], list[str]]:
    """This researcher's grants at every connected node, and the nodes not reached."""
    r = client.stub.ListAccess(pb.AccessCall(record_id=record_id), timeout=client.timeout)
    return GrantsReply.loads(r.payload).grants, list(r.unreached)


def find_grant(client: Client, grant_id: str) -> GrantView:
    grants, unreached = list_access(client)
    for g in grants:
        if g.grant_id == grant_id:
            return g
    more = f" (nodes not reached: {', '.join(unreached)})" if unreached else ""
    raise UserError(f"no grant '{grant_id}' of yours{more}; `scifed access list` shows them")


def node_seal_key(client: Client, grant: GrantView) -> bytes:
    """The seal public key of the grant's node, from the claim the node signed (the
    listing came through the coordinator: the claim must be the named node's, with a
    certificate of the federation CA that is not revoked)."""
    ca_pem, revoked = client._trust()
    try:
        claim = SealKeyClaim.from_dict(grant.node_claim)
        public = verify_claim(claim, ca_pem, expect_role="node", expect_name=grant.node)
    except (UserError, ValueError) as exc:
        raise UserError(f"grant {grant.grant_id} carries no valid seal key of node "
                        f"{grant.node} ({exc}); the query was not sent") from None
    if identity_from_cert_pem(claim.cert_pem).serial in revoked:
        raise UserError(f"node {grant.node}'s certificate is revoked; the query was not sent")
    return public


def signed_ref(client: Client, grant: GrantView, what: str, *, index: int = 0,
               sql: str | None = None) -> GrantRef:
    """One call under ``grant`` as the researcher signs it: ``what`` (manifest, chunk
    ``index``, or query ``sql``, sealed to the node for this call only)."""
    me, d = client.identity.cfg.name, client.identity.path
    nonce = uuid.uuid4().hex
    sealed = b"" if sql is None else seal(node_seal_key(client, grant), sql.encode(),
                                          context=query_context(grant.grant_id, nonce))
    statement = call_statement(grant_id=grant.grant_id, node=grant.node, researcher=me,
                               what=what, index=index, sealed_query=sealed, nonce=nonce)
    return GrantRef(grant_id=grant.grant_id, researcher=me, call=statement,
                    signature=sign_call(statement, d, me), sealed_query=sealed)


def _call(client: Client, rpc: str, grant: GrantView, what: str, **ref) -> bytes:
    payload = signed_ref(client, grant, what, **ref).dumps()
    r = getattr(client.stub, rpc)(pb.AccessCall(record_id=grant.record_id, payload=payload),
                                  timeout=client.timeout)
    return SealedReply.loads(r.payload).sealed


def manifest(client: Client, grant: GrantView) -> dict:
    """The grant's manifest, opened and verified (signed by its node for this grant)."""
    key = load_seal_key(client.identity.path)
    plain = open_sealed(key, _call(client, "AccessManifest", grant, "manifest"),
                        context=manifest_context(grant.grant_id))
    ca_pem, revoked = client._trust()
    m = verify_manifest(json.loads(plain), ca_pem, node=grant.node,
                        grant_id=grant.grant_id, researcher=client.identity.cfg.name,
                        revoked=revoked)
    # the grant as listed came through the coordinator unsigned: the node's own word
    # must name what the researcher was shown, or the file is another grant's
    for field, shown in (("record_id", grant.record_id), ("columns", grant.columns)):
        if m[field] != shown:
            raise UserError(f"the node's manifest of grant {grant.grant_id} names {field} "
                            f"{m[field]!r}, but the grant was listed with {shown!r}: the "
                            "listing was changed on the way; nothing was downloaded")
    if grant.columns and m["format"] != grant.format:
        raise UserError(f"the node's manifest of grant {grant.grant_id} is {m['format']}, "
                        f"but the grant was listed as {grant.format}; nothing was "
                        "downloaded")
    return m


def _verified_prefix(part: Path, m: dict) -> int:
    """How many leading chunks of ``part`` match the manifest (the rest is cut off)."""
    good = 0
    if part.exists():
        with part.open("rb") as f:
            for digest in m["chunk_sha256"]:
                data = f.read(m["chunk_bytes"])
                if not data or hashlib.sha256(data).hexdigest() != digest:
                    break
                good += 1
        with part.open("r+b") as f:
            f.truncate(min(good * m["chunk_bytes"], m["size"]))
    return good


def download(client: Client, grant: GrantView | str, out: Path,
             progress: Progress | None = None) -> str:
    """Download a granted file to ``out`` (resuming an interrupted download of the same
    grant); returns its sha256, verified against the node's signed manifest."""
    if isinstance(grant, str):
        grant = find_grant(client, grant)
    if grant.method != "download":
        raise UserError(f"grant {grant.grant_id} is for {grant.method}, not a download")
    out = Path(out)
    part, state = out.with_name(out.name + ".part"), out.with_name(out.name + ".part.json")
    m = manifest(client, grant)
    if state.exists():
        try:
            kept = json.loads(state.read_text())
        except ValueError:
            kept = None
        if kept != m:  # another grant or another file: start again
            part.unlink(missing_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps(m))
    start = _verified_prefix(part, m)
    key = load_seal_key(client.identity.path)
    done = min(start * m["chunk_bytes"], m["size"])
    if progress is not None:
        progress(done, m["size"])
    with part.open("ab") as f:
        for index in range(start, m["chunks"]):
            sealed = _call(client, "AccessChunk", grant, "chunk", index=index)
            try:
                data = open_sealed(key, sealed, context=chunk_context(
                    grant.grant_id, m["sha256"], index, m["chunks"]))
            except UserError:
                raise UserError(f"chunk {index} of grant {grant.grant_id} could not be "
                                "authenticated: it was altered on the way; run the "
                                "download again to resume") from None
            if hashlib.sha256(data).hexdigest() != m["chunk_sha256"][index]:
                raise UserError(f"chunk {index} of grant {grant.grant_id} does not match "
                                "the node's signed manifest")
            f.write(data)
            f.flush()
            done += len(data)
            if progress is not None:
                progress(done, m["size"])
    digest = hashlib.sha256()
    with part.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    if digest.hexdigest() != m["sha256"]:
        part.unlink(missing_ok=True)
        raise UserError(f"the file of grant {grant.grant_id} does not match the sha256 its "
                        "node signed; it was removed, run the download again")
    part.replace(out)
    state.unlink(missing_ok=True)
    return m["sha256"]


def query(client: Client, grant: GrantView | str, sql: str) -> tuple[pd.DataFrame, dict]:
    """Run one in-node service query under a grant; the answer as a DataFrame, and what
    the node said of it (mode, groups withheld below k). The SQL goes sealed to the node
    and the answer, or the node's reason for refusing it, comes back sealed to you."""
    if isinstance(grant, str):
        grant = find_grant(client, grant)
    sha = hashlib.sha256(sql.encode()).hexdigest()
    plain = json.loads(open_sealed(load_seal_key(client.identity.path),
                                   _call(client, "AccessQuery", grant, "query", sql=sql),
                                   context=answer_context(grant.grant_id, sha)))
    if plain.get("grant_id") != grant.grant_id or plain.get("query_sha256") != sha:
        raise UserError("the answer is not of this query under this grant")
    if "refused" in plain:  # the node's sentence, with its key and fields where it sent them
        raise UserError(rebuild(plain.get("refused_said")) or str(plain["refused"]))
    frame = pd.DataFrame(plain["rows"], columns=plain["columns"])
    return frame, {"mode": plain["mode"], "withheld": plain["withheld"],
                   "k": plain.get("k")}
