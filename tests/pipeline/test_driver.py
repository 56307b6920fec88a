"""The orchestration core on the in-memory link: the coordinator's job driver (fan-out,
quorum, approval wait, cancel, the release loop) and the node runner (routing, typed
payloads, refusals), through the real gate, release path and encryption."""

from __future__ import annotations

import threading
import time

import pytest
from inmemory_cases import ISLANDS, build, job_yaml, stats_job

from coordinator.db import Job, JobTask
from coordinator.studies import get_study
from harness.approvers import officer_approves
from protos.scifed.v1 import federation_pb2 as pb
from scifed.errors import UserError
from scifed.states import JobStatus, Phase, TaskState
from scifed.tasks import TaskHeader, TaskKind

PROBS = [0.0, 0.25, 0.5, 0.9, 1.0]


def tasks(fed, job_id: str) -> dict[tuple[str, str], JobTask]:
    with fed.coordinator.db.session() as s:
        rows = s.query(JobTask).filter(JobTask.job_id == job_id).all()
        return {(t.node_name, t.phase): t for t in rows}


def test_release_loop_runs_quantile_rounds_and_equals_pandas(fed, penguins):
    view, res = fed.run(stats_job(columns=["body_mass_g"], quantiles={"body_mass_g": PROBS},
                                  group_counts=["species"]))
    for p in PROBS:
        assert res["quantiles"]["body_mass_g"][str(p)] == pytest.approx(
            penguins.body_mass_g.quantile(p), rel=1e-9)
    assert res["columns"]["body_mass_g"]["mean"] == pytest.approx(penguins.body_mass_g.mean())
    assert dict(zip(res["groups"]["species"]["values"], res["groups"]["species"]["counts"],
                    strict=True)) == penguins.species.value_counts().to_dict()
    seen = tasks(fed, view.job_id)
    rounds = res["quantile_rounds"]
    # vocabulary, budget reservation, compute, the self-mask reveals once the set is final,
    # then `rounds` counting rounds at every node (the quantile search on its grids);
    # the release at one node
    assert {p for _, p in seen} == {"vocabulary", "reserve", "compute", "unmask", "release",
                                    *(f"round {r}" for r in range(1, rounds + 1))}
    assert all(t.state == TaskState.DONE for t in seen.values())
    assert len({n for n, p in seen if p == "release"}) == 1
    assert view.phase == Phase("released") and sorted(view.contributors) == sorted(ISLANDS)


def test_quorum_goes_on_without_an_offline_node_and_fails_below_it(tmp_path, penguins,
                                                                    penguins_meta):
    fed = build(tmp_path, penguins, penguins_meta, task_timeout=3)
    try:
        fed.create_study("two", {n: "penguins" for n in ISLANDS}, min_nodes=2)
        fed.links["torgersen"].disconnect()
        view, res = fed.run(stats_job("two", columns=["body_mass_g"]))
        assert view.contributors == ["biscoe", "dream"]
        assert res["rows"] == int(penguins.island.isin(["Biscoe", "Dream"]).sum())
        failed = tasks(fed, view.job_id)[("torgersen", "reserve")]
        assert failed.state == TaskState.FAILED and "offline" in failed.detail
        job_id = fed.submit(stats_job("penguins", columns=["body_mass_g"]))
        view = fed.wait(job_id)
        assert view.status == JobStatus.FAILED
        assert "only 2 of the 3 nodes the study needs answered" in view.error
        assert "torgersen offline" in view.error
    finally:
        fed.__exit__(None, None, None)


def test_a_sole_contributor_of_a_larger_job_runs_the_quantile_rounds_under_its_lone_mask(
        tmp_path, penguins, penguins_meta):
    """Two nodes offline in a study whose quorum is one: the survivor's compute and every
    counting round carry its lone mask (node/masking.py), which it takes off itself as
    the release node, and the result is its own rows' quantiles."""
    fed = build(tmp_path, penguins, penguins_meta, task_timeout=3)
    try:
        fed.create_study("one", {n: "penguins" for n in ISLANDS}, min_nodes=1)
        for node in ("dream", "torgersen"):
            fed.links[node].disconnect()
        view, res = fed.run(stats_job("one", columns=["body_mass_g"],
                                      quantiles={"body_mass_g": PROBS}))
        assert view.contributors == ["biscoe"]
        biscoe = penguins[penguins.island == "Biscoe"].body_mass_g
        assert res["rows"] == len(biscoe) and res["quantile_rounds"] >= 1
        for p in PROBS:
            assert res["quantiles"]["body_mass_g"][str(p)] == pytest.approx(
                biscoe.quantile(p), rel=1e-9)
        phases = {p for n, p in tasks(fed, view.job_id) if n == "biscoe"}
        assert "unmask" not in phases and "round 1" in phases  # nothing revealed
    finally:
        fed.__exit__(None, None, None)


