"""The approvers in tests: people with keys, registered at a node (countersigned by its
officer and security lead, after the bootstrap) and signing their decisions as `scifed
node approver add|remove --countersign` and `scifed node approvals approve|deny --key`
do, in this process; and one shell on the node's host, which reaches the node's real
admin servicer as the admin socket would carry its calls."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.admin import NodeAdminServicer
from node.approvals import Approval, Approvals
from protos.scifed.v1 import node_admin_pb2 as pb
from scifed.approver_keys import (
    change_statement,
    decision_statement,
    fingerprint,
    new_key,
    public_pem,
    sign,
    sign_change,
)
from scifed.chain import canonical
from scifed.errors import UserError
from scifed.grading import grade_rank


@dataclass(frozen=True)
class Approver:
    """A person and the private key only they hold."""

    name: str
    role: str
    key: Ed25519PrivateKey

    @property
    def fingerprint(self) -> str:
        return fingerprint(public_pem(self.key))


def countersignatures(approvals: Approvals, signers: Sequence[Approver], action: str,
                      name: str, role: str, key: str) -> list[dict]:
    """What `--countersign KEY` sends for each of ``signers``: their signature over the
    change (``action`` of approver ``name``, ``role``, key fingerprint ``key``) and the
    registry as the node has it now; the keywords' shape of ``ApproverRegistry.add``."""
    state = approvals.registry.state()
    out = []
    for s in signers:
        statement = change_statement(node=approvals.node, action=action, name=name,
                                     role=role, key=key, registry=state, signer=s.name,
                                     signer_key=s.fingerprint)
        out.append({"by": s.name, "statement": canonical(statement),
                    "signature": sign_change(s.key, statement)})
    return out


def on_the_wire(sigs: Sequence[dict]) -> list[pb.Countersignature]:
    """The same countersignatures as the admin socket carries them."""
    return [pb.Countersignature(by=c["by"], statement=c["statement"],
                                signature=c["signature"]) for c in sigs]


def register(approvals: Approvals, name: str, role: str,
             key: Ed25519PrivateKey | None = None, *, by: str = "officer",
             countersign: Sequence[Approver] = ()) -> Approver:
    """`scifed node approver add NAME --role ROLE [--countersign KEY ...]` at the node of
    ``approvals`` (the node's first officer and security lead need no ``countersign``)."""
    person = Approver(name, role, key or new_key())
    approvals.registry.add(name, role, public_pem(person.key), by=by,
                           countersignatures=countersignatures(
                               approvals, countersign, "add", name, role, person.fingerprint))
    return person


def unregister(approvals: Approvals, name: str, *, by: str = "officer",
               countersign: Sequence[Approver] = ()):
    """`scifed node approver remove NAME --countersign KEY ...`."""
    (p,) = [p for p in approvals.registry.list() if p.name == name]
    return approvals.registry.remove(name, by=by, countersignatures=countersignatures(
        approvals, countersign, "remove", name, p.role, p.fingerprint))


def signed(approvals: Approvals, person: Approver, approval_id: str, *, approve: bool = True,
           reason: str = "", expires_ms: int | None = None) -> dict:
    """What the CLI sends for ``person``'s decision: the keywords of ``Approvals.decide``
    (statement and signature over the approval as the node shows it)."""
    statement = decision_statement(node=approvals.node,
                                   approval=approvals.get(approval_id).as_dict(),
                                   approver=person.name, key=person.fingerprint,
                                   approve=approve, reason=reason, expires_ms=expires_ms)
    return {"approve": approve, "by": person.name, "reason": reason,
            "expires_ms": expires_ms, "statement": canonical(statement),
            "signature": sign(person.key, statement)}


def request(approval_id: str, decision: dict) -> pb.ApprovalDecision:
    """The same decision as the admin socket carries it."""
    return pb.ApprovalDecision(approval_id=approval_id, approve=decision["approve"],
                               by=decision["by"], reason=decision["reason"],
                               expires_unix_ms=decision["expires_ms"] or 0,
                               statement=decision["statement"],
                               signature=decision["signature"])


