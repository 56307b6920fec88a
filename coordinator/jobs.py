"""The job scheduler: validate a researcher's job, fan tasks out to the study's nodes,
sum their ciphertexts once the quorum has answered, and have a release node decrypt,
check and seal the result to the researcher.

The coordinator never sees a node's contribution or a result in clear: it moves
ciphertexts, sealed blobs and (for multi-round jobs) state that members encrypt for
each other under the study key.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from sqlalchemy import select

from coordinator import catalog, studies
from coordinator.db import Database, Job, JobProgress, JobTask
from coordinator.sessions import NodeOffline, NodeSessions
from scifed.errors import NotFound, UserError
from scifed.he import sum_ciphertexts
from scifed.jobspec import FINAL, JobSpec, datasets_by_node, load_job
from scifed.sealing import SealKeyClaim, verify_claim
from scifed.wire import b64d, b64e, now_ms

log = logging.getLogger("scifed.coordinator.jobs")

MAX_ROUNDS = 40  # a multi-round release (exact quantiles) needs ~8; more means a bug




class JobFailed(Exception):
    """Ends a job with a reason the researcher sees."""


class JobCancelled(Exception):
    """The researcher cancelled the job; raised where the job next looks."""


@dataclass(frozen=True)
class TaskView:
    node: str
    phase: str
    state: str
    detail: str
    updated_ms: int


@dataclass(frozen=True)
class JobView:
    job_id: str
    study: str
    job_type: str
    status: str
    phase: str
    error: str
    tasks: list[TaskView]
    created_ms: int
    updated_ms: int
    contributors: list[str]
    progress: list[tuple[int, bytes]]  # (round, metrics sealed to the researcher)


def release_node_of(study, nodes: list[str]) -> str:
    """The node that decrypts and seals: the study's lead when it takes part, else the
    first that does."""
    return study.lead_node if study.lead_node in nodes else sorted(nodes)[0]


def _slug(dataset: str) -> str:
    return dataset.rsplit(":", 1)[-1]


class JobRunner:
    def __init__(self, db: Database, sessions: NodeSessions, ca_pem: bytes, *,
                 task_timeout: float, approval_timeout: float = 7 * 86400,
                 approval_poll: float = 2.0, flower=None) -> None:
        self.db = db
        self.sessions = sessions
        self.ca_pem = ca_pem
        self.task_timeout = task_timeout
        self.approval_timeout = approval_timeout
        self.approval_poll = approval_poll
        self.flower = flower  # the SuperLink for `train` jobs, when training is enabled
        self.cancelled: set[str] = set()  # jobs to stop at their next step
        with db.session() as s:
            for job in s.scalars(select(Job).where(Job.status.in_(("submitted", "running")))):
                if job.job_type == "train":  # its checkpoints survive: it can go on
                    job.status, job.error = "interrupted", (
                        "the coordinator restarted during training; `scifed job resume "
                        f"{job.job_id}` continues from the last round checkpoint")
                else:
                    job.status, job.error = "failed", "the coordinator restarted during the job"

    # -- submission ----------------------------------------------------------------------
    def submit(self, researcher: str, spec_text: str, spec_name: str, claim_json: str) -> str:
        """Validate everything the coordinator can check, persist, and start the job."""
        spec = load_job(spec_text, spec_name or "job.yaml")
        if spec.type == "train" and self.flower is None:
            raise UserError("this coordinator does not run training (no flower_port in its "
                            "configuration)")
        try:
            claim = SealKeyClaim.from_dict(json.loads(claim_json))
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"the request carries no valid seal key claim: {exc}") from None
        verify_claim(claim, self.ca_pem, expect_role="researcher", expect_name=researcher)
        study = studies.get_study(self.db, spec.study)
        if researcher not in study.researchers:
            raise UserError(f"you ({researcher}) are not a researcher of study '{study.name}'")
        if study.status != "active":
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
            if _slug(dataset) not in {_slug(d) for d in attached}:
                raise UserError(f"dataset '{dataset}' is not attached to study "
                                f"'{study.name}' by node {node} (attached: "
                                f"{', '.join(attached) or 'none'})")
            self._check_columns(spec, node, dataset)
        need = max(study.min_nodes, (spec.train.min_nodes or 0) if spec.train else 0)
        if len(targets) < need:
            raise UserError(f"the job names {len(targets)} node(s); study '{study.name}' "
                            f"needs at least {need}")
        job_id = f"job-{uuid.uuid4().hex[:12]}"
        t = now_ms()
        with self.db.session() as s:
            s.add(Job(job_id=job_id, study_id=study.study_id, researcher=researcher,
                      job_type=spec.type, spec=spec.model_dump(mode="json"),
                      seal_claim=claim.to_dict(), status="submitted", phase="", error="",
                      contributors=[], created_ms=t, updated_ms=t))
        threading.Thread(target=self._run, args=(job_id,), daemon=True, name=job_id).start()
        return job_id

    def _check_columns(self, spec: JobSpec, node: str, dataset: str) -> None:
        """Refuse unknown columns early where the catalog lists them (the node re-checks)."""
        found = catalog.get_record(self.db, f"urn:sdn:{node}:ds:{_slug(dataset)}")
        fields = (found[0].get("fields") if found else None) or []
        if not fields:
            return
        types = {f["name"]: f["type"] for f in fields}
        for col in spec.referenced_columns():
            if col not in types:
                raise UserError(f"unknown column '{col}' in dataset {dataset} at node {node} "
                                f"(columns: {', '.join(types)})")

    def resume(self, job_id: str, researcher: str) -> None:
        """Restart an interrupted `train` job; its ServerApp resumes from the checkpoint."""
        with self.db.session() as s:
            job = self._job(s, job_id, researcher)
            if job.status != "interrupted":
                raise UserError(f"job {job_id} is {job.status}; only a training job "
                                "interrupted by a coordinator restart can be resumed")
            if self.flower is None:
                raise UserError("this coordinator does not run training (no flower_port)")
            job.status, job.error = "submitted", ""
        threading.Thread(target=self._run, args=(job_id,), daemon=True, name=job_id).start()

    def cancel(self, job_id: str, researcher: str) -> None:
        """Stop an unfinished job: it ends `cancelled` at its next step (a fan-out's end,
        an approval poll, a Flower progress poll, whose run is then stopped), and the
        nodes withdraw its requests from their officers' queues. Nodes keep what they
        already charged for work done before it."""
        with self.db.session() as s:
            job = self._job(s, job_id, researcher)
            if job.status in FINAL:
                raise UserError(f"job {job_id} is {job.status}; there is nothing to cancel")
            nodes = list(datasets_by_node(JobSpec.model_validate(job.spec)))
            if job.status == "interrupted":  # nothing runs it: end it here
                job.status, job.error = "cancelled", f"cancelled by {researcher}"
            else:
                self.cancelled.add(job_id)
        for node in nodes:  # requests still in an officer's queue are withdrawn
            try:
                self.sessions.send(node, "job.cancelled", json.dumps(
                    {"job_id": job_id, "researcher": researcher}).encode())
            except NodeOffline:
                log.info("job %s cancelled: node %s is offline; its approval queue may "
                         "still hold the job", job_id, node)

    def check_cancelled(self, job_id: str) -> None:
        if job_id in self.cancelled:
            raise JobCancelled(job_id)

    # -- queries ------------------------------------------------------------------------
    def _job(self, s, job_id: str, researcher: str | None) -> Job:
        job = s.get(Job, job_id)
        if job is None or (researcher is not None and job.researcher != researcher):
            raise NotFound(f"no job '{job_id}'")
        return job

    def get(self, job_id: str, researcher: str | None) -> JobView:
        with self.db.session() as s:
            job = self._job(s, job_id, researcher)
            tasks = s.scalars(select(JobTask).where(JobTask.job_id == job_id)
                              .order_by(JobTask.updated_ms)).all()
            progress = s.execute(select(JobProgress.round, JobProgress.sealed).where(
                JobProgress.job_id == job_id).order_by(JobProgress.round)).all()
            study = studies.get_study(self.db, job.study_id)
            return JobView(job.job_id, study.name, job.job_type, job.status, job.phase,
                           job.error, [TaskView(t.node_name, t.phase, t.state, t.detail,
                                                t.updated_ms) for t in tasks],
                           job.created_ms, job.updated_ms, list(job.contributors or []),
                           [(r, b) for r, b in progress])

    def sealed_result(self, job_id: str, researcher: str) -> bytes:
        with self.db.session() as s:
            job = self._job(s, job_id, researcher)
            if job.status != "done":
                raise UserError(f"job {job_id} has no result: it is {job.status}"
                                + (f" ({job.error})" if job.error else ""))
            return job.sealed_result

    # -- running --------------------------------------------------------------------------
    def _set(self, job_id: str, **values) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            for k, v in values.items():
                setattr(job, k, v)
            job.updated_ms = now_ms()

    def _task(self, job_id: str, node: str, phase: str, state: str, detail: str = "") -> None:
        with self.db.session() as s:
            task = s.get(JobTask, (job_id, node, phase))
            if task is None:
                s.add(JobTask(job_id=job_id, node_name=node, phase=phase, state=state,
                              detail=detail, updated_ms=now_ms()))
            else:
                task.state, task.detail, task.updated_ms = state, detail, now_ms()

    def _progress(self, job_id: str, round_no: int, sealed: bytes) -> None:
        with self.db.session() as s:
            s.merge(JobProgress(job_id=job_id, round=round_no, sealed=sealed,
                                created_ms=now_ms()))

    def _send(self, node: str, kind: str, payload: dict):
        """Send when the node is online, waiting for it up to the task timeout."""
        deadline = time.monotonic() + self.task_timeout
        while True:
            try:
                return self.sessions.send(node, kind, json.dumps(payload).encode())
            except NodeOffline:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def fanout(self, job_id: str, phase: str, kind: str,
               payloads: dict[str, dict]) -> tuple[dict[str, dict], dict[str, str]]:
        """One task per node in parallel; (answers by node, failure reasons by node).

        A node that holds the task for its officer's approval answers "waiting"; it is
        asked again until it decides or the approval timeout passes.
        """
        answers: dict[str, dict] = {}
        failed: dict[str, str] = {}
        for node in payloads:
            self._task(job_id, node, phase, "pending")

        def one(node: str) -> None:
            approval_deadline = time.monotonic() + self.approval_timeout
            waited = False
            while True:
                try:
                    fut = self._send(node, kind, payloads[node])
                    if not waited:  # while held, the row keeps saying what it waits for
                        self._task(job_id, node, phase, "running")
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
                    return
                answer = json.loads(res.payload)
                if "waiting" not in answer:
                    answers[node] = answer
                    return
                if time.monotonic() > approval_deadline:
                    failed[node] = f"node {node}: no decision within the approval timeout"
                    return
                if job_id in self.cancelled:
                    failed[node] = "the job was cancelled"
                    return
                self._task(job_id, node, phase, "waiting", answer["waiting"])
                waited = True
                time.sleep(self.approval_poll)

        threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in payloads]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for node in payloads:
            if node in answers:
                self._task(job_id, node, phase, "done")
            else:
                self._task(job_id, node, phase, "failed", failed[node])
        self.check_cancelled(job_id)
        return answers, failed

    def _run(self, job_id: str) -> None:
        try:
            self._set(job_id, status="running")
            with self.db.session() as s:
                job = s.get(Job, job_id)
                spec = JobSpec.model_validate(job.spec)
                claim, researcher = job.seal_claim, job.researcher
            study = studies.get_study(self.db, job.study_id)
            if spec.type == "train":
                from coordinator.training import run_training

                run_training(self, job_id, spec, study, claim, researcher)
            else:
                self._run_aggregate(job_id, spec, study, claim, researcher)
        except JobCancelled:
            with self.db.session() as s:
                who = s.get(Job, job_id).researcher
            self._set(job_id, status="cancelled", error=f"cancelled by {who}")
        except JobFailed as exc:
            self._set(job_id, status="failed", error=str(exc))
        except UserError as exc:
            self._set(job_id, status="failed", error=str(exc))
        except Exception:
            log.exception("job %s failed", job_id)
            self._set(job_id, status="failed", error="internal error at the coordinator")
        finally:
            self.cancelled.discard(job_id)

    def _quorum(self, study, answers: dict, failed: dict[str, str]) -> None:
        if len(answers) < study.min_nodes:
            reasons = "; ".join(failed.values()) or "no node answered"
            raise JobFailed(f"only {len(answers)} of the {study.min_nodes} nodes the study "
                            f"needs answered: {reasons}")

    def _sum(self, study, answers: dict[str, dict], key: str = "ciphertext") -> bytes:
        pub = studies.get_study_public_context(self.db, study.study_id)
        return sum_ciphertexts(pub, [b64d(a[key]) for a in answers.values()])

    def _run_aggregate(self, job_id: str, spec: JobSpec, study, claim: dict,
                       researcher: str) -> None:
        """`stats` and `quality`: (vocabulary,) compute, sum, release (+ search rounds)."""
        kind = spec.type
        targets = datasets_by_node(spec)
        base = {"job_id": job_id, "study_id": study.study_id, "key_version": study.key_version,
                "spec": spec.model_dump(mode="json"), "researcher": researcher,
                "n_nodes": len(targets)}
        payloads = {n: {**base, "dataset": d} for n, d in targets.items()}
        if kind == "quality" or spec.stats.group_counts:
            # Each node's categories travel sealed under the study key; every node forms
            # the union itself, so the coordinator never learns a category in clear.
            self._set(job_id, phase="vocabulary")
            answers, failed = self.fanout(job_id, "vocabulary", f"{kind}.vocab", payloads)
            self._quorum(study, answers, failed)
            sealed_vocab = [answers[n]["vocabulary"] for n in sorted(answers)]
            payloads = {n: {**p, "vocabularies": sealed_vocab} for n, p in payloads.items()
                        if n in answers}
        self._set(job_id, phase="compute")
        answers, failed = self.fanout(job_id, "compute", f"{kind}.compute", payloads)
        self._quorum(study, answers, failed)
        contributors = sorted(answers)
        self._set(job_id, phase="aggregate", contributors=contributors)
        aggregate = self._sum(study, answers)
        k = max(int(a["k"]) for a in answers.values())
        release_node = release_node_of(study, contributors)
        dp = {n: a["dp"] for n, a in answers.items() if a.get("dp")}
        release = {**base, "vocabularies": payloads[release_node].get("vocabularies", []),
                   "k": k, "contributors": contributors, "dp": dp,
                   "researcher_claim": claim, "aggregate": b64e(aggregate)}
        for round_no in range(MAX_ROUNDS):
            self._set(job_id, phase="release")
            out, failed = self.fanout(job_id, "release", f"{kind}.release",
                                      {release_node: {**release, "dataset":
                                                      targets[release_node]}})
            if release_node not in out:
                raise JobFailed(failed[release_node])
            answer = out[release_node]
            if "sealed" in answer:
                self._set(job_id, status="done", phase="released",
                          sealed_result=b64d(answer["sealed"]))
                return
            phase = f"quantiles round {round_no + 1}"
            self._set(job_id, phase=phase)
            counts, failed = self.fanout(
                job_id, phase, "stats.count",
                {n: {**base, "dataset": targets[n], "query": answer["query"]}
                 for n in contributors})
            if set(counts) != set(contributors):
                raise JobFailed("a node dropped out during the quantile search: "
                                + "; ".join(failed.values()))
            release = {**release, "aggregate": b64e(self._sum(study, counts)),
                       "state": answer["state"]}
        raise JobFailed("the release did not finish within the round limit")
