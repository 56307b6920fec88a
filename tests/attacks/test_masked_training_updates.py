"""The coordinator, with one member's study key, reads another node's training update —
through the real ServerApp, ClientApp and local API (tests/attacks/flower_rounds.py).

Every member holds the study key (each decrypts the round's global model to train from
it), so before the masks the coordinator with any one member's key opened any node's
round update: round 1's exact ``[n·θ, n]`` gave the node's model and its training rows,
later rounds' quantised ``[w·θ, w]`` its model and share of the rows (seen on the code
before them: the victim's θ classified its own rows at 0.9+). Each update is now masked by
the node for the round's set of contributors (node/round_updates.py): alone, or summed
over part of the set, it decrypts to residues uniform in [0, t).
"""

from __future__ import annotations

import base64
import io
import json
import sqlite3

import grpc
import numpy as np
import pytest
import torch
from flower_rounds import FEATURES, Rounds, Seen, kept_updates
from islands import EXACT, ISLANDS, island_federation, job, pair_mask, uniform

from jobs.spec import parse_job_dict
from jobs.train import local
from jobs.train.client_app import grant_request
from jobs.train.models import vector_to_model
from jobs.train.protocol import ARRAYS, METRICS, MODEL, average, blob_of
from protos.scifed.v1 import node_local_pb2 as pb
from protos.scifed.v1 import node_local_pb2_grpc as pbg
from scifed import he, masks
from scifed.errors import UserError

CLASSES = ["Adelie", "Chinstrap", "Gentoo"]


@pytest.fixture
def fed(tmp_path, penguins, penguins_meta):
    fed = island_federation(tmp_path, penguins, penguins_meta)
    rounds = None
    try:
        fed.pooled = penguins.dropna(subset=[*FEATURES, "species"])
        fed.run(job(EXACT))  # an aggregate job: every member opens its copy of the key
        fed.victim, fed.accomplice = "dream", "biscoe"  # Dream: Adelie and Chinstrap
        fed.victim_rows = fed.pooled[fed.pooled.island == ISLANDS[fed.victim]]
        rounds = fed.rounds = Rounds(fed, tmp_path / "flower")
        yield fed
    finally:
        if rounds is not None:
            rounds.close()
        fed.__exit__(None, None, None)


def member_key(fed, node: str):
    return fed.nodes[node].studies.key(fed.study_id, 1)


def blob(seen: Seen, name: str = MODEL) -> bytes:
    return blob_of(seen.reply.content[ARRAYS], name)


def checkpoint(job_dir) -> dict:
    return json.loads((job_dir / "checkpoint.json").read_text())


def accuracy(fed, theta: np.ndarray, rows) -> float:
    """How well the model θ classifies ``rows`` (raw features: the model scales them)."""
    spec = parse_job_dict(json.loads(fed.job_spec)).params
    model = local.initial_model(spec)
    vector_to_model(model, theta)
    with torch.no_grad():
        pred = model(torch.tensor(rows[FEATURES].to_numpy(np.float32))).argmax(1).numpy()
    return float((np.array(CLASSES)[pred] == rows.species.to_numpy()).mean())


def steal(fed, key, ciphertext: bytes, round_no: int) -> None:
    """Fail the test if ``ciphertext`` opens to the victim's model. (Uniform residues
    may pass the quantised decoding's range check of a sum, so what fails the test is a
    model that classifies the victim's rows; the tests assert uniform residues too.)"""
    try:
        values = key.decrypt(ciphertext)
    except UserError:
        return
    theta = average(values) if values[-1] > 0 else None
    fit = accuracy(fed, theta, fed.victim_rows) if theta is not None else 0.0
    if fit >= 0.9:
        pytest.fail(f"read {fed.victim}'s round {round_no} update: weight {values[-1]:.3f} "
                    f"({len(fed.victim_rows)} rows), its θ classifies its own rows at "
                    f"{fit:.2f}")


def run(fed, job_id: str, **kw):
    """Train ``job_id`` (its spec kept for :func:`accuracy`)."""
    grid, job_dir = fed.rounds.run(job_id, **kw)
    fed.job_spec = json.dumps(json.loads((job_dir / "run.json").read_text())["job_spec"])
    return grid, job_dir


def test_a_member_with_the_coordinator_reads_no_round_update(fed):
    """The coordinator opens the victim's round updates (model and metrics, exact round 1
    and quantised round 2) with the accomplice's study key: uniform residues, also after
    the accomplice takes off its own pairwise mask with the victim. The round's sum still
    decrypts to the trained model. (An MLP: 259 parameters, so hundreds of slots for the
    uniformity test.)"""
    grid, job_dir = run(fed, "job-tm1", model={"kind": "mlp", "hidden": [32]})
    key = member_key(fed, fed.accomplice)
    for round_no in (1, 2):
        seen = grid.updates(fed.victim, round_no)
        for name in (MODEL, METRICS):
            steal(fed, key, blob(seen, name), round_no)
            frame = he.parse(blob(seen, name))
            residues = key.residues(frame)
            assert uniform(residues), (round_no, name)
            context = "\0".join(["job-tm1", "train#1", str(round_no), "1"])
            left = masks.add(residues, pair_mask(fed, context.encode(), residues.size, name))
            assert uniform(left), (round_no, name)
            with pytest.raises(UserError):
                he.decode(frame, left)
    # the sum of a round is the model all three trained: it classifies the pooled rows
    ck = checkpoint(job_dir)
    assert ck["contributors"] == {"1": sorted(ISLANDS), "2": sorted(ISLANDS)}
    theta = average(key.decrypt((job_dir / ck["model_file"]).read_bytes()))
    assert accuracy(fed, theta, fed.pooled) >= 0.9