def _hold_for_approval(fed, node: str) -> dict:
    core = fed.nodes[node]
    record = core.registry.get("penguins").record
    core.gate.policies.set(record, "approval_required: true\n", "hold.yaml", "officer")
    return record


def _release_hold(fed, node: str, record: dict) -> None:
    fed.nodes[node].gate.policies.reset(record, "officer")


def _waiting(fed, job_id: str, timeout: float = 10) -> JobTask:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = [t for t in tasks(fed, job_id).values() if t.state == TaskState.WAITING]
        if held:
            return held[0]
        time.sleep(0.02)
    raise AssertionError("the job never waited for approval")


def test_a_held_task_waits_for_the_officer_then_the_job_finishes(fed, penguins):
    record = _hold_for_approval(fed, "dream")
    try:
        job_id = fed.submit(stats_job(columns=["flipper_length_mm"]))
        held = _waiting(fed, job_id)
        assert held.node_name == "dream" and "waiting for approval at node dream" in held.detail
        assert fed.coordinator.jobs.get(job_id, "alice").status == JobStatus.RUNNING
        approvals = fed.nodes["dream"].approvals
        (request,) = [a for a in approvals.list("pending") if a.job_id == job_id]
        officer_approves(approvals, request.approval_id)
        view = fed.wait(job_id)
        assert view.status == JobStatus.DONE, view.error
        assert fed.result_json(job_id)["columns"]["flipper_length_mm"]["count"] == \
            penguins.flipper_length_mm.count()
    finally:
        _release_hold(fed, "dream", record)


def test_cancel_ends_a_waiting_job_and_withdraws_its_requests(fed):
    record = _hold_for_approval(fed, "biscoe")
    try:
        job_id = fed.submit(stats_job(columns=["flipper_length_mm"]))
        _waiting(fed, job_id)
        fed.coordinator.jobs.cancel(job_id, "alice")
        view = fed.wait(job_id)
        assert view.status == JobStatus.CANCELLED and view.error == "cancelled by alice"
        approvals = fed.nodes["biscoe"].approvals
        deadline = time.monotonic() + 5
        while [a for a in approvals.list("pending") if a.job_id == job_id]:
            assert time.monotonic() < deadline, "the request was not withdrawn"
            time.sleep(0.02)
        assert [a.state for a in approvals.list() if a.job_id == job_id] == ["withdrawn"]
        with pytest.raises(UserError, match="nothing to cancel"):
            fed.coordinator.jobs.cancel(job_id, "alice")
    finally:
        _release_hold(fed, "biscoe", record)


def _task(kind: str, payload: bytes) -> pb.Task:
    return pb.Task(task_id="t1", kind=kind, payload=payload)


def test_node_runner_routes_by_kind_and_refuses_what_it_cannot_read(fed):
    runner = fed.nodes["biscoe"].runner
    unknown = runner.handle(_task("job.teleport", b"{}"))
    assert not unknown.ok and "does not run 'job.teleport' tasks" in unknown.error
    malformed = runner.handle(_task(TaskKind.COMPUTE, b'{"job_id": 3}'))
    assert not malformed.ok and malformed.error.startswith("malformed ComputeRequest message")
    deep = b'{"spec": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for kind in (TaskKind.COMPUTE, TaskKind.VOCAB, TaskKind.RELEASE, TaskKind.KEYGEN):
        nested = runner.handle(_task(kind, deep))  # answered, never raised
        assert not nested.ok and len(nested.error) < 300, nested.error[:300]
    st = get_study(fed.coordinator.db, "penguins")
    spec = {"study": "penguins", "type": "stats", "datasets": {"biscoe": "penguins"},
            "stats": {"columns": ["body_mass_g"]}}
    header = TaskHeader(job_id="job-x", study_id=st.study_id, key_version=st.key_version,
                        job_type="quality", n_nodes=3, dataset="penguins", spec=spec)
    # a job task without the researcher's seal key (a coordinator that strips it) learns
    # only that the node refused; the reason stays in the node's log
    mismatch = runner.handle(_task(TaskKind.VOCAB, header.dumps()))
    assert not mismatch.ok and mismatch.error.startswith("refused at node biscoe")
    assert "quality" not in mismatch.error and not mismatch.payload
    outsider = header.model_copy(update={"job_type": "stats", "study_id": "st-nope"})
    refused = runner.handle(_task(TaskKind.VOCAB, outsider.dumps()))
    assert not refused.ok and "st-nope" not in refused.error


