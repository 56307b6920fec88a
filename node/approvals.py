"""The officer's approval queue: tasks the policy holds for a person's decision, and the
registry of the people who may decide them.

An approver is a person with a key (``scifed/approver_keys.py``), registered here by
name, role and public key with `scifed node approver add`. A decision counts only if it
is signed by a registered approver's key over exactly that decision; the role is the
registry's, never the caller's. A name alone approves nothing: whoever can open the admin
socket can type any name, and one shell once approved a G5 task as both officer and
security lead that way. Nor does that shell change the registry alone: after the first
officer and security lead (the bootstrap), every change is countersigned by an officer
and a security lead; otherwise one shell holding the officer's key registered a made-up
security lead and gave a G5 task both approvals.

A liaison (the officer's deputy) may decide up to G3; G4 and above need the officer;
G5 needs both the officer and the unit's security lead (dual approval, governance §2.7),
two registered approvers with distinct names and keys. An approval may carry an expiry
after which it no longer admits the task.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from node.audit import AuditLog
from node.store import NodeStore
from scifed.approver_keys import (
    CHANGE_FIELDS,
    DUAL_ROLES,
    STATEMENT_FIELDS,
    b64,
    change_statement,
    change_verifies,
    check_approver,
    decision_statement,
    fingerprint,
    parse_change_statement,
    parse_statement,
    verifies,
)
from scifed.chain import canonical
from scifed.errors import NotFound, UserError
from scifed.grading import grade_rank
from scifed.sentences import structure
from scifed.wire import now_ms

STATES = ("pending", "approved", "denied", "expired", "withdrawn")
LIAISON_UP_TO = "G3"
OFFICER_FROM = "G4"  # from here on only the officer approves ...
DUAL_FROM = "G5"     # ... and from here on the security lead too
UNSIGNED = ("a decision must be signed with the approver's own key: a name alone (the old "
            "--as NAME or $SCIFED_ACTOR) approves nothing. Register the person with "
            "`scifed node approver add NAME --role ROLE`, then decide with `scifed node "
            "approvals approve|deny ID --key KEY`")


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
    reason_said: dict | None = None  # the reason's key and fields (scifed/sentences.py)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Approver:
    name: str
    role: str
    public_key: str
    fingerprint: str
    added_by: str
    added_ms: int
    removed_by: str | None
    removed_ms: int | None

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class Waiting(Exception):
    """The task waits for a person (the approval queue, an output review); the
    coordinator asks again. ``phase``: what the job's phase says meanwhile ("" keeps it)."""

    def __init__(self, message: str, phase: str = "") -> None:
        super().__init__(message)
        self.phase = phase