@pytest.mark.parametrize("drop_round", [1, 2])
def test_a_dropout_after_masking_leaves_the_round_sum_exact_over_the_survivors(
        fed, drop_round):
    """The victim masks and answers attempt 1 of a round, and its reply never reaches the
    ServerApp. The survivors mask the updates they kept afresh for each other (attempt
    2), and the round's sum is the plain sum of their updates: exact in round 1's
    encoding, within the quantisation step of each in round 2's."""
    def lost(seen: Seen) -> bool:
        return (seen.node == fed.victim and seen.kind == "train"
                and seen.round == drop_round and seen.attempt == 1)

    job_id = f"job-drop{drop_round}"
    grid, job_dir = run(fed, job_id, lose=lost)
    survivors = sorted(n for n in ISLANDS if n != fed.victim)
    ck = checkpoint(job_dir)
    assert ck["contributors"][str(drop_round)] == survivors
    assert ck["attempts"][str(drop_round)] == {"attempt": 2, "set": survivors}
    assert grid.updates(fed.victim, drop_round).reply.content["status"]["ok"]  # it masked
    key = member_key(fed, fed.accomplice)
    kept = {n: kept_updates(fed, n, job_id, drop_round) for n in survivors}
    for name, file in ((MODEL, ck["model_files"][str(drop_round)]),
                       (METRICS, ck["metrics_files"][str(drop_round)])):
        total = key.decrypt((job_dir / file).read_bytes())
        expected = np.sum([kept[n][name].values for n in survivors], axis=0)
        vector = kept[survivors[0]][name]
        if vector.bound:  # stochastic rounding: each update within one level
            step = 2 * vector.bound / he.top_level(vector.capacity)
            assert np.max(np.abs(total - expected)) <= len(survivors) * step, name
        else:
            np.testing.assert_allclose(total, expected, rtol=1e-12, atol=2.0**-26)
    # the model the survivors trained (without the victim, no Chinstrap to learn)
    theta = average(key.decrypt((job_dir / ck["model_file"]).read_bytes()))
    rows = fed.pooled[fed.pooled.island.isin([ISLANDS[n] for n in survivors])]
    assert accuracy(fed, theta, rows) >= 0.9


def local_api(fed, node: str) -> pbg.NodeLocalStub:
    channel = grpc.insecure_channel(f"unix:{fed.rounds.apis[node].path}")
    return pbg.NodeLocalStub(channel)


def refused(call) -> str:
    with pytest.raises(grpc.RpcError) as exc:
        call()
    return exc.value.details()


def test_a_node_declared_dropped_stays_masked(fed):
    """The deviating coordinator keeps the victim's attempt-1 update of round 2 and
    declares it dropped. With the accomplice's key: the attempt-1 sum over all three is
    uniform (no self-mask of it is ever revealed: the survivors took attempt 2), a
    survivor refuses to reveal attempt 1 after that, and the victim's own reveal of
    attempt 1 (it never heard of attempt 2) leaves the others' self-masks in the sum."""
    grid, job_dir = run(fed, "job-kept", lose=lambda s: (
        s.node == fed.victim and s.kind == "train" and s.round == 2 and s.attempt == 1))
    key = member_key(fed, fed.accomplice)
    first = [blob(grid.updates(n, 2)) for n in sorted(ISLANDS)]
    full = he.sum_ciphertexts(key.public_bytes(), first)
    residues = key.residues(he.parse(full))
    assert uniform(residues)
    # attempt 1's sum less attempt 2's (the survivors' round-2 sum, unmasked): the
    # victim's update, were attempt 1 ever unmasked
    ck = checkpoint(job_dir)
    survivors = key.residues(he.parse((job_dir / ck["model_files"]["2"]).read_bytes()))
    difference = masks.subtract(residues, survivors)
    assert uniform(difference)
    victims = he.parse(full)
    with pytest.raises(UserError):
        he.decode(he.Frame(**{**victims.__dict__, "summands": 1}), difference)
    ask = grid.updates(fed.accomplice, 2).message
    reveal = pb.RevealMaskRequest(grant=grant_request(ask), stage="train", attempt=1,
                                  contributors=sorted(ISLANDS))
    why = refused(lambda: local_api(fed, fed.accomplice).RevealMask(reveal, timeout=30))
    assert "abandoned attempt 1 of round 2" in why, why
    # the victim never heard of attempt 2 and answers attempt 1's view: its shares of the
    # others' seeds, never its own seed (a set of three), so its update stays masked
    victim_ask = grid.updates(fed.victim, 2).message
    boxes = {n: base64.b64decode(json.loads(str(
        grid.updates(n, 2).reply.content["status"]["shares"]))[fed.victim])
        for n in ISLANDS if n != fed.victim}
    reply = local_api(fed, fed.victim).RevealMask(pb.RevealMaskRequest(
        grant=grant_request(victim_ask), stage="train", attempt=1,
        contributors=sorted(ISLANDS), shares=boxes,
        masking_json=str(victim_ask.content.config_records["config"]["masking"])),
        timeout=30)
    answer = json.loads(reply.answer_json)
    assert not reply.seed and reply.view
    assert sorted(answer["self"]) == sorted(n for n in ISLANDS if n != fed.victim)
    assert fed.victim not in answer["self"] and not answer["pair"]


