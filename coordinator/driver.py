"""The job driver: validate a researcher's job, persist it, and run it by handing it to
its job type's ``coordinate`` with this driver as the :class:`jobs.base.Driver` — fan
tasks out to the study's nodes, wait out approvals, sum ciphertexts, record phases and
per-node progress, stop at a cancel.

The driver names no job type. It never sees a node's contribution or a result in clear:
it moves ciphertexts, sealed blobs and (for multi-round jobs) state that members encrypt
for each other under the study key.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from coordinator import audit, catalog, studies
from coordinator.db import Database, Job, JobProgress, JobTask, Node, Study
from coordinator.sessions import NodeOffline, NodeRevoked, NodeSessions
from jobs import registry
from jobs.base import JobCancelled, JobFailed, JobWithheld, Run, StudyRef
from jobs.spec import JobSpec, datasets_by_node, load_job, parse_job_dict, slug
from scifed.errors import NotFound, Unavailable, UserError
from scifed.filters import compile_filter
from scifed.sealing import SealKeyClaim, refused_at, verify_claim
from scifed.states import JobStatus, Phase, StudyStatus, TaskState
from scifed.tasks import CancelNotice, Message, TaskHeader, TaskKind, Waiting
from scifed.wire import now_ms

log = logging.getLogger("scifed.coordinator.driver")
MAX_WAIT_SECONDS = 30.0  # the longest a GetJob waits for a change
MAX_WATCHERS = 32  # GetJob calls waiting at once; more answer at once
MAX_WATCHED_JOBS = 10_000  # change counters kept (recent jobs)
MAX_RESTARTS = 3
"""How often coordinator restarts may re-run one job (a restartable type) before the
next restart fails it: a job that keeps the coordinator from staying up stops."""


@dataclass(frozen=True)
class TaskView:
    node: str
    phase: str
    state: TaskState
    detail: str
    updated_ms: int
    sealed_reason: bytes = b""


DEFAULT_JOB_LIST = 50   # jobs `ListJobs` returns unless asked for fewer or more
MAX_JOB_LIST = 1000


@dataclass(frozen=True)
class JobView:
    job_id: str
    study: str
    job_type: str
    status: JobStatus
    phase: Phase
    error: str
    tasks: list[TaskView]
    created_ms: int
    updated_ms: int
    contributors: list[str]
    progress: list[tuple[int, bytes]]  # (round, live result sealed to the researcher)
    researcher: str = ""


def _view(job: Job, study_name: str, tasks: list[TaskView] | None = None,
          progress: list[tuple[int, bytes]] | None = None) -> JobView:
    """A job row as the researcher's and the operator's calls show it; tasks and progress
    only where one job is asked for."""
    return JobView(job.job_id, study_name, job.job_type, JobStatus(job.status),
                   Phase(job.phase, job.phase_round or 0, job.phase_rounds or 0),
                   job.error, tasks or [], job.created_ms, job.updated_ms,
                   list(job.contributors or []), progress or [], job.researcher)


class JobDriver:
    def __init__(self, db: Database, sessions: NodeSessions, ca_pem: bytes, *,
                 task_timeout: float, approval_timeout: float = 7 * 86400,
                 approval_poll: float = 2.0, flower: Any = None) -> None:
        self.db = db
        self.sessions = sessions
        self.ca_pem = ca_pem
        self.task_timeout = task_timeout
        self.approval_timeout = approval_timeout
        self.approval_poll = approval_poll
        self.flower = flower  # the SuperLink for job types that train, when enabled
        self._cancelled: set[str] = set()  # jobs to stop at their next step
        # jobs a restart failed, by node: each node is told when it next connects
        self._untold: dict[str, list[tuple[str, str]]] = {}
        self._untold_lock = threading.Lock()
        # a change counter per job (recent jobs), for GetJob's long poll (:meth:`watch`)
        self._changed = threading.Condition()
        self._versions: OrderedDict[str, int] = OrderedDict()
        self._watchers = threading.BoundedSemaphore(MAX_WATCHERS)
        restarted = []
        with db.session() as s:
            for job in list(s.scalars(select(Job).where(Job.status.in_(
                    (JobStatus.SUBMITTED, JobStatus.RUNNING))))):
                kind = registry.REGISTRY.get(job.job_type)
                if kind is not None and kind.resumable:  # its checkpoints survive
                    job.status, job.error = JobStatus.INTERRUPTED, (
                        "the coordinator restarted during the job; `scifed job resume "
                        f"{job.job_id}` continues from the last checkpoint")
                    continue
                if kind is not None and kind.restartable and (job.restarts or 0) < MAX_RESTARTS:
                    job.restarts = (job.restarts or 0) + 1
                    job.status = JobStatus.SUBMITTED
                    audit.append_in(s, "coordinator", "job.restart", job.job_id,
                                    {"study_id": job.study_id, "restarts": job.restarts,
                                     "phase": job.phase})
                    restarted.append(job.job_id)
                    continue
                job.status = JobStatus.FAILED
                job.error = "the coordinator restarted during the job" + (
                    f", which it had re-run after {MAX_RESTARTS} restarts already: it is "
                    "not run again" if kind is not None and kind.restartable else "")
                _audit_end(s, job, "coordinator")
                for node in datasets_by_node(parse_job_dict(job.spec)):
                    self._untold.setdefault(node, []).append((job.job_id, job.researcher))
        for job_id in restarted:  # from its beginning: the nodes replay what they answered
            log.info("job %s: re-run after a coordinator restart", job_id)
            self._start(job_id)

    def node_connected(self, node: str) -> None:
        """A node opened its task stream: tell it of the jobs a restart ended, so their
        approval requests and budget reservations there are released."""
        with self._untold_lock:
            jobs = list(dict.fromkeys(self._untold.pop(node, [])))
        for job_id, researcher in jobs:
            self._notify_end(job_id, researcher, [node])

    # -- submission ----------------------------------------------------------------------
    def submit(self, researcher: str, spec_text: str, spec_name: str, claim_json: str) -> str:
        """Validate everything the coordinator can check, persist, and start the job."""
        spec = load_job(spec_text, spec_name or "job.yaml")
        job = spec.job
        if job.needs_training and self.flower is None:
            raise UserError(f"this coordinator does not run {spec.type} jobs (no flower_port "
                            "in its configuration)")
        try:
            claim = SealKeyClaim.from_dict(json.loads(claim_json))
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"the request carries no valid seal key claim: {exc}") from None
        verify_claim(claim, self.ca_pem, expect_role="researcher", expect_name=researcher)
        study = studies.get_study(self.db, spec.study)
        if researcher not in study.researchers:
            raise UserError(f"you ({researcher}) are not a researcher of study '{study.name}'")
        if study.status != StudyStatus.ACTIVE:
            need = study.min_nodes - len(study.accepted)
            why = (f"waiting for {need} more node(s) to accept" if need > 0
                   else "its key is being generated")
            raise UserError(f"study '{study.name}' is not active yet ({why})")
        targets = datasets_by_node(spec)
        for node, dataset in targets.items():
            state, attached = study.members.get(node, ("not invited", []))
            if state != "accepted":
                raise UserError(f"node {node} is not a member of study '{study.name}' "
                                f"({state})")
            if slug(dataset) not in {slug(d) for d in attached}:
                raise UserError(f"dataset '{dataset}' is not attached to study "
                                f"'{study.name}' by node {node} (attached: "
                                f"{', '.join(attached) or 'none'})")
            self._check_columns(spec, node, dataset)
        need = max(study.min_nodes, job.min_nodes(spec.params))
        if len(targets) < need:
            raise UserError(f"the job names {len(targets)} node(s); study '{study.name}' "
                            f"needs at least {need}")
        job_id = f"job-{uuid.uuid4().hex[:12]}"
        t = now_ms()
        with self.db.session() as s:
            s.add(Job(job_id=job_id, study_id=study.study_id, researcher=researcher,
                      job_type=spec.type, spec=spec.to_dict(), seal_claim=claim.to_dict(),
                      status=JobStatus.SUBMITTED, phase="", error="", contributors=[],
                      created_ms=t, updated_ms=t))
            audit.append_in(s, researcher, "job.submit", job_id, {
                "study_id": study.study_id, "job_type": spec.type, "nodes": sorted(targets),
                "spec_sha256": audit.sha256_hex(audit.canonical(spec.to_dict()))})
        self._start(job_id)
        return job_id

    def _check_columns(self, spec: JobSpec, node: str, dataset: str) -> None:
        """Refuse unknown columns early where the catalog lists them (the node re-checks)."""
        found = catalog.get_record(self.db, f"urn:sdn:{node}:ds:{slug(dataset)}")
        fields = (found[0].get("fields") if found else None) or []
        if not fields:
            return
        types = {f["name"]: f["type"] for f in fields}
        for col in spec.referenced_columns():
            if col not in types:
                raise UserError(f"unknown column '{col}' in dataset {dataset} at node {node} "
                                f"(columns: {', '.join(types)})")
        for field, expr in spec.conditions().items():  # the node compiles them again,
            try:                                        # with its own grid rules
                compile_filter(expr, types)
            except UserError as exc:
                what = str(exc).removeprefix("filter: ")
                raise UserError(f"{field}: {what} in dataset {dataset} at node {node} "
                                f"(columns: {', '.join(types)})") from None

    def _start(self, job_id: str) -> None:
        threading.Thread(target=self._run, args=(job_id,), daemon=True, name=job_id).start()

    def resume(self, job_id: str, researcher: str) -> None:
        """Restart an interrupted job; its job type resumes from its checkpoint."""
        with self.db.session() as s:
            job = self._job(s, job_id, researcher)
            if job.status != JobStatus.INTERRUPTED:
                raise UserError(f"job {job_id} is {job.status}; only a job interrupted by a "
                                "coordinator restart can be resumed")
            if registry.get(job.job_type).needs_training and self.flower is None:
                raise UserError(f"this coordinator does not run {job.job_type} jobs (no "
                                "flower_port)")
            job.status, job.error = JobStatus.SUBMITTED, ""
        self._start(job_id)

    def cancel(self, job_id: str, researcher: str) -> None:
        """Stop an unfinished job: it ends `cancelled` at its next step (a fan-out's end,
        an approval poll, a Flower progress poll, whose run is then stopped), and the
        nodes withdraw its requests from their officers' queues. Nodes keep what they
        already charged for work done before it."""
        with self.db.session() as s:
            job = self._job(s, job_id, researcher)
            if JobStatus(job.status).final:
                raise UserError(f"job {job_id} is {job.status}; there is nothing to cancel")
            nodes = list(datasets_by_node(parse_job_dict(job.spec)))
            if job.status == JobStatus.INTERRUPTED:  # nothing runs it: end it here
                job.status, job.error = JobStatus.CANCELLED, f"cancelled by {researcher}"
                _audit_end(s, job, researcher)
            else:
                self._cancelled.add(job_id)
        self._notify_end(job_id, researcher, nodes)

    def _notify_end(self, job_id: str, researcher: str, nodes: list[str]) -> None:
        """Tell the job's nodes it ended unreleased: requests still in an officer's queue
        are withdrawn and privacy budget held for it is released. An offline node is
        told when its stream opens again (:meth:`node_connected`)."""
        notice = CancelNotice(job_id=job_id, researcher=researcher).dumps()
        for node in nodes:
            try:
                self.sessions.send(node, TaskKind.CANCELLED, notice)
            except NodeOffline:
                log.info("job %s ended: node %s is offline and is told when it "
                         "reconnects", job_id, node)
                with self._untold_lock:
                    self._untold.setdefault(node, []).append((job_id, researcher))

    # -- queries ------------------------------------------------------------------------
    def _job(self, s, job_id: str, researcher: str | None) -> Job:
        job = s.get(Job, job_id)
        if job is None or (researcher is not None and job.researcher != researcher):
            raise NotFound(f"no job '{job_id}'")
        return job

    def get(self, job_id: str, researcher: str | None) -> JobView:
        with self.db.session() as s:
            job = self._job(s, job_id, researcher)
            # columns, not ORM objects: a watched 100-node job has a thousand rows,
            # read again at every change of the job
            tasks = s.execute(select(JobTask.node_name, JobTask.phase, JobTask.state,
                                     JobTask.detail, JobTask.updated_ms,
                                     JobTask.sealed_reason)
                              .where(JobTask.job_id == job_id)
                              .order_by(JobTask.updated_ms)).all()
            progress = s.execute(select(JobProgress.round, JobProgress.sealed).where(
                JobProgress.job_id == job_id).order_by(JobProgress.round)).all()
            study = studies.get_study(self.db, job.study_id)
            return _view(job, study.name,
                         [TaskView(t.node_name, t.phase, TaskState(t.state), t.detail,
                                   t.updated_ms, t.sealed_reason or b"") for t in tasks],
                         [(r, b) for r, b in progress])

    def watch(self, job_id: str, researcher: str | None, wait_seconds: float) -> JobView:
        """The job as :meth:`get` gives it, once it has changed (status, phase, a task's
        state) or ``wait_seconds`` (at most MAX_WAIT_SECONDS) have passed; at once if it
        has stopped. Past MAX_WATCHERS waiting clients, at once too (the client asks
        again): a long poll must not hold the server threads the nodes' streams use."""
        with self._changed:
            seen = self._versions.get(job_id, 0)
        if wait_seconds <= 0 or self._stopped(job_id, researcher) \
                or not self._watchers.acquire(blocking=False):
            return self.get(job_id, researcher)
        try:
            with self._changed:
                self._changed.wait_for(lambda: self._versions.get(job_id, 0) != seen,
                                       min(wait_seconds, MAX_WAIT_SECONDS))
        finally:
            self._watchers.release()
        return self.get(job_id, researcher)

    def _stopped(self, job_id: str, researcher: str | None) -> bool:
        """Whether the job has stopped (its row only: :meth:`watch` reads the whole view
        once, after its wait)."""
        with self.db.session() as s:
            return JobStatus(self._job(s, job_id, researcher).status).stopped

    def _bump(self, job_id: str) -> None:
        """The job changed (after the commit): wake its watchers."""
        with self._changed:
            self._versions[job_id] = self._versions.pop(job_id, 0) + 1
            while len(self._versions) > MAX_WATCHED_JOBS:
                self._versions.popitem(last=False)
            self._changed.notify_all()

    def list_jobs(self, researcher: str | None, *, study: str = "", status: str = "",
                  limit: int = 0) -> list[JobView]:
        """``researcher``'s own jobs, newest first (no tasks or progress: `get` has
        those); ``study`` by name or id and ``status`` narrow them. ``researcher`` None:
        every researcher's (the operator's view of the federation's work)."""
        if limit < 0:
            raise UserError(f"limit {limit}: give a positive number of jobs")
        limit = min(limit or DEFAULT_JOB_LIST, MAX_JOB_LIST)
        if status:
            try:
                status = JobStatus(status)
            except ValueError:
                raise UserError(f"status {status!r}: choose one of "
                                f"{', '.join(s.value for s in JobStatus)}") from None
        with self.db.session() as s:
            names = dict(s.execute(select(Study.study_id, Study.name)).all())
            query = select(Job)
            if researcher is not None:
                query = query.where(Job.researcher == researcher)
            if study:
                ids = [i for i, n in names.items() if study in (i, n)]
                if not ids:
                    raise NotFound(f"no study '{study}'")
                query = query.where(Job.study_id.in_(ids))
            if status:
                query = query.where(Job.status == status)
            jobs = s.scalars(query.order_by(Job.created_ms.desc()).limit(limit)).all()
            return [_view(j, names.get(j.study_id, j.study_id)) for j in jobs]

    def sealed_result(self, job_id: str, researcher: str) -> bytes:
        with self.db.session() as s:
            job = self._job(s, job_id, researcher)
            if job.status == JobStatus.WITHHELD:  # the reason is sealed to the researcher
                raise UserError(f"job {job_id} has no result: an officer's output review "
                                "withheld it (`scifed job status` shows the reason)")
            if job.status != JobStatus.DONE:
                raise UserError(f"job {job_id} has no result: it is {job.status}"
                                + (f" ({job.error})" if job.error else ""))
            return job.sealed_result

    # -- the Driver protocol (what job types use) ------------------------------------------
    def header(self, run: Run, node: str) -> TaskHeader:
        return TaskHeader(
            job_id=run.job_id, study_id=run.study.study_id, key_version=run.study.key_version,
            job_type=run.spec.type, researcher=run.researcher, n_nodes=len(run.targets),
            dataset=run.targets[node], spec=run.spec.to_dict(),
            key_share=studies.sealed_share(self.db, run.study.study_id,
                                           run.study.key_version, node),
            researcher_claim=run.claim)

    def set_phase(self, run: Run, phase: Phase) -> None:
        self._set(run.job_id, phase=phase.name, phase_round=phase.round,
                  phase_rounds=phase.rounds)

    def set_contributors(self, run: Run, nodes: list[str]) -> None:
        self._set(run.job_id, contributors=sorted(nodes))

    def task_state(self, run: Run, node: str, phase: str, state: TaskState,
                   detail: str = "") -> None:
        self._task(run.job_id, node, phase, state, detail)

    def progress(self, run: Run, round_no: int, sealed: bytes) -> None:
        with self.db.session() as s:
            s.merge(JobProgress(job_id=run.job_id, round=round_no, sealed=sealed,
                                created_ms=now_ms()))

    def cancelled(self, run: Run) -> bool:
        return run.job_id in self._cancelled

    def public_context(self, run: Run) -> bytes:
        return studies.get_study_public_context(self.db, run.study.study_id)

    def seal_claims(self, nodes: list[str]) -> dict[str, dict]:
        """Each node's signed seal key claim, as it sent it (the nodes verify them)."""
        with self.db.session() as s:
            found = {n.name: n.seal_claim for n in s.scalars(
                select(Node).where(Node.name.in_(nodes))) if n.seal_claim}
        missing = sorted(set(nodes) - set(found))
        if missing:
            raise JobFailed(f"node {', '.join(missing)} has sent no seal key claim, so no "
                            "contribution can be masked for it")
        return found

    def connected(self) -> list[str]:
        return self.sessions.connected()

    def send(self, node: str, kind: TaskKind, payload: Message, reply: type[Message]) -> Any:
        res = self._deliver(node, kind, payload).result(self.task_timeout)
        if not res.ok:
            raise UserError(f"node {node}: {res.error}")
        return reply.loads(res.payload)

    def fanout(self, run: Run, phase: str, kind: TaskKind, payloads: dict[str, Message],
               reply: type[Message]) -> tuple[dict[str, Any], dict[str, str]]:
        """One task per node in parallel; (replies by node, failure reasons by node).

        A node that holds the task for its officer's approval answers Waiting; it is
        asked again until it decides or the approval timeout passes.
        """
        job_id = run.job_id
        answers: dict[str, Any] = {}
        failed: dict[str, str] = {}
        sealed: dict[str, bytes] = {}
        raws = {node: payload.dumps() for node, payload in payloads.items()}
        # Every online node gets its task at once and the rows say so in one transaction:
        # a commit per node, from a thread per node, queued on SQLite's one writer (100
        # nodes: 100 commits, and as many wake-ups of the job's watchers). A node that is
        # offline (or revoked) is left to its thread, which waits for it as before.
        sent: dict[str, Future] = {}
        for node, raw in raws.items():
            with contextlib.suppress(NodeOffline):
                sent[node] = self.sessions.send(node, kind, raw)
        self._tasks(job_id, phase, [(node, TaskState.RUNNING if node in sent
                                     else TaskState.PENDING, "", None) for node in payloads])

        def one(node: str) -> None:
            approval_deadline = time.monotonic() + self.approval_timeout
            waited = False
            raw = raws[node]
            while True:
                try:
                    fut = sent.pop(node, None)
                    if fut is None:
                        fut = self._deliver(node, kind, raw, job_id)
                        if not waited:  # while held, the row keeps saying what it waits for
                            self._task(job_id, node, phase, TaskState.RUNNING)
                    res = fut.result(self.task_timeout)
                except NodeOffline as exc:
                    failed[node] = (f"node {node} offline past the {self.task_timeout:.0f}s "
                                    f"timeout" if "offline" in str(exc) else str(exc))
                    return
                except FutureTimeout:
                    failed[node] = f"node {node} did not answer within {self.task_timeout:.0f}s"
                    return
                if not res.ok:
                    failed[node] = f"node {node}: {res.error}"
                    if res.payload:  # the reason, sealed to the researcher
                        failed[node] = refused_at(node)
                        sealed[node] = res.payload
                    return
                body = json.loads(res.payload)
                if "waiting" not in body:
                    try:
                        answers[node] = reply.model_validate(body)
                    except ValueError as exc:
                        failed[node] = f"node {node} answered a malformed {reply.__name__}"
                        log.warning("job %s: %s", job_id, exc)
                    return
                if time.monotonic() > approval_deadline:
                    failed[node] = f"node {node}: no decision within the approval timeout"
                    return
                if job_id in self._cancelled:
                    failed[node] = "the job was cancelled"
                    return
                wait = Waiting.model_validate(body)
                self._task(job_id, node, phase, TaskState.WAITING, wait.waiting)
                if wait.phase:  # e.g. "in output review": what the researcher sees
                    self._set(job_id, phase=wait.phase, phase_round=0, phase_rounds=0)
                waited = True
                time.sleep(self.approval_poll)

        threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in payloads]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._tasks(job_id, phase, [
            (node, TaskState.DONE, "", None) if node in answers
            else (node, TaskState.FAILED, failed[node], sealed.get(node)) for node in payloads])
        if job_id in self._cancelled:
            raise JobCancelled(job_id)
        return answers, failed

    # -- running --------------------------------------------------------------------------
    def _deliver(self, node: str, kind: TaskKind, payload: bytes | Message,
                 job_id: str | None = None):
        """Send when the node is online, waiting for it up to the task timeout (or until
        the job is cancelled)."""
        raw = payload if isinstance(payload, bytes) else payload.dumps()
        deadline = time.monotonic() + self.task_timeout
        while True:
            try:
                return self.sessions.send(node, kind, raw)
            except NodeRevoked:
                raise
            except NodeOffline:
                if time.monotonic() > deadline:
                    raise
                if job_id in self._cancelled:
                    raise NodeOffline("the job was cancelled") from None
                time.sleep(0.2)

    def _set(self, job_id: str, **values) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            for k, v in values.items():
                setattr(job, k, v)
            job.updated_ms = now_ms()
        self._bump(job_id)

    def _end(self, job_id: str, actor: str = "coordinator", **values) -> None:
        """The job's final status (and what goes with it) and its entry in the
        coordinator's audit chain, in one transaction."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            for k, v in values.items():
                setattr(job, k, v)
            job.updated_ms = now_ms()
            _audit_end(s, job, actor)
        self._bump(job_id)

    def _task(self, job_id: str, node: str, phase: str, state: TaskState,
              detail: str = "", sealed_reason: bytes | None = None) -> None:
        self._tasks(job_id, phase, [(node, state, detail, sealed_reason)])

    def _tasks(self, job_id: str, phase: str,
               rows: list[tuple[str, TaskState, str, bytes | None]]) -> None:
        """Set the state of several nodes' tasks of one phase in one transaction (a
        fan-out's start and end: one commit, not one per node)."""
        with self.db.session() as s:
            t = now_ms()
            # the phase's rows in one read, not one per node (a fan-out's end is 100)
            many = len(rows) > 1
            held = {task.node_name: task for task in s.scalars(select(JobTask).where(
                JobTask.job_id == job_id, JobTask.phase == phase))} if many else {}
            for node, state, detail, sealed_reason in rows:
                task = held.get(node) if many else s.get(JobTask, (job_id, node, phase))
                if task is None:
                    s.add(JobTask(job_id=job_id, node_name=node, phase=phase, state=state,
                                  detail=detail, sealed_reason=sealed_reason, updated_ms=t))
                else:
                    task.state, task.detail, task.updated_ms = state, detail, t
                    task.sealed_reason = sealed_reason
        self._bump(job_id)

    def _run(self, job_id: str) -> None:
        try:
            self._set(job_id, status=JobStatus.RUNNING)
            with self.db.session() as s:
                job = s.get(Job, job_id)
                spec = parse_job_dict(job.spec)
                claim, researcher, study_id = job.seal_claim, job.researcher, job.study_id
            study = studies.get_study(self.db, study_id)
            self._same_study(job_id, study)
            run = Run(job_id, StudyRef(study.study_id, study.name, study.key_version,
                                       study.lead_node or "", study.min_nodes,
                                       len(study.accepted)),
                      spec, datasets_by_node(spec), researcher, claim)
            sealed = spec.job.coordinate(self, run)
            self._end(job_id, status=JobStatus.DONE, phase="released", phase_round=0,
                      phase_rounds=0, sealed_result=sealed)
            self._ended_without(job_id)
        except JobWithheld as exc:  # the reason is sealed to the researcher
            self._end(job_id, status=JobStatus.WITHHELD, phase="withheld", phase_round=0,
                      phase_rounds=0, error=str(exc))
            self._ended_unreleased(job_id)
        except JobCancelled:
            with self.db.session() as s:
                who = s.get(Job, job_id).researcher
            self._end(job_id, who, status=JobStatus.CANCELLED, error=f"cancelled by {who}")
        except (JobFailed, UserError, Unavailable) as exc:
            self._end(job_id, status=JobStatus.FAILED, error=str(exc))
            self._ended_unreleased(job_id)
        except Exception:
            log.exception("job %s failed", job_id)
            self._end(job_id, status=JobStatus.FAILED,
                      error="internal error at the coordinator")
            self._ended_unreleased(job_id)
        finally:
            self._cancelled.discard(job_id)

    def _same_study(self, job_id: str, study) -> None:
        """Record the study a job first runs in (key version, accepted members); a re-run
        after a restart in a study changed since fails, since its nodes would refuse
        tasks that differ from those they answered (or mask for another set)."""
        now = {"key_version": study.key_version, "members": sorted(study.accepted)}
        with self.db.session() as s:
            job = s.get(Job, job_id)
            first = job.run_study
            if first is None:
                job.run_study = now
                return
        if first != now:
            was = (f"key version {first['key_version']}, members "
                   f"{', '.join(first['members'])}")
            raise JobFailed(f"study '{study.name}' changed while the coordinator restarted "
                            f"(it ran in {was}; now key version {now['key_version']}, "
                            f"members {', '.join(now['members'])}): the job is not re-run")

    @staticmethod
    def _who(job: Job) -> tuple[str, list[str]]:
        """The job's researcher and the nodes its spec asks."""
        return job.researcher, list(datasets_by_node(parse_job_dict(job.spec)))

    def _ended_unreleased(self, job_id: str) -> None:
        with self.db.session() as s:
            researcher, nodes = self._who(s.get(Job, job_id))
        self._notify_end(job_id, researcher, nodes)

    def _ended_without(self, job_id: str) -> None:
        """A job released on its quorum: each node it counted out (offline, cut off, past
        the timeout, refused) is told, now or when its stream opens again, so a request
        still in its officer's queue is withdrawn and any reservation released rather
        than left waiting for a job that is over."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            (researcher, nodes), contributors = self._who(job), set(job.contributors or [])
            # no answer at all (no sealed refusal): its stream may be dead without the
            # coordinator knowing yet (a cut link), so a notice sent now can be lost
            silent = {t.node_name for t in s.scalars(select(JobTask).where(
                JobTask.job_id == job_id, JobTask.state == TaskState.FAILED))
                if not t.sealed_reason}
        if contributors:  # a job type that names no contributors is told nothing
            left_out = [n for n in nodes if n not in contributors]
            if left_out:
                self._notify_end(job_id, researcher, left_out)
            with self._untold_lock:  # told again when its stream next opens
                for node in sorted(silent & set(left_out)):
                    told = self._untold.setdefault(node, [])
                    if (job_id, researcher) not in told:
                        told.append((job_id, researcher))

    def refusal(self, run: Run, node: str, phase: str, sealed: bytes) -> None:
        """A node refused ``phase`` of the job outside a fan-out (a training grant inside
        a Flower run) and sealed its reason to the researcher: the row says only
        "refused at node X" and keeps the sealed reason, as :meth:`fanout` does."""
        self._task(run.job_id, node, phase, TaskState.FAILED, refused_at(node), sealed)


def _audit_end(s, job: Job, actor: str) -> None:
    """Chain a job's end: its final status and, for a released job, the hash of the
    sealed result the coordinator holds (its release record); else the error."""
    details = {"status": str(job.status), "study_id": job.study_id}
    if job.status == JobStatus.DONE:
        details["result_sha256"] = audit.sha256_hex(job.sealed_result or b"")
    else:
        details["error"] = job.error
    audit.append_in(s, actor, "job.end", job.job_id, details)
