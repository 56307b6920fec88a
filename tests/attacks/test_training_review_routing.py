"""A deviating coordinator routes a training model around a contributor's output review —
through the real ServerApp, ClientApp and local API of every node
(tests/attacks/flower_rounds.py), the coordinator's own release request
(``jobs.train.coordinate.release_request``) and the release node's real task path.

Torgersen's cell asks for its officer's output review (an officer's override); Biscoe's
and Dream's do not. An aggregate job's release node reads that flag from each
contributor's signed attestation and has Torgersen's officer review first; a training
job's release node, before, decrypted the sums the coordinator handed it and read no
attestation: released at Biscoe, the model trained on Torgersen's penguins reached the
researcher unreviewed. Now the release node makes every round again from the attested
updates (node/round_updates.py ``verify_rounds``) and holds the model for Torgersen's
officer; and the coordinator can neither hide Torgersen's contributions, nor present
another attempt's, nor a model that is not the sum of the attested updates."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from flower_rounds import FEATURES, Rounds, task_header
from flower_rounds import coordinator_request as shared_request
from islands import EXACT, ISLANDS, island_federation, job

from harness.approvers import officer_approves, officer_reviews
from jobs.train.coordinate import ledgers
from jobs.train.protocol import average
from scifed.sealing import load_seal_key, open_result
from scifed.tasks import (
    ReleaseReply,
    ReleaseRequest,
    ReviewReply,
    ReviewRequest,
    TaskHeader,
    TaskKind,
)

FLAGGED, RELEASE_NODE = "torgersen", "biscoe"  # a node that does not ask for review
REVIEW = "output_review: true\n"


@pytest.fixture
def fed(tmp_path, penguins, penguins_meta):
    fed = island_federation(tmp_path, penguins, penguins_meta)
    rounds = None
    try:
        fed.pooled = penguins.dropna(subset=[*FEATURES, "species"])
        fed.run(job(EXACT))  # an aggregate job: every member opens its copy of the key
        rounds = fed.rounds = Rounds(fed, tmp_path / "flower")
        yield fed
    finally:
        if rounds is not None:
            rounds.close()
        fed.__exit__(None, None, None)


def flag(fed, node: str = FLAGGED) -> None:
    """``node``'s officer asks for output review of every result on its penguins."""
    core = fed.nodes[node]
    core.gate.policies.set(core.registry.get("penguins").record, REVIEW, "review.yaml",
                           "officer")


def approve_training(fed, job_id: str, node: str = FLAGGED) -> None:
    """A reviewed cell needs its officer's approval to train: the coordinator's check
    (`job.check`) asks for it, the officer approves, the check then passes."""
    job_dir = fed.rounds.prepare(job_id)
    check = header(fed, job_dir, node)
    waiting = send(fed, node, TaskKind.CHECK, check)
    assert "waiting" in waiting, waiting
    (pending,) = [a for a in fed.nodes[node].approvals.list("pending") if a.job_id == job_id]
    officer_approves(fed.nodes[node].approvals, pending.approval_id)
    assert "waiting" not in send(fed, node, TaskKind.CHECK, check)


def train(fed, job_id: str, **kw):
    """Train ``job_id`` over the three islands; its job directory and checkpoint."""
    job_dir = fed.rounds.tmp / job_id
    if not job_dir.exists():
        job_dir = fed.rounds.prepare(job_id, **kw)
    fed.rounds.serve(job_dir, fed.rounds.grid())
    checkpoint = json.loads((job_dir / "checkpoint.json").read_text())
    assert checkpoint["complete"] and checkpoint["active"] == sorted(ISLANDS), checkpoint
    return job_dir, checkpoint


def header(fed, job_dir, node: str) -> TaskHeader:
    """The task header the coordinator gives ``node`` for the job."""
    return task_header(fed, job_dir, node, len(ISLANDS))


def coordinator_request(fed, job_dir, checkpoint, node: str = RELEASE_NODE
                        ) -> ReleaseRequest:
    """The release request the coordinator's own code makes for ``node``."""
    return shared_request(fed, job_dir, checkpoint, node, list(ISLANDS))


