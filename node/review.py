"""The officer's output review: a pooled result on a cell that asks for it
(``output_review``: G4 and G5 by default, and any cell an officer tightened) is held here
before it is sealed to the researcher, and leaves only once a person releases it.

What the officer sees is exactly what would leave: the release path (node/release.py)
decodes the pooled numbers under every disclosure rule, signs the result with its
provenance, and keeps those very bytes here (``result``, and their sha256). The
officer's decision is signed with their own approver key over the node, the review, the
job, that sha256 and the decision (``scifed/approver_keys.py:review_statement``), so a
release signed for one result releases no other, and a name alone decides nothing. The
node checks the signature against its registry of approvers, as it checks approvals,
and audits the decision in its chain.

Why here and not in the approval queue: an approval admits a computation before anything
is read; a review judges its output after every rule ran. The two are separate records
with separate signed statements, so neither can stand in for the other.

The review waits across restarts (the row is in node.db; the coordinator's retry of the
release finds it by job, dataset and release step, and a retry made from other inputs is
refused as a replay). A review not decided by its deadline (``expires_ms``) is withheld.
A withheld result is never sealed: only its reason is, to the researcher.

Who decides: a liaison up to G3 (a cell an officer tightened), the officer from G4, and
from G5 the officer and the unit's security lead both to release (either may withhold),
as for approvals (node/approvals.py).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from node.approvals import DUAL_FROM, LIAISON_UP_TO, Approvals, ApproverRegistry
from node.audit import AuditLog
from node.store import NodeStore
from scifed.approver_keys import (
    REVIEW_FIELDS,
    b64,
    parse_review_statement,
    review_statement,
    review_verifies,
)
from scifed.errors import NotFound, UserError
from scifed.grading import grade_rank
from scifed.sentences import structure
from scifed.states import IN_OUTPUT_REVIEW
from scifed.wire import now_ms

STATES = ("pending", "released", "withheld", "expired")
DEFAULT_DEADLINE_HOURS = 7 * 24.0
PHASE = IN_OUTPUT_REVIEW  # the job's phase while a review holds its release


@dataclass(frozen=True)
class Review:
    review_id: str
    job_id: str
    dataset_id: str
    step: str
    task_sha256: str
    study_id: str
    researcher: str
    job_type: str
    grade: str
    category: str
    why: str
    spec: dict
    checks: dict
    result: bytes
    result_sha256: str
    state: str
    decisions: list[dict]
    created_ms: int
    expires_ms: int
    decided_ms: int | None
    # the key and fields of the node's sentences among ``why`` and ``checks`` (scifed/
    # sentences.py): {"why": ..., "checks": {"pooling.release": ...}}, for the console
    said: dict | None = None

    @property
    def decided(self) -> bool:
        return self.state != "pending"

    def reason(self) -> str:
        """The withholding's reason, as the researcher reads it."""
        if self.state == "expired":
            return "the output review's deadline passed without a decision"
        return next((d["reason"] for d in reversed(self.decisions) if not d["release"]), "")

    def withheld_message(self, node: str) -> bytes:
        """What the researcher reads of a result ``node`` withheld (sealed to them)."""
        who = next((d for d in reversed(self.decisions) if not d["release"]), None)
        by = f"{who['by']}, {who['role']}" if who else "deadline"
        return (f"node {node}: the result was withheld by the officer of node {node} "
                f"({by}): {self.reason()}").encode()

    def summary(self) -> dict:
        """The row without the result (a list's line)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__
                if k not in ("result", "step", "task_sha256")}

    def document(self) -> dict:
        """The signed result exactly as it would be sealed, parsed."""
        return json.loads(self.result)


def sentences_in(checks: dict, at: str = "") -> dict[str, dict]:
    """The node's sentences among a result's checks, by their dotted path (``pooling.
    release``), as key and fields; the checks themselves are stored as their text."""
    out: dict[str, dict] = {}
    for name, value in checks.items():
        path = f"{at}{name}"
        if isinstance(value, dict):
            out |= sentences_in(value, path + ".")
        elif (said := structure(value)) is not None:
            out[path] = said
    return out


def _row(r) -> Review:
    return Review(r["review_id"], r["job_id"], r["dataset_id"], r["step"], r["task_sha256"],
                  r["study_id"], r["researcher"], r["job_type"], r["grade"], r["category"],
                  r["why"], json.loads(r["spec"]), json.loads(r["checks"]), bytes(r["result"]),
                  r["result_sha256"], r["state"], json.loads(r["decisions"]),
                  r["created_ms"], r["expires_ms"], r["decided_ms"],
                  json.loads(r["why_said"]) if r["why_said"] else None)


def researcher_view(job_type: str, document: dict, *, plots: bool = False) -> dict[str, Any]:
    """The pooled result as the job type's researcher view renders it: each table as
    records (column -> value), and with ``plots`` the view's figures as base64 PNG, as
    the researcher's `scifed job result --out` writes them, for the officer's CLI and
    console. A type whose view cannot render it (an old result) shows the JSON only."""
    import base64
    import tempfile
    from pathlib import Path

    from jobs import registry

    try:
        view = registry.get(job_type).view(document)
        tables = view.tables() if hasattr(view, "tables") else {}
        figures: dict[str, str] = {}
        if plots and hasattr(view, "write"):
            with tempfile.TemporaryDirectory() as tmp:
                for path in view.write(Path(tmp)):
                    if path.suffix == ".png":
                        figures[path.name] = base64.b64encode(path.read_bytes()).decode()
    except Exception as exc:  # noqa: BLE001 - the officer still sees the JSON
        return {"tables": {}, "plots": {},
                "note": f"the {job_type} view could not render it: {exc}"}
    return {"tables": {name: json.loads(df.to_json(orient="records", date_format="iso"))
                       for name, df in tables.items()}, "plots": figures}


class OutputReviews:
    """The node's output-review queue (table ``output_reviews``)."""

    def __init__(self, store: NodeStore, approvals: Approvals,
                 deadline_hours: float = DEFAULT_DEADLINE_HOURS) -> None:
        self.store = store
        self.approvals = approvals
        self.node = approvals.node
        self.deadline_ms = int(deadline_hours * 3600 * 1000)

    # -- the release path's side ----------------------------------------------------------
    def find(self, job_id: str, dataset_id: str, step: str) -> Review | None:
        """The review of this release step, if one was opened (a pending one past its
        deadline is withheld as expired first, audited)."""
        with self.store.tx() as con:
            r = con.execute("SELECT * FROM output_reviews WHERE job_id=? AND dataset_id=? "
                            "AND step=?", (job_id, dataset_id, step)).fetchone()
            if r is None:
                return None
            return self._expire_in(con, _row(r))

    def withheld(self, job_id: str, dataset_id: str) -> Review | None:
        """This dataset's earliest withholding (or expiry) of any review of the job:
        once an officer withheld a job's output, it stays withheld whichever release
        step or release node asks again (a coordinator that ends no job after a
        withholding, and shops for another release node or round, gets no second
        review)."""
        with self.store.tx() as con:
            r = con.execute("SELECT * FROM output_reviews WHERE job_id=? AND dataset_id=? "
                            "AND state IN ('withheld', 'expired') ORDER BY decided_ms "
                            "LIMIT 1", (job_id, dataset_id)).fetchone()
        return _row(r) if r is not None else None

    def hold(self, *, job_id: str, dataset_id: str, step: str, task_sha256: str,
             study_id: str, researcher: str, job_type: str, grade: str, category: str,
             why: str, spec: dict, checks: dict, result: bytes, result_sha256: str,
             own: bool = True) -> Review:
        """Open the review of a release step with the result that would be sealed (or the
        one a concurrent copy of the task opened first), audited. ``own``: this node's
        officer decides; else (only other contributors' officers review it) the result is
        kept here as released by this node, so that the very bytes they review are the
        ones sealed."""
        with self.store.tx() as con:
            r = con.execute("SELECT * FROM output_reviews WHERE job_id=? AND dataset_id=? "
                            "AND step=?", (job_id, dataset_id, step)).fetchone()
            if r is not None:
                return _row(r)
            review_id = f"rv-{uuid.uuid4().hex[:10]}"
            t = now_ms()
            con.execute("INSERT INTO output_reviews (review_id, job_id, dataset_id, step, "
                        "task_sha256, study_id, researcher, job_type, grade, category, why, "
                        "spec, checks, result, result_sha256, state, decisions, created_ms, "
                        "expires_ms, decided_ms, why_said) VALUES "
                        "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (review_id, job_id, dataset_id, step, task_sha256, study_id,
                         researcher, job_type, grade, category, why, json.dumps(spec),
                         json.dumps(checks), result, result_sha256,
                         "pending" if own else "released", "[]", t, t + self.deadline_ms,
                         None if own else t, json.dumps(
                             {"why": structure(why), "checks": sentences_in(checks)})))
            AuditLog.append_in(con, "policy", "review.request" if own else "review.hold",
                               dataset_id, {
                                   "review_id": review_id, "job_id": job_id,
                                   "researcher": researcher, "job_type": job_type,
                                   "reason": why, "result_sha256": result_sha256,
                                   "expires_ms": t + self.deadline_ms})
            return _row(con.execute("SELECT * FROM output_reviews WHERE review_id=?",
                                     (review_id,)).fetchone())

    def _expire_in(self, con, review: Review) -> Review:
        if review.state != "pending" or review.expires_ms > now_ms():
            return review
        t = now_ms()
        con.execute("UPDATE output_reviews SET state='expired', decided_ms=? WHERE "
                    "review_id=?", (t, review.review_id))
        AuditLog.append_in(con, "policy", "review.expired", review.dataset_id, {
            "review_id": review.review_id, "job_id": review.job_id,
            "result_sha256": review.result_sha256})
        return _row(con.execute("SELECT * FROM output_reviews WHERE review_id=?",
                                (review.review_id,)).fetchone())

    # -- the officer's side ---------------------------------------------------------------
    def list(self, state: str | None = None) -> list[Review]:
        if state and state not in STATES:
            raise UserError(f"no review state '{state}': choose {', '.join(STATES)} or all")
        with self.store.tx() as con:
            rows = [self._expire_in(con, _row(r)) for r in con.execute(
                "SELECT * FROM output_reviews ORDER BY created_ms").fetchall()]
        return [r for r in rows if not state or r.state == state]

    def get(self, review_id: str) -> Review:
        with self.store.tx() as con:
            r = con.execute("SELECT * FROM output_reviews WHERE review_id=?",
                            (review_id,)).fetchone()
            if r is None:
                raise NotFound(f"no output review '{review_id}' at this node")
            return self._expire_in(con, _row(r))

    def show(self, review_id: str, purposes: dict[str, str] | None = None, *,
             plots: bool = True) -> dict:
        """Everything the officer decides on: the job in readable form (its spec), the
        researcher, the study (and its purpose where the coordinator told it), the
        dataset and its cell, why the review is required, the disclosure checks the
        release applied, and the pooled result, both as the researcher's view renders it
        (its tables, and with ``plots`` its figures) and as the signed JSON that would be
        sealed."""
        review = self.get(review_id)
        document = review.document()
        shown = {k: v for k, v in document.items() if k not in ("provenance", "signature")}
        return {**review.summary(),
                "study_purpose": (purposes or {}).get(review.study_id, ""),
                "result": shown,
                "view": researcher_view(review.job_type, document, plots=plots),
                "provenance": document.get("provenance", {})}

    def decide(self, review_id: str, *, release: bool, by: str, reason: str = "",
               statement: str = "", signature: bytes = b"") -> Review:
        """Record approver ``by``'s decision if ``signature`` is theirs over exactly this
        decision on exactly this result; anything else changes nothing."""
        if not signature:
            raise UserError("an output-review decision must be signed with the approver's "
                            "own key: `scifed node review release|withhold ID --key KEY`")
        if not release and not reason.strip():
            raise UserError("withholding needs a reason (--reason TEXT): the researcher "
                            "sees it")
        signed = parse_review_statement(statement)
        with self.store.tx() as con:
            person = ApproverRegistry.active_in(con, by)
            r = con.execute("SELECT * FROM output_reviews WHERE review_id=?",
                            (review_id,)).fetchone()
            if r is None:
                raise NotFound(f"no output review '{review_id}' at this node")
            review = self._expire_in(con, _row(r))
            if review.decided:
                raise UserError(f"output review {review_id} is already {review.state}; a "
                                "decision is final")
            expected = review_statement(node=self.node, review=review.summary(),
                                        approver=person.name, key=person.fingerprint,
                                        release=release, reason=reason)
            wrong = [f for f in REVIEW_FIELDS if signed[f] != expected[f]]
            if wrong:
                raise UserError(_mismatch(wrong, signed, expected))
            if not review_verifies(person.public_key, expected, signature):
                raise UserError(f"the signature is not {person.name}'s: it does not verify "
                                f"with their registered key {person.fingerprint} as an "
                                "output-review decision (signed with another key, changed "
                                "after signing, or a signature of something else such as "
                                "an approval); nothing changed")
            _check_role(review, person.name, person.role, person.fingerprint, release)
            decisions = [*review.decisions, {
                "by": person.name, "role": person.role, "key": person.fingerprint,
                "release": release, "approve": release, "reason": reason, "at_ms": now_ms(),
                "statement": expected, "signature": b64(signature)}]
            state = "withheld" if not release else (
                "released" if Approvals._approved_state(review.grade, decisions) == "approved"
                else "pending")
            con.execute("UPDATE output_reviews SET state=?, decisions=?, decided_ms=? "
                        "WHERE review_id=?", (state, json.dumps(decisions),
                                              now_ms() if state != "pending" else None,
                                              review_id))
            AuditLog.append_in(con, person.name,
                               "review.release" if release else "review.withhold",
                               review.dataset_id, {
                                   "review_id": review_id, "job_id": review.job_id,
                                   "role": person.role, "key": person.fingerprint,
                                   "reason": reason, "state": state,
                                   "result_sha256": review.result_sha256,
                                   "signature": b64(signature)})
            return _row(con.execute("SELECT * FROM output_reviews WHERE review_id=?",
                                    (review_id,)).fetchone())


