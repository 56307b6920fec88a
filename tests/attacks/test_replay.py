"""A deviating coordinator replays an old task (issue 12, item 9(d)), through the real
pipeline: the in-memory federation with the real driver, gate, release path and BFV.

The coordinator may resend any task message it ever sent (or could build from the
headers it sent), under the same or a new task id, at any time, and may restart. Each
attack below is such a resend of an *old* job's task, meant to get a second, different
answer under the job's id: the same compute after the node's dataset changed (the
difference of the two answers is the new row), the tasks of a job that was cancelled
(after the node restarted, which used to forget ended jobs), a release of a finished
job from other ciphertexts (another job's, or a sum leaving one node out, whose
difference from the genuine result is that node's exact share), a DP compute for fresh
noise, and an approved job's task with another spec. The rule that stops them: one job
id, one answer per node and stage. A node binds a job to the task it first took (its
spec, study, researcher, dataset) and the dataset version it read; it answers a retry
of the same task on the same version with the very same answer (so retries after a
coordinator crash keep working, and get nothing new), and refuses anything else under
that job id with one message naming the job, audited, nothing charged or released.
Ended jobs are remembered in node.db, across restarts.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest
from islands import EXACT, ISLANDS, NOISED, island_federation, job

from coordinator import studies
from harness.approvers import officer_approves
from harness.inmemory import InMemoryLink
from node.running import Stopped
from node.server import NodeCore
from protos.scifed.v1 import federation_pb2 as pb
from scifed.he import sum_ciphertexts
from scifed.sealing import load_seal_key, open_sealed, refusal_context, result_context
from scifed.states import JobStatus, TaskState
from scifed.tasks import (
    ComputeReply,
    ComputeRequest,
    ReleaseReply,
    ReleaseRequest,
    TaskHeader,
    TaskKind,
)

OTHER = {"columns": ["flipper_length_mm"]}
NEW_ROW_MASS = 6123.0  # the body mass of the penguin an officer adds to a dataset
SAID = "one job, one answer per node and stage"


@pytest.fixture
def fed(tmp_path, penguins, penguins_meta):
    fed = island_federation(tmp_path, penguins, penguins_meta)
    try:
        fed.seen = capture_answers(fed)
        fed.sent = {n: [] for n in ISLANDS}  # tasks a restarted node's old link brought
        yield fed
    finally:
        fed.__exit__(None, None, None)


# -- what the deviating coordinator holds and does ----------------------------------------
def capture_answers(fed) -> dict[str, dict[str, ComputeReply]]:
    """Every node's compute reply, by job and node (the coordinator receives them)."""
    seen: dict[str, dict[str, ComputeReply]] = {}
    jobs = fed.coordinator.jobs
    honest = jobs.fanout

    def fanout(run, phase, kind, payloads, reply):
        answers, failed = honest(run, phase, kind, payloads, reply)
        if kind == TaskKind.COMPUTE:
            seen.setdefault(run.job_id, {}).update(answers)
        return answers, failed

    jobs.fanout = fanout
    return seen


def sent(fed, node: str, kind: str, job_id: str) -> pb.Task:
    """The last task of ``kind`` of the job the coordinator sent ``node``."""
    tasks = [*fed.sent[node], *fed.links[node].tasks]
    return [t for t in tasks if t.kind == kind
            and json.loads(t.payload).get("job_id") == job_id][-1]


def resend(fed, node: str, kind: str, payload: bytes | str) -> pb.TaskResult:
    """Send a task again, under a new task id, through the real session and link."""
    raw = payload.encode() if isinstance(payload, str) else payload
    return fed.coordinator.sessions.send(node, kind, raw).result(30)


def release_node_of(fed, job_id: str) -> str:
    return next(n for n in ISLANDS if any(
        t.kind == TaskKind.RELEASE and json.loads(t.payload)["job_id"] == job_id
        for t in fed.links[n].tasks))


def total(fed, blobs: list[bytes]) -> bytes:
    """An encrypted sum, as the coordinator makes it with the study's public context."""
    return sum_ciphertexts(studies.get_study_public_context(fed.coordinator.db,
                                                            fed.study_id), blobs)