def send(fed, node: str, kind: str, request):
    """One task through the coordinator's real session and link to ``node``: its reply
    payload (JSON), or the node's error."""
    result = fed.coordinator.sessions.send(node, kind, request.dumps()).result(120)
    return json.loads(result.payload) if result.ok else result.error


def refusal(fed, job_id: str, node: str = RELEASE_NODE) -> str:
    """The reason of ``node``'s latest refusal to release for the job (its audit log;
    the coordinator gets only "refused at node X", the researcher the sealed reason)."""
    from node.audit import AuditLog

    entries = [e for e in AuditLog(fed.nodes[node].store).entries()
               if e.action == "release.refuse" and e.details.get("job_id") == job_id]
    return entries[-1].details["reason"] if entries else ""


def refused(fed, job_id: str, request, needle: str) -> None:
    """The release node refuses ``request``: the researcher opens nothing, and the reason
    (in the node's audit log) says ``needle``."""
    answer = send(fed, RELEASE_NODE, TaskKind.RELEASE, request)
    released_unreviewed(fed, job_id, answer)
    assert answer == f"refused at node {RELEASE_NODE}", answer
    assert needle in refusal(fed, job_id), refusal(fed, job_id)


def model_of(fed, job_id: str, sealed: bytes) -> dict:
    document, _ = open_result(load_seal_key(fed.researcher_dir), sealed,
                              (fed.ca_dir / "ca.crt").read_bytes(), job_id=job_id)
    return document


def released_unreviewed(fed, job_id: str, answer) -> None:
    """Fail if the researcher opens the model from ``answer``."""
    if isinstance(answer, dict) and answer.get("sealed"):
        doc = model_of(fed, job_id, ReleaseReply.model_validate(answer).sealed)
        pytest.fail(f"the researcher opened job {job_id}'s model (round "
                    f"{doc['model']['round']}, trained by "
                    f"{', '.join(doc['meta']['contributors'])}), released by "
                    f"{RELEASE_NODE}: nobody reviewed it for {FLAGGED}, whose cell asks "
                    "for its officer's review")


def test_a_model_released_elsewhere_waits_for_the_flagged_contributors_officer(fed):
    """The coordinator routes the release of a model trained on Torgersen's penguins to
    Biscoe. The model goes to Torgersen first (sealed to it); Torgersen's officer sees
    it ("in output review"), releases it, and only then does Biscoe seal exactly that
    model to the researcher. No live metrics leave meanwhile."""
    flag(fed)
    approve_training(fed, "job-route")
    job_dir, checkpoint = train(fed, "job-route")
    request = coordinator_request(fed, job_dir, checkpoint)
    answer = send(fed, RELEASE_NODE, TaskKind.RELEASE, request)
    released_unreviewed(fed, "job-route", answer)
    assert isinstance(answer, dict), answer
    reply = ReleaseReply.model_validate(answer)
    assert reply.sealed is None and sorted(reply.reviews) == [FLAGGED], answer
    # live metrics of any round: refused while Torgersen's review is carried
    progress = request.model_copy(update={
        "stage": "progress", "round": 1,
        "rounds": ledgers(job_dir, checkpoint, through=1)})
    assert send(fed, RELEASE_NODE, TaskKind.RELEASE, progress) == "refused at node biscoe"
    assert "output review of contributor torgersen comes before" in refusal(fed, "job-route")
    review = ReviewRequest(**header(fed, job_dir, FLAGGED).model_dump(),
                           release_node=RELEASE_NODE, sealed=reply.reviews[FLAGGED],
                           result_sha256=reply.result_sha256)
    waiting = send(fed, FLAGGED, TaskKind.REVIEW, review)
    assert "in output review at node torgersen" in str(waiting), waiting
    (held,) = fed.nodes[FLAGGED].reviews.list("pending")
    assert held.job_id == "job-route" and held.job_type == "train"
    officer_reviews(fed.nodes[FLAGGED].reviews, held.review_id)
    verdict = ReviewReply.model_validate(send(fed, FLAGGED, TaskKind.REVIEW, review)).verdict
    final = ReleaseReply.model_validate(send(fed, RELEASE_NODE, TaskKind.RELEASE,
                                             request.model_copy(update={
                                                 "verdicts": {FLAGGED: verdict}})))
    doc = model_of(fed, "job-route", final.sealed)
    reviewed = json.loads(held.result)
    assert doc["model"] == reviewed["model"]  # what Torgersen's officer released
    assert doc["provenance"]["output_review"]["contributors"] == [FLAGGED]
    assert sorted(doc["provenance"]["attestations"]) == sorted(ISLANDS)
    # the released model is the sum of the three islands' updates of its round
    key = fed.nodes[RELEASE_NODE].studies.key(fed.study_id, 1)
    theta = average(key.decrypt((job_dir / checkpoint["model_files"][
        str(doc["model"]["round"])]).read_bytes()))
    np.testing.assert_allclose(released_theta(job_dir, doc), theta, rtol=1e-6, atol=1e-9)


