"""An attacker's review of output review: each test is an attack through the real
pipeline (the in-memory federation of tests/attacks/test_output_review_attacks.py, the
real coordinator, nodes, release path and review queue), which succeeded before the
defence it names and fails now."""

from __future__ import annotations

import json

from test_output_review_attacks import (
    JOB,
    beta_reviews,
    deviate,
    nothing_sealed,
    routed,
    run_approving,
)

from node.approvals import Waiting
from node.audit import AuditLog
from scifed.errors import UserError
from scifed.sealing import load_seal_key, open_sealed, progress_context
from scifed.states import JobStatus
from scifed.tasks import ReleaseReply, ReviewReply, TaskKind

__all__ = ["routed"]  # the fixture, used by name


def test_a_release_relabelled_as_live_progress_skips_no_reviewer(routed):
    """beta's G4 cell asks its officer to review every output; alpha (G3, no review of
    its own) releases. The coordinator, colluding with the researcher, relays alpha's
    release task with ``stage: progress`` (the label of a training run's live metrics)
    before the honest one. Before, alpha decoded the pooled statistics, skipped the
    contributors' reviews (asked only at the final stage) and sealed the full result to
    the researcher as progress, which the researcher opened: beta's officer never saw
    it. Now alpha refuses a progress release where any contributor's attestation asks
    for review, and the job's result still waits for beta's officer."""
    leaked: list[dict] = []
    refusals: list[str] = []

    def relabel(payloads, send):
        answers, failed = send({n: p.model_copy(update={"stage": "progress"})
                                for n, p in payloads.items()})
        p = next(iter(payloads.values()))
        refusals.extend(str(f) for f in failed.values())
        for reply in answers.values():
            if reply.sealed:
                plain = open_sealed(load_seal_key(routed.researcher_dir), reply.sealed,
                                    context=progress_context(p.job_id, p.round))
                leaked.append(json.loads(plain))
        return send(payloads)

    deviate(routed, TaskKind.RELEASE, relabel)
    job_id = routed.submit(JOB)
    view = run_approving(routed, job_id, lambda v: bool(routed.nodes["beta"].reviews.list(
        "pending")) or bool(leaked))
    assert not leaked, ("the researcher opened the pooled result unreviewed: "
                        f"{leaked[0]['columns']}")
    assert refusals == ["refused at node alpha"], refusals  # the reason is sealed
    assert [e.details["reason"] for e in AuditLog(routed.nodes["alpha"].store).entries()
            if e.action == "release.refuse" and e.details.get("job_id") == job_id] == [
        f"node alpha releases nothing for job {job_id}: the output review of contributor "
        "beta comes before any result leaves, so no live metrics are released; only the "
        "final result, once reviewed"]
    assert not view.status.stopped, (view.status, view.error)
    assert routed.nodes["beta"].reviews.list("pending"), "beta's officer sees the result"
    nothing_sealed(routed, job_id)
    assert routed.coordinator.jobs.get(job_id, routed.researcher).status != JobStatus.DONE


def test_another_release_node_after_a_withholding_gets_no_second_review(routed):
    """beta's officer withholds the result alpha releases. The coordinator, seeing the
    withheld verdict, does not end the job: it hands the very same release task to gamma
    (a member, which holds the study key too) and relays gamma's copy of the result to
    beta as a fresh review. Before, beta opened a second review of the job it had
    withheld, for its officer to decide again (a release there let gamma seal the
    result). Now beta's withholding stands for the job, whichever node asks: beta
    answers a withheld verdict at once and opens no second review."""
    jobs = routed.coordinator.jobs
    releases: list = []
    shopped: list = []

    def keep(payloads, send):
        releases.extend(payloads.values())
        return send(payloads)

    def shop(payloads, send):
        answers, failed = send(payloads)
        verdict = answers.get("beta") and answers["beta"].verdict["statement"]
        if verdict and verdict["decision"] == "withhold" and not shopped:
            reply = jobs.send("gamma", TaskKind.RELEASE, releases[0], ReleaseReply)
            again = payloads["beta"].model_copy(update={
                "release_node": "gamma", "sealed": reply.reviews["beta"],
                "result_sha256": reply.result_sha256})
            try:
                shopped.append(jobs.send("beta", TaskKind.REVIEW, again, ReviewReply))
            except (Waiting, UserError) as exc:
                shopped.append(exc)
        return answers, failed

    deviate(routed, TaskKind.RELEASE, keep)
    deviate(routed, TaskKind.REVIEW, shop)
    job_id = routed.submit(JOB)
    beta_reviews(routed, job_id, release=False, reason="salaries of a small department")
    assert routed.wait(job_id).status == JobStatus.WITHHELD
    reviews = routed.nodes["beta"].reviews
    assert not reviews.list("pending"), "beta's officer is asked again about a withheld job"
    (answer,) = shopped
    assert isinstance(answer, ReviewReply), answer
    assert answer.verdict["statement"]["decision"] == "withhold"
    assert answer.verdict["statement"]["release_node"] == "gamma"
    nothing_sealed(routed, job_id)