def opened(fed, job_id: str, result: pb.TaskResult) -> dict:
    """What the researcher reads of a release reply sealed to it under ``job_id``."""
    sealed = ReleaseReply.loads(result.payload).sealed
    return json.loads(open_sealed(load_seal_key(fed.researcher_dir), sealed,
                                  context=result_context(job_id)))


def add_a_row(fed, node: str, mass: float = NEW_ROW_MASS) -> str:
    """The node's officer adds one penguin to the dataset and registers the new version;
    returns the new version's sha256."""
    core = fed.nodes[node]
    path = core.cfg.data_dir / "penguins.csv"
    frame = pd.read_csv(path)
    row = frame.iloc[[0]].copy()
    row["body_mass_g"] = mass
    pd.concat([frame, row]).to_csv(path, index=False)
    core.registry.update("penguins", refresh_data=True)
    fed.links[node].sync()
    return core.registry.get("penguins").record["distributions"][0]["sha256"]


def restart(fed, node: str) -> None:
    """The node's process restarts on the same state directory (what it remembers is in
    node.db only) and its link connects again."""
    fed.sent[node].extend(fed.links[node].tasks)
    fed.links[node].disconnect()
    core = NodeCore(fed.nodes[node].cfg)
    fed.nodes[node] = core
    fed.links[node] = InMemoryLink(core, fed.coordinator)
    fed.links[node].connect()


def hold_for_approval(fed, node: str) -> dict:
    core = fed.nodes[node]
    record = core.registry.get("penguins").record
    core.gate.policies.set(record, "approval_required: true\n", "hold.yaml", "officer")
    return record


def wait_for(condition, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f}s for {what}")
        time.sleep(0.02)


def spent(core) -> float:
    return sum(s.epsilon for s in core.gate.ledger.spent() if s.researcher is None)


def actions(core, job_id: str, *names: str) -> list:
    return [e for e in core.audit.entries()
            if e.action in names and e.details.get("job_id") == job_id]


# -- the checks ---------------------------------------------------------------------------
def reason(fed, node: str, job_id: str, result: pb.TaskResult) -> str:
    """The refusal's reason, as the researcher opens it (the coordinator sees only
    "refused at node X")."""
    assert not result.ok
    assert result.payload, result.error
    assert fed.nodes[node].cfg.name in result.error and "refused" in result.error
    return open_sealed(load_seal_key(fed.researcher_dir), result.payload,
                       context=refusal_context(job_id, node)).decode()


def assert_replay_refused(fed, node: str, job_id: str, result: pb.TaskResult, why: str,
                          *, before: dict) -> None:
    """Refused with one message naming the job and the rule, the refusal audited once
    more at the node, and nothing released or charged since ``before``."""
    said = reason(fed, node, job_id, result)
    assert f"node {node} refuses a replay of job {job_id}: " in said, said
    assert why in said and SAID in said, said
    core = fed.nodes[node]
    refusals = actions(core, job_id, "task.replay")
    assert len(refusals) == before["replays"] + 1, refusals
    assert refusals[-1].details["reason"] == said
    assert len(actions(core, job_id, "task.release", "result.seal")) == before["released"]
    assert spent(core) == before["spent"]


def snapshot(fed, node: str, job_id: str) -> dict:
    core = fed.nodes[node]
    return {"replays": len(actions(core, job_id, "task.replay")),
            "released": len(actions(core, job_id, "task.release", "result.seal")),
            "spent": spent(core)}


