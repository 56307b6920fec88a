"""A training round survives a node that drops after masking — through the real ServerApp,
ClientApp and local API of five nodes (tests/attacks/flower_rounds.py) and the release
node's real task path — and a coordinator that says a live node dropped learns nothing.

Five nodes hold the penguins (rows dealt round-robin), so t = ⌊5/2⌋ + 1 = 3 shares give a
self-mask seed back and four answering recover one dropout (node/masking.py); three nodes
survive none (t + 1 = 3 must answer). Before the t-of-n shares in training, each
contributor revealed its own self-mask seed: a node that answered the round and then gave
no seed failed the job (run on the code before: "round 1's sum cannot be unmasked: cat
gave no self-mask seed of attempt 1").
"""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
import yaml
from flower_rounds import FEATURES, Rounds, Seen, kept_updates, task_header
from flower_rounds import coordinator_request as shared_request
from islands import uniform

from harness.inmemory import InMemoryFederation
from jobs.train.client_app import grant_request
from jobs.train.protocol import ARRAYS, MODEL, REVEAL, average, blob_of
from jobs.train.server_app import TrainingFailed
from node.masking import REVEAL as SEALED_VIEW
from node.masking import open_shares, pair_seeds, round_self_seed, threshold
from protos.scifed.v1 import node_local_pb2 as pb
from protos.scifed.v1 import node_local_pb2_grpc as pbg
from scifed import he, masks, shamir
from scifed.errors import UserError
from scifed.he import seal_for_members
from scifed.sealing import load_seal_key, open_result
from scifed.tasks import ReleaseReply, ReleaseRequest, TaskHeader, TaskKind

NODES = ["ant", "bee", "cat", "dog", "eel"]
VICTIM, ACCOMPLICE, RELEASE_NODE = "cat", "ant", "bee"


@pytest.fixture
def fed(tmp_path, penguins, penguins_meta):
    fed = InMemoryFederation(tmp_path, NODES).__enter__()
    rounds = None
    try:
        rows = penguins.dropna(subset=[*FEATURES, "species"])
        fed.rows = {n: rows.iloc[i::len(NODES)] for i, n in enumerate(NODES)}
        for node in NODES:
            fed.add_dataset(node, fed.rows[node], penguins_meta, "penguins")
        fed.study_id = fed.create_study("penguins", {n: "penguins" for n in NODES},
                                        min_nodes=3)
        fed.pooled = rows
        fed.run(yaml.safe_dump({"study": "penguins", "type": "stats",  # opens the key
                                "datasets": {n: "penguins" for n in NODES},
                                "stats": {"columns": ["body_mass_g"]}}))
        rounds = fed.rounds = Rounds(fed, tmp_path / "flower", nodes=NODES)
        yield fed
    finally:
        if rounds is not None:
            rounds.close()
        fed.__exit__(None, None, None)


def checkpoint(job_dir) -> dict:
    return json.loads((job_dir / "checkpoint.json").read_text())


def key_of(fed, node: str = ACCOMPLICE):
    return fed.nodes[node].studies.key(fed.study_id, 1)


def assert_sum_of(fed, job_dir, job_id: str, round_no: int, nodes: list[str]) -> None:
    """Round ``round_no``'s model and metrics decrypt to the plain sum of ``nodes``'
    kept updates (exact in round 1, within one quantisation step each after)."""
    ck, key = checkpoint(job_dir), key_of(fed)
    plain = {n: kept_updates(fed, n, job_id, round_no) for n in nodes}
    for name, files in ((MODEL, ck["model_files"]), ("metrics", ck["metrics_files"])):
        total = key.decrypt((job_dir / files[str(round_no)]).read_bytes())
        expected = np.sum([plain[n][name].values for n in nodes], axis=0)
        vector = plain[nodes[0]][name]
        if vector.bound:
            step = 2 * vector.bound / he.top_level(vector.capacity)
            assert np.max(np.abs(total - expected)) <= len(nodes) * step, name
        else:
            np.testing.assert_allclose(total, expected, rtol=1e-12, atol=2.0**-26)


def header(fed, job_dir, node: str) -> TaskHeader:
    return task_header(fed, job_dir, node, len(NODES))


