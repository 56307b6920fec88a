"""Attacks on the officer's output review, through the real pipeline (in memory).

A result on a cell that asks for review leaves only after a registered approver's signed
release of exactly that result, at the release node and at every contributor whose own
cell asks for review. The attackers: a deviating coordinator that routes a reviewed
contributor's data to a release node that does not ask its officer, and then skips the
contributor's review, forges its verdict, moves one from another job, or erases the
contributor's signed flag; and one shell on the release node's host that tries to
release with a decision that is not the officer's — unsigned, by a key nobody
registered, by the wrong role, for another job or another result, a signature of
another kind, or one replayed — or to get a withheld result sealed after all.

The staff table at three nodes (60 rows each); the reviewing node is graded G4 CLOSED,
the others G3 CONDITIONAL."""

from __future__ import annotations

import base64
import copy
import json

import pytest
import staff
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from staff import NODES, stats

from coordinator.db import Job
from harness.approvers import (
    AdminShell,
    Approver,
    Refused,
    approving_until,
    officer_reviews,
    register,
    review_request,
    review_signed,
    signed,
)
from harness.approvers import staff as people
from harness.inmemory import InMemoryFederation
from node.audit import AuditLog
from protos.scifed.v1 import node_admin_pb2 as pb
from scifed.approver_keys import new_key, sign, sign_review
from scifed.errors import UserError
from scifed.states import JobStatus
from scifed.tasks import ReleaseReply, ReleaseRequest, ReviewReply, TaskKind

JOB = stats(columns=["age", "salary"], measures=["count", "mean"])


def meta(grade: str, category: str) -> dict:
    """The staff table at a G3+ cell: the grading record and approvals it must carry."""
    out = staff.staff_meta(grade, category)
    example = yaml.safe_load((staff.REPO / "configs" / "datasets" /
                              "contraception.yaml").read_text())
    out["grade_assessment"] = example["grade_assessment"]
    out["approvals"] = example["approvals"]
    return out


def federation(root, reviewer: str) -> InMemoryFederation:
    """alpha (the study's lead, so the release node), beta, gamma; ``reviewer`` at G4
    CLOSED (its cell asks for output review), the others at G3 CONDITIONAL."""
    df = staff.staff_table()
    fed = InMemoryFederation(root, list(NODES)).__enter__()
    for node in NODES:
        cell = ("G4", "CLOSED") if node == reviewer else ("G3", "CONDITIONAL")
        fed.add_dataset(node, df[df.node == node].drop(columns="node"), meta(*cell), "staff")
    fed.create_study("staff", {n: "staff" for n in NODES}, min_nodes=3)
    fed.table = df
    return fed


@pytest.fixture
def fed(tmp_path):
    """alpha reviews its own releases."""
    fed = federation(tmp_path, "alpha")
    yield fed
    fed.__exit__(None, None, None)


@pytest.fixture
def routed(tmp_path):
    """beta's cell asks for review, but alpha releases."""
    fed = federation(tmp_path, "beta")
    yield fed
    fed.__exit__(None, None, None)


def run_approving(fed, job_id: str, stop=lambda view: False, timeout: float = 60):
    """Each officer approves the job's requests until the job stops (or ``stop``)."""
    return approving_until(fed, job_id, lambda v: v.status.stopped or stop(v), timeout)


def held(fed, job_id: str):
    """The job's review at alpha, once its result waits for the officer."""
    run_approving(fed, job_id, lambda v: v.phase.name == "in output review")
    reviews = fed.nodes["alpha"].reviews
    (review,) = [r for r in reviews.list("pending") if r.job_id == job_id]
    return review


def nothing_sealed(fed, job_id: str) -> None:
    """No node sealed a result of the job, and the coordinator holds none."""
    for core in fed.nodes.values():
        assert not [e for e in AuditLog(core.store).entries()
                    if e.action == "result.seal" and e.details.get("job_id") == job_id]
    view = fed.coordinator.jobs.get(job_id, fed.researcher)
    assert view.status != JobStatus.DONE
    with fed.coordinator.db.session() as s:
        assert not s.get(Job, job_id).sealed_result


