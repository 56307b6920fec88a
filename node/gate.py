"""The node's gate: the checks every task passes before a job type touches data, and
the release of a contribution, written once for every job type (the way Flower's
``clientapp/mod`` wraps a ClientApp).

Whatever the coordinator says, :meth:`Gate.admit` asks the node's own records and policy:
the officer accepted the study and attached this dataset; the dataset's policy cell,
tightened by the officer's override, admits the job type (else deny with the rule, or
hold the task in the approval queue until a person decides); the privacy budget can pay
the ε policy sets. Each decision goes into the audit chain.

:meth:`Gate.contribute` then runs the job type's compute and, in ONE transaction, the
differencing guard, the DP noise and its budget charge, and the audit record of the
release, and encrypts the vector under the study key: a contribution leaves only
encrypted, and only once paid for.

One job id, one answer per node and stage. The coordinator may resend any task it ever
sent, at any time, so the node remembers in node.db (``job_answers``) what it did under
each job id: the task it first took of the job (spec, study, researcher, dataset) and the
dataset version it read, and each answer it gave (its compute reply; each step of a
release, by the pooled ciphertexts it was given). A retry of the same task on the same
version gets the very same answer (a coordinator that crashed may ask again, and learns
nothing new); any other task under the job id — on a changed dataset, with another spec,
of a job that ended (``ended_jobs``, kept across restarts), a release from other
ciphertexts — is refused with one message naming the job (:class:`Replayed`), audited
(``task.replay``), before anything is read, charged or released.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from jobs.base import Exchange, JobType, Limits
from jobs.spec import JobSpec, datasets_by_node, parse_job_dict
from node.alerts import RefusalMonitor
from node.approvals import Approvals
from node.audit import AuditLog
from node.budget import BudgetLedger
from node.data import DataFile
from node.datasets import DatasetRegistry
from node.guard import LINEAR, NONLINEAR, audit_and_record
from node.masking import ABANDONED as _ABANDONED
from node.masking import REVEALED as _REVEALED
from node.masking import (
    SHARED_FROM,
    compute_stage,
    exact_slots,
    lone,
    lone_mask,
    mask_context,
    masking_set,
    open_shares,
    pair_seeds,
    pairwise,
    round_stage,
    seal_seed,
    seal_view,
    self_seed,
    share_boxes,
    threshold,
    with_self_mask,
)
from node.policy import Decision, EffectivePolicy, PolicyBook, decide, pools_enough
from node.running import Replayed, RunningJobs, Stopped
from node.store import DatasetRow
from node.studies import NodeStudies
from scifed.at_rest import derive_private
from scifed.errors import UserError
from scifed.filters import compile_filter
from scifed.he import StudyKey, open_box, seal_box
from scifed.sealing import canonical_sha256, sign_attestation
from scifed.sentences import say
from scifed.tasks import ComputeReply, ExchangeReply, Inbound, TaskHeader
from scifed.wire import now_ms

# Which stages may put a task to the officer: the first contact of a job with this node.
# A later stage (a round, the release, a ClientApp's grant) finds the approval or refuses.
Stage = Literal["vocab", "reserve", "exchange", "compute", "round", "release", "check",
                "grant"]
_ASKS_OFFICER = {"vocab", "reserve", "exchange", "compute", "check"}
# The stages whose tasks are bound to the job's first task and dataset version here (a
# training grant comes from this node's own ClientApp, not from the coordinator).
_BOUND = {"vocab", "reserve", "exchange", "compute", "round", "release", "check"}
# The study key's AEAD purpose for exchange blobs, and this node's own for job secrets.
EXCHANGE, EXCHANGE_SECRET = "job-exchange", "job-exchange-secret"
_ANY = None  # answered(): any digest (the caller reads what was answered)
RULE = "one job, one answer per node and stage: nothing is computed, charged or released"


def replay_refusal(node: str, job_id: str, why: str) -> Replayed:
    return Replayed(f"node {node} refuses a replay of job {job_id}: {why}; {RULE}")


def exchange_aad(job_id: str, step: int, sender: str, recipient: str) -> bytes:
    """What an exchange blob is bound to: made at ``step`` of the job by ``sender`` for
    ``recipient`` (a blob relayed to another node, step or job does not open)."""
    return f"{job_id}\0{step}\0{sender}\0{recipient}".encode()


def data_sha256(row: DatasetRow) -> str:
    return (row.record.get("distributions") or [{}])[0].get("sha256", "")


def policy_decision(spec: JobSpec, pol: EffectivePolicy, record: dict,
                    n_nodes: int) -> Decision:
    """What this node's policy decides for a job on a dataset, with the ε it would spend:
    the researcher's per-query ε, or the node's own where policy requires DP and the job
    gives what DP needs. The gate admits by it; the officer's approval queue shows it."""
    job = spec.job
    requested = job.requested_epsilon(spec.params)
    if requested is None and job.wants_dp(spec.params) and pol.epsilon_per_query:
        requested = pol.epsilon_per_query  # at this node's own per-query ε
    return decide(pol, job_type=spec.type, n_nodes=n_nodes, record=record,
                  requested_epsilon=requested)


