"""A member of the study reads another node's contribution — through the real pipeline.

Every member holds the study key, so the release node (which decrypts) or the coordinator
with any one member could open any node's ciphertext. Each contribution is therefore
masked under the encryption for the set of nodes summed (node/masking.py,
scifed/masks.py): alone, or in a sum over part of the set, it decrypts to residues uniform
in [0, t). Before the masks, each attack here read the victim's row count and sum of
body mass exactly (seen on the code before them).
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
from islands import EXACT, ISLANDS, island_federation, job, pair_mask, uniform

from coordinator import studies
from node.masking import REVEAL, open_shares, self_seed
from protos.scifed.v1 import federation_pb2 as pb
from scifed import he, masks, shamir
from scifed.errors import UserError
from scifed.he import PLAIN_MODULUS, open_for_members, sum_ciphertexts
from scifed.sealing import (
    load_seal_key,
    open_sealed,
    refusal_context,
)
from scifed.states import JobStatus
from scifed.tasks import TaskHeader, TaskKind, UnmaskReply, UnmaskRequest


@pytest.fixture
def fed(tmp_path, penguins, penguins_meta):
    fed = island_federation(tmp_path, penguins, penguins_meta)
    try:
        lead = studies.get_study(fed.coordinator.db, fed.study_id).lead_node
        fed.victim = next(n for n in ISLANDS if n != lead)
        fed.accomplice = next(n for n in ISLANDS if n not in (fed.victim,))
        fed.victim_rows = penguins[penguins.island == ISLANDS[fed.victim]]
        yield fed
    finally:
        fed.__exit__(None, None, None)


def capture(fed, kind: TaskKind = TaskKind.COMPUTE) -> dict[str, dict]:
    """What the coordinator receives in ``kind`` tasks: each node's reply, by job."""
    seen: dict[str, dict] = {}
    jobs = fed.coordinator.jobs
    honest = jobs.fanout

    def fanout(run, phase, k, payloads, reply):
        answers, failed = honest(run, phase, k, payloads, reply)
        if k == kind:
            seen.setdefault(run.job_id, {}).update(answers)
        return answers, failed

    jobs.fanout = fanout
    return seen


def member_key(fed, node: str):
    return fed.nodes[node].studies.key(fed.study_id, 1)


def steal(key, blob: bytes, fed) -> None:
    """Fail the test if ``blob`` opens to the victim's statistics."""
    try:
        values = key.decrypt(blob)
    except UserError:
        return
    pytest.fail(f"read {fed.victim}'s contribution: {values[0]:.0f} rows, Σ body_mass_g = "
                f"{values[4]:.1f} (it holds {len(fed.victim_rows)} rows, Σ = "
                f"{fed.victim_rows.body_mass_g.sum():.1f})")


def test_a_member_with_the_coordinator_reads_no_other_contribution(fed):
    """The coordinator hands the victim's ciphertext to an accomplice member (or the
    release node opens it itself): it decrypts to uniform residues, and removing the
    accomplice's own pairwise mask with the victim leaves them uniform."""
    seen = capture(fed)
    view, result = fed.run(job(EXACT))
    assert view.status == JobStatus.DONE, view.error
    replies = seen[view.job_id]
    key = member_key(fed, fed.accomplice)
    blob = replies[fed.victim].ciphertext
    steal(key, blob, fed)
    frame = he.parse(blob)
    residues = key.residues(frame)
    assert uniform(residues)
    context = "\0".join([view.job_id, "compute", "0", "1"]).encode()
    theirs = pair_mask(fed, context, residues.size)
    # the accomplice's mask towards the victim is the negation of the victim's towards it
    left = (residues + theirs) % np.uint64(PLAIN_MODULUS)
    assert uniform(left)
    with pytest.raises(UserError):
        he.decode(frame, left)
    # and a sum over two of the three (the coordinator leaving the third out) is uniform
    partial = sum_ciphertexts(key.public_bytes(), [replies[fed.victim].ciphertext,
                                                   replies[fed.accomplice].ciphertext])
    steal(key, partial, fed)
    assert uniform(key.residues(he.parse(partial)))