# -- a deviating coordinator ------------------------------------------------------------
def deviate(fed, kind: str, change) -> None:
    """The coordinator rewrites what it relays for tasks of ``kind``: ``change(payloads,
    send)`` returns (answers, failed) in place of the honest fan-out ``send``."""
    jobs = fed.coordinator.jobs
    honest = jobs.fanout

    def fanout(run, phase, k, payloads, reply):
        if k == kind:
            return change(payloads, lambda p: honest(run, phase, k, p, reply))
        return honest(run, phase, k, payloads, reply)

    jobs.fanout = fanout


def beta_reviews(fed, job_id: str, *, release: bool = True, reason: str = "") -> None:
    """alpha's result reaches beta's officer, who decides."""
    view = run_approving(fed, job_id, lambda v: bool(fed.nodes["beta"].reviews.list(
        "pending")))
    assert not view.status.stopped, (view.status, view.error)
    (review,) = fed.nodes["beta"].reviews.list("pending")
    officer_reviews(fed.nodes["beta"].reviews, review.review_id, release=release,
                    reason=reason)


def test_a_reviewed_contributors_officer_reviews_what_another_node_releases(routed):
    """beta's G4 cell asks its officer to review every output; alpha (a G3 node, which
    does not review) releases. Before contributors signed their cell's review in their
    attestations, alpha released beta's data unreviewed. Now beta's officer sees the
    result first: withheld, the researcher reads beta's reason and nothing is sealed."""
    job_id = routed.submit(JOB)
    beta_reviews(routed, job_id, release=False, reason="salaries of a small department")
    view = routed.wait(job_id)
    assert view.status == JobStatus.WITHHELD, (view.status, view.error)
    assert view.error == ("node beta: the result was withheld by the officer of node beta "
                          "(officer, officer): salaries of a small department"), view.error
    nothing_sealed(routed, job_id)


def test_a_coordinator_that_skips_the_reviewer_gets_nothing(routed):
    """The coordinator never sends beta its review task and asks alpha to seal anyway."""
    deviate(routed, TaskKind.REVIEW, lambda payloads, send: ({}, {}))
    job_id = routed.submit(JOB)
    view = run_approving(routed, job_id)
    assert view.status == JobStatus.FAILED, view
    assert "still waits for the output review of beta" in view.error, view.error
    nothing_sealed(routed, job_id)


def forged(fed, job_id: str, signer: str, statement: dict) -> dict:
    """A verdict of ``statement`` signed with ``signer``'s certificate key (a node's, or
    the coordinator's own), in the shape of a verdict."""
    from scifed.sealing import _RESULT_ALG, _VERDICT_DOMAIN, canonical_json

    if signer == "coordinator":
        key_path, cert = fed.ca_dir / "coordinator.key", fed.ca_dir / "coordinator.crt"
    else:
        tls = fed.nodes[signer].cfg.tls
        key_path, cert = tls.key, tls.cert
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    sig = key.sign(_VERDICT_DOMAIN + canonical_json(statement), ec.ECDSA(hashes.SHA256()))
    return {"statement": statement, "alg": _RESULT_ALG,
            "value": base64.b64encode(sig).decode(), "cert_pem": cert.read_text()}


@pytest.mark.parametrize("signer", ["coordinator", "gamma"])
def test_a_forged_verdict_releases_nothing(routed, signer):
    """The coordinator skips beta and hands alpha a verdict "release" of beta's it made
    itself: signed with its own certificate, or with a colluding member's (gamma)."""
    def fake(payloads, send):
        req = payloads["beta"]
        statement = {"job_id": req.job_id, "node": "beta", "release_node": "alpha",
                     "result_sha256": req.result_sha256, "decision": "release",
                     "review_id": "rv-0000000000", "reviewed_by": []}
        return {"beta": ReviewReply(verdict=forged(routed, req.job_id, signer,
                                                   statement))}, {}

    deviate(routed, TaskKind.REVIEW, fake)
    job_id = routed.submit(JOB)
    view = run_approving(routed, job_id)
    assert view.status == JobStatus.FAILED, view
    assert "verdict of beta is signed with the certificate of" in view.error, view.error
    nothing_sealed(routed, job_id)