def test_the_node_decides_the_set_it_masks_for(fed):
    """The coordinator asks the victim to mask round 1 for a set without it, for itself
    alone, or (attempt 1 again) for fewer nodes than it masked for; and to reveal its
    self-mask for a set it did not mask for. The node refuses each."""
    grid, _ = run(fed, "job-sets", rounds=1)
    message = grid.updates(fed.victim, 1).message
    cfg = message.content.config_records["config"]
    claims = json.loads(str(cfg["masking"]))
    update = io.BytesIO()
    np.save(update, np.ones(4))
    vectors = [pb.UpdateVector(name=METRICS, values=update.getvalue())]
    api = local_api(fed, fed.victim)

    def seal(masking: dict, attempt: int = 1) -> str:
        return refused(lambda: api.SealUpdate(pb.SealUpdateRequest(
            grant=grant_request(message), stage="train", attempt=attempt,
            masking_json=json.dumps(masking), vectors=vectors), timeout=30))

    without = {n: c for n, c in claims.items() if n != fed.victim}
    assert "does not hold this node" in seal(without)
    assert "for itself alone" in seal({fed.victim: claims[fed.victim]}, attempt=2)
    pair = {n: claims[n] for n in (fed.victim, fed.accomplice)}
    assert "masked attempt 1 of round 1 for other nodes" in seal(pair)
    forged = {**claims, fed.accomplice: {**claims[fed.victim], "name": fed.accomplice}}
    assert f"seal key claim of node {fed.accomplice!r}" in seal(forged, attempt=3)
    why = refused(lambda: api.RevealMask(pb.RevealMaskRequest(
        grant=grant_request(message), stage="train", attempt=1,
        contributors=sorted(pair)), timeout=30))
    assert "are not, once each, the set it masked for" in why, why


class Crash(Exception):
    """The SuperLink dies under the run (the coordinator then submits it again)."""


def answers(fed, node: str, job_id: str, stage: str) -> bytes | None:
    db = fed.nodes[node].cfg.state_dir / "node.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT output FROM job_answers WHERE job_id=? AND stage=?",
                          (job_id, stage)).fetchone()
    finally:
        con.close()
    return row[0] if row else None


@pytest.mark.parametrize("resumed_with", ["every node", "the victim offline"])
def test_a_resumed_run_repeats_the_attempt_of_the_same_set_or_takes_the_next(
        fed, resumed_with):
    """The run dies once every node answered attempt 1 of round 2, before the reveal. A
    run resumed with the same nodes repeats attempt 1 (each node replays its masked
    answer, byte for byte, and reveals for that set); one resumed with the victim offline
    takes attempt 2 among the others, who record that they abandoned attempt 1, and the
    victim's attempt 1 is never unmasked."""
    rounds, job_id = fed.rounds, f"job-resume-{resumed_with.split()[1]}"
    job_dir = rounds.prepare(job_id)

    def crash(seen: Seen) -> bool:
        if seen.kind == "train" and seen.round == 2 and seen.node == max(ISLANDS):
            raise Crash  # every node answered attempt 1 (they are asked in name order)
        return False

    first = rounds.grid(lose=crash)
    with pytest.raises(Crash):
        rounds.serve(job_dir, first)
    others = sorted(n for n in ISLANDS if n != fed.victim)
    again = rounds.grid(nodes=None if resumed_with == "every node" else others)
    rounds.serve(job_dir, again, run_id=2)
    ck = checkpoint(job_dir)
    assert ck["complete"] and ck["resumed_after"] == [1]
    if resumed_with == "every node":
        assert ck["attempts"]["2"] == {"attempt": 1, "set": sorted(ISLANDS), "view": {
            "contributors": sorted(ISLANDS), "dropped": []}}
        for node in ISLANDS:
            assert blob(again.updates(node, 2)) == blob(first.updates(node, 2)), node
        assert ck["contributors"]["2"] == sorted(ISLANDS)
    else:
        assert ck["attempts"]["2"] == {"attempt": 2, "set": others}
        assert ck["contributors"]["2"] == others and fed.victim in ck["dropped"]
        for node in others:
            assert answers(fed, node, job_id, "unmask.train#2#1") == b"abandoned", node
        assert answers(fed, fed.victim, job_id, "train#2#1") is not None  # it masked
        assert answers(fed, fed.victim, job_id, "unmask.train#2#1") is None  # never shown