def released_theta(job_dir, doc: dict) -> np.ndarray:
    """The parameters of the released model, as the researcher loads it."""
    import io

    import torch

    from jobs.spec import parse_job_dict
    from jobs.train import local
    from jobs.train.models import model_to_vector

    spec = parse_job_dict(json.loads((job_dir / "run.json").read_text())["job_spec"]).params
    model = local.initial_model(spec)
    model.load_state_dict(torch.load(io.BytesIO(base64.b64decode(
        doc["model"]["state_dict"])), weights_only=True))
    return model_to_vector(model)


def test_an_honest_job_without_a_flagged_node_is_released_at_once(fed):
    """No cell asks for review: the release node seals the model at once, with every
    round's attestations in its provenance; live metrics leave as before."""
    job_dir, checkpoint = train(fed, "job-plain")
    request = coordinator_request(fed, job_dir, checkpoint)
    reply = ReleaseReply.model_validate(send(fed, RELEASE_NODE, TaskKind.RELEASE, request))
    doc = model_of(fed, "job-plain", reply.sealed)
    assert "output_review" not in doc["provenance"] and not reply.reviews
    assert doc["meta"]["contributors_by_round"] == {"1": sorted(ISLANDS),
                                                    "2": sorted(ISLANDS)}
    progress = request.model_copy(update={
        "stage": "progress", "round": 2, "rounds": ledgers(job_dir, checkpoint, through=2)})
    assert ReleaseReply.model_validate(send(fed, RELEASE_NODE, TaskKind.RELEASE,
                                            progress)).sealed


# -- what the coordinator presents ------------------------------------------------------
def _ledger(request: ReleaseRequest, key: str) -> dict:
    return json.loads(request.rounds[key])


def _with(request: ReleaseRequest, key: str, ledger: dict) -> ReleaseRequest:
    return request.model_copy(update={"rounds": {**request.rounds,
                                                 key: json.dumps(ledger).encode()}})


def hide_flagged(request: ReleaseRequest, key: str) -> ReleaseRequest:
    """Torgersen's contribution (and seed, or answer to the view) left out of round
    ``key``'s record."""
    ledger = _ledger(request, key)
    ledger["contributions"].pop(FLAGGED)
    ledger["seeds"].pop(FLAGGED, None)
    ledger.get("view", {}).get("answers", {}).pop(FLAGGED, None)  # a set of three
    return _with(request, key, ledger)


def test_the_coordinator_hides_the_flagged_nodes_updates(fed):
    """Torgersen's updates left out of a round's record, of the final evaluation's (the
    task then names Biscoe and Dream only), or of every round: refused each time, no
    result; the masks of the others alone do not even cancel."""
    flag(fed)
    approve_training(fed, "job-hide")
    job_dir, checkpoint = train(fed, "job-hide")
    honest = coordinator_request(fed, job_dir, checkpoint)
    others = sorted(n for n in ISLANDS if n != FLAGGED)
    cases = {
        "round 1": hide_flagged(honest, "1"),
        "the final evaluation": hide_flagged(honest, "final").model_copy(
            update={"contributors": others}),
        "every round": hide_flagged(hide_flagged(hide_flagged(
            honest, "1"), "2"), "final").model_copy(update={"contributors": others}),
    }
    for request in cases.values():
        refused(fed, "job-hide", request, "names masked_with")