def coordinator_request(fed, job_dir) -> ReleaseRequest:
    """The release request the coordinator's own code makes."""
    return shared_request(fed, job_dir, checkpoint(job_dir), RELEASE_NODE, NODES)


def release(fed, job_dir, request: ReleaseRequest | None = None):
    """The release node's answer to the coordinator's own release request (or
    ``request``): its reply payload, or "refused at node X"."""
    if request is None:
        request = coordinator_request(fed, job_dir)
    result = fed.coordinator.sessions.send(RELEASE_NODE, TaskKind.RELEASE,
                                           request.dumps()).result(120)
    return request, (json.loads(result.payload) if result.ok else result.error)


def refusal(fed, job_id: str) -> str:
    from node.audit import AuditLog

    entries = [e for e in AuditLog(fed.nodes[RELEASE_NODE].store).entries()
               if e.action == "release.refuse" and e.details.get("job_id") == job_id]
    return entries[-1].details["reason"] if entries else ""


def released_model(fed, job_id: str, answer) -> dict:
    reply = ReleaseReply.model_validate(answer)
    assert reply.sealed, answer
    doc, _ = open_result(load_seal_key(fed.researcher_dir), reply.sealed,
                         (fed.ca_dir / "ca.crt").read_bytes(), job_id=job_id)
    return doc


@pytest.mark.parametrize("drops", ["in the reveal", "before its update arrives"])
def test_a_dropout_after_masking_leaves_the_round_exact_and_the_job_released(fed, drops):
    """The victim trains round 1 and masks its update; then either its unmask answer
    never comes (it is still summed: the others' shares take its self-mask off), or its
    update never comes (it is left out by the survivors' pairwise seeds with it, without a
    new attempt). The round's sum is the plain sum of the kept updates of the nodes
    summed, the run goes on without the victim, and the release node makes every round
    again from the ledgers and releases the model."""
    kind = REVEAL if drops == "in the reveal" else "train"

    def lost(seen: Seen) -> bool:
        return seen.node == VICTIM and seen.kind == kind and seen.round == 1

    job_id = "job-reveal" if kind == REVEAL else "job-lost"
    grid, job_dir = fed.rounds.run(job_id, min_nodes=3, lose=lost)
    ck = checkpoint(job_dir)
    survivors = [n for n in NODES if n != VICTIM]
    summed = NODES if kind == REVEAL else survivors
    assert ck["complete"] and ck["contributors"]["1"] == summed
    assert ck["attempts"]["1"] == {"attempt": 1, "set": NODES,  # no fresh attempt
                                   "view": {"contributors": summed,
                                            "dropped": [] if kind == REVEAL else [VICTIM]}}
    assert ck["contributors"]["2"] == survivors and VICTIM in ck["dropped"]
    assert grid.updates(VICTIM, 1).reply.content["status"]["ok"]  # it masked
    assert_sum_of(fed, job_dir, job_id, 1, summed)
    assert_sum_of(fed, job_dir, job_id, 2, survivors)
    # no node revealed its own self-mask seed: answers to the view only
    answers = [s for s in grid.seen if s.kind == REVEAL and s.round == 1]
    assert {s.node for s in answers} == set(summed)
    assert all(not s.reply.content["status"]["seed"] for s in answers)
    _, answer = release(fed, job_dir)
    doc = released_model(fed, job_id, answer)
    assert doc["meta"]["contributors_by_round"] == {"1": summed, "2": survivors}
    theta = average(key_of(fed).decrypt(
        (job_dir / ck["model_files"][str(doc["model"]["round"])]).read_bytes()))
    assert np.all(np.isfinite(theta))


def local_api(fed, node: str) -> pbg.NodeLocalStub:
    return pbg.NodeLocalStub(grpc.insecure_channel(f"unix:{fed.rounds.apis[node].path}"))