def test_dp_noises_each_contribution_and_charges_each_node_once(fed, penguins):
    bounds = {"body_mass_g": [2500, 6500]}
    view, res = fed.run(stats_job(columns=["body_mass_g"], dp={"epsilon": 1.0, "bounds": bounds}))
    exact = float(penguins.body_mass_g.sum())
    noisy = res["columns"]["body_mass_g"]["sum"]
    assert noisy != exact  # noise was added
    # ... of the scale each node reports: Laplace(b) has variance 2b²; 10 standard
    # deviations of the pooled noise bound it (a Laplace tail beyond that: < 1e-6)
    scales = [max(b["scale"] for b in report["blocks"]) for report in res["privacy"].values()]
    assert abs(noisy - exact) < 10 * sum(2 * b * b for b in scales) ** 0.5
    assert sorted(res["privacy"]) == sorted(ISLANDS)
    for node, core in fed.nodes.items():
        spent = [s for s in core.gate.ledger.spent() if s.researcher is None]
        assert [(s.epsilon, s.charges) for s in spent] == [(1.0, 1)], node


def _dp_job_held_at_dream(fed) -> tuple[dict, str]:
    """A DP job that biscoe and torgersen take while dream holds it for its officer."""
    record = _hold_for_approval(fed, "dream")
    spec = stats_job(columns=["body_mass_g"],
                     dp={"epsilon": 0.5, "bounds": {"body_mass_g": [2000, 7000]}})
    job_id = fed.submit(spec)
    _waiting(fed, job_id)
    return record, job_id


def _reservations(core, job_id: str) -> int:
    with core.store.tx() as con:
        return con.execute("SELECT count(*) FROM budget_reservations WHERE job_id=?",
                           (job_id,)).fetchone()[0]


def _spent(core) -> float:
    return sum(s.epsilon for s in core.gate.ledger.spent() if s.researcher is None)


def test_concurrent_dp_jobs_over_the_budget_leave_it_unspent_unless_released(tmp_path,
                                                                              penguins,
                                                                              penguins_meta):
    """Budget 1.5, two jobs of ε = 1 at the same time: at most one is released, and the
    budget is charged only for what was released (reserved everywhere first)."""
    fed = build(tmp_path, penguins, penguins_meta)
    try:
        for core in fed.nodes.values():
            record = core.registry.get("penguins").record
            core.gate.policies.set(record, "dp: {required: true, epsilon_per_query: 1.0, "
                                           "annual_budget: 1.5}\n", "dp.yaml", "officer")
        spec = stats_job(columns=["body_mass_g"], dp={"bounds": {"body_mass_g": [2000, 7000]}})
        jobs = [fed.submit(spec), fed.submit(spec)]
        views = [fed.wait(j) for j in jobs]
        done = [v for v in views if v.status == JobStatus.DONE]
        assert len(done) <= 1
        for core in fed.nodes.values():
            assert _spent(core) == pytest.approx(1.0 * len(done))
        failed = [v for v in views if v.status == JobStatus.FAILED]
        assert failed and all("privacy budget" in v.error for v in failed)
    finally:
        fed.__exit__(None, None, None)


def test_a_cancelled_dp_job_charges_nothing(fed):
    record = _hold_for_approval(fed, "dream")
    try:
        spec = stats_job(columns=["body_mass_g"],
                         dp={"epsilon": 0.5, "bounds": {"body_mass_g": [2000, 7000]}})
        before = {n: _spent(c) for n, c in fed.nodes.items()}
        job_id = fed.submit(spec)
        _waiting(fed, job_id)  # biscoe and torgersen have reserved; dream waits
        assert _reservations(fed.nodes["biscoe"], job_id) == 1
        fed.coordinator.jobs.cancel(job_id, "alice")
        assert fed.wait(job_id).status == JobStatus.CANCELLED
        deadline = time.monotonic() + 5
        while any(_reservations(c, job_id) for c in fed.nodes.values()):
            assert time.monotonic() < deadline, "reservations were not released"
            time.sleep(0.02)
        assert {n: _spent(c) for n, c in fed.nodes.items()} == before
    finally:
        _release_hold(fed, "dream", record)


def _coordinator_dies(fed, job_id: str):
    """Emulate a coordinator's death mid-job (as the restart test above): the streams
    close, the driver's thread stops without telling any node, the job stays running."""
    core, old = fed.coordinator, fed.coordinator.jobs
    for link in fed.links.values():
        link.disconnect()
    old._cancelled.add(job_id)
    deadline = time.monotonic() + 10
    while not old.get(job_id, "alice").status.stopped:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with core.db.session() as s:
        s.get(Job, job_id).status = JobStatus.RUNNING
    return core, old


