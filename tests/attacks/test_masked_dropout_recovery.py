"""A node that drops after the set is masked, and a coordinator that says a live node
dropped — through the real pipeline (driver, gate, release node, BFV, sealing).

Five nodes hold the penguins (rows dealt round-robin), so t = ⌊5/2⌋ + 1 = 3 shares give a
seed back and four survivors recover one dropout (node/masking.py). Before the t-of-n
shares, a node that did not answer the unmask failed the job ("its self-mask cannot be
removed from the sum"), and a node whose ciphertext never arrived cost a fresh attempt.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
import yaml
from islands import uniform

from harness.inmemory import InMemoryFederation
from node.masking import (
    REVEAL,
    compute_stage,
    mask_context,
    open_shares,
    recovered_masks,
    threshold,
)
from protos.scifed.v1 import federation_pb2 as pb
from scifed import he, masks, shamir
from scifed.errors import UserError
from scifed.he import PLAIN_MODULUS, open_for_members
from scifed.sealing import load_seal_key, open_sealed, refusal_context
from scifed.states import JobStatus
from scifed.tasks import TaskHeader, TaskKind, UnmaskRequest

NODES = ["ant", "bee", "cat", "dog", "eel"]
COLUMNS = ["body_mass_g", "bill_length_mm"]


def stats_job() -> str:
    return yaml.safe_dump({"study": "penguins", "type": "stats",
                           "datasets": {n: "penguins" for n in NODES},
                           "stats": {"columns": COLUMNS}}, sort_keys=False)


@pytest.fixture
def fed(tmp_path, penguins, penguins_meta):
    fed = InMemoryFederation(tmp_path, NODES).__enter__()
    try:
        fed.rows = {n: penguins.iloc[i::len(NODES)] for i, n in enumerate(NODES)}
        for node in NODES:
            fed.add_dataset(node, fed.rows[node], penguins_meta, "penguins")
        fed.study_id = fed.create_study("penguins", {n: "penguins" for n in NODES},
                                        min_nodes=3)
        fed.victim, fed.accomplice = "cat", "ant"
        yield fed
    finally:
        fed.__exit__(None, None, None)


def intercept(fed, change) -> dict:
    """Wrap the coordinator's fan-out: ``change(kind, payloads, answers, failed)`` may
    alter what a phase got; every answer is kept in ``seen[kind]``."""
    seen: dict = {}
    jobs = fed.coordinator.jobs
    honest = jobs.fanout

    def fanout(run, phase, kind, payloads, reply):
        answers, failed = honest(run, phase, kind, payloads, reply)
        change(kind, payloads, answers, failed)
        seen.setdefault(kind, {}).update(answers)
        seen.setdefault(f"{kind}:asked", {}).update(payloads)
        return answers, failed

    jobs.fanout = fanout
    jobs._ended_without = lambda job_id: None  # nor tells the dropped node the job ended
    return seen


def check_exact(result: dict, rows) -> None:
    """The released statistics are those of ``rows`` (pandas on the same rows)."""
    for col in COLUMNS:
        got = result["columns"][col]
        assert got["count"] == rows[col].notna().sum(), col
        assert got["mean"] == pytest.approx(rows[col].mean(), rel=1e-12), col


def pooled(fed, nodes):
    import pandas as pd
    return pd.concat([fed.rows[n] for n in nodes])


def test_a_node_that_drops_in_the_unmask_leaves_the_sum_exact(fed):
    """The victim's ciphertext is in, then it never answers the unmask: the others'
    shares of its self-mask seed take its self-mask off, and the sum is exact over every
    node whose ciphertext was summed (the victim's too: its officer released it)."""
    def change(kind, payloads, answers, failed):
        if kind == TaskKind.UNMASK and fed.victim in answers:
            answers.pop(fed.victim)
            failed[fed.victim] = f"node {fed.victim} did not answer within 60s"

    seen = intercept(fed, change)
    view, result = fed.run(stats_job())
    assert view.status == JobStatus.DONE, view.error
    assert sorted(view.contributors) == NODES
    assert set(seen[TaskKind.UNMASK]) == set(NODES) - {fed.victim}
    check_exact(result, pooled(fed, NODES))


def test_a_node_whose_ciphertext_never_arrives_leaves_the_sum_exact_over_the_survivors(fed):
    """The victim masks and answers, but its answer is lost: no fresh attempt, the
    survivors reveal their pairwise seeds with it (and shares of each other's self-mask
    seeds), and the sum is exact over the four survivors."""
    def change(kind, payloads, answers, failed):
        if kind == TaskKind.COMPUTE and fed.victim in answers:
            answers.pop(fed.victim)
            failed[fed.victim] = f"node {fed.victim} did not answer within 60s"

    seen = intercept(fed, change)
    view, result = fed.run(stats_job())
    assert view.status == JobStatus.DONE, view.error
    survivors = [n for n in NODES if n != fed.victim]
    assert sorted(view.contributors) == survivors
    asked = seen[f"{TaskKind.UNMASK}:asked"]
    assert all(r.dropped == [fed.victim] and r.attempt == 1 for r in asked.values())
    check_exact(result, pooled(fed, survivors))


def header_of(request) -> TaskHeader:
    return TaskHeader.model_validate({k: getattr(request, k) for k in TaskHeader.model_fields})


def ask_unmask(fed, template: UnmaskRequest, node: str, seen, contributors: list[str],
               dropped: list[str]) -> str | None:
    """Send ``node`` another view of attempt 1 (its share boxes and the set's claims as
    the honest unmask carried them); its refusal's reason (sealed to the researcher), or
    None where it answered."""
    boxes = {s: r.shares[node] for s, r in seen[TaskKind.COMPUTE].items() if node in r.shares}
    ask = UnmaskRequest(**header_of(template).model_dump(), attempt=1,
                        contributors=contributors, dropped=dropped, shares=boxes,
                        masking=template.masking)
    done = fed.nodes[node].runner.handle(pb.Task(task_id=f"view-{node}",
                                                  kind=TaskKind.UNMASK, payload=ask.dumps()))
    if done.ok:
        return None
    return open_sealed(load_seal_key(fed.researcher_dir), done.payload,
                       context=refusal_context(template.job_id, node)).decode()


def accomplice_view(fed, seen, template: UnmaskRequest, residues_size: int):
    """What the accomplice holds of the victim's masks by itself: its own share of the
    victim's self-mask seed (it opens its box) and its pairwise mask towards the victim."""
    core = fed.nodes[fed.accomplice]
    h = header_of(template)
    publics = core.gate.masking_set(h, template.masking)
    boxes = {s: r.shares[fed.accomplice] for s, r in seen[TaskKind.COMPUTE].items()
             if fed.accomplice in r.shares}
    share = open_shares(fed.accomplice, core.cfg.tls.key.parent, h, publics, 1, boxes,
                        [fed.victim])[fed.victim]
    own = load_seal_key(core.cfg.tls.key.parent)
    pair = masks.pairwise_mask(own, fed.accomplice, {fed.victim: publics[fed.victim]},
                               mask_context(h, compute_stage(1)), residues_size)
    return share, pair, publics


def test_a_live_node_declared_dropped_after_its_self_mask_shares_are_out_stays_masked(fed):
    """The coordinator runs the job honestly (every node answered shares of the victim's
    self-mask seed), keeps the victim's ciphertext, then says the victim dropped to get
    each survivor's pairwise seed with it: every honest node refuses the second view, so
    the coordinator with the accomplice takes off the victim's self-mask and the
    accomplice's pairwise mask, and reads uniform residues still."""
    seen = intercept(fed, lambda *a: None)
    view, result = fed.run(stats_job())
    assert view.status == JobStatus.DONE, view.error
    template = seen[f"{TaskKind.UNMASK}:asked"][fed.accomplice]
    survivors = [n for n in NODES if n != fed.victim]
    for node in survivors:
        if node != fed.accomplice:
            reason = ask_unmask(fed, template, node, seen, survivors, [fed.victim])
            assert reason is not None and "another view of attempt 1" in reason, reason
    key = fed.nodes[fed.accomplice].studies.key(fed.study_id, 1)
    frame = he.parse(seen[TaskKind.COMPUTE][fed.victim].ciphertext)
    residues = key.residues(frame)
    reveals = {n: r.sealed for n, r in seen[TaskKind.UNMASK].items()}
    self_mask = recovered_masks(key, view.job_id, reveals, NODES, [], 1, residues.size,
                                only=[fed.victim])
    _, pair, _ = accomplice_view(fed, seen, template, residues.size)
    left = masks.add(masks.subtract(residues, self_mask), pair)  # its mask is the negation
    assert uniform(left)
    with pytest.raises(UserError):
        he.decode(frame, left)


def test_a_coordinator_that_splits_the_views_cannot_have_both_kinds(fed):
    """The coordinator tells the accomplice and one honest node (bee) that the victim
    dropped, for their pairwise seeds with it, and the two others (dog, eel) that it is
    summed, for their shares of its seed. With the accomplice's own share that is
    t = 3 shares: the victim's self-mask comes off. But dog's and eel's pairwise seeds
    with the victim never leave them, so its ciphertext still reads uniform; the release
    node refuses the mixed answers (and the failed job ends every node's part in it)."""
    told_dropped = ["ant", "bee"]
    jobs = fed.coordinator.jobs
    seen = intercept(fed, lambda *a: None)
    honest = jobs.fanout
    asked: dict = {}

    def fanout(run, phase, kind, payloads, reply):
        if kind == TaskKind.UNMASK and not asked:
            survivors = [n for n in NODES if n != fed.victim]
            payloads = {n: (r.model_copy(update={"contributors": survivors,
                                                 "dropped": [fed.victim]})
                            if n in told_dropped else r)
                        for n, r in payloads.items() if n != fed.victim}
            asked.update(payloads)
        return honest(run, phase, kind, payloads, reply)

    jobs.fanout = fanout
    view = fed.wait(fed.submit(stats_job()))
    assert view.status == JobStatus.FAILED
    assert "is not one" in view.error, view.error  # the release node saw two views
    answered = seen[TaskKind.UNMASK]
    assert sorted(answered) == ["ant", "bee", "dog", "eel"]
    key = fed.nodes[fed.accomplice].studies.key(fed.study_id, 1)
    opened = {n: open_for_members(key, REVEAL, view.job_id, r.sealed)
              for n, r in answered.items()}
    assert {n for n, o in opened.items() if fed.victim in o["pair"]} == set(told_dropped)
    assert {n for n, o in opened.items() if fed.victim in o["self"]} == {"dog", "eel"}
    # everything the coordinator with the accomplice now holds of the victim's masks
    frame = he.parse(seen[TaskKind.COMPUTE][fed.victim].ciphertext)
    residues = key.residues(frame)
    share, pair, _ = accomplice_view(fed, seen, asked["dog"], residues.size)
    order = sorted(NODES)
    points = {order.index(n) + 1: base64.b64decode(opened[n]["self"][fed.victim])
              for n in ("dog", "eel")}
    points[order.index(fed.accomplice) + 1] = share
    assert len(points) == threshold(len(NODES))
    seed = shamir.combine(points, threshold(len(NODES)))  # the victim's self-mask seed
    left = masks.subtract(residues, masks.self_mask(seed, residues.size))
    left = masks.add(left, pair)
    bee = base64.b64decode(opened["bee"]["pair"][fed.victim])
    bee_stream = masks.residues(bee, residues.size)  # bee's mask towards the victim
    left = masks.add(left, bee_stream if "bee" < fed.victim else
                     (np.uint64(PLAIN_MODULUS) - bee_stream) % np.uint64(PLAIN_MODULUS))
    assert uniform(left)
    with pytest.raises(UserError):
        he.decode(frame, left)