def test_a_verdict_moved_from_another_job_releases_nothing(routed):
    """beta's officer released job 1's result; the coordinator keeps beta's signed
    verdict and hands it to alpha for job 2 instead of asking beta."""
    kept: dict = {}

    def keep(payloads, send):
        answers, failed = send(payloads)
        kept.update(answers)
        return answers, failed

    deviate(routed, TaskKind.REVIEW, keep)
    first = routed.submit(JOB)
    beta_reviews(routed, first)
    assert routed.wait(first).status == JobStatus.DONE
    deviate(routed, TaskKind.REVIEW, lambda payloads, send: (kept, {}))
    second = routed.submit(stats(columns=["age"], measures=["count", "mean"]))
    view = run_approving(routed, second)
    assert view.status == JobStatus.FAILED, view
    assert "verdict of beta is of job" in view.error, view.error
    nothing_sealed(routed, second)


def test_the_coordinator_cannot_erase_a_contributors_review_flag(routed):
    """The coordinator rewrites beta's attestation to say its cell asks for no review
    (it relays the attestations, so it can change their bytes, not their signature)."""
    deviate(routed, TaskKind.RELEASE, lambda payloads, send: send(
        {n: erase_flag(p) for n, p in payloads.items()}))
    job_id = routed.submit(JOB)
    view = run_approving(routed, job_id)
    assert view.status == JobStatus.FAILED, view
    assert "altered after beta signed it" in view.error, view.error
    nothing_sealed(routed, job_id)


def erase_flag(request: ReleaseRequest) -> ReleaseRequest:
    contributions = []
    for c in request.contributions:
        attestation = copy.deepcopy(c.attestation)
        attestation["statement"]["output_review"] = False
        contributions.append(c.model_copy(update={"attestation": attestation}))
    return request.model_copy(update={"contributions": contributions})


# -- one shell on the release node's host ---------------------------------------------
def refused(shell: AdminShell, request, needle: str) -> str:
    with pytest.raises(Refused) as exc:
        shell("ReviewDecide", request)
    assert needle in str(exc.value), str(exc.value)
    return str(exc.value)


def test_a_name_or_an_unregistered_key_releases_nothing(fed):
    job_id = fed.submit(JOB)
    review = held(fed, job_id)
    shell, reviews = AdminShell(fed, "alpha"), fed.nodes["alpha"].reviews
    refused(shell, pb.ReviewDecision(review_id=review.review_id, release=True, by="officer"),
            "must be signed with the approver's own key")
    registered = people(fed.nodes["alpha"].approvals)
    stranger = Approver("officer", "officer", new_key())  # signs as the officer, own key
    refused(shell, review_request(review.review_id, review_signed(
        reviews, stranger, review.review_id)), "differs from what was signed (key: signed")
    # ... and naming the officer's registered key in the statement it signs
    claimed = review_signed(reviews, registered["officer"], review.review_id)
    claimed["signature"] = sign_review(stranger.key, json.loads(claimed["statement"]))
    refused(shell, review_request(review.review_id, claimed),
            "does not verify with their registered key")
    nobody = Approver("mallory", "officer", new_key())
    refused(shell, review_request(review.review_id, review_signed(
        reviews, nobody, review.review_id)), "'mallory' is not a registered approver")
    # the security lead alone does not release a G4 result; a liaison never does
    refused(shell, review_request(review.review_id, review_signed(
        reviews, registered["security_lead"], review.review_id)),
        "released by the officer; the security lead's release counts from G5")
    liaison = register(fed.nodes["alpha"].approvals, "li", "liaison",
                       countersign=[registered["officer"], registered["security_lead"]])
    refused(shell, review_request(review.review_id, review_signed(
        reviews, liaison, review.review_id)), "a liaison may review results up to G3")
    assert reviews.get(review.review_id).state == "pending"
    nothing_sealed(fed, job_id)