def _compute_task(fed, node: str, job_id: str) -> pb.Task:
    """The compute task the dead coordinator was about to send (its header is the one
    of the reservation task it did send)."""
    from scifed.tasks import ComputeRequest

    reserve = next(t for t in fed.links[node].tasks if t.kind == TaskKind.RESERVE
                   and TaskHeader.loads(t.payload).job_id == job_id)
    header = TaskHeader.loads(reserve.payload)
    masking = fed.coordinator.jobs.seal_claims(sorted(fed.nodes))
    return pb.Task(task_id=f"{job_id}-late", kind=TaskKind.COMPUTE,
                   payload=ComputeRequest(**header.model_dump(), masking=masking).dumps())


def _restart_coordinator(fed, core, old, task_timeout: float = 1.0) -> None:
    import secrets

    from coordinator.driver import JobDriver

    core.link.instance = secrets.token_hex(8)  # a new process, a new instance id
    core.jobs = JobDriver(core.db, core.sessions, old.ca_pem, task_timeout=task_timeout,
                          approval_poll=0.05)


def _hold_at(core, kind: str, nth: int = 1):
    """Hold the node's ``nth`` task of ``kind`` until released: (held: set once it holds
    it, go: set it to let the task run)."""
    held, go = threading.Event(), threading.Event()
    inner, seen = core.runner.handlers[kind], []

    def handler(payload: bytes) -> bytes:
        seen.append(payload)
        if len(seen) == nth:
            held.set()
            go.wait(60)
        return inner(payload)

    core.runner.handlers[kind] = handler
    return held, go


def _restart_while_held(fed, job_id: str, held, go):
    """The coordinator dies while a node holds a task of the job; the task then runs
    (its result waits for the dead instance), and a new coordinator starts and the
    nodes reconnect. The new coordinator's driver."""
    assert held.wait(60), "the job never reached the held task"
    core, old = _coordinator_dies(fed, job_id)
    go.set()
    _restart_coordinator(fed, core, old, task_timeout=30.0)
    for link in fed.links.values():
        link.connect()
    return core.jobs


def _restarts(fed, job_id: str) -> int:
    with fed.coordinator.db.session() as s:
        return s.get(Job, job_id).restarts


def _job_audit(core, job_id: str, action: str) -> list:
    return [e for e in core.audit.entries() if e.action == action
            and e.details.get("job_id") == job_id]


def _result_body(res: dict) -> dict:
    """A released result without what names its job and release (id, time, signature)."""
    return {k: v for k, v in res.items() if k not in ("meta", "provenance", "signature")}


def test_a_restart_during_a_dp_compute_resumes_the_job_charging_each_node_once(
        tmp_path, penguins, penguins_meta):
    """The coordinator dies while biscoe computes a DP job's contribution; the new one
    re-runs the job by itself under the same id. Every node replays what it answered
    (biscoe's answer was stranded by the restart, and is sent now): each computes and
    draws its noise once, and is charged ε once."""
    fed = build(tmp_path, penguins, penguins_meta)
    try:
        bounds = {"body_mass_g": [2500, 6500]}
        held, go = _hold_at(fed.nodes["biscoe"], TaskKind.COMPUTE)
        job_id = fed.submit(stats_job(columns=["body_mass_g", "flipper_length_mm"],
                                      dp={"epsilon": 0.5, "bounds": {
                                          **bounds, "flipper_length_mm": [150, 250]}}))
        _restart_while_held(fed, job_id, held, go)
        view = fed.wait(job_id)
        assert view.status == JobStatus.DONE, view.error
        assert _restarts(fed, job_id) == 1 and sorted(view.contributors) == sorted(ISLANDS)
        res = fed.result_json(job_id)
        exact = float(penguins.body_mass_g.sum())
        scales = [max(b["scale"] for b in r["blocks"]) for r in res["privacy"].values()]
        assert abs(res["columns"]["body_mass_g"]["sum"] - exact) < 10 * sum(
            2 * b * b for b in scales) ** 0.5
        for node, core in fed.nodes.items():
            spent = [x for x in core.gate.ledger.spent() if x.researcher is None]
            assert [(x.epsilon, x.charges) for x in spent] == [(0.5, 1)], node
            assert len(_job_audit(core, job_id, "task.release")) == 1, node  # noised once
            assert not _job_audit(core, job_id, "budget.refund"), node
        retried = [e.details["stage"] for e in _job_audit(fed.nodes["biscoe"], job_id,
                                                          "task.retry")]
        assert "compute" in retried
    finally:
        fed.__exit__(None, None, None)


