"""The client side of the node's admin socket, shared by the officer's CLI and the node
console: one way to open the socket, and one way to sign and send an approver's decision.

Both front ends must sign exactly the same statement (``scifed/approver_keys.py``) and
find the signer the same way (by the fingerprint of the key, in the node's own registry),
so that a decision made in the console and one made with ``scifed node approvals
approve`` are indistinguishable to the node and its audit log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protos.scifed.v1 import node_admin_pb2 as pb
from protos.scifed.v1 import node_admin_pb2_grpc as pbg
from scifed.config import NodeConfig
from scifed.errors import UserError


class _Actor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Tells the node who is acting, for its audit log (on streaming calls too: the
    quality assessment is one). A label only: approvals are signed with a key."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _with_actor(self, continuation, details, request):
        metadata = [*(details.metadata or []), ("scifed-actor", self.name)]
        return continuation(details._replace(metadata=metadata), request)

    intercept_unary_unary = _with_actor
    intercept_unary_stream = _with_actor


def admin_channel(cfg: NodeConfig, how_to_start: str = "") -> grpc.Channel:
    """A channel to the node's admin socket; one message when the node is not running."""
    sock = cfg.socket_path
    if not sock.exists():
        raise UserError(f"node {cfg.name} is not running (no admin socket at {sock})"
                        + (f"; start it with {how_to_start}" if how_to_start else ""))
    return grpc.insecure_channel(f"unix:{sock}")


def acting(channel: grpc.Channel, actor: str) -> pbg.NodeAdminStub:
    """The admin API over ``channel``, every call labelled with ``actor`` for the audit."""
    return pbg.NodeAdminStub(grpc.intercept_channel(channel, _Actor(actor)))


@dataclass(frozen=True)
class Signer:
    """A registered approver, found by the key that signs (never by a typed name)."""

    name: str
    role: str
    fingerprint: str
    node: str


def registered_signer(stub: pbg.NodeAdminStub, key: Ed25519PrivateKey,
                      key_label: str) -> Signer:
    """The approver whose registered key is ``key`` at this node, else one UserError
    naming the key (``key_label``: how the person knows it, e.g. its path)."""
    from scifed.approver_keys import fingerprint, public_pem

    fp = fingerprint(public_pem(key))
    node = stub.Status(pb.StatusRequest(), timeout=10).node_name
    people = json.loads(stub.ApproverList(pb.ApproverListRequest(), timeout=30).json)
    me = next((p for p in people if p["fingerprint"] == fp), None)
    if me is None:
        raise UserError(f"the key {key_label} ({fp}) is not a registered approver at node "
                        f"{node}: `scifed node approver list` shows who is")
    return Signer(me["name"], me["role"], fp, node)


def pending_approval(stub: pbg.NodeAdminStub, approval_id: str) -> dict:
    appr = json.loads(stub.ApprovalShow(pb.ApprovalRef(approval_id=approval_id),
                                        timeout=30).json)
    if appr["state"] != "pending":
        raise UserError(f"approval {approval_id} is already {appr['state']}")
    return appr


def signed_decision(stub: pbg.NodeAdminStub, approval_id: str, *, approve: bool,
                    reason: str, expires_ms: int | None,
                    key: Callable[[], Ed25519PrivateKey],
                    key_label: str) -> tuple[dict, Signer]:
    """Sign this one decision with the approver's key and send it; the node checks the
    signature against the registered key and takes the role from its registry. ``key``
    is called once the approval is known to be pending (the CLI asks for the passphrase
    only then). Returns the approval as the node now has it, and who signed."""
    from scifed.approver_keys import decision_statement, sign
    from scifed.chain import canonical

    appr = pending_approval(stub, approval_id)
    private = key()
    me = registered_signer(stub, private, key_label)
    statement = decision_statement(node=me.node, approval=appr, approver=me.name,
                                   key=me.fingerprint, approve=approve, reason=reason,
                                   expires_ms=expires_ms)
    r = stub.ApprovalDecide(pb.ApprovalDecision(
        approval_id=approval_id, approve=approve, reason=reason, by=me.name,
        expires_unix_ms=expires_ms or 0, statement=canonical(statement),
        signature=sign(private, statement)), timeout=30)
    return json.loads(r.json), me


def signed_offline_record(stub: pbg.NodeAdminStub, *, dataset_id: str, recipient: str,
                          what: str, sha256: str, medium: str,
                          key: Callable[[], Ed25519PrivateKey], key_label: str) -> dict:
    """Record an offline transfer the officer made, signed with their approver key over
    the node's statement of it (``node/delivery``); the node checks signature and role."""
    from node.delivery import OFFLINE_DOMAIN, offline_statement
    from scifed.approver_keys import sign
    from scifed.chain import canonical

    dataset = json.loads(stub.GetDataset(pb.DatasetRef(dataset_id=dataset_id),
                                         timeout=30).record_json)["id"]
    private = key()
    me = registered_signer(stub, private, key_label)
    statement = offline_statement(node=me.node, dataset_id=dataset, recipient=recipient,
                                  what=what, sha256=sha256, medium=medium,
                                  approver=me.name, key=me.fingerprint)
    return json.loads(stub.AccessRecordOffline(pb.AccessOfflineRequest(
        dataset_id=dataset_id, recipient=recipient, what=what, sha256=sha256, medium=medium,
        by=me.name, statement=canonical(statement),
        signature=sign(private, statement, OFFLINE_DOMAIN)), timeout=30).json)


def signed_review_decision(stub: pbg.NodeAdminStub, review_id: str, *, release: bool,
                           reason: str, key: Callable[[], Ed25519PrivateKey],
                           key_label: str) -> tuple[dict, Signer]:
    """Release or withhold one held result (node/review.py), signed with the approver's
    key over the result's hash as the node records it; the node checks key and role."""
    from scifed.approver_keys import review_statement, sign_review
    from scifed.chain import canonical

    review = json.loads(stub.ReviewShow(pb.ReviewRef(review_id=review_id), timeout=60).json)
    if review["state"] != "pending":
        raise UserError(f"output review {review_id} is already {review['state']}")
    private = key()
    me = registered_signer(stub, private, key_label)
    statement = review_statement(node=me.node, review=review, approver=me.name,
                                 key=me.fingerprint, release=release, reason=reason)
    r = stub.ReviewDecide(pb.ReviewDecision(
        review_id=review_id, release=release, reason=reason, by=me.name,
        statement=canonical(statement), signature=sign_review(private, statement)),
        timeout=30)
    return json.loads(r.json), me