def test_a_signature_for_another_job_result_or_kind_releases_nothing(fed):
    """The shell saw the officer release job 1's result (and sign an approval); it
    presents those signatures for job 2's held result, and a release of job 2 signed
    over another result's hash."""
    first = fed.submit(JOB)
    one = held(fed, first)
    second = fed.submit(stats(columns=["age"], measures=["count", "mean"]))
    two = held(fed, second)
    shell, core = AdminShell(fed, "alpha"), fed.nodes["alpha"]
    officer = people(core.approvals)["officer"]
    seen = review_signed(core.reviews, officer, one.review_id)
    refused(shell, review_request(two.review_id, seen), f"made for review '{one.review_id}'")
    # the statement rewritten for job 2 but the signature over job 1's: no
    forged = review_signed(core.reviews, officer, two.review_id)
    forged["signature"] = seen["signature"]
    refused(shell, review_request(two.review_id, forged), "does not verify")
    # a release signed over another result's hash (the one of job 1)
    other = json.loads(forged["statement"]) | {"result_sha256": one.result_sha256}
    refused(shell, review_request(two.review_id, {
        **forged, "statement": json.dumps(other), "signature": sign_review(officer.key, other)}),
        "for another result")
    # the very statement signed under another kind's domain (an approval decision's) is
    # no review decision, nor is the officer's signature of job 2's approval
    genuine = json.loads(review_signed(core.reviews, officer, two.review_id)["statement"])
    refused(shell, review_request(two.review_id, {**forged, "signature": sign(
        officer.key, genuine)}), "does not verify")
    approval = next(a for a in core.approvals.list() if a.job_id == second)
    refused(shell, review_request(two.review_id, {
        **forged, "signature": signed(core.approvals, officer, approval.approval_id)[
            "signature"]}), "does not verify")
    assert core.reviews.get(two.review_id).state == "pending"
    nothing_sealed(fed, second)
    # the genuine one releases job 1, once: replayed, it is refused
    officer_reviews(core.reviews, one.review_id)
    assert run_approving(fed, first).status == JobStatus.DONE
    refused(shell, review_request(one.review_id, seen), "already released")


def test_a_withheld_result_is_never_sealed(fed):
    """The officer withholds; the shell then signs a release with the officer's key, and
    the coordinator sends the release task again: neither gets the result out."""
    sent: list[ReleaseRequest] = []
    jobs = fed.coordinator.jobs
    honest = jobs.fanout

    def fanout(run, phase, kind, payloads, reply):
        if kind == TaskKind.RELEASE:
            sent.extend(payloads.values())
        return honest(run, phase, kind, payloads, reply)

    jobs.fanout = fanout
    job_id = fed.submit(JOB)
    review = held(fed, job_id)
    core = fed.nodes["alpha"]
    officer_reviews(core.reviews, review.review_id, release=False, reason="too detailed")
    view = fed.wait(job_id)
    assert view.status == JobStatus.WITHHELD
    assert view.error.endswith("withheld by the officer of node alpha (officer, officer): "
                               "too detailed"), view.error
    refused(AdminShell(fed, "alpha"), review_request(review.review_id, review_signed(
        core.reviews, people(core.approvals)["officer"], review.review_id)),
        "already withheld")
    with pytest.raises(UserError, match="refused at node alpha"):  # the job ended there
        jobs.send("alpha", TaskKind.RELEASE, sent[-1], ReleaseReply)
    nothing_sealed(fed, job_id)
    with core.store.tx() as con:  # what alpha kept as its answer: the reason, sealed
        kept = con.execute("SELECT output FROM job_answers WHERE job_id=? AND stage LIKE "
                           "'release:%'", (job_id,)).fetchall()
    assert kept and all(ReleaseReply.loads(r[0]).sealed is None for r in kept)
    assert all(ReleaseReply.loads(r[0]).withheld for r in kept)