def test_a_restart_during_quantile_rounds_resumes_and_equals_pandas(tmp_path, penguins,
                                                                    penguins_meta):
    """The coordinator dies in the second counting round of an exact quantile search
    (with group counts: a vocabulary phase): the re-run gets the kept vocabulary,
    compute, first release step and first round from every node, so the release node
    continues from the same state, and the result is pooled pandas'."""
    fed = build(tmp_path, penguins, penguins_meta)
    try:
        held, go = _hold_at(fed.nodes["biscoe"], TaskKind.ROUND, nth=2)
        job_id = fed.submit(stats_job(columns=["body_mass_g"],
                                      quantiles={"body_mass_g": PROBS},
                                      group_counts=["species"]))
        _restart_while_held(fed, job_id, held, go)
        view = fed.wait(job_id)
        assert view.status == JobStatus.DONE, view.error
        assert _restarts(fed, job_id) == 1
        res = fed.result_json(job_id)
        for p in PROBS:
            assert res["quantiles"]["body_mass_g"][str(p)] == pytest.approx(
                penguins.body_mass_g.quantile(p), rel=1e-9)
        assert dict(zip(res["groups"]["species"]["values"],
                        res["groups"]["species"]["counts"], strict=True)) \
            == penguins.species.value_counts().to_dict()
        for core in fed.nodes.values():
            stages = {e.details["stage"] for e in _job_audit(core, job_id, "task.retry")}
            assert {"vocab", "compute", "round:1"} <= stages
            assert not _job_audit(core, job_id, "task.replay")
    finally:
        fed.__exit__(None, None, None)


def test_a_restart_during_a_quality_job_resumes_with_the_same_scorecard(tmp_path, penguins,
                                                                        penguins_meta):
    fed = build(tmp_path, penguins, penguins_meta)
    try:
        spec = job_yaml(study="penguins", type="quality",
                        datasets={n: "penguins" for n in ISLANDS},
                        quality={"target": "species"})
        _, straight = fed.run(spec)
        held, go = _hold_at(fed.nodes["dream"], TaskKind.COMPUTE)
        job_id = fed.submit(spec)
        _restart_while_held(fed, job_id, held, go)
        view = fed.wait(job_id)
        assert view.status == JobStatus.DONE, view.error
        assert _restarts(fed, job_id) == 1
        assert _result_body(fed.result_json(job_id)) == _result_body(straight)
    finally:
        fed.__exit__(None, None, None)


def _waiting_again(fed, job_id: str, since_ms: float) -> None:
    """Wait until the re-run of a job waits at dream's officer again."""
    deadline = time.monotonic() + 30
    while True:
        row = tasks(fed, job_id).get(("dream", "reserve"))
        if row is not None and row.state == TaskState.WAITING and row.updated_ms >= since_ms:
            return
        assert time.monotonic() < deadline, "the re-run never reached dream's officer"
        time.sleep(0.02)


def test_a_job_restarted_more_than_max_restarts_fails_and_each_node_is_told(
        tmp_path, penguins, penguins_meta):
    """A DP job holds ε at two nodes and waits at dream's officer. Each coordinator
    restart re-runs it (the nodes replay their reservation; dream's request stays in the
    queue) up to MAX_RESTARTS times; the next restart fails it with that reason, and as
    each node's stream opens again it releases what it held: nothing is charged."""
    from coordinator.driver import MAX_RESTARTS

    fed = build(tmp_path, penguins, penguins_meta)
    try:
        record, job_id = _dp_job_held_at_dream(fed)
        for n in range(1, MAX_RESTARTS + 1):
            core, old = _coordinator_dies(fed, job_id)
            since = time.time() * 1000
            _restart_coordinator(fed, core, old, task_timeout=30.0)
            assert _restarts(fed, job_id) == n
            for link in fed.links.values():
                link.connect()
            _waiting_again(fed, job_id, since)
            assert core.jobs.get(job_id, "alice").status == JobStatus.RUNNING
            assert _reservations(fed.nodes["biscoe"], job_id) == 1
        core, old = _coordinator_dies(fed, job_id)
        _restart_coordinator(fed, core, old)
        view = core.jobs.get(job_id, "alice")
        assert view.status == JobStatus.FAILED
        assert f"re-run after {MAX_RESTARTS} restarts" in view.error
        for link in fed.links.values():
            link.connect()
        deadline = time.monotonic() + 5
        while any(_reservations(c, job_id) for c in fed.nodes.values()):
            assert time.monotonic() < deadline, "reservations were not released"
            time.sleep(0.02)
        assert all(_spent(c) == 0 for c in fed.nodes.values())
        assert not [a for a in fed.nodes["dream"].approvals.list("pending")
                    if a.job_id == job_id]
        _release_hold(fed, "dream", record)
    finally:
        fed.__exit__(None, None, None)