def test_the_release_node_refuses_a_sum_without_a_contributor(fed):
    """The coordinator drops the victim from the release task (contributors and
    contributions): the others masked for the victim too, so the release node refuses
    instead of releasing a sum whose difference from the full one is the victim's."""
    jobs = fed.coordinator.jobs
    honest = jobs.fanout

    def fanout(run, phase, kind, payloads, reply):
        if kind == TaskKind.RELEASE:
            payloads = {n: r.model_copy(update={
                "contributors": [c for c in r.contributors if c != fed.victim],
                "contributions": [c for c in r.contributions if c.node != fed.victim]})
                for n, r in payloads.items()}
        return honest(run, phase, kind, payloads, reply)

    jobs.fanout = fanout
    view = fed.wait(fed.submit(job(EXACT)))
    assert view.status == JobStatus.FAILED
    assert "names masked_with" in view.error and fed.victim in view.error, view.error


def drop_at_first_compute(fed) -> dict[str, dict]:
    """The coordinator declares the victim dropped after attempt 1 of the compute (while
    keeping its ciphertext, as a deviating one would). Returns every compute reply it
    received, by attempt."""
    with fed.coordinator.db.session() as s:  # the quorum alone would let the job go on
        s.get(studies.Study, fed.study_id).min_nodes = 2
    seen: dict[int, dict] = {}
    jobs = fed.coordinator.jobs
    honest = jobs.fanout

    def fanout(run, phase, kind, payloads, reply):
        answers, failed = honest(run, phase, kind, payloads, reply)
        if kind == TaskKind.COMPUTE:
            attempt = next(iter(payloads.values())).attempt
            seen[attempt] = dict(answers)
            if attempt == 1:
                answers.pop(fed.victim, None)
                failed[fed.victim] = f"node {fed.victim} did not answer within 60s"
        return answers, failed

    jobs.fanout = fanout
    # nor does it tell the victim the job ended (an honest one does, and the victim then
    # refuses every later task of the job, its reveal too)
    jobs._ended_without = lambda job_id: None
    return seen


def test_a_dropout_after_masking_leaves_the_sum_exact_over_the_survivors(fed, penguins):
    """Attempt 1 loses the victim; the survivors mask the same vectors afresh for each
    other (nothing computed or charged again) and the sum is exact over them."""
    seen = drop_at_first_compute(fed)
    view, result = fed.run(job(EXACT))
    assert view.status == JobStatus.DONE, view.error
    survivors = sorted(n for n in ISLANDS if n != fed.victim)
    assert sorted(view.contributors) == survivors and sorted(seen[2]) == survivors
    rows = penguins[penguins.island.isin([ISLANDS[n] for n in survivors])]
    got = result["columns"]["body_mass_g"]
    assert got["count"] == rows.body_mass_g.notna().sum()
    assert got["mean"] == pytest.approx(rows.body_mass_g.mean(), rel=1e-12)