# -- (1) an exact job's compute, replayed after the dataset changed -------------------------
def test_replayed_compute_after_the_dataset_changed_reveals_no_new_row(fed):
    """Job J ran; then the victim's officer adds one penguin (a new version). The
    coordinator resends J's compute task to the victim, swaps the fresh answer into J's
    sum and resends J's release task: the two signed results of J differ by exactly the
    new penguin."""
    view, before = fed.run(job(EXACT))
    j = view.job_id
    release_node = release_node_of(fed, j)
    victim = next(n for n in sorted(ISLANDS) if n != release_node)
    old_sha = fed.nodes[victim].registry.get("penguins").record["distributions"][0]["sha256"]
    new_sha = add_a_row(fed, victim)
    mark = snapshot(fed, victim, j)
    again = resend(fed, victim, TaskKind.COMPUTE, sent(fed, victim, TaskKind.COMPUTE, j).payload)
    if again.ok:
        fresh = ComputeReply.loads(again.payload).ciphertext
        contributors = sorted(fed.seen[j])
        pooled = total(fed, [fresh if n == victim else fed.seen[j][n].ciphertext
                             for n in contributors])
        request = ReleaseRequest.loads(sent(fed, release_node, TaskKind.RELEASE, j).payload)
        out = resend(fed, release_node, TaskKind.RELEASE,
                     request.model_copy(update={"aggregates": {"sum": pooled}}).dumps())
        if out.ok:
            after = opened(fed, j, out)
            a, b = after["columns"]["body_mass_g"], before["columns"]["body_mass_g"]
            up = a["mean"] * a["count"] - b["mean"] * b["count"]
            pytest.fail(f"job {j} was released twice: {after['rows'] - before['rows']} more "
                        f"row, Σ body_mass_g up by {up:.1f} (the penguin {victim}'s "
                        f"officer added weighs {NEW_ROW_MASS})")
        pytest.fail(f"{victim} answered job {j}'s compute again on the new version of its "
                    f"dataset (the release node refused: {out.error})")
    assert_replay_refused(fed, victim, j, again,
                          f"it took this job on version {old_sha[:16]}… of dataset "
                          f"penguins, which has changed since (now {new_sha[:16]}…)",
                          before=mark)
    # the new version answers new jobs as before
    fresh_view, fresh = fed.run(job(EXACT))
    assert fresh["rows"] == before["rows"] + 1


# -- (2) the tasks of a cancelled job, replayed after the node restarted -------------------
def test_replayed_tasks_of_a_cancelled_job_after_the_nodes_restarted(fed):
    """Dream holds job J for its officer; the researcher cancels it, and every node is
    told (J never computed anywhere). The nodes restart (the ended jobs used to be
    remembered in memory only). The coordinator sends J's compute to biscoe and
    torgersen and a release of their two contributions, claimed as all three nodes', to
    biscoe: an exact result of a cancelled job, pooled from two nodes of a three-member
    study (which the pooling rule exists to forbid)."""
    hold_for_approval(fed, "dream")
    j = fed.submit(job(EXACT))
    wait_for(lambda: any(a.job_id == j for a in fed.nodes["dream"].approvals.list("pending")),
             "dream to hold the job")
    fed.coordinator.jobs.cancel(j, fed.researcher)
    assert fed.wait(j).status == JobStatus.CANCELLED

    def told(node: str) -> bool:
        try:
            fed.nodes[node].gate.running.refuse_if_ended(j)
        except Stopped:
            return True
        return False

    wait_for(lambda: all(told(n) for n in ISLANDS), "every node to be told of the end")
    header = {n: TaskHeader.loads(sent(fed, n, TaskKind.RESERVE, j).payload) for n in ISLANDS}
    compute = {n: ComputeRequest(**header[n].model_dump()).dumps() for n in ISLANDS}
    late = resend(fed, "biscoe", TaskKind.COMPUTE, compute["biscoe"])
    assert not late.ok  # refused while the node still runs (memory)
    for node in ISLANDS:
        restart(fed, node)
    marks = {n: snapshot(fed, n, j) for n in ISLANDS}
    answers = {n: resend(fed, n, TaskKind.COMPUTE, compute[n]) for n in ("biscoe", "torgersen")}
    if all(a.ok for a in answers.values()):
        replies = {n: ComputeReply.loads(a.payload) for n, a in answers.items()}
        request = ReleaseRequest(
            **header["biscoe"].model_dump(), k=max(r.k for r in replies.values()),
            contributors=sorted(ISLANDS), dp={},
            aggregates={"sum": total(fed, [r.ciphertext for r in replies.values()])},
            min_contributors=max(r.min_contributors for r in replies.values()),
            study_members=len(ISLANDS))
        out = resend(fed, "biscoe", TaskKind.RELEASE, request.dumps())
        if out.ok:
            result = opened(fed, j, out)
            pytest.fail(f"cancelled job {j} was released after the restart: "
                        f"{result['rows']} rows of biscoe and torgersen only, signed as "
                        f"contributed by {', '.join(result['meta']['contributors'])}")
        pytest.fail(f"biscoe and torgersen computed cancelled job {j} after a restart "
                    f"(the release was refused: {out.error})")
    for node, answer in answers.items():
        assert_replay_refused(fed, node, j, answer, "it has ended (the job was cancelled "
                              "or failed", before=marks[node])


