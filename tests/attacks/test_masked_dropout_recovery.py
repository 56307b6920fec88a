"""A node that drops after the set is masked, and a coordinator that says a live node
dropped — through the real pipeline (driver, gate, release node, BFV, sealing).

Five nodes hold the penguins (rows dealt round-robin), so t = ⌊5/2⌋ + 1 = 3 shares give a
seed back and four survivors recover one dropout (node/masking.py). Before the t-of-n
shares, a node that did not answer the unmask failed the job ("its self-mask cannot be
removed from the sum"), and a node whose ciphertext never arrived cost a fresh attempt.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from islands import uniform

from harness.inmemory import InMemoryFederation
from node.masking import REVEAL, recovered_masks, threshold
from scifed import he, masks
from scifed.errors import UserError
from scifed.he import open_for_members
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


def ask_unmask(fed, template: UnmaskRequest, node: str, seen, **update) -> object:
    """Send ``node`` an unmask task like ``template`` (another view of the attempt)."""
    compute = seen[TaskKind.COMPUTE]
    boxes = {s: r.shares[node] for s, r in compute.items() if node in r.shares}
    header = TaskHeader.model_validate({k: getattr(template, k)
                                        for k in TaskHeader.model_fields})
    ask = UnmaskRequest(**header.model_dump(), attempt=1,
                        contributors=update.get("contributors", template.contributors),
                        dropped=update.get("dropped", []), shares=boxes)
    from protos.scifed.v1 import federation_pb2 as pb
    return fed.nodes[node].runner.handle(pb.Task(task_id=f"view-{node}",
                                                  kind=TaskKind.UNMASK, payload=ask.dumps()))


def test_a_live_node_declared_dropped_after_its_self_mask_shares_are_out_stays_masked(fed):
    """The coordinator runs the job honestly (every node revealed shares of the victim's
    self-mask seed), keeps the victim's ciphertext, then says the victim dropped to get
    each survivor's pairwise seed with it: every node refuses the second view, so the
    accomplice holds the victim's self-mask but not all its pairwise masks."""
    seen = intercept(fed, lambda *a: None)
    view, result = fed.run(stats_job())
    assert view.status == JobStatus.DONE, view.error
    template = seen[f"{TaskKind.UNMASK}:asked"][fed.accomplice]
    others = [n for n in NODES if n != fed.victim]
    for node in others:
        if node == fed.accomplice:
            continue
        refused = ask_unmask(fed, template, node, seen, contributors=others,
                             dropped=[fed.victim])
        assert not refused.ok
    # what the coordinator with the accomplice can make of it: the victim's self-mask
    # (from the honest reveals) and the accomplice's own pairwise mask with the victim
    key = fed.nodes[fed.accomplice].studies.key(fed.study_id, 1)
    blob = seen[TaskKind.COMPUTE][fed.victim].ciphertext
    frame = he.parse(blob)
    residues = key.residues(frame)
    reveals = {n: r.sealed for n, r in seen[TaskKind.UNMASK].items()}
    own = recovered_masks(key, view.job_id, reveals, NODES, [], 1, residues.size,
                          only=[fed.victim])
    left = masks.subtract(residues, own)
    assert uniform(left)
    with pytest.raises(UserError):
        he.decode(frame, left)


def test_a_coordinator_that_splits_the_views_cannot_have_both_kinds(fed):
    """The coordinator tells the accomplice and one honest node that the victim dropped
    (for their pairwise seeds with it) and the other two that it is in the sum (for shares
    of its self-mask seed). Each honest node answers its one view: the victim's self-mask
    has 1 + 2 = 3 = t shares, but two survivors' pairwise seeds with the victim are never
    revealed, so its contribution stays masked; and each node refuses the other view."""
    split = {"dropped": ["ant", "bee"], "summed": ["dog", "eel"]}
    got: dict = {}

    def change(kind, payloads, answers, failed):
        if kind == TaskKind.UNMASK and not got:
            got["payloads"] = payloads

    seen = intercept(fed, change)
    jobs = fed.coordinator.jobs
    honest = jobs.fanout

    def fanout(run, phase, kind, payloads, reply):
        if kind == TaskKind.UNMASK and not got:
            survivors = [n for n in NODES if n != fed.victim]
            payloads = {n: (r.model_copy(update={"contributors": survivors,
                                                 "dropped": [fed.victim]})
                            if n in split["dropped"] else r)
                        for n, r in payloads.items() if n != fed.victim}
        return honest(run, phase, kind, payloads, reply)

    jobs.fanout = fanout
    view = fed.wait(fed.submit(stats_job()))
    assert view.status == JobStatus.FAILED  # the release node cannot unmask either view
    answered = seen[TaskKind.UNMASK]
    key = fed.nodes[fed.accomplice].studies.key(fed.study_id, 1)
    opened = {n: open_for_members(key, REVEAL, view.job_id, r.sealed)
              for n, r in answered.items()}
    pair_seeds = {n: o["pair"][fed.victim] for n, o in opened.items()
                  if fed.victim in o.get("pair", {})}
    assert set(pair_seeds) <= set(split["dropped"])  # dog and eel kept theirs
    assert len({n for n, o in opened.items() if fed.victim in o.get("self", {})}) \
        < threshold(len(NODES)) or len(pair_seeds) < len(NODES) - 1
    # the victim's ciphertext, less everything the coordinator with the accomplice holds
    blob = seen[TaskKind.COMPUTE][fed.victim].ciphertext
    frame = he.parse(blob)
    residues = key.residues(frame)
    try:
        own = recovered_masks(key, view.job_id, {n: answered[n].sealed for n in answered},
                              NODES, [], 1, residues.size, only=[fed.victim])
    except UserError:
        own = np.zeros(residues.size, dtype=np.uint64)
    assert uniform(masks.subtract(residues, own))
    # and every honest node keeps its one view of the attempt
    template = got["payloads"]["dog"]
    assert not ask_unmask(fed, template, "dog", seen,
                          contributors=[n for n in NODES if n != fed.victim],
                          dropped=[fed.victim]).ok
    assert not ask_unmask(fed, template, "bee", seen, contributors=NODES, dropped=[]).ok