def test_a_job_whose_study_changed_across_a_restart_fails_clearly(tmp_path, penguins,
                                                                  penguins_meta):
    """The study's key version moved on while the coordinator was down: the re-run
    fails, naming the change, instead of sending tasks the nodes would refuse."""
    fed = build(tmp_path, penguins, penguins_meta)
    try:
        record, job_id = _dp_job_held_at_dream(fed)
        core, old = _coordinator_dies(fed, job_id)
        with core.db.session() as s:
            job = s.get(Job, job_id)
            job.run_study = {**job.run_study, "key_version": job.run_study["key_version"] - 1}
        _restart_coordinator(fed, core, old, task_timeout=30.0)
        for link in fed.links.values():
            link.connect()
        view = fed.wait(job_id)
        assert view.status == JobStatus.FAILED
        assert "changed while the coordinator restarted" in view.error
        assert "key version" in view.error
        deadline = time.monotonic() + 5
        while any(_reservations(c, job_id) for c in fed.nodes.values()):
            assert time.monotonic() < deadline, "reservations were not released"
            time.sleep(0.02)
        _release_hold(fed, "dream", record)
    finally:
        fed.__exit__(None, None, None)


def test_a_dp_result_stranded_by_a_restart_is_refunded_when_the_job_ends_unasked(
        tmp_path, penguins, penguins_meta):
    """A node computes and charges a DP contribution while its coordinator is down; the
    result waits in the link's outbox. The coordinator comes back as a new instance: the
    link drops the result (the new one re-runs the job and would get the kept answer
    again), and the node marks the charge stranded. The job is then cancelled before
    the re-run asks biscoe again: the node refunds the charge, audited, since the
    answer never left it."""
    fed = build(tmp_path, penguins, penguins_meta)
    try:
        record, job_id = _dp_job_held_at_dream(fed)
        core, old = _coordinator_dies(fed, job_id)
        link = fed.links["biscoe"]
        biscoe = fed.nodes["biscoe"]
        link.answer(_compute_task(fed, "biscoe", job_id), link.outbox.instance)
        assert _spent(biscoe) == 0.5  # charged; the result waits for the link
        assert not link.outbox.empty()
        since = time.time() * 1000
        _restart_coordinator(fed, core, old, task_timeout=30.0)
        for each in fed.links.values():
            each.connect()
        assert link.outbox.empty()
        _waiting_again(fed, job_id, since)  # the re-run waits at dream's officer again
        assert _spent(biscoe) == 0.5  # a re-run may still ask for the answer
        core.jobs.cancel(job_id, "alice")
        assert fed.wait(job_id).status == JobStatus.CANCELLED
        deadline = time.monotonic() + 5
        while _spent(biscoe):
            assert time.monotonic() < deadline, "the stranded charge was not refunded"
            time.sleep(0.02)
        assert all(_spent(c) == 0 for c in fed.nodes.values())
        refunds = [e for e in biscoe.audit.entries() if e.action == "budget.refund"]
        assert len(refunds) == 1 and refunds[0].details["job_id"] == job_id
        # the same task, replayed, finds neither reservation nor charge: nothing is paid
        again = biscoe.runner.handle(_compute_task(fed, "biscoe", job_id))
        assert not again.ok and _spent(biscoe) == 0
        _release_hold(fed, "dream", record)
    finally:
        fed.__exit__(None, None, None)


def test_a_result_held_through_a_link_blip_is_still_delivered(tmp_path, penguins,
                                                              penguins_meta):
    """The same coordinator instance on both sides of a reconnect: a held result is
    sent, not dropped (only a restart strands results)."""
    fed = build(tmp_path, penguins, penguins_meta)
    try:
        link = fed.links["biscoe"]
        link.disconnect()
        task = pb.Task(task_id="blip", kind=TaskKind.CANCELLED,
                       payload=b'{"job_id": "none", "researcher": "alice"}')
        link.answer(task, link.outbox.instance)
        assert not link.outbox.empty()
        link.connect()
        assert link.outbox.empty()
        assert _spent(fed.nodes["biscoe"]) == 0
    finally:
        fed.__exit__(None, None, None)