def test_the_coordinator_presents_another_attempt(fed):
    """Torgersen's round-2 reply is declared lost, so Biscoe and Dream make attempt 2
    without it; the coordinator presents attempt 1 of round 2 (all three, with the
    seeds of attempt 2) as the round that was used — or the survivors' attempt 2 as if
    it were round 1. Refused: the other attempt's sum is not the model the next round
    trained from (nor, for a set of three, unmasked by seeds), and the attestations name
    their round and attempt."""
    flag(fed)
    approve_training(fed, "job-attempt")
    job_dir = fed.rounds.tmp / "job-attempt"
    grid = fed.rounds.grid(lose=lambda s: s.node == FLAGGED and s.kind == "train"
                           and s.round == 2 and s.attempt == 1)
    fed.rounds.serve(job_dir, grid)
    checkpoint = json.loads((job_dir / "checkpoint.json").read_text())
    honest = coordinator_request(fed, job_dir, checkpoint)
    ledger = _ledger(honest, "2")
    first = {n: grid.updates(n, 2, attempt=1) for n in ISLANDS}
    from jobs.train.protocol import ARRAYS, METRICS, MODEL, blob_of
    swapped = {**ledger, "attempt": 1, "contributions": {
        n: {"ciphertexts": {v: base64.b64encode(blob_of(s.reply.content[ARRAYS], v)).decode()
                            for v in (METRICS, MODEL)},
            "attestation": json.loads(str(s.reply.content["status"]["attestation"]))}
        for n, s in first.items()},
        "seeds": {**ledger["seeds"], FLAGGED: ledger["seeds"][RELEASE_NODE]}}
    # attempt 1 was never unmasked (the survivors took attempt 2): no node answered a
    # view of it, and seeds do not unmask a set of three
    refused(fed, "job-attempt", _with(honest, "2", swapped),
            "a set of 3 is unmasked by the answers to a view")
    refused(fed, "job-attempt", _with(honest, "1", {**ledger, "round": 1}),
            "names round 2, not 1")
    # the honest run: Torgersen's round-1 update is in the model, so it still reviews
    reply = ReleaseReply.model_validate(send(fed, RELEASE_NODE, TaskKind.RELEASE, honest))
    assert sorted(reply.reviews) == [FLAGGED] and reply.sealed is None
    assert honest.contributors == sorted(n for n in ISLANDS if n != FLAGGED)


def test_the_coordinator_presents_a_model_that_is_not_the_attested_sum(fed, monkeypatch):
    """The coordinator trains round 2 of a job from another run's model (one that could
    hold any node's data) while presenting the job's own round 1; swaps one node's
    round-2 ciphertexts for those of round 1 (its attestation then names other bytes);
    or hands the release node pooled sums of its own making beside the rounds: refused."""
    from jobs.train import server_app

    other_dir, other = train(fed, "job-other")
    honest_arrays = server_app._model_and_metrics
    injected = honest_arrays((other_dir / other["model_files"]["2"]).read_bytes(),
                             (other_dir / other["metrics_files"]["2"]).read_bytes())
    monkeypatch.setattr(server_app, "_model_and_metrics", lambda model, metrics: injected)
    job_dir, checkpoint = train(fed, "job-fed")
    monkeypatch.setattr(server_app, "_model_and_metrics", honest_arrays)
    refused(fed, "job-fed", coordinator_request(fed, job_dir, checkpoint),
            "trained from another model than the sum of round 1's attested updates")
    job_dir, checkpoint = train(fed, "job-sum")
    honest = coordinator_request(fed, job_dir, checkpoint)
    ledger = _ledger(honest, "2")
    ledger["contributions"][RELEASE_NODE]["ciphertexts"] = \
        _ledger(honest, "1")["contributions"][RELEASE_NODE]["ciphertexts"]
    refused(fed, "job-sum", _with(honest, "2", ledger), "not the ones its attestation names")
    refused(fed, "job-sum", honest.model_copy(update={"aggregates": {"model.2": (
        job_dir / checkpoint["model_files"]["1"]).read_bytes()}}), "coordinator's making")
    # malformed or missing rounds: one message naming what is wrong
    without = {k: v for k, v in honest.rounds.items() if k != "1"}
    refused(fed, "job-sum", honest.model_copy(update={"rounds": without}),
            "are not rounds 1..R (got 2, final)")
    refused(fed, "job-sum", honest.model_copy(update={"rounds": {**honest.rounds,
                                                                 "2": b"[1, 2"}}),
            "the record of round 2 is malformed")