def decide(approvals: Approvals, person: Approver, approval_id: str, **kw) -> Approval:
    return approvals.decide(approval_id, **signed(approvals, person, approval_id, **kw))


_STAFF: weakref.WeakKeyDictionary[Approvals, dict[str, Approver]] = \
    weakref.WeakKeyDictionary()


def staff(approvals: Approvals) -> dict[str, Approver]:
    """The node's officer and security lead, registered on first use."""
    if approvals not in _STAFF:
        _STAFF[approvals] = {"officer": register(approvals, "officer", "officer"),
                             "security_lead": register(approvals, "security", "security_lead")}
    return _STAFF[approvals]


def officer_approves(approvals: Approvals, approval_id: str, *,
                     expires_ms: int | None = None) -> Approval:
    """The node's officer approves the request, signed with their key; on G5 data its
    security lead signs too (the two approvals G5 needs)."""
    people = staff(approvals)
    appr = decide(approvals, people["officer"], approval_id, expires_ms=expires_ms)
    if appr.state == "pending" and grade_rank(appr.grade) >= grade_rank("G5"):
        appr = decide(approvals, people["security_lead"], approval_id, expires_ms=expires_ms)
    return appr


class Refused(UserError):
    """The admin servicer refused the call (what the CLI prints as one message)."""


class _ShellContext:
    """What the admin servicer reads from a call: who the shell says it is."""

    def __init__(self, actor: str) -> None:
        self.actor = actor

    def invocation_metadata(self):
        return [("scifed-actor", self.actor)]

    def abort(self, code: grpc.StatusCode, details: str):
        raise Refused(details)


class AdminShell:
    """One shell on the node's host that can open the admin socket (the officer's
    account): every call goes through :class:`node.admin.NodeAdminServicer`."""

    def __init__(self, fed, node: str, actor: str = "officer") -> None:
        core = fed.nodes[node]
        self.servicer = NodeAdminServicer(core.registry, fed.links[node], core.studies,
                                          core.approvals, reviews=core.reviews)
        self.context = _ShellContext(actor)

    def __call__(self, method: str, request):
        return getattr(self.servicer, method)(request, self.context)


def review_signed(reviews, person: Approver, review_id: str, *, release: bool = True,
                  reason: str = "") -> dict:
    """What `scifed node review release|withhold ID --key KEY` sends for ``person``: the
    keywords of ``OutputReviews.decide`` (statement and signature over the review, and
    the hash of its held result, as the node shows them)."""
    from scifed.approver_keys import review_statement, sign_review

    statement = review_statement(node=reviews.node, review=reviews.get(review_id).summary(),
                                 approver=person.name, key=person.fingerprint,
                                 release=release, reason=reason)
    return {"release": release, "by": person.name, "reason": reason,
            "statement": canonical(statement), "signature": sign_review(person.key, statement)}


def review_request(review_id: str, decision: dict) -> pb.ReviewDecision:
    """The same decision as the admin socket carries it."""
    return pb.ReviewDecision(review_id=review_id, release=decision["release"],
                             by=decision["by"], reason=decision["reason"],
                             statement=decision["statement"],
                             signature=decision["signature"])


def officer_reviews(reviews, review_id: str, *, release: bool = True, reason: str = ""):
    """The node's officer releases (or withholds) the held result, signed with their key;
    a G5 result's release needs its security lead's signature too."""
    people = staff(reviews.approvals)
    review = reviews.decide(review_id, **review_signed(reviews, people["officer"], review_id,
                                                       release=release, reason=reason))
    if release and review.state == "pending":
        review = reviews.decide(review_id, **review_signed(
            reviews, people["security_lead"], review_id, release=True))
    return review


def approving_until(fed, job_id: str, predicate, timeout: float = 60):
    """The job's view (as its researcher sees it) once ``predicate`` holds for it;
    meanwhile every node's officer approves each request the job puts in its queue."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        view = fed.job(job_id)
        if predicate(view):
            return view
        assert time.monotonic() < deadline, view
        for core in fed.nodes.values():
            for req in core.approvals.list("pending"):
                if req.job_id == job_id:
                    officer_approves(core.approvals, req.approval_id)
        time.sleep(0.05)
