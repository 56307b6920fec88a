"""What the operator sees of the federation, in one place for the CLI (`scifed nodes
list`, `study list`, `operator jobs`, `operator revocations`) and the operator's console:
each function calls the coordinator's operator RPCs and returns plain rows.

Nothing here holds a result or a node's reason: the jobs come from ListAllJobs, whose
summaries carry states only; the reason a node gives for a refusal is sealed to the
researcher and never reaches the coordinator in clear.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime


def iso(ms: int | None) -> str:
    """A coordinator time (ms since the epoch, UTC) as ISO 8601; empty for none."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms else ""


def now_ms() -> int:
    return int(time.time() * 1000)


def age_s(ms: int | None, now: int) -> float | None:
    """Seconds since ``ms``; None for never."""
    return max(0.0, (now - ms) / 1000) if ms else None


def age_text(seconds: float | None) -> str:
    """An age as people read it: ``12 s``, ``4 min``, ``3 h``, ``2 d``; ``never``."""
    if seconds is None:
        return "never"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


@dataclass(frozen=True)
class NodeRow:
    name: str
    platform: str
    online: bool
    last_seen: str
    last_seen_age_s: float | None
    version: str
    datasets: int
    audit_seq: int | None
    audit_hash: str
    audit_head_age_s: float | None  # since the coordinator recorded the latest head


def _ms(ts) -> int | None:
    return None if ts is None or ts != ts else int(ts.timestamp() * 1000)  # NaT != NaT


def nodes(client, now: int | None = None) -> list[NodeRow]:
    """Every enrolled node: online or not, last seen, version, its latest audit head."""
    now = now_ms() if now is None else now
    rows = []
    for r in client.nodes().itertuples():
        seen, head = _ms(r.last_seen), _ms(r.audit_received)
        rows.append(NodeRow(
            name=r.name, platform=r.platform, online=bool(r.online), last_seen=iso(seen),
            last_seen_age_s=age_s(seen, now), version=r.version, datasets=int(r.datasets),
            audit_seq=None if r.audit_hash is None else int(r.audit_seq),
            audit_hash=r.audit_hash or "", audit_head_age_s=age_s(head, now)))
    return rows


@dataclass(frozen=True)
class StudyRow:
    study_id: str
    name: str
    purpose: str
    status: str
    min_nodes: int
    accepted: int
    key_version: int
    lead_node: str
    researchers: list[str]
    members: list[dict] = field(default_factory=list)  # node, state, datasets


def studies(client) -> list[StudyRow]:
    """Every study: its members and their answers, researchers, key epoch."""
    return study_rows(client.studies())


def study_rows(infos) -> list[StudyRow]:
    """StudyInfo messages as rows."""
    return [StudyRow(
        study_id=s.study_id, name=s.name, purpose=s.purpose, status=s.status,
        min_nodes=s.min_nodes, accepted=sum(m.state == "accepted" for m in s.members),
        key_version=s.key_version, lead_node=s.lead_node, researchers=list(s.researchers),
        members=[{"node": m.node, "state": m.state, "datasets": list(m.datasets)}
                 for m in s.members]) for s in infos]


@dataclass(frozen=True)
class JobRow:
    job: str
    study: str
    researcher: str
    type: str
    status: str
    phase: str
    created: str
    updated: str
    contributors: list[str]
    error: str  # the coordinator's own words ("refused at node X"), never a node's reason


def jobs(client, *, study: str = "", status: str = "", limit: int = 0) -> list[JobRow]:
    """Every researcher's jobs, newest first: state only."""
    return [JobRow(job=j.job_id, study=j.study, researcher=j.researcher, type=j.type,
                   status=j.status, phase=j.phase, created=iso(j.created_unix_ms),
                   updated=iso(j.updated_unix_ms), contributors=list(j.contributors),
                   error=j.error)
            for j in client.all_jobs(study=study, status=status, limit=limit)]


@dataclass(frozen=True)
class Revocations:
    has_crl: bool
    crl_number: int
    signed: str
    next_update: str
    revoked: list[dict]  # serial, name, role, revoked


def revocations(client) -> Revocations:
    """The CA's CRL as the coordinator enforces it, each serial named where it can."""
    r = client.revocations()
    return Revocations(
        has_crl=r.has_crl, crl_number=r.crl_number, signed=iso(r.this_update_unix_ms),
        next_update=iso(r.next_update_unix_ms),
        revoked=[{"serial": c.serial, "name": c.name, "role": c.role,
                  "revoked": iso(c.revoked_unix_ms)} for c in r.revoked])


def as_dict(row) -> dict:
    """A row as ``--json`` prints it."""
    return asdict(row)
