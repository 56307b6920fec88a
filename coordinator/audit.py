"""The coordinator's own tamper-evident audit chain: what it did, hash-chained in its DB.

Nodes anchor their chains at the coordinator (the heads their heartbeats and results
carry); the coordinator keeps a chain of its own acts, so that what it records can be
checked as well: a study created, a study key version activated (with the hash of the
public context the lead signed), a job submitted (with the hash of its spec) and a job
ended (with, for a released job, the hash of the sealed result it holds).

Each entry's hash covers the previous hash and the entry's canonical JSON, as in the
node's chain, so editing, deleting or reordering an entry breaks the chain from there
on. An entry is appended in the transaction of the act it records, so both commit or
neither does. :func:`verify` also checks the chain against the tables it describes: a
study or job that has no entry (its entry deleted from the tail, or the table wiped), or
a key or released result that differs from what its entry recorded, counts as tampering.
What this cannot catch on its own is a coordinator that rewrites its tables and its
chain together; nothing outside the coordinator holds its head yet.
"""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from coordinator.db import CoordinatorAuditEntry, Database, Job, Study
from scifed.chain import GENESIS, Verification, canonical, entry_hash, sha256_hex
from scifed.chain import ChainEntry as Entry
from scifed.states import FINAL, JobStatus
from scifed.wire import now_ms

# pg_advisory_xact_lock key: appends take it, so concurrent transactions chain in turn
# a row's created_ms is taken a moment before its entry's ts_ms (the transaction may wait
# for SQLite's write lock in between)
_SLACK_MS = 60_000
_PG_LOCK = int.from_bytes(hashlib.sha256(b"scifed.coordinator_audit").digest()[:8], "big",
                          signed=True)