def test_a_live_node_declared_dropped_in_training_stays_masked(fed):
    """The coordinator keeps the victim's round-1 update and says it never came: the
    survivors give their pairwise seeds with it. It then asks each survivor for the view
    with the victim summed, for their shares of the victim's self-mask seed: each refuses
    a second view of the attempt. With the accomplice's key and share (1 of t = 3), the
    victim's update less every pairwise mask reads uniform — its self-mask, whose seed
    never left it, is on it still (taking that off, as the test can, gives its update)."""
    job_id = "job-declared"

    def kept_back(seen: Seen) -> bool:
        return seen.node == VICTIM and seen.kind == "train" and seen.round == 1

    grid, job_dir = fed.rounds.run(job_id, min_nodes=3, lose=kept_back, rounds=1)
    survivors = [n for n in NODES if n != VICTIM]
    assert checkpoint(job_dir)["contributors"]["1"] == survivors
    answers = {s.node: json.loads(str(s.reply.content["status"]["answer"]))
               for s in grid.seen if s.kind == REVEAL and s.round == 1
               and s.message.content.config_records["config"]["stage"] == "train"}
    assert sorted(answers) == survivors
    assert all(VICTIM in a["pair"] and VICTIM not in a["self"] for a in answers.values())
    # the second view, the victim summed: refused by every survivor
    shares = {s.node: json.loads(str(s.reply.content["status"]["shares"]))
              for s in grid.seen if s.kind == "train" and s.round == 1}
    for node in survivors:
        ask = grid.updates(node, 1).message
        with pytest.raises(grpc.RpcError) as exc:
            local_api(fed, node).RevealMask(pb.RevealMaskRequest(
                grant=grant_request(ask), stage="train", attempt=1, contributors=NODES,
                shares={s: base64.b64decode(b[node]) for s, b in shares.items()
                        if s != node},
                masking_json=str(ask.content.config_records["config"]["masking"])),
                timeout=30)
        assert "another view of attempt 1 of round 1" in exc.value.details(), node
    # everything the coordinator with the accomplice holds of the victim's masks
    key = key_of(fed)
    frame = he.parse(blob_of(grid.updates(VICTIM, 1).reply.content[ARRAYS], MODEL))
    residues = key.residues(frame)
    towards = np.zeros(residues.size, dtype=np.uint64)  # the survivors' masks to it
    for node, a in answers.items():
        stream = masks.stream(base64.b64decode(a["pair"][VICTIM]), residues.size, MODEL)
        towards = masks.add(towards, masks.signed(stream, node, VICTIM))
    left = masks.add(residues, towards)  # the victim's pairwise masks are their negation
    assert uniform(left)
    with pytest.raises(UserError):
        he.decode(frame, left)
    # positive control: the victim's own self-mask is all that is left on it
    h = SimpleNamespace(job_id=job_id, key_version=1)
    seed = round_self_seed(fed.nodes[VICTIM].gate.job_secret(job_id), h, "train", 1, 1)
    plain = he.decode(frame, masks.subtract(left, masks.named_mask(seed, MODEL,
                                                                   residues.size)))
    np.testing.assert_allclose(plain, kept_updates(fed, VICTIM, job_id, 1)[MODEL].values,
                               rtol=1e-12, atol=2.0**-26)


def ledger(request: ReleaseRequest, key: str) -> dict:
    return json.loads(request.rounds[key])


def forged(request: ReleaseRequest, key: str, doc: dict) -> ReleaseRequest:
    return request.model_copy(update={"rounds": {**request.rounds,
                                                 key: json.dumps(doc).encode()}})