@dataclass(frozen=True)
class Admission:
    """A task the node's policy admitted: what it may read and under which limits."""

    header: TaskHeader
    node: str
    row: DatasetRow
    spec: JobSpec
    policy: EffectivePolicy
    decision: Decision
    path: Any
    filter_sql: tuple | None
    key: StudyKey
    running: RunningJobs

    @property
    def job(self) -> JobType:
        return self.spec.job

    @property
    def params(self) -> Any:
        return self.spec.params

    @property
    def k(self) -> int:
        return self.policy.min_cell_count

    @cached_property  # the label key is derived (HKDF) and the grid built once per task
    def limits(self) -> Limits:
        return Limits(self.node, self.k, self.row.record,
                      self.decision.epsilon if self.decision.dp else None,
                      label_key=self.key.aead_key(f"label-tags\0{self.header.job_id}"),
                      grid=_threshold_grid(self.row.record, self.policy),
                      audited=bool(self.policy.query_auditing and self.k > 1))

    def open(self) -> DataFile:
        """The dataset, narrowed by the job's filter (use as a context manager).

        Where the node audits exact queries (k > 1), a selection of fewer than k rows is
        read as an empty one: the task then goes on as at a node that holds no selected
        row (its contribution is empty), where refusing would single it out. Were the
        node holding one selected row to refuse while the others, holding none, answer,
        a filter on a person's id would tell which platform holds that person."""
        data = DataFile(self.path, self.filter_sql, name=self.row.slug,
                        job=(self.running, self.header.job_id), version=data_sha256(self.row))
        if not (self.job.guarded and self.policy.query_auditing and not self.decision.dp
                and self.k > 1):
            return data
        try:
            selected = int(data.masks([("TRUE", [])])[:, 0].sum())
        except BaseException:
            data.close()
            raise
        if selected >= self.k:
            return data
        data.close()
        return DataFile(self.path, ("FALSE", []), name=self.row.slug,
                        job=(self.running, self.header.job_id), version=data_sha256(self.row))

    def budget(self) -> dict:
        """The ledger entry this task's ε is charged to."""
        return {"job_id": self.header.job_id, "dataset_id": self.row.dataset_id,
                "researcher": self.header.researcher, "epsilon": self.decision.epsilon,
                "annual_budget": self.policy.annual_budget or float("inf"),
                "researcher_budget": self.policy.researcher_budget}