def _check_role(review: Review, name: str, role: str, key: str, release: bool) -> None:
    """The registry's role against the result's grade (as for approvals); a person
    counts once."""
    rank = grade_rank(review.grade)
    if role == "liaison" and rank > grade_rank(LIAISON_UP_TO):
        raise UserError(f"a liaison may review results up to {LIAISON_UP_TO}; this result "
                        f"is of {review.grade} data and needs the officer")
    if release and role == "security_lead" and rank < grade_rank(DUAL_FROM):
        raise UserError(f"a result of {review.grade} data is released by the officer; the "
                        f"security lead's release counts from {DUAL_FROM} on, beside the "
                        "officer's")
    for d in review.decisions:
        if d["release"] and (d["by"] == name or d["key"] == key):
            raise UserError(f"{d['by']} (key {d['key']}) already released {review.review_id}; "
                            f"a {review.grade} result needs the officer and the security "
                            "lead: two different approvers with two different keys")


def _mismatch(wrong: list[str], signed: dict, expected: dict) -> str:
    if {"node", "review_id", "job_id"} & set(wrong):
        return (f"the signature is for another review: it was made for review "
                f"{signed['review_id']!r} of job {signed['job_id']!r} at node "
                f"{signed['node']!r}, not {expected['review_id']} of job "
                f"{expected['job_id']} at {expected['node']}; a signature covers one "
                "decision only (nothing changed)")
    if "result_sha256" in wrong:
        return (f"the signature is for another result (sha256 "
                f"{str(signed['result_sha256'])[:16]}…), not the one held for review "
                f"({expected['result_sha256'][:16]}…); nothing changed")
    parts = "; ".join(f"{f}: signed {signed[f]!r}, sent {expected[f]!r}" for f in wrong)
    return (f"the decision differs from what was signed ({parts}); a changed decision "
            "needs a new signature (nothing changed)")
