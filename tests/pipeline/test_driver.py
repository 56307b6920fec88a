"""The orchestration core on the in-memory link: the coordinator's job driver (fan-out,
quorum, approval wait, cancel, the release loop) and the node runner (routing, typed
payloads, refusals), through the real gate, release path and encryption."""

from __future__ import annotations

import time

import pytest
from inmemory_cases import ISLANDS, build, stats_job

from coordinator.db import Job, JobTask
from coordinator.studies import get_study
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
    # vocabulary, budget reservation, compute, then `rounds` counting rounds at every node
    # (the quantile search and its rounding); the release at one node
    assert {p for _, p in seen} == {"vocabulary", "reserve", "compute", "release",
                                    *(f"round {r}" for r in range(1, rounds + 1))}
    assert all(t.state == TaskState.DONE for t in seen.values())
    assert len({n for n, p in seen if p == "release"}) == 1
    assert view.phase == Phase("released") and sorted(view.contributors) == sorted(ISLANDS)


def test_quorum_goes_on_without_an_offline_node_and_fails_below_it(tmp_path, penguins,
                                                                    penguins_meta):
    fed = build(tmp_path, penguins, penguins_meta, task_timeout=0.5)
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
        approvals.decide(request.approval_id, approve=True, by="officer")
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
    mismatch = runner.handle(_task(TaskKind.VOCAB, header.dumps()))
    assert not mismatch.ok and "names job type 'quality' but carries a 'stats' spec" in \
        mismatch.error
    outsider = header.model_copy(update={"job_type": "stats", "study_id": "st-nope"})
    refused = runner.handle(_task(TaskKind.VOCAB, outsider.dumps()))
    assert not refused.ok and "has not accepted study st-nope" in refused.error


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


def test_a_coordinator_restart_tells_each_node_when_it_reconnects(tmp_path, penguins,
                                                                   penguins_meta):
    """A DP job holds ε at two nodes and waits at the third when the coordinator dies;
    the new coordinator fails the job and, as each node's stream opens again, the node
    releases what it held for it: nothing is charged."""
    from coordinator.driver import JobDriver

    fed = build(tmp_path, penguins, penguins_meta)
    try:
        record = _hold_for_approval(fed, "dream")
        spec = stats_job(columns=["body_mass_g"],
                         dp={"epsilon": 0.5, "bounds": {"body_mass_g": [2000, 7000]}})
        job_id = fed.submit(spec)
        _waiting(fed, job_id)
        assert _reservations(fed.nodes["biscoe"], job_id) == 1
        # The coordinator dies: its driver's thread stops where it is (emulated by the
        # driver's own stop flag, without telling any node), the job stays `running` in
        # the database, and the nodes' streams close.
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
        # A new coordinator starts on the same database.
        core.jobs = JobDriver(core.db, core.sessions, old.ca_pem, task_timeout=1.0,
                              approval_poll=0.05)
        view = core.jobs.get(job_id, "alice")
        assert view.status == JobStatus.FAILED and "restarted" in view.error
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