def _day(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def _approver(r: sqlite3.Row) -> Approver:
    return Approver(r["name"], r["role"], r["public_key"], r["fingerprint"], r["added_by"],
                    r["added_ms"], r["removed_by"], r["removed_ms"])


class ApproverRegistry:
    """Who may decide approvals at this node: one row per person and key, audited. A key
    is registered once (a removed approver's key never comes back), and no two approvers
    share one, so two approvals of a G5 task are two people's.

    The registry is under dual control (governance §2.7): a change counts only with the
    countersignatures of a registered officer and a registered security lead (two keys),
    each over exactly that change and the registry as it was (:meth:`state`). The one
    exception is the bootstrap: the first officer, and the first security lead, of a
    node are registered without countersignatures (audited as bootstrap), while no
    approver of that role has ever been registered there. The last officer or security
    lead is never removed (register the successor first), so the registry can always
    approve G5 and sign its next change."""

    def __init__(self, store: NodeStore, node: str = "") -> None:
        """``node``: this node's name, which every countersigned change names."""
        self.store = store
        self.node = node

    @staticmethod
    def state_in(con: sqlite3.Connection) -> dict:
        """The registry's version (the number of changes so far) and its hash (of every
        row, removed ones too), which a countersignature names; and the roles that may
        still be registered without countersignatures (``bootstrap``). Rows are never
        deleted and a key never comes back, so no two states share a hash."""
        rows = con.execute("SELECT seq, name, role, fingerprint, removed_ms FROM approvers "
                           "ORDER BY seq").fetchall()
        entries = [[r["seq"], r["name"], r["role"], r["fingerprint"],
                    r["removed_ms"] is not None] for r in rows]
        ever = {r["role"] for r in rows}
        return {"version": len(entries) + sum(e[4] for e in entries),
                "sha256": hashlib.sha256(canonical(entries).encode()).hexdigest(),
                "bootstrap": [r for r in DUAL_ROLES if r not in ever]}

    def state(self) -> dict:
        with self.store.tx() as con:
            return {"node": self.node, **self.state_in(con)}

    def add(self, name: str, role: str, public_key_pem: str, *, by: str,
            countersignatures: Sequence[dict] = ()) -> Approver:
        """Register ``name`` with ``role`` and key; ``countersignatures``: one dict each
        (``by``, ``statement``, ``signature``) of the registered officer and security
        lead over this change, unless it is the bootstrap of ``role``."""
        check_approver(name, role)
        fp = fingerprint(public_key_pem)
        with self.store.tx() as con:
            same = con.execute("SELECT * FROM approvers WHERE name=? AND removed_ms IS NULL",
                               (name,)).fetchone()
            if same is not None:
                raise UserError(f"{name} is already an approver at this node ({same['role']}, "
                                f"key {same['fingerprint']}); `scifed node approver remove "
                                f"{name}` first to give them another key or role")
            held = con.execute("SELECT * FROM approvers WHERE fingerprint=?",
                               (fp,)).fetchone()
            if held is not None:
                raise UserError(
                    f"this public key ({fp}) is already registered to approver "
                    f"{held['name']}" + (f" (removed {_day(held['removed_ms'])})"
                                         if held["removed_ms"] else "")
                    + f": one person, one key, registered once; make a new key for {name}")
            state = self.state_in(con)
            bootstrap = role in state["bootstrap"]
            signers = self._countersigned(con, state, "add", name, role, fp,
                                          countersignatures, required=not bootstrap)
            con.execute("INSERT INTO approvers (name, role, public_key, fingerprint, "
                        "added_by, added_ms) VALUES (?,?,?,?,?,?)",
                        (name, role, public_key_pem, fp, by, now_ms()))
            AuditLog.append_in(con, by, "approver.add", name, {
                "name": name, "role": role, "fingerprint": fp, "bootstrap": bootstrap,
                "registry_version": state["version"], "registry_sha256": state["sha256"],
                "countersigned_by": signers})
            return _approver(con.execute("SELECT * FROM approvers WHERE fingerprint=?",
                                         (fp,)).fetchone())

    def remove(self, name: str, *, by: str, countersignatures: Sequence[dict] = ()) -> Approver:
        """From now on the approver's key decides nothing here (decisions it already
        signed stay as they were, in the record and the audit). Needs the officer's and
        the security lead's countersignatures (the one removed may be one of them); the
        node's last officer or security lead is not removed."""
        with self.store.tx() as con:
            r = con.execute("SELECT * FROM approvers WHERE name=? AND removed_ms IS NULL",
                            (name,)).fetchone()
            if r is None:
                raise NotFound(f"no approver '{name}' at this node")
            if r["role"] in DUAL_ROLES and con.execute(
                    "SELECT COUNT(*) FROM approvers WHERE role=? AND removed_ms IS NULL",
                    (r["role"],)).fetchone()[0] == 1:
                raise UserError(
                    f"{name} is this node's only {r['role']}: without one, no G5 task can be "
                    "approved and the registry cannot be changed (a change needs the "
                    "officer's and the security lead's countersignatures). Register their "
                    f"successor first (`scifed node approver add NAME --role {r['role']} "
                    "--countersign ...`), then remove them; nothing changed")
            state = self.state_in(con)
            signers = self._countersigned(con, state, "remove", name, r["role"],
                                          r["fingerprint"], countersignatures, required=True)
            con.execute("UPDATE approvers SET removed_by=?, removed_ms=? WHERE seq=?",
                        (by, now_ms(), r["seq"]))
            AuditLog.append_in(con, by, "approver.remove", name, {
                "name": name, "role": r["role"], "fingerprint": r["fingerprint"],
                "registry_version": state["version"], "registry_sha256": state["sha256"],
                "countersigned_by": signers})
            return _approver(con.execute("SELECT * FROM approvers WHERE seq=?",
                                         (r["seq"],)).fetchone())

    def _countersigned(self, con: sqlite3.Connection, state: dict, action: str, name: str,
                       role: str, key: str, countersignatures: Sequence[dict], *,
                       required: bool) -> list[dict]:
        """The registered approvers whose countersignatures verify over exactly this
        change (each a UserError otherwise); with ``required``, they must include an
        officer and a security lead. Any refusal changes nothing."""
        signers: list[dict] = []
        for c in countersignatures:
            if not c.get("signature"):
                raise UserError(f"the countersignature of {c.get('by')!r} has no signature")
            person = ApproverRegistry.active_in(con, c.get("by", ""))
            if any(s["by"] == person.name for s in signers):
                raise UserError(f"{person.name} countersigned twice: a change to the "
                                "registry needs two different approvers (the officer and "
                                "the security lead), each with their own key")
            signed = parse_change_statement(c.get("statement", ""))
            expected = change_statement(node=self.node, action=action, name=name, role=role,
                                        key=key, registry=state, signer=person.name,
                                        signer_key=person.fingerprint)
            wrong = [f for f in CHANGE_FIELDS if signed[f] != expected[f]]
            if wrong:
                raise UserError(_change_mismatch(wrong, signed, expected))
            if not change_verifies(person.public_key, expected, c["signature"]):
                raise UserError(f"the countersignature is not {person.name}'s: it does not "
                                f"verify with their registered key {person.fingerprint} as a "
                                "registry change (signed with another key, changed after "
                                "signing, or a signature of something else such as an "
                                "approval decision); nothing changed")
            signers.append({"by": person.name, "role": person.role, "key": person.fingerprint,
                            "signature": b64(c["signature"])})
        roles = {s["role"] for s in signers}
        if required and not set(DUAL_ROLES) <= roles:
            given = ", ".join(f"{s['by']} ({s['role']})" for s in signers) or "nobody"
            raise UserError(
                f"to {action} approver {name} ({role}) needs the countersignatures of this "
                "node's officer and its security lead (two registered approvers, two keys), "
                f"each over this change; it was countersigned by {given}. `scifed node "
                f"approver {action} {name} ... --countersign OFFICER.KEY --countersign "
                "SECURITY_LEAD.KEY`; nothing changed")
        return signers

    def list(self, include_removed: bool = False) -> list[Approver]:
        with self.store.tx() as con:
            rows = con.execute("SELECT * FROM approvers"
                               + ("" if include_removed else " WHERE removed_ms IS NULL")
                               + " ORDER BY seq").fetchall()
        return [_approver(r) for r in rows]

    @staticmethod
    def active_in(con: sqlite3.Connection, name: str) -> Approver:
        """The registered approver ``name``, else one UserError: removed, or unknown."""
        r = con.execute("SELECT * FROM approvers WHERE name=? AND removed_ms IS NULL",
                        (name,)).fetchone()
        if r is not None:
            return _approver(r)
        gone = con.execute("SELECT * FROM approvers WHERE name=? ORDER BY seq DESC",
                           (name,)).fetchone()
        if gone is not None:
            raise UserError(f"approver {name} was removed from this node on "
                            f"{_day(gone['removed_ms'])} (by {gone['removed_by']}): their key "
                            "no longer approves, denies or countersigns anything")
        names = [x["name"] for x in con.execute(
            "SELECT name FROM approvers WHERE removed_ms IS NULL ORDER BY seq")]
        raise UserError(f"{name!r} is not a registered approver at this node (approvers: "
                        f"{', '.join(names) or 'none yet'}; `scifed node approver add`)")


def legacy_approvers_notice(approvers: dict[str, str]) -> str:
    """What the node says at start when node.yaml still lists `approvers:` by name."""
    if not approvers:
        return ""
    adds = "; ".join(f"`scifed node approver add {n} --role {r}`"
                     for n, r in approvers.items())
    return ("node.yaml `approvers:` names no longer approve anything: approvers are people "
            f"with keys. Register each with the node running ({adds}; after the first "
            "officer and the first security lead, add `--countersign OFFICER.KEY "
            "--countersign SECURITY_LEAD.KEY`), then delete `approvers:` from node.yaml")


def _row(r: sqlite3.Row) -> Approval:
    return Approval(r["approval_id"], r["job_id"], r["dataset_id"], r["study_id"],
                    r["job_type"], r["researcher"], r["grade"], r["reason"],
                    json.loads(r["spec"]), r["state"], json.loads(r["decisions"]),
                    r["expires_ms"], r["created_ms"],
                    json.loads(r["reason_said"]) if r["reason_said"] else None)


class Approvals:
    def __init__(self, store: NodeStore, node: str) -> None:
        """``node``: this node's name, which every signed decision names."""
        if not isinstance(node, str):
            raise TypeError("Approvals(store, node): approvers are registered with keys "
                            "(ApproverRegistry), not passed as a name->role map")
        self.store = store
        self.node = node
        self.registry = ApproverRegistry(store, node)

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
                said = structure(reason)
                con.execute("INSERT INTO approvals (approval_id, job_id, dataset_id, "
                            "study_id, job_type, researcher, grade, reason, spec, state, "
                            "decisions, expires_ms, created_ms, reason_said) VALUES "
                            "(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                            (aid, job_id, dataset_id, study_id, job_type, researcher, grade,
                             reason, json.dumps(spec), "pending", "[]", None, now_ms(),
                             json.dumps(said) if said else None))
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
               expires_ms: int | None = None, statement: str = "",
               signature: bytes = b"") -> Approval:
        """Record approver ``by``'s decision, if ``signature`` is theirs over exactly this
        decision (``statement``: what they say they signed, for a precise refusal; the
        node checks the signature over its own statement). Any refusal changes nothing."""
        if not signature:
            raise UserError(UNSIGNED)
        if not approve and not reason.strip():
            raise UserError("a denial needs a reason (--reason TEXT): the researcher sees it")
        if not approve and expires_ms is not None:
            raise UserError("a denial has no expiry")
        if expires_ms is not None and expires_ms <= now_ms():
            raise UserError("the approval's expiry is in the past")
        signed = parse_statement(statement)
        with self.store.tx() as con:
            person = ApproverRegistry.active_in(con, by)
            r = con.execute("SELECT * FROM approvals WHERE approval_id=?",
                            (approval_id,)).fetchone()
            if r is None:
                raise NotFound(f"no approval request '{approval_id}' at this node")
            appr = _row(r)
            if appr.state != "pending":
                raise UserError(f"approval {approval_id} is already {appr.state}")
            expected = decision_statement(node=self.node, approval=appr.as_dict(),
                                          approver=person.name, key=person.fingerprint,
                                          approve=approve, reason=reason,
                                          expires_ms=expires_ms)
            wrong = [f for f in STATEMENT_FIELDS if signed[f] != expected[f]]
            if wrong:
                raise UserError(_mismatch(wrong, signed, expected))
            if not verifies(person.public_key, expected, signature):
                raise UserError(f"the signature is not {person.name}'s: it does not verify "
                                f"with their registered key {person.fingerprint} (signed "
                                "with another key, or changed after signing); nothing "
                                "changed")
            self._check_role(appr, person, approve)
            decisions = [*appr.decisions, {
                "by": person.name, "role": person.role, "key": person.fingerprint,
                "approve": approve, "reason": reason, "expires_ms": expires_ms,
                "at_ms": now_ms(), "statement": expected, "signature": b64(signature)}]
            state = "denied" if not approve else self._approved_state(appr.grade, decisions)
            given = [e for e in (appr.expires_ms, expires_ms if approve else None)
                     if e is not None]
            expires = min(given, default=None)  # a second approver cannot extend the first's
            con.execute("UPDATE approvals SET state=?, decisions=?, expires_ms=? "
                        "WHERE approval_id=?",
                        (state, json.dumps(decisions), expires, approval_id))
            AuditLog.append_in(con, person.name,
                               "approval.approve" if approve else "approval.deny",
                               appr.dataset_id, {
                                   "approval_id": approval_id, "role": person.role,
                                   "job_id": appr.job_id, "reason": reason,
                                   "expires_ms": expires_ms, "state": state,
                                   "key": person.fingerprint,
                                   "spec_sha256": expected["spec_sha256"],
                                   "signature": b64(signature)})
        return self.get(approval_id)

    @staticmethod
    def _check_role(appr: Approval, person: Approver, approve: bool) -> None:
        """The registry's role against the task's grade; a person counts once."""
        rank = grade_rank(appr.grade)
        if person.role == "liaison" and rank > grade_rank(LIAISON_UP_TO):
            raise UserError(f"a liaison may decide up to {LIAISON_UP_TO}; this task is on "
                            f"{appr.grade} data and needs the officer")
        if not approve:
            return
        if rank >= grade_rank(OFFICER_FROM) and person.role == "security_lead" \
                and rank < grade_rank(DUAL_FROM):
            raise UserError(f"a task on {appr.grade} data is approved by the officer; the "
                            f"security lead's approval counts from {DUAL_FROM} on, beside "
                            "the officer's")
        for d in appr.decisions:
            if d["approve"] and (d["by"] == person.name or d.get("key") == person.fingerprint):
                raise UserError(f"{d['by']} (key {d.get('key')}) already approved "
                                f"{appr.approval_id}; a {appr.grade} task needs the officer "
                                "and the security lead: two different approvers with two "
                                "different keys")

    @staticmethod
    def _approved_state(grade: str, decisions: list[dict]) -> str:
        """From G5 the officer and the security lead, two different people and keys;
        below, one approval (its role checked by :meth:`_check_role`). Only signed
        decisions count (a name-only one an older version recorded does not)."""
        if grade_rank(grade) < grade_rank(DUAL_FROM):
            return "approved"
        yes = [d for d in decisions if d["approve"] and d.get("signature") and d.get("key")]
        both = any(o["role"] == "officer" and s["role"] == "security_lead"
                   and o["by"] != s["by"] and o["key"] != s["key"]
                   for o in yes for s in yes)
        return "approved" if both else "pending"


