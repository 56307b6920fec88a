"""The officer's output review through the real driver and node runners (in memory):
a G4 stats job waits "in output review" at its release node, the officer sees exactly the
result that would leave and releases it (the researcher opens the same figures as pooled
pandas) or withholds it (the researcher reads the officer's reason, nothing is sealed);
a review waits across a coordinator restart, and its deadline withholds it.

The study: penguins split by island; biscoe (the study's lead, so its release node)
graded G4 CLOSED, whose cell asks for output review; dream and torgersen G3 CONDITIONAL,
whose cells do not."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
import yaml
from inmemory_cases import ISLANDS, stats_job
from test_driver import _coordinator_dies, _restart_coordinator

from harness.approvers import approving_until, officer_reviews
from harness.inmemory import InMemoryFederation
from scifed.errors import UserError
from scifed.states import JobStatus, TaskState

REVIEWER = "biscoe"
REPO = Path(__file__).resolve().parents[2]
MEASURES = ["body_mass_g", "bill_length_mm", "bill_depth_mm", "flipper_length_mm"]
JOB = stats_job(columns=["body_mass_g", "bill_length_mm"], measures=["count", "mean", "std"],
                group_counts=["species"])


def graded(meta: dict, grade: str, category: str) -> dict:
    """The penguin record at another cell, with what a G3+ record must carry."""
    example = yaml.safe_load((REPO / "configs" / "datasets" / "contraception.yaml")
                             .read_text())
    out = copy.deepcopy(meta)
    out.update({"security_grade": grade, "sharing_category": category,
                "grade_assessment": example["grade_assessment"],
                "approvals": example["approvals"],
                "conditions_of_use": [{"code": "research_only",
                                       "text": "Aggregate analyses inside approved studies."}]})
    return out


@pytest.fixture
def measured(penguins):
    """The penguins whose four measurements are all known (the two without any are left
    out: the query auditor refuses a count over all rows beside one over 2 fewer)."""
    return penguins.dropna(subset=MEASURES)


def reviewed_federation(root, measured, penguins_meta) -> InMemoryFederation:
    fed = InMemoryFederation(root, list(ISLANDS)).__enter__()
    for node, island in ISLANDS.items():
        cell = ("G4", "CLOSED") if node == REVIEWER else ("G3", "CONDITIONAL")
        fed.add_dataset(node, measured[measured.island == island],
                        graded(penguins_meta, *cell), "penguins")
    fed.create_study("penguins", {n: "penguins" for n in ISLANDS})
    return fed


@pytest.fixture
def fed(tmp_path, measured, penguins_meta):
    fed = reviewed_federation(tmp_path, measured, penguins_meta)
    yield fed
    fed.__exit__(None, None, None)


def until(fed, job_id: str, predicate, timeout: float = 60):
    """The job's view once ``predicate`` holds (it must not stop before); meanwhile each
    officer approves the job's requests (biscoe's G4 CLOSED cell holds every task)."""
    def ready(view) -> bool:
        assert predicate(view) or not view.status.stopped, (view.status, view.error)
        return predicate(view)

    return approving_until(fed, job_id, ready, timeout)


def in_review(view) -> bool:
    return view.phase.name == "in output review"


def sealed_anywhere(fed, job_id: str) -> list:
    """Every release record (``result.seal``) of the job at any node."""
    return [(n, e) for n, core in fed.nodes.items() for e in core.audit.entries()
            if e.action == "result.seal" and e.details.get("job_id") == job_id]


def test_a_g4_result_waits_for_the_officer_who_releases_what_pandas_computes(fed, measured):
    job_id = fed.submit(JOB)
    view = until(fed, job_id, in_review)
    # the researcher's view (GetJob and ListJobs): running, in output review
    assert view.status == JobStatus.RUNNING
    release = next(t for t in view.tasks if t.phase == "release")
    assert (release.node, release.state) == (REVIEWER, TaskState.WAITING)
    assert "in output review at node biscoe" in release.detail
    (listed,) = [j for j in fed.coordinator.jobs.list_jobs(fed.researcher)
                 if j.job_id == job_id]
    assert listed.phase.name == "in output review"
    # nothing left: the coordinator holds no result, no node sealed one
    with pytest.raises(UserError, match="has no result"):
        fed.coordinator.jobs.sealed_result(job_id, fed.researcher)
    assert not sealed_anywhere(fed, job_id)

    reviews = fed.nodes[REVIEWER].reviews
    (held,) = reviews.list("pending")
    shown = reviews.show(held.review_id)
    assert (shown["job_id"], shown["researcher"], shown["grade"], shown["category"]) == (
        job_id, fed.researcher, "G4", "CLOSED")
    assert "output review" in shown["why"] and shown["spec"]["stats"]["group_counts"] == [
        "species"]
    assert shown["checks"]["min_cell_count"] == 10
    summary = {r["column"]: r for r in shown["view"]["tables"]["summary"]}
    assert summary["body_mass_g"]["count"] == len(measured)
    assert shown["view"]["plots"] == {}  # a summary and group counts: no figure
    assert [d for d in fed.nodes[REVIEWER].audit.entries()
            if d.action == "review.request" and d.details["job_id"] == job_id]

    officer_reviews(reviews, held.review_id)
    view = fed.wait(job_id)
    assert view.status == JobStatus.DONE and view.phase.name == "released"
    res = fed.result_json(job_id)
    # exactly what the officer saw is what the researcher opened
    assert res == held.document()
    for col in ("body_mass_g", "bill_length_mm"):
        got = res["columns"][col]
        assert got["count"] == measured[col].count()
        assert got["mean"] == pytest.approx(measured[col].mean(), rel=1e-9)
        assert got["std"] == pytest.approx(measured[col].std(), rel=1e-9)
    groups = res["groups"]["species"]
    assert dict(zip(groups["values"], groups["counts"], strict=True)) == \
        measured.species.value_counts().to_dict()
    assert res["provenance"]["output_review"]["node"] == REVIEWER
    ((node, seal),) = sealed_anywhere(fed, job_id)
    assert node == REVIEWER and seal.details["review"] == "released"
    assert seal.details["reviewed_by"] == ["officer"]
    (decision,) = [e for e in fed.nodes[REVIEWER].audit.entries()
                   if e.action == "review.release" and e.details["job_id"] == job_id]
    assert decision.details["signature"] and decision.details["result_sha256"] == \
        held.result_sha256


def test_a_withheld_result_reaches_the_researcher_as_the_officers_reason(fed):
    job_id = fed.submit(JOB)
    until(fed, job_id, in_review)
    reviews = fed.nodes[REVIEWER].reviews
    (held,) = reviews.list("pending")
    officer_reviews(reviews, held.review_id, release=False,
                    reason="species counts single out the Gentoo colony")
    view = fed.wait(job_id)
    assert view.status == JobStatus.WITHHELD and view.phase.name == "withheld"
    assert view.error == ("node biscoe: the result was withheld by the officer of node "
                          "biscoe (officer, officer): species counts single out the Gentoo "
                          "colony"), view.error
    # the coordinator holds only "refused at node biscoe" and the sealed reason
    raw = fed.coordinator.jobs.get(job_id, fed.researcher)
    assert raw.error == "refused at node biscoe"
    with pytest.raises(UserError, match="withheld"):
        fed.coordinator.jobs.sealed_result(job_id, fed.researcher)
    assert not sealed_anywhere(fed, job_id)
    assert reviews.get(held.review_id).state == "withheld"


def test_the_review_waits_across_a_coordinator_restart(fed, measured):
    """The coordinator dies while the result waits for its officer; the new one re-runs
    the job, every node replays its answers, and the release finds the same review (no
    second one), which the officer then releases."""
    job_id = fed.submit(JOB)
    until(fed, job_id, in_review)
    core, old = _coordinator_dies(fed, job_id)
    _restart_coordinator(fed, core, old, task_timeout=30.0)
    for link in fed.links.values():
        link.connect()
    view = until(fed, job_id, in_review)
    assert view.status == JobStatus.RUNNING
    reviews = fed.nodes[REVIEWER].reviews
    (held,) = reviews.list()  # the one review, still pending
    assert held.state == "pending"
    officer_reviews(reviews, held.review_id)
    view = fed.wait(job_id)
    assert view.status == JobStatus.DONE
    res = fed.result_json(job_id)
    assert res["columns"]["body_mass_g"]["mean"] == pytest.approx(
        measured.body_mass_g.mean(), rel=1e-9)


def test_a_review_left_past_its_deadline_withholds_the_result(fed):
    fed.nodes[REVIEWER].reviews.deadline_ms = 300
    job_id = fed.submit(JOB)
    until(fed, job_id, lambda v: v.status.stopped or in_review(v))
    view = fed.wait(job_id)
    assert view.status == JobStatus.WITHHELD, view
    assert "the output review's deadline passed without a decision" in view.error
    (held,) = fed.nodes[REVIEWER].reviews.list()
    assert held.state == "expired"
    assert not sealed_anywhere(fed, job_id)


def test_every_contributor_whose_cell_asks_reviews_before_the_result_leaves(
        tmp_path, measured, penguins_meta):
    """All three islands at G4 CLOSED: biscoe's officer reviews as the release node, then
    the result goes sealed to dream and torgersen, whose officers each review exactly the
    same bytes; biscoe seals it to the researcher only once both verdicts say release."""
    fed = InMemoryFederation(tmp_path, list(ISLANDS)).__enter__()
    try:
        for node, island in ISLANDS.items():
            fed.add_dataset(node, measured[measured.island == island],
                            graded(penguins_meta, "G4", "CLOSED"), "penguins")
        fed.create_study("penguins", {n: "penguins" for n in ISLANDS})
        job_id = fed.submit(JOB)
        until(fed, job_id, in_review)
        (own,) = fed.nodes[REVIEWER].reviews.list("pending")
        officer_reviews(fed.nodes[REVIEWER].reviews, own.review_id)
        others = {}
        for node in ("dream", "torgersen"):
            deadline = time.monotonic() + 60
            while not fed.nodes[node].reviews.list("pending"):
                assert time.monotonic() < deadline and not fed.job(job_id).status.stopped
                time.sleep(0.05)
            (others[node],) = fed.nodes[node].reviews.list("pending")
            assert fed.job(job_id).phase.name == "in output review"
            assert not sealed_anywhere(fed, job_id)
        for node, review in others.items():  # the very result biscoe signed and holds
            assert review.result == own.result and review.result_sha256 == own.result_sha256
            assert "node biscoe releases the result" in review.why
            officer_reviews(fed.nodes[node].reviews, review.review_id)
        view = fed.wait(job_id)
        assert view.status == JobStatus.DONE, view.error
        res = fed.result_json(job_id)
        assert res == own.document()
        assert res["provenance"]["output_review"]["contributors"] == ["dream", "torgersen"]
        assert res["columns"]["body_mass_g"]["mean"] == pytest.approx(
            measured.body_mass_g.mean(), rel=1e-9)
    finally:
        fed.__exit__(None, None, None)


def test_the_officer_approves_and_withholds_with_the_cli(fed, tmp_path):
    """`scifed node approvals approve` and `scifed node review list|show|withhold --key`,
    run in this process against biscoe's real admin servicer on its Unix socket; the
    researcher then reads the reason the officer typed."""
    from concurrent import futures

    import grpc
    from typer.testing import CliRunner

    from cli.main import app
    from harness.approvers import register
    from node.admin import NodeAdminServicer
    from protos.scifed.v1 import node_admin_pb2_grpc as pbg
    from scifed.approver_keys import new_key, write_key
    from scifed.config import write_config
    from scifed.rpc import start_on_private_socket

    core, link = fed.nodes[REVIEWER], fed.links[REVIEWER]
    # what `node status` reads of a gRPC link (the CLI asks it for the node's name)
    link.connected, link.last_contact_ms, link.published_count = True, 0, 1
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pbg.add_NodeAdminServicer_to_server(NodeAdminServicer(
        core.registry, link, core.studies, core.approvals, reviews=core.reviews), server)
    start_on_private_socket(server, core.cfg.socket_path)
    try:
        config = tmp_path / "node.yaml"
        write_config(config, core.cfg)
        key, phrase = tmp_path / "keys" / "wang.key", tmp_path / "phrase"
        phrase.write_text("a passphrase of wang\n")
        person = new_key()
        write_key(key, person, b"a passphrase of wang")
        register(core.approvals, "wang", "officer", person)
        signing = ["--key", str(key), "--passphrase-file", str(phrase), "-c", str(config)]

        def cli(*args: str):
            out = CliRunner().invoke(app, ["node", *args, "--json"])
            assert out.exit_code == 0, out.output
            return json.loads(out.output)

        job_id = fed.submit(JOB)
        deadline = time.monotonic() + 60
        while not (asked := [a for a in cli("approvals", "list", "-c", str(config))
                             if a["job_id"] == job_id]):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        approved = cli("approvals", "approve", asked[0]["approval_id"], *signing)
        assert approved["state"] == "approved" and approved["signed_by"] == "wang"

        until(fed, job_id, in_review)  # dream and torgersen admit it automatically (G3)
        (listed,) = cli("review", "list", "-c", str(config))
        assert (listed["job_id"], listed["state"]) == (job_id, "pending")
        shown = cli("review", "show", listed["review_id"], "-c", str(config))
        assert shown["result_sha256"] == listed["result_sha256"]
        decided = cli("review", "withhold", listed["review_id"], "--reason",
                      "group counts too fine for this study", *signing)
        assert decided["state"] == "withheld" and decided["signed_by"] == "wang"
        view = fed.wait(job_id)
        assert view.status == JobStatus.WITHHELD
        assert view.error.endswith("(wang, officer): group counts too fine for this study")
    finally:
        server.stop(None)