class Gate:
    def __init__(self, *, node: str, registry: DatasetRegistry, studies: NodeStudies,
                 approvals: Approvals, audit: AuditLog, policies: PolicyBook,
                 ledger: BudgetLedger) -> None:
        self.node = node
        self.registry = registry
        self.store = registry.store
        self.studies = studies
        self.approvals = approvals
        self.audit = audit
        self.policies = policies
        self.ledger = ledger
        self.alerts = RefusalMonitor(registry.store)
        # a job's end interrupts its reads here, and is remembered in node.db
        self.running = RunningJobs(registry.store)
        self._exchange_root: bytes | None = None  # derived from the node's key when needed

    # -- one job id, one answer per node and stage ----------------------------------------
    @contextmanager
    def replays_audited(self, header: TaskHeader, dataset_id: str, stage: str
                        ) -> Iterator[None]:
        """Audit a task refused as a replay (once, outside any transaction it rolls back)."""
        try:
            yield
        except Replayed as exc:
            self.audit.append("policy", "task.replay", dataset_id,
                              {"job_id": header.job_id, "researcher": header.researcher,
                               "stage": stage, "reason": str(exc)})
            raise

    @staticmethod
    def task_sha256(header: TaskHeader, row: DatasetRow) -> str:
        """What a job's tasks at this node all carry alike: its spec, study, researcher,
        type, node count and this node's dataset."""
        return canonical_sha256({"study_id": header.study_id, "researcher": header.researcher,
                                 "job_type": header.job_type, "n_nodes": header.n_nodes,
                                 "dataset": row.dataset_id, "spec": header.spec})

    @staticmethod
    def spec_sha256(header: TaskHeader, row: DatasetRow) -> str:
        """What every task of a job carries alike, the node count aside: a training grant
        names the nodes of its round, which shrink when one drops out."""
        return canonical_sha256({"study_id": header.study_id, "researcher": header.researcher,
                                 "job_type": header.job_type, "dataset": row.dataset_id,
                                 "spec": header.spec})

    def _bind(self, header: TaskHeader, row: DatasetRow, stage: str) -> None:
        """Bind the job to its first task here and the dataset version it reads; refuse a
        task of it that differs, or comes on another version. A training grant is bound
        by its spec alone (``spec_sha256``): rounds of one job cannot change its ε, its
        features, its filter or its classes."""
        job_id, sha = header.job_id, data_sha256(row)
        grant = stage == "grant"
        digest = self.spec_sha256(header, row) if grant else self.task_sha256(header, row)
        with self.store.tx() as con:
            bound = con.execute("SELECT dataset_id, sha256, task_sha256 FROM job_answers "
                                "WHERE job_id=? AND stage=?",
                                (job_id, "spec" if grant else "task")).fetchall()
            if not bound:
                con.execute("INSERT INTO job_answers VALUES (?,?,?,?,?,?,?,?)",
                            (job_id, row.dataset_id, "task", sha,
                             self.task_sha256(header, row), "", None, now_ms()))
            if not con.execute("SELECT 1 FROM job_answers WHERE job_id=? AND stage='spec'",
                               (job_id,)).fetchone():
                con.execute("INSERT INTO job_answers VALUES (?,?,?,?,?,?,?,?)",
                            (job_id, row.dataset_id, "spec", sha,
                             self.spec_sha256(header, row), "", None, now_ms()))
            computed = con.execute("SELECT 1 FROM job_answers WHERE job_id=? AND "
                                   "dataset_id=? AND stage='compute'",
                                   (job_id, row.dataset_id)).fetchone()
        for r in bound:
            if r["task_sha256"] != digest:
                raise replay_refusal(self.node, job_id, (
                    "its tasks here came with another spec, study, researcher or dataset "
                    f"(task sha256 {r['task_sha256'][:16]}…, this one {digest[:16]}…)"))
            if r["sha256"] != sha:
                raise replay_refusal(self.node, job_id, (
                    f"it took this job on version {r['sha256'][:16]}… of dataset "
                    f"{row.slug}, which has changed since (now {sha[:16]}…)"))
        if stage == "round" and computed is None:
            raise replay_refusal(self.node, job_id, "it gave no answer to the job's compute "
                                 "here, so it answers no round of the job's release")

    def answered(self, con, adm: Admission, stage: str, digest: str | None, what: str
                 ) -> bytes | None:
        """The reply this node gave to ``stage`` of the job, if any (a retry gets it
        again); refuse a task of the stage that differs (``digest``: what the answer was
        made from) or comes on another dataset version. ``what``: the refusal's words."""
        r = con.execute("SELECT sha256, task_sha256, output FROM job_answers WHERE job_id=? "
                        "AND dataset_id=? AND stage=?",
                        (adm.header.job_id, adm.row.dataset_id, stage)).fetchone()
        if r is None:
            return None
        if r["sha256"] != data_sha256(adm.row):
            raise replay_refusal(self.node, adm.header.job_id, (
                f"it took this job on version {r['sha256'][:16]}… of dataset "
                f"{adm.row.slug}, which has changed since (now "
                f"{data_sha256(adm.row)[:16]}…)"))
        if digest is not None and r["task_sha256"] != digest:  # None: whatever it was
            raise replay_refusal(self.node, adm.header.job_id, what)
        return r["output"]

    def keep(self, con, adm: Admission, stage: str, digest: str, output: bytes,
             what: str) -> bytes:
        """Record the reply to ``stage`` in the transaction that releases it; the reply to
        send (a concurrent copy of the task may have answered first)."""
        prior = self.answered(con, adm, stage, digest, what)
        if prior is not None:
            return prior
        con.execute("INSERT INTO job_answers VALUES (?,?,?,?,?,?,?,?)",
                    (adm.header.job_id, adm.row.dataset_id, stage, data_sha256(adm.row),
                     digest, hashlib.sha256(output).hexdigest(), output, now_ms()))
        return output

    def retried(self, adm: Admission, stage: str) -> None:
        self.audit.append("policy", "task.retry", adm.row.dataset_id,
                          {"job_id": adm.header.job_id, "researcher": adm.header.researcher,
                           "stage": stage, "why": "the same task of the job on the same "
                                                 "dataset version: the same answer again"})

    def admit(self, header: TaskHeader, stage: Stage, *, audit: bool = True) -> Admission:
        """Decide the task; raises UserError (denied, refused by the officer, budget, a
        replay), or :class:`node.approvals.Waiting` while an officer has not decided."""
        ended = self.running.ended(header.job_id)
        if ended is not None:
            try:
                subject = self.studies.attached(header.study_id, header.dataset).dataset_id
            except UserError:
                subject = header.dataset
            with self.replays_audited(header, subject, stage):
                raise replay_refusal(self.node, header.job_id, f"it has ended ({ended})")
        row = self.studies.attached(header.study_id, header.dataset)
        if stage in _BOUND or stage == "grant":
            with self.replays_audited(header, row.dataset_id, stage):
                self._bind(header, row, stage)
        rec = row.record
        spec = parse_job_dict(header.spec, f"job {header.job_id}")
        if spec.type != header.job_type:
            raise UserError(f"node {self.node}: the task names job type {header.job_type!r} "
                            f"but carries a {spec.type!r} spec")
        pol = self.policies.effective(rec)
        dec = policy_decision(spec, pol, rec, header.n_nodes)
        who = {"job_id": header.job_id, "study_id": header.study_id,
               "researcher": header.researcher, "job_type": spec.type,
               "outcome": dec.outcome, "rule": dec.rule, "reason": dec.reason}
        if dec.outcome == "deny":
            self.audit.append("policy", "task.deny", row.dataset_id, who)
            raise UserError(f"node {self.node} denied the task: {dec.reason}")
        key = self.studies.key(header.study_id, header.key_version, header.key_share)
        types = {f["name"]: f["type"] for f in rec.get("fields", [])}
        flt = compile_filter(spec.filter, types, _threshold_grid(rec, pol)) \
            if spec.filter else None
        adm = Admission(header, self.node, row, spec, pol, dec,
                        self.registry.data_path(row.dataset_id), flt, key, self.running)
        if dec.dp and stage in _ASKS_OFFICER:  # a job the budget cannot pay is not put
            try:                               # to the officer (the charge re-checks)
                self.ledger.check(**adm.budget())
            except UserError as exc:
                raise UserError(f"node {self.node}: {exc}") from None
        alert = self.alerts.open_alert(
            header.researcher, row.dataset_id, header.job_id,
            allowance=adm.policy.refusal_allowance, run=adm.policy.refusal_run) \
            if pol.query_auditing else None
        if alert is not None:  # the researcher's run of refusals: the officer decides
            self.approvals.require(
                self.node, create=stage in _ASKS_OFFICER, job_id=header.job_id,
                dataset_id=row.dataset_id, study_id=header.study_id, job_type=spec.type,
                researcher=header.researcher, grade=rec["security_grade"],
                reason=say("alert.held", alert=alert), spec=header.spec)
            self.alerts.clear(header.researcher, row.dataset_id, header.job_id)
        elif dec.outcome == "approval":
            self.approvals.require(
                self.node, create=stage in _ASKS_OFFICER, job_id=header.job_id,
                dataset_id=row.dataset_id, study_id=header.study_id, job_type=spec.type,
                researcher=header.researcher, grade=rec["security_grade"], reason=dec.reason,
                spec=header.spec)
        if audit:
            self.audit.append("policy", "task.allow", row.dataset_id, {**who, "stage": stage})
        return adm

    @contextmanager
    def watched(self, adm: Admission) -> Iterator[None]:
        """Count a refused query toward the researcher's allowance (node/alerts.py)."""
        audited = adm.policy.query_auditing
        try:
            yield
        except Stopped:  # the job ended, or a replay: not a refusal of the query
            raise
        except UserError as exc:
            self.audit.append("policy", "task.refuse", adm.row.dataset_id,
                              {"job_id": adm.header.job_id, "researcher": adm.header.researcher,
                               "job_type": adm.spec.type, "reason": str(exc)[:300]})
            if audited:
                self.alerts.refused(adm.header.researcher, adm.row.dataset_id,
                                    adm.header.job_id, allowance=adm.policy.refusal_allowance,
                                    run=adm.policy.refusal_run)
            raise
        if audited:
            self.alerts.answered(adm.header.researcher, adm.row.dataset_id, adm.header.job_id)

    def masking_set(self, h: TaskHeader, masking: dict[str, dict]) -> dict[str, bytes]:
        """The verified set a contribution is masked for (node/masking.py)."""
        return masking_set(self.node, h, masking, self.studies.trust.ca_pem)

    def check_set(self, adm: Admission, publics: dict[str, bytes]) -> None:
        """Refuse to mask an exact contribution for a set whose sum this node's pooling
        rule would not release (node/policy.py pools_enough): a pair lets the other
        member take off its own mask and read this one. (A set of one is its own release
        node and carries a lone mask: see mask.) Checked before anything is computed,
        since the coordinator chooses the set."""
        pol, h = adm.policy, adm.header
        n, need = len(publics), pol.min_contributors
        members = len(self.studies.study_nodes(h.study_id) or [])
        if pools_enough(n, need, members):  # a set of one carries a lone mask (mask)
            return
        raise UserError(f"node {self.node}: an exact pooled result on {pol.grade}/"
                        f"{pol.category} data needs at least {need} contributors "
                        f"({pol.sources['min_contributors']}) and this contribution would "
                        f"be masked for {n} node{'s' if n != 1 else ''}, so that no "
                        "contributor can read another's share")

    def mask(self, adm: Admission, publics: dict[str, bytes], vec: np.ndarray, stage: str,
             round_no: int = 0, attempt: int = 0) -> np.ndarray | None:
        """The pairwise masks of the set, and for a compute attempt this node's
        self-mask of it; a sole contributor of a job of several nodes its lone mask
        instead, at every stage (node/masking.py)."""
        slots, h = exact_slots(vec), adm.header
        if lone(h, publics):
            return self.lone_mask(h, compute_stage(attempt) if attempt else stage,
                                  round_no, slots)
        mask = pairwise(self.node, self.studies.cfg.tls.key.parent, publics,
                        mask_context(h, stage, round_no), slots)
        if attempt and len(publics) > 1:
            seed = self_seed(self.job_secret(h.job_id), h, attempt)
            mask = with_self_mask(mask, seed, slots)
        return mask

    def lone_mask(self, h: TaskHeader, stage: str, round_no: int, slots: int) -> np.ndarray:
        """The mask of this node as the sole contributor of ``stage``: put on by the
        contribution and taken off by the release, both at this node."""
        return lone_mask(self.job_secret(h.job_id), h, stage, round_no, slots)

    def _reattempt(self, adm: Admission, vocab: dict[str, list[str]],
                   publics: dict[str, bytes], attempt: int) -> ComputeReply:
        """Attempt ``attempt`` of the sum after a dropout: the vector this node kept at its
        first answer, masked for the survivors with fresh masks; nothing is computed or
        charged again. Taking it records that this node abandoned the attempt before,
        which it refuses if it revealed that attempt's self-mask already."""
        h = adm.header
        stage = compute_stage(attempt)
        plain_digest = canonical_sha256({"task": self.task_sha256(h, adm.row),
                                         "vocabulary": vocab})
        digest = canonical_sha256({"plain": plain_digest, "masked_with": sorted(publics)})
        what = f"it answered attempt {attempt} of this job's compute for other nodes"
        with self.replays_audited(h, adm.row.dataset_id, stage):
            with self.store.tx() as con:
                for before in range(1, attempt):
                    self.keep(con, adm, f"unmask#{before}", _ABANDONED, b"abandoned",
                              f"it revealed its self-mask of attempt {before} of this job "
                              "already, so it takes no later attempt")
                prior = self.answered(con, adm, stage, digest, what)
                if prior is not None:
                    return ComputeReply.loads(prior)
                first = self.answered(con, adm, "compute", _ANY, what)
                kept = self.answered(con, adm, "plain", plain_digest,
                                     "it answered this job's compute from other categories")
                if first is None or kept is None:
                    raise UserError(f"node {self.node} has no first answer to job {h.job_id}"
                                    f"'s compute, so it takes no attempt {attempt}")
            vec = np.load(io.BytesIO(kept), allow_pickle=False)
            was = ComputeReply.loads(first)
            blob = adm.key.encrypt(vec, mask=self.mask(adm, publics, vec, stage,
                                                       attempt=attempt))
            answer = was.model_copy(update={
                "ciphertext": blob,
                "attestation": self.attest(adm, blob, self.audit.head(), was.dp,
                                           masked_with=sorted(publics), attempt=attempt),
                "shares": self.share_boxes(adm, publics, attempt)})
            with self.store.tx() as con:  # a concurrent copy of the task may answer first
                return ComputeReply.loads(self.keep(con, adm, stage, digest, answer.dumps(),
                                                    what))

    def share_boxes(self, adm: Admission, publics: dict[str, bytes], attempt: int, *,
                    round_of: tuple[str, int] | None = None) -> dict[str, bytes]:
        """This node's self-mask seed of ``attempt`` (of a training round: ``round_of``)
        in t-of-n shares, each boxed for the other node it is for (node/masking.py); none
        for a set of two or one."""
        h = adm.header
        return share_boxes(self.node, self.studies.cfg.tls.key.parent,
                           self.job_secret(h.job_id), h, publics, attempt, round_of=round_of)

    def reveal(self, adm: Admission, attempt: int, contributors: list[str],
               dropped: list[str] | None = None, boxes: dict[str, bytes] | None = None,
               masking: dict[str, dict] | None = None) -> bytes:
        """This node's self-mask seed of ``attempt`` (a set of two), or its answer to
        the view ``contributors`` / ``dropped`` of it (a set of three or more: shares of
        the others' seeds, its pairwise seeds with the dropped), sealed for the members,
        once the coordinator says the attempt's set is final: only for the very set this
        node masked for, one view per attempt, and never for an attempt it abandoned
        (node/masking.py)."""
        h = adm.header
        stage = compute_stage(attempt)
        what = f"it abandoned attempt {attempt} of this job for a later one"
        with self.store.tx() as con:
            answer = self.answered(con, adm, stage, _ANY, what)
            if answer is None:
                raise UserError(f"node {self.node} made no attempt {attempt} of job "
                                f"{h.job_id}'s compute, so it reveals nothing of it")
            masked_with = ComputeReply.loads(answer).attestation["statement"]["masked_with"]
            if lone(h, masked_with):
                raise UserError(f"node {self.node} reveals no mask of attempt {attempt} of "
                                f"job {h.job_id}: it contributed alone, so it releases the "
                                "sum itself")
        if len(masked_with) >= SHARED_FROM:
            return self.reveal_view(adm, attempt, masked_with, contributors, dropped or [],
                                     boxes or {}, masking or {})
        if dropped:
            raise UserError(f"node {self.node} recovers no dropout of attempt {attempt} of "
                            f"job {h.job_id}: a set of {len(masked_with)} shares no seeds")
        with self.store.tx() as con:
            if sorted(contributors) != masked_with:
                raise UserError(f"node {self.node} reveals its self-mask of attempt {attempt} "
                                f"of job {h.job_id} only for the set it masked for "
                                f"({', '.join(masked_with)}), not for "
                                f"{', '.join(sorted(contributors))}")
            self.keep(con, adm, f"unmask#{attempt}", _REVEALED, b"revealed", what)
        seed = self_seed(self.job_secret(h.job_id), h, attempt)
        return seal_seed(adm.key, h.job_id, self.node, attempt, seed)

    def reveal_view(self, adm: Admission, attempt: int, masked_with: list[str],
                     contributors: list[str], dropped: list[str],
                     boxes: dict[str, bytes], masking: dict[str, dict], *,
                     round_of: tuple[str, int] | None = None) -> bytes:
        """This node's answer to one view of ``attempt`` (node/masking.py): for every
        other contributor its share of that node's self-mask seed, for every dropped node
        its own pairwise seed with it. One view per attempt: any other is refused, so no
        node's self-mask seed and pairwise seeds both leave this node. ``round_of``:
        the stage and round of a training round's attempt (node/round_updates.py)."""
        h = adm.header
        if round_of is None:
            said = f"node {self.node} reveals nothing of attempt {attempt} of job {h.job_id}"
            unmask, step, of = f"unmask#{attempt}", f"view#{attempt}", "of this job"
        else:
            stage, round_no = round_of
            said = (f"node {self.node} reveals nothing of attempt {attempt} of round "
                    f"{round_no} of job {h.job_id}")
            unmask = round_stage(f"unmask.{stage}", round_no, attempt)
            step = round_stage(f"view.{stage}", round_no, attempt)
            of = f"of round {round_no}"
        with self.store.tx() as con:
            if self.answered(con, adm, unmask, _ANY, "") == b"abandoned":
                raise replay_refusal(self.node, h.job_id, f"it abandoned attempt {attempt} "
                                     f"{of} for a later one")
        summed, left = sorted(set(contributors)), sorted(set(dropped))
        if (len(summed) != len(contributors) or len(left) != len(dropped)
                or set(summed) & set(left) or sorted(summed + left) != masked_with):
            raise UserError(f"{said}: the nodes summed ({', '.join(contributors)}) and "
                            f"dropped ({', '.join(dropped) or 'none'}) are not, once each, "
                            f"the set it masked for ({', '.join(masked_with)})")
        if self.node not in summed:
            raise UserError(f"{said}: the view says this node dropped, yet it is asked")
        t = threshold(len(masked_with))
        if len(summed) < t + 1:
            raise UserError(f"{said}: {len(summed)} nodes are left of the "
                            f"{len(masked_with)} it masked for, and each one's self-mask "
                            f"seed needs t = {t} shares from the others (at least {t + 1} "
                            "must remain)")
        view = canonical_sha256({"contributors": summed, "dropped": left})
        what = (f"it answered another view of attempt {attempt} {of}: one view per "
                "attempt, so no node's self-mask seed and pairwise seeds both leave it")
        with self.store.tx() as con:
            prior = self.answered(con, adm, step, view, what)
        if prior is not None:
            return prior
        publics = self.masking_set(h, masking)
        if sorted(publics) != masked_with:
            raise UserError(f"{said}: the task carries the seal keys of "
                            f"{', '.join(sorted(publics))}, not of the set it masked for")
        key_dir = self.studies.cfg.tls.key.parent
        shares = open_shares(self.node, key_dir, h, publics, attempt, boxes,
                             [n for n in summed if n != self.node], round_of=round_of)
        seeds = pair_seeds(self.node, key_dir, h, publics, attempt, left, round_of=round_of)
        sealed = seal_view(adm.key, h.job_id, self.node, attempt, summed, left, shares, seeds,
                           round_of=round_of)
        with self.store.tx() as con:
            self.keep(con, adm, unmask, _REVEALED, b"revealed",
                      f"it abandoned attempt {attempt} {of} for a later one")
            return self.keep(con, adm, step, view, sealed, what)

    def attest(self, adm: Admission, blob: bytes, head: tuple[int, str], dp: dict | None, *,
               stage: str = "compute", round_no: int = 0, query: bytes = b"",
               masked_with: list[str], attempt: int = 0, trained_from: str = "") -> dict:
        """This node's signed statement of a contribution (:func:`scifed.sealing.
        sign_attestation`): the job, stage (and the round and query it answers), this
        node, the study key version, the ciphertext's sha256, the dataset it read, this
        node's audit head at the release, the DP applied, this node's k and fewest
        contributors, and whether its cell asks for its officer's output review (which
        the release node must honour); for a training round, what its update was trained
        from (``trained_from``: the digest of the decrypted model it started from, which
        the release node matches against the sum it makes of the round before). The
        release node sums only ciphertexts so attested."""
        h, rec = adm.header, adm.row.record
        statement = {
            "job_id": h.job_id, "stage": stage, "round": round_no,
            "query_sha256": hashlib.sha256(query).hexdigest() if query else "",
            "node": self.node, "study_id": h.study_id, "key_version": h.key_version,
            "researcher": h.researcher, "spec_sha256": canonical_sha256(h.spec),
            "ciphertext_sha256": hashlib.sha256(blob).hexdigest(),
            "dataset": {"dataset_id": adm.row.dataset_id,
                        "record_id": rec.get("id", adm.row.dataset_id),
                        "sha256": data_sha256(adm.row), "version": rec.get("version", ""),
                        "schema_hash": rec.get("schema_hash", "")},
            "audit_head": {"seq": head[0], "hash": head[1]}, "dp": dp, "k": adm.k,
            "min_contributors": adm.policy.min_contributors, "masked_with": masked_with,
            "attempt": attempt, "output_review": adm.policy.output_review,
            "trained_from": trained_from}
        tls = self.studies.cfg.tls
        return sign_attestation(statement, node=self.node, cert_path=tls.cert,
                                key_path=tls.key)

    def contribute(self, adm: Admission, vocab: dict[str, list[str]],
                   compute: Callable[[DataFile], np.ndarray],
                   masking: dict[str, dict], attempt: int = 1) -> ComputeReply:
        """Run ``compute`` on the admitted rows and release its vector once: guard, DP
        noise and budget charge, and the release record in one transaction; the vector
        leaves masked for the nodes of ``masking`` (node/masking.py) and encrypted under
        the study key. A retried task replays the same answer; a later ``attempt`` (after
        a dropout) masks the same vector afresh for the survivors."""
        job, h = adm.job, adm.header
        publics = self.masking_set(h, masking)
        if attempt > 1:
            return self._reattempt(adm, vocab, publics, attempt)
        if not adm.decision.dp:
            self.check_set(adm, publics)
        # what the answer is made of beyond the job's task (bound in admit): the categories
        plain_digest = canonical_sha256({"task": self.task_sha256(h, adm.row),
                                         "vocabulary": vocab})
        digest = canonical_sha256({"plain": plain_digest, "masked_with": sorted(publics)})
        what = ("it answered this job's compute from other categories (vocabularies) or "
                "masked for other nodes")
        with self.replays_audited(h, adm.row.dataset_id, "compute"):
            with self.store.tx() as con:
                prior = self.answered(con, adm, "compute", digest, what)
        made: dict[str, bytes] = {}
        report: dict = {}
        release = {"job_id": h.job_id, "researcher": h.researcher, "job_type": adm.spec.type,
                   "rows_audited": False}
        if adm.decision.dp:
            release |= {"epsilon": adm.decision.epsilon, "delta": 0.0}

        def produce(con) -> bytes:
            with adm.open() as data:
                if job.guarded and adm.policy.query_auditing and not adm.decision.dp:
                    release["rows_audited"] = True  # exact answers only: DP bounds the rest
                    sets = data.masks(job.row_sets(adm.params, data, vocab, adm.limits))
                    for partition in (LINEAR, NONLINEAR) if job.nonlinear(adm.params) \
                            else (LINEAR,):
                        audit_and_record(con, job_id=h.job_id, dataset_id=adm.row.dataset_id,
                                         sha256=data_sha256(adm.row), sets=sets, k=adm.k,
                                         node=self.node, partition=partition)
                vec = np.asarray(compute(data), dtype=np.float64)
            if adm.decision.dp:
                report.update(job.noise(adm.params, vec, vocab, adm.limits))
            entry = AuditLog.append_in(con, "policy", "task.release", adm.row.dataset_id,
                                       release)
            # kept for a later attempt after a dropout: the same vector, masked afresh
            self.keep(con, adm, "plain", plain_digest, _npy(vec), what)
            blob = adm.key.encrypt(vec, mask=self.mask(adm, publics, vec, "compute", attempt=1))
            # the attestation is part of the kept answer: a retry gets the same bytes
            made["reply"] = self.keep(con, adm, "compute", digest,
                                      reply(blob, report, (entry.seq, entry.hash)).dumps(),
                                      what)
            return blob

        def reply(blob: bytes, report: dict, head: tuple[int, str]) -> ComputeReply:
            dp = ({"epsilon": adm.decision.epsilon, "delta": 0.0, **report}
                  if adm.decision.dp else None)
            return ComputeReply(ciphertext=blob, k=adm.k, dp=dp,
                                min_contributors=adm.policy.min_contributors,
                                attestation=self.attest(adm, blob, head, dp,
                                                        masked_with=sorted(publics),
                                                        attempt=1),
                                shares=self.share_boxes(adm, publics, 1))

        with self.replays_audited(h, adm.row.dataset_id, "compute"):
            if adm.decision.dp:  # a retry is replayed from the charge (never charged twice)
                blob = self.ledger.charge_and_release(**adm.budget(), delta=0.0,
                                                      produce=produce, reserved=True)
            elif prior is None:
                with self.store.tx() as con:
                    prior = self.answered(con, adm, "compute", digest, what)
                    if prior is None:
                        blob = produce(con)
            if "reply" in made:
                return ComputeReply.loads(made["reply"])
            if prior is None:  # a concurrent copy of the task answered first
                with self.store.tx() as con:
                    prior = self.answered(con, adm, "compute", digest, what)
        self.retried(adm, "compute")
        if prior is None:  # charged before this node kept its answers: the charge's output
            return reply(blob, {}, self.audit.head())
        return ComputeReply.loads(prior)

    # -- steps of node-to-node exchange ---------------------------------------------------
    def job_secret(self, job_id: str) -> bytes:
        """32 bytes only this node makes for ``job_id``: HKDF of its TLS private key, so
        the same at every task, retry and restart of the job (nothing kept or erased),
        and unrelated between jobs."""
        if self._exchange_root is None:
            self._exchange_root = derive_private(self.studies.cfg.tls.key, EXCHANGE_SECRET)
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=job_id.encode()).derive(self._exchange_root)

    def exchange_step(self, adm: Admission, inbound: Inbound) -> Exchange:
        """An exchange step as the job type gets it: its peers are the job's nodes, each
        once; every blob is opened, each made at the step before by its sender for this
        node (else refused: one a coordinator moved from elsewhere does not open)."""
        h = adm.header
        nodes = sorted(datasets_by_node(adm.spec))
        if sorted(inbound.peers) != nodes:
            raise UserError(f"node {self.node}: exchange step {inbound.step} of job "
                            f"{h.job_id} names the peers {', '.join(inbound.peers)}, not "
                            f"the job's nodes {', '.join(nodes)}")
        stray = sorted(set(inbound.blobs) - set(nodes))
        if stray or (inbound.blobs and inbound.step == 0):
            raise UserError(f"node {self.node}: exchange step {inbound.step} of job "
                            f"{h.job_id} brings blobs no peer made for it "
                            f"({', '.join(stray) or 'before the first step'})")
        key = adm.key.aead_key(EXCHANGE)
        opened = {}
        for sender, blob in sorted(inbound.blobs.items()):
            try:
                opened[sender] = open_box(key, blob, exchange_aad(
                    h.job_id, inbound.step - 1, sender, self.node))
            except UserError:
                raise UserError(f"node {self.node}: the blob of {sender} in exchange step "
                                f"{inbound.step} of job {h.job_id} was not made for this "
                                "node at this step") from None
        return Exchange(h.job_id, inbound.step, list(inbound.peers), opened,
                        self.job_secret(h.job_id))

    def exchange(self, adm: Admission, step: Exchange,
                 run: Callable[[DataFile], dict[str, bytes]]) -> ExchangeReply:
        """One exchange step, answered once (a retry from the same blobs gets the same
        reply; other blobs at the same step are refused as a replay). Before this node's
        own rows first leave (step 0, exact, where the policy audits queries), the query
        auditor checks the job's row sets and records them, as a compute would; it runs
        after the type's step, so that a type whose own rule refuses a small selection
        (0 rows too) refuses it in the same words whether or not the auditor would have.
        What leaves is sealed for each recipient; the audit chain records sizes only."""
        job, h = adm.job, adm.header
        stage = f"exchange:{step.step}"
        digest = canonical_sha256({
            "task": self.task_sha256(h, adm.row), "peers": step.peers,
            "inbound": {s: hashlib.sha256(b).hexdigest() for s, b in step.inbound.items()}})
        what = f"it answered exchange step {step.step} of this job from other blobs"
        with self.replays_audited(h, adm.row.dataset_id, stage):
            with self.store.tx() as con:
                prior = self.answered(con, adm, stage, digest, what)
                if prior is None:
                    with adm.open() as data:
                        out = run(data)  # the type's own rules first (see the docstring)
                        if (step.step == 0 and job.guarded and adm.policy.query_auditing
                                and not adm.decision.dp):
                            sets = data.masks(job.row_sets(adm.params, data, {}, adm.limits))
                            audit_and_record(con, job_id=h.job_id,
                                             dataset_id=adm.row.dataset_id,
                                             sha256=data_sha256(adm.row), sets=sets,
                                             k=adm.k, node=self.node)
                    stray = sorted(set(out) - set(step.peers))
                    if stray:
                        raise UserError(f"node {self.node}: {job.name} addressed "
                                        f"{', '.join(stray)}, not a node of the job")
                    key = adm.key.aead_key(EXCHANGE)
                    reply = ExchangeReply(outbound={
                        r: seal_box(key, b, exchange_aad(h.job_id, step.step, self.node, r))
                        for r, b in sorted(out.items())})
                    AuditLog.append_in(con, "policy", "task.exchange", adm.row.dataset_id, {
                        "job_id": h.job_id, "researcher": h.researcher,
                        "job_type": adm.spec.type, "step": step.step,
                        "received_bytes": {s: len(b) for s, b in step.inbound.items()},
                        "sent_bytes": {r: len(b) for r, b in out.items()}})
                    return ExchangeReply.loads(self.keep(con, adm, stage, digest,
                                                         reply.dumps(), what))
        self.retried(adm, stage)
        return ExchangeReply.loads(prior)

    def reserve(self, adm: Admission) -> float | None:
        """Hold the task's ε (if DP applies) before any node computes."""
        if not adm.decision.dp:
            return None
        try:
            self.ledger.reserve(**adm.budget())
        except UserError as exc:
            raise UserError(f"node {self.node}: {exc}") from None
        return adm.decision.epsilon

    def charge(self, adm: Admission, delta: float) -> None:
        """Charge the task's ε with nothing else to release in the same transaction (a
        training grant: DP-SGD spends it over the run, the accountant keeping under it)."""
        try:
            self.ledger.charge_and_release(**adm.budget(), delta=delta, produce=lambda c: b"")
        except UserError as exc:  # spent by another job since the check
            raise UserError(f"node {self.node}: {exc}") from None


def _threshold_grid(rec: dict, pol: EffectivePolicy) -> dict[str, float | None] | None:
    """Where the node audits queries, the grid its filter thresholds must lie on: each
    numeric column's declared resolution, None for the default (scifed/filters.py), since
    bisecting a free threshold on the auditor's refusals would locate one row's value."""
    from scifed.record import NUMERIC_TYPES

    if not pol.query_auditing:
        return None
    return {f["name"]: f.get("resolution") for f in rec.get("fields", [])
            if f.get("type") in NUMERIC_TYPES}


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, np.asarray(array, dtype=np.float64), allow_pickle=False)
    return out.getvalue()