def _mismatch(wrong: list[str], signed: dict, expected: dict) -> str:
    """Why a signed statement does not fit the decision it was sent with."""
    if {"node", "approval_id", "job_id", "dataset_id", "study_id"} & set(wrong):
        return (f"the signature is for another request: it was made for approval "
                f"{signed['approval_id']!r} at node {signed['node']!r}, not "
                f"{expected['approval_id']} at {expected['node']}; a signature covers one "
                "decision only (nothing changed)")
    parts = "; ".join(f"{f}: signed {signed[f]!r}, sent {expected[f]!r}" for f in wrong)
    return (f"the decision differs from what was signed ({parts}); a changed decision "
            "needs a new signature (nothing changed)")


def _change_mismatch(wrong: list[str], signed: dict, expected: dict) -> str:
    """Why a countersignature does not fit the registry change it was sent with."""
    who = expected["signer"]
    if {"registry_version", "registry_sha256"} & set(wrong):
        return (f"{who}'s countersignature was made for the registry at version "
                f"{signed['registry_version']} ({str(signed['registry_sha256'])[:12]}…); it "
                f"is now at version {expected['registry_version']} "
                f"({expected['registry_sha256'][:12]}…): a countersignature covers one "
                "change to the registry as it was, never a later one; sign this change "
                "again (nothing changed)")
    if "node" in wrong:
        return (f"{who}'s countersignature was made for node {signed['node']!r}, not "
                f"{expected['node']} (nothing changed)")
    parts = "; ".join(f"{f}: signed {signed[f]!r}, sent {expected[f]!r}" for f in wrong)
    return (f"the change differs from what {who} countersigned ({parts}); a countersignature "
            "covers exactly one change (nothing changed)")


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