# -- (3) a finished job's release, replayed with other aggregates --------------------------
def leave_one_out(fed, j: str, release_node: str) -> tuple[bytes, str]:
    dropped = next(n for n in sorted(ISLANDS) if n != release_node)
    return (total(fed, [r.ciphertext for n, r in fed.seen[j].items() if n != dropped]),
            dropped)


def another_job(fed, j: str, release_node: str) -> tuple[bytes, str]:
    view, _ = fed.run(job(OTHER))
    request = ReleaseRequest.loads(sent(fed, release_node_of(fed, view.job_id),
                                        TaskKind.RELEASE, view.job_id).payload)
    # the release task carries the other job's contributions: the coordinator sums them
    return total(fed, [c.ciphertext for c in request.contributions]), view.job_id


@pytest.mark.parametrize("swap", [leave_one_out, another_job],
                         ids=["sum-leaving-one-node-out", "another-job-s-ciphertexts"])
def test_replayed_release_with_other_aggregates(fed, swap):
    """Job J was released. The coordinator resends J's release task with other pooled
    ciphertexts: J's sum without one node (the two signed results of J then differ by
    that node's exact share), or another job's sum (signed as J's result, under J's
    spec)."""
    view, genuine = fed.run(job(EXACT))
    j = view.job_id
    release_node = release_node_of(fed, j)
    task = sent(fed, release_node, TaskKind.RELEASE, j)
    request = ReleaseRequest.loads(task.payload)
    pooled, what = swap(fed, j, release_node)
    mark = snapshot(fed, release_node, j)
    out = resend(fed, release_node, TaskKind.RELEASE,
                 request.model_copy(update={"aggregates": {"sum": pooled}}).dumps())
    if out.ok:
        forged = opened(fed, j, out)
        g, f = genuine["columns"]["body_mass_g"], forged["columns"]["body_mass_g"]
        pytest.fail(f"job {j} was released again from other ciphertexts ({what}): "
                    f"{genuine['rows'] - forged['rows']} rows and Σ body_mass_g "
                    f"{g['mean'] * g['count'] - f['mean'] * f['count']:.1f} apart from the "
                    "genuine result")
    assert_replay_refused(fed, release_node, j, out,
                          "it released this job's final result from other pooled "
                          "ciphertexts", before=mark)
    # a retry of the genuine release task gets the same sealed answer, nothing new
    retry = resend(fed, release_node, TaskKind.RELEASE, task.payload)
    assert retry.ok, retry.error
    assert ReleaseReply.loads(retry.payload).sealed == \
        fed.coordinator.jobs.sealed_result(j, fed.researcher)
    assert len(actions(fed.nodes[release_node], j, "result.seal")) == 1