def test_the_release_node_refuses_a_ledger_of_another_view_or_forged_shares(fed):
    """Round 1 recovered the victim by shares (it dropped in the reveal). The coordinator
    then presents round 1 as summed without the victim (its update removed, the victim
    named dropped), the view answers of round 1 as round 2's, and — with a member's key —
    an answer whose share of the victim's seed was altered. The release node refuses each,
    then releases the honest ledgers."""
    job_id = "job-forge"
    grid, job_dir = fed.rounds.run(job_id, min_nodes=3, lose=lambda s: (
        s.node == VICTIM and s.kind == REVEAL and s.round == 1))
    honest = coordinator_request(fed, job_dir)

    def refused(request, needle: str) -> None:
        _, answer = release(fed, job_dir, request)
        assert answer == f"refused at node {RELEASE_NODE}", answer
        assert needle in refusal(fed, job_id), refusal(fed, job_id)

    one = ledger(honest, "1")
    assert one["view"]["dropped"] == [] and sorted(one["view"]["answers"]) == \
        [n for n in NODES if n != VICTIM]
    # another view: the victim's update taken out and the victim said dropped
    without = {**one, "contributions": {n: c for n, c in one["contributions"].items()
                                        if n != VICTIM},
               "view": {**one["view"], "dropped": [VICTIM]}}
    refused(forged(honest, "1", without), f"is not one {ACCOMPLICE} gave for attempt 1")
    # the attestations' set: drop the victim without naming it dropped
    refused(forged(honest, "1", {**without, "view": one["view"]}), "masked_with")
    # round 1's answers presented for round 2
    two = ledger(honest, "2")
    refused(forged(honest, "2", {**two, "view": {**two["view"],
                                                 "answers": one["view"]["answers"]}}),
            "of round 2 (train)")
    # an answer resealed with one share of the victim's seed altered (4 shares, t = 3)
    key = key_of(fed)
    from scifed.he import open_for_members
    opened = open_for_members(key, SEALED_VIEW, job_id,
                              base64.b64decode(one["view"]["answers"]["dog"]))
    share = bytearray(base64.b64decode(opened["self"][VICTIM]))
    share[-1] ^= 1
    opened["self"][VICTIM] = base64.b64encode(bytes(share)).decode()
    resealed = seal_for_members(key, SEALED_VIEW, job_id, opened)
    answers = {**one["view"]["answers"], "dog": base64.b64encode(resealed).decode()}
    refused(forged(honest, "1", {**one, "view": {**one["view"], "answers": answers}}),
            "do not agree")
    _, answer = release(fed, job_dir, honest)  # the honest ledgers: released
    released_model(fed, job_id, answer)


def test_a_coordinator_that_splits_a_rounds_views_cannot_have_both_kinds(fed):
    """Round 1, every update in: the coordinator tells the accomplice and bee that the
    victim dropped, for their pairwise seeds with it, and dog and eel that it is summed,
    for their shares of its self-mask seed. With the accomplice's own share that is
    t = 3 shares, so the victim's self-mask comes off; but dog's and eel's pairwise seeds
    with the victim never leave them (each node answers one view of an attempt), so its
    update still reads uniform. Positive control: the test, holding dog's and eel's keys,
    takes their masks off too and reads the victim's kept update. The ServerApp's own
    code then fails the round: two answers are to a view other than its own."""
    told_dropped = [ACCOMPLICE, "bee"]
    survivors = [n for n in NODES if n != VICTIM]

    def split(name: str, msg):
        cfg = msg.content.config_records.get("config")
        if (msg.metadata.message_type == REVEAL and name in told_dropped
                and cfg["stage"] == "train" and int(cfg["round"]) == 1):
            cfg["contributors"], cfg["dropped"] = json.dumps(survivors), json.dumps([VICTIM])
        return msg

    job_id = "job-split"
    job_dir = fed.rounds.prepare(job_id, min_nodes=3, rounds=1)
    grid = fed.rounds.grid()
    grid.rewrite = split
    with pytest.raises(TrainingFailed, match="ant, bee gave no answer to the unmask"):
        fed.rounds.serve(job_dir, grid)  # their answers are to another view than its own
    answers = {s.node: json.loads(str(s.reply.content["status"]["answer"]))
               for s in grid.seen if s.kind == REVEAL and s.round == 1
               and s.message.content.config_records["config"]["stage"] == "train"
               and s.reply.content["status"]["ok"]}
    assert sorted(answers) == NODES  # each node answered the one view it was shown
    assert {n for n, a in answers.items() if VICTIM in a["pair"]} == set(told_dropped)
    assert {n for n, a in answers.items() if VICTIM in a["self"]} == {"dog", "eel"}
    # everything the coordinator with the accomplice now holds of the victim's masks
    ask = grid.updates(VICTIM, 1).message
    masking = str(ask.content.config_records["config"]["masking"])
    h = task_header(fed, job_dir, ACCOMPLICE, len(NODES))
    core = fed.nodes[ACCOMPLICE]
    publics = core.gate.masking_set(h, json.loads(masking))
    boxes = {s.node: base64.b64decode(
        json.loads(str(s.reply.content["status"]["shares"]))[ACCOMPLICE])
        for s in grid.seen if s.kind == "train" and s.round == 1 and s.node != ACCOMPLICE}
    own_share = open_shares(ACCOMPLICE, core.cfg.tls.key.parent, h, publics, 1, boxes,
                            [VICTIM], round_of=("train", 1))[VICTIM]
    order = sorted(NODES)
    points = {order.index(n) + 1: base64.b64decode(answers[n]["self"][VICTIM])
              for n in ("dog", "eel")}
    points[order.index(ACCOMPLICE) + 1] = own_share
    assert len(points) == threshold(len(NODES))
    seed = shamir.combine(points, threshold(len(NODES)))  # the victim's self-mask seed
    key = key_of(fed)
    frame = he.parse(blob_of(grid.updates(VICTIM, 1).reply.content[ARRAYS], MODEL))
    residues = key.residues(frame)
    left = masks.subtract(residues, masks.named_mask(seed, MODEL, residues.size))

    def towards_victim(node: str, pair_seed: bytes):
        stream = masks.stream(pair_seed, residues.size, MODEL)
        return masks.signed(stream, node, VICTIM)  # what the victim's own mask negates

    for node in told_dropped:
        left = masks.add(left, towards_victim(node, base64.b64decode(
            answers[node]["pair"][VICTIM])))
    assert uniform(left)
    with pytest.raises(UserError):
        he.decode(frame, left)
    # positive control: dog's and eel's pairwise masks are all that is left on it
    for node in ("dog", "eel"):
        nh = task_header(fed, job_dir, node, len(NODES))
        (pair,) = pair_seeds(node, fed.nodes[node].cfg.tls.key.parent, nh,
                             fed.nodes[node].gate.masking_set(nh, json.loads(masking)), 1,
                             [VICTIM], round_of=("train", 1)).values()
        left = masks.add(left, towards_victim(node, pair))
    np.testing.assert_allclose(he.decode(frame, left),
                               kept_updates(fed, VICTIM, job_id, 1)[MODEL].values,
                               rtol=1e-12, atol=2.0**-26)