def test_a_task_of_an_ended_job_is_refused_and_is_not_a_refused_query(fed):
    """After the cancel notice, a late task of the job (one the coordinator had queued)
    opens no data and charges nothing, and the researcher's refusal count does not move:
    the job's end is not a refused query."""
    record, job_id = _dp_job_held_at_dream(fed)
    try:
        fed.coordinator.jobs.cancel(job_id, "alice")
        assert fed.wait(job_id).status == JobStatus.CANCELLED
        biscoe = fed.nodes["biscoe"]
        deadline = time.monotonic() + 60  # the end notice's release, however busy the host
        while _reservations(biscoe, job_id):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with biscoe.store.tx() as con:
            outcomes = con.execute("SELECT count(*) FROM query_outcomes").fetchone()[0]
        spent = _spent(biscoe)
        late = biscoe.runner.handle(_compute_task(fed, "biscoe", job_id))
        assert not late.ok and _spent(biscoe) == spent
        with biscoe.store.tx() as con:
            assert con.execute("SELECT count(*) FROM query_outcomes").fetchone()[0] \
                == outcomes
    finally:
        _release_hold(fed, "dream", record)


def test_a_node_offline_when_its_job_is_cancelled_releases_the_budget_on_reconnect(
        tmp_path, penguins, penguins_meta):
    """Cancel a DP job while a node that reserved ε for it is offline: the node is told
    when its stream opens again, so the reservation does not stay until the year ends."""
    fed = build(tmp_path, penguins, penguins_meta)
    try:
        record, job_id = _dp_job_held_at_dream(fed)
        torgersen = fed.nodes["torgersen"]
        deadline = time.monotonic() + 5
        while not _reservations(torgersen, job_id):
            assert time.monotonic() < deadline, "torgersen did not reserve"
            time.sleep(0.02)
        fed.links["torgersen"].disconnect()
        fed.coordinator.jobs.cancel(job_id, "alice")
        assert fed.wait(job_id).status == JobStatus.CANCELLED
        assert _reservations(torgersen, job_id) == 1  # it has not been told yet
        fed.links["torgersen"].connect()
        deadline = time.monotonic() + 5
        while _reservations(torgersen, job_id):
            assert time.monotonic() < deadline, "the reservation was not released"
            time.sleep(0.02)
        assert _spent(torgersen) == 0
        _release_hold(fed, "dream", record)
    finally:
        fed.__exit__(None, None, None)


def test_a_revoked_node_loses_its_stream_at_once_and_gets_no_more_tasks(tmp_path, penguins,
                                                                        penguins_meta):
    """The CA revokes a connected node: the coordinator closes its task stream (the
    process does so within a second of the CRL changing, `CoordinatorProcess`), so the
    next job runs without it instead of sending it the researcher's tasks."""
    from scifed.pki import identity_from_cert_pem, revoke

    fed = build(tmp_path, penguins, penguins_meta)
    try:
        fed.create_study("two", {n: "penguins" for n in ISLANDS}, min_nodes=2)
        serial = revoke(fed.ca_dir, name="torgersen", role="node")
        cert = fed.nodes["torgersen"].cfg.tls.cert.read_bytes()
        assert identity_from_cert_pem(cert).serial == serial
        assert fed.coordinator.revoked(frozenset({serial})) == ["torgersen"]
        assert "torgersen" not in fed.coordinator.sessions.connected()
        before = len(fed.links["torgersen"].tasks)
        view, res = fed.run(stats_job("two", columns=["body_mass_g"]))
        assert sorted(view.contributors) == ["biscoe", "dream"]
        assert res["rows"] == int(penguins.island.isin(["Biscoe", "Dream"]).sum())
        assert len(fed.links["torgersen"].tasks) == before  # it was sent nothing
        failed = tasks(fed, view.job_id)[("torgersen", "reserve")]
        assert failed.state == TaskState.FAILED and "revoked" in failed.detail
    finally:
        fed.__exit__(None, None, None)