def _serialize(session: Session) -> None:
    """Make this transaction the only one appending until it ends: on PostgreSQL a
    transaction-scoped advisory lock; on SQLite a write statement, which takes the
    database's single write lock (other writers wait out busy_timeout)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
    else:
        session.execute(text("UPDATE coordinator_audit SET seq = seq WHERE 0 = 1"))


def append_in(session: Session, actor: str, action: str, subject: str,
              details: dict | None = None) -> Entry:
    """Append inside the caller's transaction, so the act and its record commit (or roll
    back) together."""
    _serialize(session)
    last = session.execute(select(CoordinatorAuditEntry.seq, CoordinatorAuditEntry.hash)
                           .order_by(CoordinatorAuditEntry.seq.desc()).limit(1)).first()
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    body = {"seq": seq, "ts_ms": now_ms(), "actor": actor, "action": action,
            "subject": subject, "details": json.loads(canonical(details or {}))}
    digest = entry_hash(prev, body)
    session.add(CoordinatorAuditEntry(seq=seq, ts_ms=body["ts_ms"], actor=actor,
                                      action=action, subject=subject,
                                      details=canonical(body["details"]), prev_hash=prev,
                                      hash=digest))
    session.flush()
    return Entry(**body, prev_hash=prev, hash=digest)


def append(db: Database, actor: str, action: str, subject: str,
           details: dict | None = None) -> Entry:
    with db.session() as session:
        return append_in(session, actor, action, subject, details)


def _entry(row: CoordinatorAuditEntry) -> Entry:
    try:
        details = json.loads(row.details)
    except (TypeError, ValueError):
        details = {"unreadable": row.details}  # verify() reports the hash mismatch
    return Entry(row.seq, row.ts_ms, row.actor, row.action, row.subject, details,
                 row.prev_hash, row.hash)


def entries(db: Database, *, since: int = 0, limit: int | None = None) -> list[Entry]:
    stmt = (select(CoordinatorAuditEntry).where(CoordinatorAuditEntry.seq > since)
            .order_by(CoordinatorAuditEntry.seq))
    if limit:
        stmt = stmt.limit(limit)
    with db.session() as session:
        return [_entry(r) for r in session.scalars(stmt).all()]


def head(db: Database) -> tuple[int, str]:
    with db.session() as session:
        last = session.execute(select(CoordinatorAuditEntry.seq, CoordinatorAuditEntry.hash)
                               .order_by(CoordinatorAuditEntry.seq.desc()).limit(1)).first()
    return (last[0], last[1]) if last else (0, GENESIS)


def _chain_problem(chain: list[Entry]) -> str:
    prev = GENESIS
    for expected, e in enumerate(chain, start=1):
        if e.seq != expected:
            return f"entry {expected} is missing or out of order (found {e.seq})"
        if e.prev_hash != prev:
            return f"entry {e.seq} does not follow entry {e.seq - 1}"
        if entry_hash(prev, e.body()) != e.hash:
            return f"entry {e.seq} was altered after it was written"
        prev = e.hash
    return ""


def _tables_problem(studies: list[tuple], jobs: list[tuple], chain: list[Entry]) -> str:
    """Every study and job made since the chain began has its entries, and what those
    recorded still matches the tables. A row without an entry that is older than the
    first entry (by more than the moments between a row's timestamp and its entry's)
    predates the chain, a database from before it, and is not checked."""
    if not chain:
        if studies or jobs:
            return (f"the chain has 0 entries but the database holds {len(studies)} studies "
                    f"and {len(jobs)} jobs: the audit table was wiped (a database from "
                    "before the chain starts one with its next study or job)")
        return ""
    since = chain[0].ts_ms - _SLACK_MS
    created = {e.subject for e in chain if e.action == "study.create"}
    keys = {(e.subject, e.details.get("version")): e.details for e in chain
            if e.action == "study.key.activate"}
    submitted = {e.subject for e in chain if e.action == "job.submit"}
    ended = {e.subject: e.details for e in chain if e.action == "job.end"}
    for study_id, name, created_ms, version, public_context in studies:
        if study_id not in created:
            if created_ms < since:
                continue
            return f"study {name} ({study_id}) has no study.create entry: it was deleted"
        if version and public_context is not None:
            key = keys.get((study_id, version))
            if key is None:
                return (f"study {name} key version {version} has no study.key.activate "
                        "entry: it was deleted")
            if key.get("public_context_sha256") != sha256_hex(public_context):
                return (f"study {name} key version {version}: the public context differs "
                        "from the one its study.key.activate entry recorded")
    for job_id, created_ms, status, sealed in jobs:
        if job_id not in submitted:
            if created_ms < since:
                continue
            return f"job {job_id} has no job.submit entry: it was deleted"
        if status in FINAL:
            end = ended.get(job_id)
            if end is None:
                return f"job {job_id} ended {status} but has no job.end entry: it was deleted"
            if end.get("status") != status:
                return (f"job {job_id} is {status} but its job.end entry recorded "
                        f"{end.get('status')}")
            if status == JobStatus.DONE and end.get("result_sha256") != sha256_hex(
                    sealed or b""):
                return (f"job {job_id}: the sealed result differs from the one its job.end "
                        "entry recorded")
    return ""


def verify(db: Database) -> Verification:
    """Recompute the chain and check the studies and jobs it describes against it."""
    with db.session() as session:
        # the tables first: an act and its entry commit together, so every row read here
        # has its entry in the chain read after it
        studies = session.execute(select(Study.study_id, Study.name, Study.created_ms,
                                         Study.key_version, Study.public_context)).all()
        jobs = session.execute(select(Job.job_id, Job.created_ms, Job.status,
                                      Job.sealed_result)).all()
        rows = session.scalars(select(CoordinatorAuditEntry)
                               .order_by(CoordinatorAuditEntry.seq)).all()
        chain = [_entry(r) for r in rows]
    head_seq, head_hash = (chain[-1].seq, chain[-1].hash) if chain else (0, GENESIS)
    problem = _chain_problem(chain) or _tables_problem(
        [tuple(s) for s in studies], [tuple(j) for j in jobs], chain)
    return Verification(not problem, len(chain), head_seq, head_hash, problem)

