"""The officer's approval queue: tasks the policy holds for a person's decision.

A liaison (the officer's deputy) may decide up to G3; G4 and above need the officer;
G5 needs both the officer and the unit's security lead (dual approval, governance §2.6).
An approval may carry an expiry after which it no longer admits the task.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import uuid
from dataclasses import dataclass

from node.audit import AuditLog
from node.store import NodeStore
from scifed.errors import NotFound, UserError
from scifed.grading import grade_rank
from scifed.wire import now_ms

ROLES = ("officer", "liaison", "security_lead")
STATES = ("pending", "approved", "denied", "expired", "withdrawn")
LIAISON_UP_TO = "G3"


@dataclass(frozen=True)
class Approval:
    approval_id: str
    job_id: str
    dataset_id: str
    study_id: str
    job_type: str
    researcher: str
    grade: str
    reason: str
    spec: dict
    state: str  # pending | approved | denied | expired | withdrawn
    decisions: list[dict]
    expires_ms: int | None
    created_ms: int

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class Waiting(Exception):
    """The task waits for a person (the approval queue); the coordinator asks again."""


def _row(r: sqlite3.Row) -> Approval:
    return Approval(r["approval_id"], r["job_id"], r["dataset_id"], r["study_id"],
                    r["job_type"], r["researcher"], r["grade"], r["reason"],
                    json.loads(r["spec"]), r["state"], json.loads(r["decisions"]),
                    r["expires_ms"], r["created_ms"])


class Approvals:
    def __init__(self, store: NodeStore, approvers: dict[str, str]) -> None:
        """`approvers` maps a person's name to their role; empty means whoever can reach
        the admin socket acts as the officer (a one-person platform)."""
        self.store = store
        self.approvers = approvers

    def role_of(self, name: str) -> str:
        if not self.approvers:
            return "officer"
        role = self.approvers.get(name)
        if role is None:
            raise UserError(f"'{name}' is not an approver at this node (node.yaml approvers: "
                            f"{', '.join(self.approvers)})")
        return role

    # -- the task side ------------------------------------------------------------------
    def request(self, *, job_id: str, dataset_id: str, study_id: str, job_type: str,
                researcher: str, grade: str, reason: str, spec: dict,
                create: bool = True) -> Approval | None:
        """The approval for (job, dataset), created pending on first request (None if
        there is none and not ``create``)."""
        with self.store.tx() as con:
            r = con.execute("SELECT * FROM approvals WHERE job_id=? AND dataset_id=?",
                            (job_id, dataset_id)).fetchone()
            if r is None and not create:
                return None
            if r is None:
                aid = f"ap-{uuid.uuid4().hex[:10]}"
                con.execute("INSERT INTO approvals VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                            (aid, job_id, dataset_id, study_id, job_type, researcher, grade,
                             reason, json.dumps(spec), "pending", "[]", None, now_ms()))
                AuditLog.append_in(con, "policy", "approval.request", dataset_id,
                                   {"approval_id": aid, "job_id": job_id,
                                    "researcher": researcher, "job_type": job_type,
                                    "reason": reason})
                r = con.execute("SELECT * FROM approvals WHERE approval_id=?",
                                (aid,)).fetchone()
            appr = _row(r)
            if appr.state == "approved" and appr.expires_ms and appr.expires_ms < now_ms():
                con.execute("UPDATE approvals SET state='expired' WHERE approval_id=?",
                            (appr.approval_id,))
                AuditLog.append_in(con, "policy", "approval.expired", dataset_id,
                                   {"approval_id": appr.approval_id, "job_id": job_id})
                appr = _row(con.execute("SELECT * FROM approvals WHERE approval_id=?",
                                        (appr.approval_id,)).fetchone())
        return appr

    def require(self, node: str, *, create: bool = True, **request) -> Approval:
        """The approved approval for the task, else: :class:`Waiting` while it is pending,
        or the officer's refusal (denied, expired) as a UserError naming the node. Without
        ``create``, a task nobody asked approval for is refused, not put to the officer."""
        appr = self.request(**request, create=create)
        if appr is None:
            raise UserError(f"node {node}: no approval was asked for job "
                            f"{request['job_id']} here; it must be checked before it runs")
        if appr.state == "pending":
            raise Waiting(f"waiting for approval at node {node} "
                          f"({appr.approval_id}: {appr.reason})")
        if appr.state == "denied":
            why = next((d["reason"] for d in reversed(appr.decisions) if not d["approve"]), "")
            raise UserError(f"node {node}: the data officer denied the task: {why}")
        if appr.state == "expired":
            raise UserError(f"node {node}: the approval {appr.approval_id} expired; "
                            "submit the job again")
        if appr.state == "withdrawn":
            raise UserError(f"node {node}: job {appr.job_id} was cancelled")
        return appr

    def withdraw(self, job_id: str, researcher: str) -> int:
        """The researcher cancelled the job: its requests still pending leave the queue
        (state `withdrawn`, audited); returns how many."""
        with self.store.tx() as con:
            rows = con.execute("SELECT approval_id, dataset_id FROM approvals WHERE job_id=? "
                               "AND state='pending'", (job_id,)).fetchall()
            for r in rows:
                con.execute("UPDATE approvals SET state='withdrawn' WHERE approval_id=?",
                            (r["approval_id"],))
                AuditLog.append_in(con, "coordinator", "approval.withdrawn", r["dataset_id"],
                                   {"approval_id": r["approval_id"], "job_id": job_id,
                                    "researcher": researcher})
        return len(rows)

    # -- the officer's side -------------------------------------------------------------
    def list(self, state: str | None = None) -> list[Approval]:
        if state and state not in STATES:
            raise UserError(f"no approval state '{state}': choose {', '.join(STATES)} or all")
        with self.store.tx() as con:
            rows = con.execute("SELECT * FROM approvals" + (" WHERE state=?" if state else "")
                               + " ORDER BY created_ms", (state,) if state else ()).fetchall()
        return [_row(r) for r in rows]

    def get(self, approval_id: str) -> Approval:
        with self.store.tx() as con:
            r = con.execute("SELECT * FROM approvals WHERE approval_id=?",
                            (approval_id,)).fetchone()
        if r is None:
            raise NotFound(f"no approval request '{approval_id}' at this node")
        return _row(r)

    def decide(self, approval_id: str, *, approve: bool, by: str, reason: str = "",
               expires_ms: int | None = None) -> Approval:
        role = self.role_of(by)
        if not approve and not reason.strip():
            raise UserError("a denial needs a reason (--reason TEXT): the researcher sees it")
        if expires_ms is not None and expires_ms <= now_ms():
            raise UserError("the approval's expiry is in the past")
        with self.store.tx() as con:
            r = con.execute("SELECT * FROM approvals WHERE approval_id=?",
                            (approval_id,)).fetchone()
            if r is None:
                raise NotFound(f"no approval request '{approval_id}' at this node")
            appr = _row(r)
            if appr.state != "pending":
                raise UserError(f"approval {approval_id} is already {appr.state}")
            if role == "liaison" and grade_rank(appr.grade) > grade_rank(LIAISON_UP_TO):
                raise UserError(f"a liaison may decide up to {LIAISON_UP_TO}; this task is on "
                                f"{appr.grade} data and needs the officer")
            decisions = [*appr.decisions, {"by": by, "role": role, "approve": approve,
                                           "reason": reason, "at_ms": now_ms()}]
            state = "denied" if not approve else self._approved_state(appr.grade, decisions)
            con.execute("UPDATE approvals SET state=?, decisions=?, expires_ms=? "
                        "WHERE approval_id=?",
                        (state, json.dumps(decisions), expires_ms, approval_id))
            AuditLog.append_in(con, by, "approval.approve" if approve else "approval.deny",
                               appr.dataset_id, {"approval_id": approval_id, "role": role,
                                                 "job_id": appr.job_id, "reason": reason,
                                                 "expires_ms": expires_ms, "state": state})
        return self.get(approval_id)

    @staticmethod
    def _approved_state(grade: str, decisions: list[dict]) -> str:
        """G5 needs the officer and the security lead; everything else one approval."""
        if grade != "G5":
            return "approved"
        roles = {d["role"] for d in decisions if d["approve"]}
        return "approved" if {"officer", "security_lead"} <= roles else "pending"


def parse_expiry(text: str) -> int | None:
    """`7d`, `12h`, `30m` from now, or an ISO date/time; empty = no expiry."""
    text = text.strip()
    if not text:
        return None
    units = {"d": 86400, "h": 3600, "m": 60}
    if text[-1] in units and text[:-1].isdigit():
        return now_ms() + int(text[:-1]) * units[text[-1]] * 1000
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--expires {text}: give e.g. 7d, 12h or 2026-12-31") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)