# -- (4) a DP job's compute, replayed for fresh noise --------------------------------------
def test_replayed_dp_compute_gets_no_fresh_noise_before_or_after_a_data_change(fed):
    """A DP job ran. Its compute, resent, gets the very answer it got (no second draw, no
    second charge). After the dataset changed, resent again: refused, charged nothing,
    rather than answered from either version."""
    view, _ = fed.run(job(NOISED))
    j = view.job_id
    victim = "dream"
    core = fed.nodes[victim]
    charged = spent(core)
    assert charged == 1.0
    task = sent(fed, victim, TaskKind.COMPUTE, j)
    again = resend(fed, victim, TaskKind.COMPUTE, task.payload)
    assert again.ok, again.error
    assert ComputeReply.loads(again.payload).ciphertext == fed.seen[j][victim].ciphertext
    assert spent(core) == charged
    add_a_row(fed, victim)
    mark = snapshot(fed, victim, j)
    after = resend(fed, victim, TaskKind.COMPUTE, task.payload)
    if after.ok:
        fresh = ComputeReply.loads(after.payload).ciphertext != fed.seen[j][victim].ciphertext
        pytest.fail(f"{victim} answered DP job {j}'s compute again after its dataset changed"
                    + (" with a fresh noisy answer" if fresh else
                       " (with the stored answer of the old version: no fresh draw, but "
                       "not refused either)"))
    assert_replay_refused(fed, victim, j, after, "which has changed since", before=mark)
    with core.store.tx() as con:
        assert con.execute("SELECT count(*) FROM budget_charges WHERE job_id=?",
                           (j,)).fetchone()[0] == 1


# -- (5) an approved job's task, replayed with another spec --------------------------------
def test_replayed_task_with_another_spec_under_an_approved_job_id(fed, penguins):
    """Dream's officer approved job J (body mass). The coordinator resends J's compute to
    dream with another spec — a filter down to one species — under J's id, whose
    approval dream finds by job id."""
    hold_for_approval(fed, "dream")
    j = fed.submit(job(EXACT))
    wait_for(lambda: any(a.job_id == j for a in fed.nodes["dream"].approvals.list("pending")),
             "dream to hold the job")
    (request,) = [a for a in fed.nodes["dream"].approvals.list("pending") if a.job_id == j]
    officer_approves(fed.nodes["dream"].approvals, request.approval_id)
    assert fed.wait(j).status == JobStatus.DONE
    task = ComputeRequest.loads(sent(fed, "dream", TaskKind.COMPUTE, j).payload)
    swapped = task.model_copy(update={"spec": {**task.spec, "filter": "species == 'Adelie'",
                                               "stats": OTHER}})
    mark = snapshot(fed, "dream", j)
    out = resend(fed, "dream", TaskKind.COMPUTE, swapped.dumps())
    if out.ok:
        pytest.fail(f"dream computed a spec its officer never approved under job {j}'s "
                    "approval")
    assert_replay_refused(fed, "dream", j, out, "its tasks here came with another spec, "
                          "study, researcher or dataset", before=mark)


# -- what must keep working ------------------------------------------------------------------
def test_a_retried_exact_compute_gets_the_same_answer_and_releases_nothing_new(fed):
    """A coordinator that crashed may send a task again: same task, same data, the
    very same ciphertext back, audited as a retry, no second release record."""
    view, _ = fed.run(job(EXACT))
    j = view.job_id
    core = fed.nodes["torgersen"]
    task = sent(fed, "torgersen", TaskKind.COMPUTE, j)
    again = resend(fed, "torgersen", TaskKind.COMPUTE, task.payload)
    assert again.ok, again.error
    assert ComputeReply.loads(again.payload).ciphertext == fed.seen[j]["torgersen"].ciphertext
    assert len(actions(core, j, "task.release")) == 1
    assert len(actions(core, j, "task.retry")) == 1
    assert not actions(core, j, "task.replay")
    assert all(t.state == TaskState.DONE for t in fed.job(j).tasks)


def test_ended_jobs_are_remembered_across_a_restart(fed):
    """The node's record of ended jobs is in node.db: a restarted node still refuses."""
    core = fed.nodes["biscoe"]
    core.gate.running.end("job-gone", "the job was cancelled or failed")
    restart(fed, "biscoe")
    with pytest.raises(Stopped, match="job job-gone has ended"):
        fed.nodes["biscoe"].gate.running.refuse_if_ended("job-gone")
    fed.nodes["biscoe"].gate.running.refuse_if_ended("job-other")
