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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np

from jobs.base import JobType, Limits
from jobs.spec import JobSpec, parse_job_dict
from node.alerts import RefusalMonitor
from node.approvals import Approvals
from node.audit import AuditLog
from node.budget import BudgetLedger
from node.data import DataFile
from node.datasets import DatasetRegistry
from node.guard import audit_and_record
from node.policy import Decision, EffectivePolicy, PolicyBook, decide
from node.running import RunningJobs, Stopped
from node.store import DatasetRow
from node.studies import NodeStudies
from scifed.errors import UserError
from scifed.filters import compile_filter
from scifed.he import StudyKey
from scifed.tasks import ComputeReply, TaskHeader

# Which stages may put a task to the officer: the first contact of a job with this node.
# A later stage (a round, the release, a ClientApp's grant) finds the approval or refuses.
Stage = Literal["vocab", "reserve", "compute", "round", "release", "check", "grant"]
_ASKS_OFFICER = {"vocab", "reserve", "compute", "check"}


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
                      grid=_threshold_grid(self.row.record, self.policy))

    def open(self) -> DataFile:
        """The dataset, narrowed by the job's filter (use as a context manager)."""
        return DataFile(self.path, self.filter_sql, name=self.row.slug,
                        job=(self.running, self.header.job_id))

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
        self.running = RunningJobs()  # a job's end interrupts its reads here

    def admit(self, header: TaskHeader, stage: Stage, *, audit: bool = True) -> Admission:
        """Decide the task; raises UserError (denied, refused by the officer, budget),
        or :class:`node.approvals.Waiting` while an officer has not decided."""
        self.running.refuse_if_ended(header.job_id)
        row = self.studies.attached(header.study_id, header.dataset)
        rec = row.record
        spec = parse_job_dict(header.spec, f"job {header.job_id}")
        if spec.type != header.job_type:
            raise UserError(f"node {self.node}: the task names job type {header.job_type!r} "
                            f"but carries a {spec.type!r} spec")
        job = spec.job
        pol = self.policies.effective(rec)
        requested = job.requested_epsilon(spec.params)
        if requested is None and job.wants_dp(spec.params) and pol.epsilon_per_query:
            requested = pol.epsilon_per_query  # at this node's own per-query ε
        dec = decide(pol, job_type=spec.type, n_nodes=header.n_nodes, record=rec,
                     requested_epsilon=requested)
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
                reason=f"alert: {alert}", spec=header.spec)
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
        except Stopped:  # the job ended: not a refusal of the query
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

    def contribute(self, adm: Admission, vocab: dict[str, list[str]],
                   compute: Callable[[DataFile], np.ndarray]) -> ComputeReply:
        """Run ``compute`` on the admitted rows and release its vector once: guard, DP
        noise and budget charge, and the release record in one transaction; the vector
        leaves encrypted under the study key. A retried task replays the same answer."""
        job, h = adm.job, adm.header
        if not adm.decision.dp and h.n_nodes == 2 and adm.policy.min_contributors > 2:
            raise UserError(f"node {self.node}: an exact pooled result on "
                            f"{adm.policy.grade}/{adm.policy.category} data needs at least "
                            f"{adm.policy.min_contributors} contributors "
                            f"({adm.policy.sources['min_contributors']}), so that no "
                            "contributor can read another's share")
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
                    audit_and_record(con, job_id=h.job_id, dataset_id=adm.row.dataset_id,
                                     sha256=adm.row.record["distributions"][0]["sha256"],
                                     sets=sets, k=adm.k, node=self.node)
                vec = np.asarray(compute(data), dtype=np.float64)
            if adm.decision.dp:
                report.update(job.noise(adm.params, vec, vocab, adm.limits))
            AuditLog.append_in(con, "policy", "task.release", adm.row.dataset_id, release)
            return adm.key.encrypt(vec)

        if adm.decision.dp:
            blob = self.ledger.charge_and_release(**adm.budget(), delta=0.0, produce=produce,
                                                  reserved=True)
        else:
            with self.store.tx() as con:
                blob = produce(con)
        dp = ({"epsilon": adm.decision.epsilon, "delta": 0.0, **report}
              if adm.decision.dp else None)
        return ComputeReply(ciphertext=blob, k=adm.k, dp=dp,
                            min_contributors=adm.policy.min_contributors)

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
