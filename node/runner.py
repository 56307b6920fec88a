"""The node's handler table: one handler per task kind, the same for every job type.

A task names its job type in its header; the runner looks the type up in the registry
and calls it inside the gate (`node/gate.py`) and the release path (`node/release.py`).
So `node/` never names a job type, and a new type needs no change here. A task held for
an officer's approval answers :class:`scifed.tasks.Waiting`; the coordinator asks again.

Every task brings the CA's CRL as the coordinator holds it; the runner offers it to the
node's :class:`node.studies.PeerTrust` first. A task that trusts another party (a study
key, the job's researcher, its contributors) then runs only with a CRL recent enough,
and only if none of those parties, nor this node, is revoked: else it is refused, audited.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable

from node.approvals import Approvals, Waiting
from node.gate import Gate
from node.release import (
    QUERY,
    VOCABULARY,
    ReleasePath,
    seal_refusal,
    vocabulary_union,
)
from node.studies import NodeStudies
from protos.scifed.v1 import federation_pb2 as pb
from scifed import sentences
from scifed.errors import UserError
from scifed.he import open_for_members, seal_for_members
from scifed.sealing import canonical_sha256, refused_at
from scifed.tasks import (
    CancelNotice,
    CheckReply,
    CiphertextReply,
    ComputeReply,
    ComputeRequest,
    ExchangeReply,
    ExchangeRequest,
    KeygenRequest,
    Message,
    ReleaseRequest,
    Reserved,
    ReviewRequest,
    RoundRequest,
    TaskHeader,
    TaskKind,
    UnmaskReply,
    UnmaskRequest,
    VocabReply,
    Withdrawn,
)
from scifed.tasks import (
    Waiting as WaitingReply,
)

log = logging.getLogger("scifed.node.runner")
TaskHandler = Callable[[bytes], bytes]
# Task kinds that trust other parties: each needs a recent CRL, and none of the parties
# it trusts revoked. (A cancellation only withdraws; the node process's own kinds, such
# as restarting its SuperNode, trust nobody.)
PEER_TRUST = frozenset({TaskKind.KEYGEN, TaskKind.VOCAB, TaskKind.COMPUTE, TaskKind.ROUND,
                        TaskKind.RELEASE, TaskKind.CHECK, TaskKind.RESERVE,
                        TaskKind.EXCHANGE, TaskKind.REVIEW})


def typed(request: type[Message], fn: Callable[[Message], Message]) -> TaskHandler:
    """A handler on typed payloads; a task held for approval answers Waiting."""
    def run(payload: bytes) -> bytes:
        try:
            return fn(request.loads(payload)).dumps()
        except Waiting as wait:
            return WaitingReply(waiting=str(wait), phase=wait.phase).dumps()
    return run


class NodeRunner:
    def __init__(self, gate: Gate, release: ReleasePath, studies: NodeStudies,
                 approvals: Approvals, extra: dict[str, TaskHandler] | None = None) -> None:
        """``extra``: handlers of the node process itself (e.g. restarting its Flower
        SuperNode), beside the job handlers."""
        self.gate = gate
        self.ca_pem = release.ca_pem
        self.release_path = release
        self.studies = studies
        self.approvals = approvals
        self.trust = studies.trust
        self.handlers: dict[str, TaskHandler] = {
            TaskKind.KEYGEN: typed(KeygenRequest, studies.generate_key),
            TaskKind.VOCAB: typed(TaskHeader, self.vocabulary),
            TaskKind.COMPUTE: typed(ComputeRequest, self.compute),
            TaskKind.ROUND: typed(RoundRequest, self.round),
            TaskKind.UNMASK: typed(UnmaskRequest, self.unmask),
            TaskKind.RELEASE: typed(ReleaseRequest, release.release),
            TaskKind.REVIEW: typed(ReviewRequest, release.review),
            TaskKind.CHECK: typed(TaskHeader, self.check),
            TaskKind.RESERVE: typed(TaskHeader, self.reserve),
            TaskKind.EXCHANGE: typed(ExchangeRequest, self.exchange),
            TaskKind.CANCELLED: typed(CancelNotice, self.cancelled),
            **(extra or {}),
        }

    def handle(self, task: pb.Task) -> pb.TaskResult:
        """Run one task; a user error (a refusal, a bad spec) goes back as its message, a
        bug as "internal error" with the traceback kept in this node's log only."""
        self.trust.offer(task.crl, via="task")
        handler = self.handlers.get(task.kind)
        if handler is None:
            return pb.TaskResult(task_id=task.task_id, ok=False,
                                 error=f"node {self.gate.node} does not run '{task.kind}' tasks")
        try:
            if task.kind in PEER_TRUST:
                self.check_revocation(task)
            return pb.TaskResult(task_id=task.task_id, ok=True, payload=handler(task.payload))
        except UserError as exc:  # the sentence itself where it is one, for its key
            return self._refusal(task, sentences.of_error(exc))
        except RecursionError:
            return pb.TaskResult(task_id=task.task_id, ok=False,
                                 error=f"node {self.gate.node}: the task is nested too deeply")
        except Exception:  # a bug must not kill the link; the reason stays in our log
            log.exception("task %s (%s) failed", task.task_id, task.kind)
            return pb.TaskResult(task_id=task.task_id, ok=False,
                                 error=f"internal error at node {self.gate.node}")

    def _refusal(self, task: pb.Task, reason: str) -> pb.TaskResult:
        """A job task's refusal names the node only; its reason goes sealed to the job's
        researcher, so the coordinator that relays it learns no decision detail. A job
        task without a valid researcher key says only that it refused (the reason stays
        in this node's log); a study's keygen, which no researcher asked for, says why
        in clear."""
        node = self.gate.node
        job_id = None
        try:
            header = json.loads(task.payload)
            if self._is_job_header(header):  # else malformed: the sender's own error
                job_id = header["job_id"]
            sealed = seal_refusal(header.get("researcher_claim"), self.ca_pem,
                                  header.get("researcher", ""), job_id, node,
                                  reason)
        except (ValueError, AttributeError, RecursionError):
            sealed = None
        if sealed is None and job_id:  # a job task whose researcher key is missing or
            # forged: a coordinator that strips it must not get the reason in clear
            log.info("task %s of job %s refused (no researcher key to seal the reason "
                     "to): %s", task.task_id, job_id, reason)
            return pb.TaskResult(task_id=task.task_id, ok=False,
                                 error=f"{refused_at(node)} (the task carried no valid "
                                       "researcher key to seal the reason to; it is in "
                                       "the node's log)")
        if sealed is None:  # said in clear, with its key and fields for a console
            return pb.TaskResult(task_id=task.task_id, ok=False, error=reason,
                                 error_said=sentences.dumps(reason))
        return pb.TaskResult(task_id=task.task_id, ok=False, error=refused_at(node),
                             payload=sealed)

    def check_revocation(self, task: pb.Task) -> None:
        """Refuse (audited, one message) a task that trusts other parties unless this
        node's newest CRL is recent enough and revokes neither this node, nor the job's
        researcher (the seal key claim results and refusals are sealed to), nor, for a
        release, any contributor (by the certificate the task carries for it). A study
        key share is checked where it is opened (NodeStudies), a member to key where the
        lead keys (NodeStudies.generate_key)."""
        try:
            header = json.loads(task.payload)
        except (ValueError, RecursionError):
            header = None
        if not isinstance(header, dict):
            header = {}
        subject = str(header.get("job_id") or header.get("study_id") or "crl")
        crl = self.trust.fresh(subject)
        if task.kind != TaskKind.KEYGEN and self._is_job_header(header):
            # every job task (a malformed one is refused as such by its handler): the
            # researcher it names, certified
            self.trust.check_researcher(crl, header.get("researcher_claim"), subject,
                                        str(header.get("researcher", "")))
        if task.kind == TaskKind.RELEASE:
            self.release_path.check_contributors(crl, header.get("contributors"),
                                                 dict(task.node_certs), subject)

    @staticmethod
    def _is_job_header(header: object) -> bool:
        try:
            return isinstance(header, dict) and bool(
                TaskHeader.model_validate({k: v for k, v in header.items()
                                           if k in TaskHeader.model_fields}))
        except ValueError:
            return False

    def vocabulary(self, req: TaskHeader) -> VocabReply:
        """Categories this node holds (group values, labels, ...), sealed for members."""
        adm = self.gate.admit(req, "vocab")
        gate, digest = self.gate, self.gate.task_sha256(req, adm.row)
        what = "it answered this job's vocabulary for another task"
        with gate.replays_audited(req, adm.row.dataset_id, "vocab"):
            with gate.store.tx() as con:
                prior = gate.answered(con, adm, "vocab", digest, what)
            if prior is not None:  # a retry (a re-run after a restart): the same blob
                gate.retried(adm, "vocab")
                return VocabReply.loads(prior)
            with gate.watched(adm), adm.open() as data:
                values = adm.job.vocabulary(adm.params, data, adm.limits)
            reply = VocabReply(vocabulary=seal_for_members(adm.key, VOCABULARY, req.job_id,
                                                           values))
            raw = reply.dumps()
            with gate.store.tx() as con:
                kept = gate.keep(con, adm, "vocab", digest, raw, what)
            return reply if kept is raw else VocabReply.loads(kept)

    def compute(self, req: ComputeRequest) -> ComputeReply:
        """This node's encrypted contribution, released once (see Gate.contribute)."""
        adm = self.gate.admit(req, "compute", audit=not req.vocabularies)
        vocab = vocabulary_union(adm.key, req.job_id, req.vocabularies)
        with self.gate.watched(adm):
            if req.exchange is not None:  # after exchange steps: from what they brought
                step = self.gate.exchange_step(adm, req.exchange)
                return self.gate.contribute(
                    adm, vocab, lambda data: adm.job.finish(adm.params, data, step, adm.limits),
                    req.masking, req.attempt)
            return self.gate.contribute(
                adm, vocab, lambda data: adm.job.compute(adm.params, data, vocab, adm.limits),
                req.masking, req.attempt)

    def unmask(self, req: UnmaskRequest) -> UnmaskReply:
        """Reveal this node's self-mask of an attempt whose set is final (Gate.reveal)."""
        adm = self.gate.admit(req, "round", audit=False)
        return UnmaskReply(sealed=self.gate.reveal(adm, req.attempt, req.contributors,
                                                   req.dropped, req.shares, req.masking))

    def exchange(self, req: ExchangeRequest) -> ExchangeReply:
        """One step of a job's node-to-node protocol (Gate.exchange): the blobs the peers
        addressed to this node opened, the type's reply sealed for each recipient."""
        adm = self.gate.admit(req, "exchange", audit=req.exchange.step == 0)
        with self.gate.watched(adm):
            step = self.gate.exchange_step(adm, req.exchange)
            return self.gate.exchange(
                adm, step, lambda data: adm.job.exchange(adm.params, data, step, adm.limits))

    def round(self, req: RoundRequest) -> CiphertextReply:
        """One more round of a multi-round release (the query comes sealed by the
        release node, with its round number), attested as the compute is: the release
        node sums only this round's ciphertexts, attested for the query it sealed."""
        adm = self.gate.admit(req, "round", audit=False)
        asked = open_for_members(adm.key, QUERY, req.job_id, req.query)
        if not (isinstance(asked, dict) and isinstance(asked.get("round"), int)
                and isinstance(asked.get("query"), dict)):
            raise UserError(f"node {self.gate.node}: the query of job {req.job_id}'s "
                            "further round is not one its release node sealed")
        publics = self.gate.masking_set(req, req.masking)
        self.gate.check_set(adm, publics)  # a round's counts are exact
        # one answer per round: a retry (a re-run after a restart) gets the same bytes,
        # which the release node's kept step for them matches; another query is refused
        gate, stage = self.gate, f"round:{asked['round']}"
        digest = canonical_sha256({"query_sha256": hashlib.sha256(req.query).hexdigest(),
                                   "masked_with": sorted(publics)})
        what = f"it answered round {asked['round']} of this job for another query or set"
        with gate.replays_audited(req, adm.row.dataset_id, stage):
            with gate.store.tx() as con:
                prior = gate.answered(con, adm, stage, digest, what)
            if prior is not None:
                gate.retried(adm, stage)
                return CiphertextReply.loads(prior)
            with adm.open() as data:
                vec = adm.job.round(adm.params, data, asked["query"], adm.limits)
            blob = adm.key.encrypt(vec, mask=gate.mask(adm, publics, vec, "round",
                                                       asked["round"]))
            reply = CiphertextReply(ciphertext=blob, attestation=gate.attest(
                adm, blob, gate.audit.head(), None, stage="round", round_no=asked["round"],
                query=req.query, masked_with=sorted(publics)))
            raw = reply.dumps()
            with gate.store.tx() as con:
                kept = gate.keep(con, adm, stage, digest, raw, what)
            return reply if kept is raw else CiphertextReply.loads(kept)

    def check(self, req: TaskHeader) -> CheckReply:
        """Everything a later step will check, charging nothing and releasing nothing."""
        adm = self.gate.admit(req, "check")
        with self.gate.watched(adm), adm.open() as data:  # a data check is a query too
            rows = adm.job.check(adm.params, data, adm.limits)
        return CheckReply(rows=rows, dp=adm.decision.dp)

    def reserve(self, req: TaskHeader) -> Reserved:
        """Hold the job's ε here before any node computes (nothing if exact)."""
        adm = self.gate.admit(req, "reserve", audit=False)
        return Reserved(epsilon=self.gate.reserve(adm))

    def cancelled(self, req: CancelNotice) -> Withdrawn:
        """The job ended without this node's answer being used (cancelled or failed):
        its running tasks stop (node/running.py), its approval requests leave the queue,
        its budget reservations are released. What it already charged stays charged: the
        coordinator's word is not proof that the answer was never released — except a
        DP answer this node knows it never sent (stranded by a coordinator restart, and
        not asked for again since), whose charge is refunded."""
        interrupted = self.gate.running.end(req.job_id, "the job was cancelled or failed")
        self.gate.ledger.refund_stranded(
            req.job_id, "its result never left this node: the coordinator that asked for "
                        "it restarted first, and the job ended without asking again")
        return Withdrawn(withdrawn=self.approvals.withdraw(req.job_id, req.researcher),
                         unreserved=self.gate.ledger.release_reservations(req.job_id),
                         interrupted=interrupted)

    def stranded(self, task: pb.Task, result: pb.TaskResult) -> None:
        """A result that never left this node: the coordinator that asked for it
        restarted before the link could send it (node/link.py). The new coordinator may
        re-run the job (a restartable type) and gets the kept answer when it asks again;
        a DP contribution is marked stranded, so that its charge is refunded if the job
        is said to end instead (:meth:`cancelled`)."""
        if task.kind != TaskKind.COMPUTE or not result.ok:
            return
        try:
            req = ComputeRequest.loads(task.payload)
            if ComputeReply.loads(result.payload).dp is None:
                return
            row = self.studies.attached(req.study_id, req.dataset)
        except UserError as exc:
            log.warning("stranded result of task %s: %s", task.task_id, exc)
            return
        self.gate.ledger.strand(req.job_id, row.dataset_id)