def test_a_replayed_dp_task_stranded_by_a_restart_is_not_refunded(tmp_path, penguins,
                                                                  penguins_meta):
    """A deviating coordinator re-sends a finished DP job's compute task while the
    node's stream is down, then comes back as a new instance and says the job ended:
    the replayed answer was stranded, but the same answer was delivered once already,
    so the charge stays (the attack got the budget back and a second DP answer for
    free)."""
    fed = build(tmp_path, penguins, penguins_meta)
    try:
        spec = stats_job(columns=["body_mass_g"],
                         dp={"epsilon": 0.5, "bounds": {"body_mass_g": [2000, 7000]}})
        view, _ = fed.run(spec)
        biscoe, link = fed.nodes["biscoe"], fed.links["biscoe"]
        spent = _spent(biscoe)
        assert spent == 0.5
        from scifed.tasks import CancelNotice, ComputeRequest

        replay = next(t for t in link.tasks if t.kind == TaskKind.COMPUTE
                      and ComputeRequest.loads(t.payload).job_id == view.job_id)
        for each in fed.links.values():
            each.disconnect()
        link.answer(replay, link.outbox.instance)
        _restart_coordinator(fed, fed.coordinator, fed.coordinator.jobs)
        link.connect()
        assert link.outbox.empty() and _spent(biscoe) == spent
        ended = biscoe.runner.handle(pb.Task(
            task_id="end", kind=TaskKind.CANCELLED,
            payload=CancelNotice(job_id=view.job_id, researcher="alice").dumps()))
        assert ended.ok and _spent(biscoe) == spent
        assert "budget.keep" in [e.action for e in biscoe.audit.entries()]
        assert "budget.refund" not in [e.action for e in biscoe.audit.entries()]
    finally:
        fed.__exit__(None, None, None)


def test_a_long_poll_answers_when_the_job_moves(fed):
    """GetJob's wait (JobDriver.watch): each answer shows the job changed since the one
    before (status, phase or a task's state), until it stops; a stopped job answers at
    once, and a job the researcher does not own stays unknown."""
    jobs = fed.coordinator.jobs
    job_id = fed.submit(stats_job(columns=["body_mass_g"]))

    def state(v) -> tuple:
        return (v.status, v.phase, tuple(v.contributors),
                tuple((t.node, t.phase, t.state) for t in v.tasks))

    before, answers = jobs.get(job_id, fed.researcher), 0
    while not before.status.stopped:
        after = jobs.watch(job_id, fed.researcher, 30.0)
        assert state(after) != state(before)
        before, answers = after, answers + 1
    assert before.status == JobStatus.DONE and answers >= 1
    assert state(jobs.watch(job_id, fed.researcher, 30.0)) == state(before)
    with pytest.raises(UserError, match="no job"):
        jobs.watch(job_id, "mallory", 30.0)


def test_list_jobs_gives_a_researcher_their_own_jobs_newest_first(fed):
    done = fed.run(stats_job(columns=["body_mass_g"]))[0].job_id
    failed = fed.wait(fed.submit(stats_job(columns=["sex"])))  # not numeric: refused
    assert failed.status == JobStatus.FAILED
    jobs = fed.coordinator.jobs
    mine = jobs.list_jobs("alice")
    assert [v.job_id for v in mine][:2] == [failed.job_id, done]
    assert [v.created_ms for v in mine] == sorted((v.created_ms for v in mine), reverse=True)
    assert {v.study for v in mine} == {"penguins"} and mine[1].job_type == "stats"
    assert [v.job_id for v in jobs.list_jobs("alice", status="failed")][0] == failed.job_id
    assert done not in {v.job_id for v in jobs.list_jobs("alice", status="failed")}
    assert [v.job_id for v in jobs.list_jobs("alice", limit=1)] == [failed.job_id]
    assert jobs.list_jobs("bob") == []  # another researcher sees none of them
    with pytest.raises(UserError, match="no study 'nope'"):
        jobs.list_jobs("alice", study="nope")
    with pytest.raises(UserError, match="status 'finished': choose one of"):
        jobs.list_jobs("alice", status="finished")


def test_a_study_whose_lead_answered_too_late_is_keyed_again_without_a_reconnection(
        tmp_path, penguins, penguins_meta, caplog):
    """Under load the lead's key generation may outlast the task timeout. The study then
    stays keying only until the coordinator's own retry (before, it waited for some node
    to reconnect, which a steady federation never does: the study never became active)."""
    fed = build(tmp_path, penguins, penguins_meta)
    try:
        keys = fed.coordinator.keys
        keys.timeout = 1e-6  # no lead answers in time
        with caplog.at_level("WARNING", logger="scifed.coordinator.studies"):
            with pytest.raises(TimeoutError):
                fed.create_study("late", {n: "penguins" for n in ISLANDS}, timeout=1)
        assert "key generation postponed (retried in 2 s): TimeoutError" in caplog.text
        assert get_study(fed.coordinator.db, "late").status == "keying"
        keys.timeout = 30  # the next attempt is answered: no node reconnected meanwhile
        deadline = time.monotonic() + 30
        while get_study(fed.coordinator.db, "late").status != "active":
            assert time.monotonic() < deadline, "the study stayed keying"
            time.sleep(0.05)
        view, res = fed.run(stats_job("late", columns=["body_mass_g"]))
        assert res["rows"] == len(penguins)
    finally:
        fed.__exit__(None, None, None)