def test_a_node_declared_dropped_stays_masked(fed):
    """The deviating coordinator keeps the victim's attempt-1 ciphertext. With an
    accomplice's study key: the attempt-1 sum over all three is uniform (the self-masks
    are never revealed for it: the survivors abandoned attempt 1), a survivor refuses to
    reveal attempt 1 after it took attempt 2, and the victim's own answer for attempt 1
    (it never heard of attempt 2: its shares of the others' self-mask seeds), with the
    accomplice's own shares, still leaves the victim's self-mask in the sum."""
    seen = drop_at_first_compute(fed)
    view, _ = fed.run(job(EXACT))
    assert view.status == JobStatus.DONE, view.error
    key = member_key(fed, fed.accomplice)
    first = seen[1]
    full = sum_ciphertexts(key.public_bytes(), [first[n].ciphertext for n in sorted(first)])
    steal(key, full, fed)
    residues = key.residues(he.parse(full))
    assert uniform(residues)
    everyone = sorted(ISLANDS)
    claims = fed.coordinator.jobs.seal_claims(everyone)

    def ask(node: str, task_id: str):
        header = next(t for t in fed.links[node].tasks if t.kind == TaskKind.RESERVE
                      and TaskHeader.loads(t.payload).job_id == view.job_id)
        request = UnmaskRequest(**TaskHeader.loads(header.payload).model_dump(), attempt=1,
                                contributors=everyone, masking=claims, shares={
                                    s: r.shares[node] for s, r in first.items()
                                    if node in r.shares})
        return fed.nodes[node].runner.handle(pb.Task(task_id=task_id, kind=TaskKind.UNMASK,
                                                     payload=request.dumps()))

    refused = ask(fed.accomplice, "reveal-1")
    assert not refused.ok
    reason = open_sealed(load_seal_key(fed.researcher_dir), refused.payload,
                         context=refusal_context(view.job_id, fed.accomplice)).decode()
    assert "abandoned attempt 1" in reason, reason
    revealed = ask(fed.victim, "reveal-2")
    assert revealed.ok, revealed.error
    opened = open_for_members(key, REVEAL, view.job_id,
                              UnmaskReply.loads(revealed.payload).sealed)
    assert sorted(opened["self"]) == sorted(n for n in everyone if n != fed.victim)
    # the accomplice's own shares (it opens its boxes) and its own seed
    header = TaskHeader.loads(next(t for t in fed.links[fed.accomplice].tasks
                                   if t.kind == TaskKind.RESERVE).payload)
    core = fed.nodes[fed.accomplice]
    publics = core.gate.masking_set(header, claims)
    own = open_shares(fed.accomplice, core.cfg.tls.key.parent, header, publics, 1,
                      {s: r.shares[fed.accomplice] for s, r in first.items()
                       if fed.accomplice in r.shares},
                      [n for n in everyone if n != fed.accomplice])
    order = everyone
    known = masks.self_mask(self_seed(core.gate.job_secret(view.job_id), header, 1),
                            residues.size)
    for other in (n for n in everyone if n not in (fed.victim, fed.accomplice)):
        seed = shamir.combine({order.index(fed.victim) + 1: base64.b64decode(
            opened["self"][other]), order.index(fed.accomplice) + 1: own[other]}, 2)
        known = masks.add(known, masks.self_mask(seed, residues.size))
    with pytest.raises(UserError):  # one share of the victim's seed: the accomplice's
        shamir.combine({order.index(fed.accomplice) + 1: own[fed.victim]}, 2)
    left = masks.subtract(residues, known)
    assert uniform(left)
    with pytest.raises(UserError):
        he.decode(he.parse(full), left)


def test_a_masking_set_without_the_node_or_with_a_forged_claim_is_refused(fed):
    """The coordinator asks the victim to mask for a set that leaves it out, or carries a
    claim under another node's name: the victim refuses before it computes anything."""
    jobs = fed.coordinator.jobs
    honest = jobs.fanout
    forge = {"mode": "without"}

    def fanout(run, phase, kind, payloads, reply):
        if kind == TaskKind.COMPUTE:
            r = payloads[fed.victim]
            masking = dict(r.masking)
            if forge["mode"] == "without":
                masking.pop(fed.victim)
            else:
                masking[fed.accomplice] = {**masking[fed.victim],
                                           "name": fed.accomplice}
            payloads = {**payloads, fed.victim: r.model_copy(update={"masking": masking})}
        return honest(run, phase, kind, payloads, reply)

    jobs.fanout = fanout
    view = fed.wait(fed.submit(job(EXACT)))
    assert view.status == JobStatus.FAILED
    assert "does not hold this node" in view.error, view.error
    forge["mode"] = "renamed"
    view = fed.wait(fed.submit(job(EXACT)))
    assert view.status == JobStatus.FAILED
    assert f"seal key claim of node {fed.accomplice!r}" in view.error, view.error
    assert not fed.nodes[fed.victim].gate.ledger.spent()