class Crash(Exception):
    """The ServerApp's process dies here."""


def test_a_run_resumed_after_a_view_with_a_dropout_shows_the_same_view_again(fed):
    """Round 1: the victim's update never comes, the survivors are shown the view with
    the victim dropped, and the run dies once they answered it. The resumed run (every
    node online again, the victim replaying its update) keeps that view: the victim stays
    out, each survivor replays its answer, and the round's sum is the survivors' kept
    updates. Before, the resumed run made the view with the victim summed, which every
    survivor refused as a second view of the attempt, and the job failed."""
    job_id = "job-resume-view"
    survivors = [n for n in NODES if n != VICTIM]
    job_dir = fed.rounds.prepare(job_id, min_nodes=3)

    def first_run(seen: Seen) -> bool:
        if seen.kind == REVEAL and seen.round == 1 and seen.node == max(survivors):
            raise Crash  # every survivor answered the view (asked in name order)
        return seen.node == VICTIM and seen.kind == "train" and seen.round == 1

    first = fed.rounds.grid(lose=first_run)
    with pytest.raises(Crash):
        fed.rounds.serve(job_dir, first)
    assert checkpoint(job_dir)["attempts"]["1"]["view"] == {"contributors": survivors,
                                                            "dropped": [VICTIM]}
    again = fed.rounds.grid()
    fed.rounds.serve(job_dir, again, run_id=2)
    ck = checkpoint(job_dir)
    assert ck["complete"] and ck["resumed_after"] == [0]  # in round 1
    assert ck["contributors"]["1"] == survivors
    assert_sum_of(fed, job_dir, job_id, 1, survivors)
    shown = [s for s in again.seen if s.kind == REVEAL and s.round == 1
             and s.message.content.config_records["config"]["stage"] == "train"]
    assert sorted(s.node for s in shown) == survivors
    assert all(s.reply.content["status"]["ok"] for s in shown)
    _, answer = release(fed, job_dir)
    doc = released_model(fed, job_id, answer)
    assert doc["meta"]["contributors_by_round"]["1"] == survivors