@pytest.mark.parametrize("shrink", ["alone", "with-the-accomplice"])
def test_a_masking_set_too_small_to_hide_a_contribution_is_refused(fed, shrink):
    """The coordinator asks the victim to mask for itself alone, or for itself and the
    accomplice only, and then to reveal its self-mask for that set: the accomplice would
    take off its own pairwise mask and the revealed self-mask and read the victim's exact
    statistics. Alone, the victim puts on its lone mask, which it never reveals (it would
    release such a sum itself), so the accomplice reads uniform residues. For a pair, the
    victim refuses to mask an exact contribution for a set its pooling rule would never
    release (two nodes of a study of three where its cell asks for three contributors),
    before it computes anything. (Where a cell allows min_contributors 2 in a study of
    two, its officer has allowed the other member to read its share.)"""
    if shrink == "with-the-accomplice":  # a cell that lets no two contributors pool
        core = fed.nodes[fed.victim]
        core.gate.policies.set(core.registry.get("penguins").record, "min_contributors: 3\n",
                               "three.yaml", "officer")
    jobs = fed.coordinator.jobs
    honest = jobs.fanout
    small = [fed.victim] if shrink == "alone" else sorted([fed.victim, fed.accomplice])
    got: dict[str, bytes] = {}

    def fanout(run, phase, kind, payloads, reply):
        if kind == TaskKind.COMPUTE:
            r = payloads[fed.victim]
            masking = {n: c for n, c in r.masking.items() if n in small}
            payloads = {**payloads, fed.victim: r.model_copy(update={"masking": masking})}
        answers, failed = honest(run, phase, kind, payloads, reply)
        if kind == TaskKind.COMPUTE and fed.victim in answers:
            got["blob"] = answers[fed.victim].ciphertext
            header = payloads[fed.victim]
            ask = UnmaskRequest(**TaskHeader.model_validate(
                {k: getattr(header, k) for k in TaskHeader.model_fields}).model_dump(),
                attempt=1, contributors=small)
            done = fed.nodes[fed.victim].runner.handle(
                pb.Task(task_id="reveal-small", kind=TaskKind.UNMASK, payload=ask.dumps()))
            if done.ok:
                got["seed"] = UnmaskReply.loads(done.payload).sealed
        return answers, failed

    jobs.fanout = fanout
    view = fed.wait(fed.submit(job(EXACT)))
    assert view.status == JobStatus.FAILED
    if "blob" in got:  # what the accomplice makes of it
        key = member_key(fed, fed.accomplice)
        frame = he.parse(got["blob"])
        residues = key.residues(frame)
        if len(small) == 2:
            context = "\0".join([view.job_id, "compute", "0", "1"]).encode()
            residues = masks.add(residues, pair_mask(fed, context, residues.size))
            if "seed" in got:
                from node.masking import revealed_masks
                residues = masks.subtract(residues, revealed_masks(
                    key, view.job_id, {fed.victim: got["seed"]}, [fed.victim], 1,
                    residues.size))
        try:
            values = he.decode(frame, residues)
        except UserError:
            values = None
        if values is not None and values[0] == len(fed.victim_rows):
            pytest.fail(f"read {fed.victim}'s contribution: {values[0]:.0f} rows, Σ "
                        f"body_mass_g = {values[4]:.1f} (it holds {len(fed.victim_rows)} rows)")
    if shrink == "alone":
        assert "blob" in got and "seed" not in got  # masked, and the mask never revealed
    else:
        assert "blob" not in got
        assert "so that no contributor can read another's share" in view.error, view.error
