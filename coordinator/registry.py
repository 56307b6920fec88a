"""Node registry: who is enrolled, who is connected, and when each was last heard from."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from coordinator.db import AuditHead, Database, Node, Record
from scifed.errors import UserError

# Heartbeats and results' audit heads, from a reader thread per node, take turns here
# rather than in SQLite: 100 streams' writers contending for its one write lock spend the
# coordinator's CPU in the busy handler's sleeps and the connection pool's lock (a
# profile of the 100-node job: four fifths of the busy samples), starving the job itself.
_STREAM_WRITES = threading.Lock()
TURN_SECONDS = 10.0  # how long such a write waits for its turn before it is skipped


@dataclass(frozen=True)
class NodeStatus:
    name: str
    platform: str
    online: bool
    last_seen_ms: int | None
    datasets: int
    software_version: str
    # the latest audit chain head recorded for the node: (seq, hash, when it arrived)
    audit_head: tuple[int, str, int] | None = None


def upsert_node(
    db: Database, *, name: str, platform: str, software_version: str, cert_fingerprint: str,
    seal_claim: dict | None = None,
) -> None:
    """Enrol a node, or refresh what it reports about itself; connection state is kept."""
    with db.session() as session:
        node = session.get(Node, name)
        if node is None:
            session.add(
                Node(
                    name=name,
                    platform=platform,
                    software_version=software_version,
                    cert_fingerprint=cert_fingerprint,
                    connected=False,
                    seal_claim=seal_claim,
                )
            )
        else:
            node.platform = platform
            node.software_version = software_version
            node.cert_fingerprint = cert_fingerprint
            node.seal_claim = seal_claim


def _update_node(db: Database, name: str, **values: object) -> None:
    with db.session() as session:
        _update_in(session, name, **values)


def _update_in(session, name: str, **values: object) -> None:
    result = session.execute(update(Node).where(Node.name == name).values(**values))
    if result.rowcount == 0:
        raise UserError(f"node {name!r} is not enrolled with this coordinator")


def mark_connected(db: Database, name: str, connected: bool, now_ms: int) -> None:
    """Record a node's task stream opening or closing; either event means it was seen."""
    _update_node(db, name, connected=connected, last_seen_ms=now_ms)


def touch(db: Database, name: str, now_ms: int) -> None:
    """Heartbeat: the node is alive as of ``now_ms``."""
    _update_node(db, name, last_seen_ms=now_ms)


def beat(db: Database, name: str, now_ms: int, audit_seq: int = 0,
         audit_hash: str = "") -> bool:
    """A heartbeat's writes: the node was seen, and the audit head it reports. False when
    the database stayed locked past its busy timeout: a lost beat costs nothing (the next
    one, or the next result, carries the same facts), whereas raising would end the node's
    task stream — under a burst of writes, a 100-node federation lost a third of its
    nodes that way."""
    def write() -> None:  # one transaction, not one per fact: 100 nodes beat 20 times a second
        try:
            with db.session() as session:
                _update_in(session, name, last_seen_ms=now_ms)
                if audit_seq > 0 and audit_hash:
                    _add_head(session, name, audit_seq, audit_hash, now_ms)
        except IntegrityError:  # the head was recorded meanwhile (first kept): the beat alone
            touch(db, name, now_ms)

    return _stream_write(write)


def result_head(db: Database, name: str, seq: int, digest: str, now_ms: int) -> bool:
    """The audit head a task result carries; False when the database stayed locked past
    its busy timeout. As with :func:`beat`, the next heartbeat reports the same head, so
    skipping it loses nothing, whereas raising would end the node's task stream before
    its result is delivered (the job then fails with "the node disconnected")."""
    return _stream_write(lambda: record_audit_head(db, name, seq, digest, now_ms))


def _stream_write(write: Callable[[], None]) -> bool:
    """Run one of a stream's bookkeeping writes in turn with the others; False when it
    waited too long, for its turn or past the busy timeout for SQLite's lock."""
    if not _STREAM_WRITES.acquire(timeout=TURN_SECONDS):
        return False
    try:
        write()
    except OperationalError as exc:
        text = str(exc.orig).lower()
        if "locked" not in text and "busy" not in text:
            raise
        return False
    finally:
        _STREAM_WRITES.release()
    return True


def reset_connections(db: Database) -> None:
    """At coordinator start no stream can be open yet, whatever the last run recorded."""
    with db.session() as session:
        session.execute(update(Node).values(connected=False))


def list_nodes(db: Database, *, now_ms: int, offline_after_ms: int) -> list[NodeStatus]:
    """Every enrolled node, by name. Online means connected and heard from recently: a
    stream can stay open on a half-dead TCP connection, so heartbeats decide."""
    datasets = (
        select(Record.node_name, func.count().label("n")).group_by(Record.node_name).subquery()
    )
    stmt = (
        select(Node, func.coalesce(datasets.c.n, 0))
        .outerjoin(datasets, datasets.c.node_name == Node.name)
        .order_by(Node.name)
    )
    latest = (select(AuditHead.node_name, func.max(AuditHead.seq).label("seq"))
              .group_by(AuditHead.node_name).subquery())
    heads_stmt = select(AuditHead).join(latest, (latest.c.node_name == AuditHead.node_name)
                                        & (latest.c.seq == AuditHead.seq))
    with db.session() as session:
        rows = session.execute(stmt).all()
        heads = {h.node_name: (h.seq, h.hash, h.received_ms)
                 for h in session.scalars(heads_stmt)}
    return [
        NodeStatus(
            name=node.name,
            platform=node.platform,
            online=node.connected
            and node.last_seen_ms is not None
            and now_ms - node.last_seen_ms <= offline_after_ms,
            last_seen_ms=node.last_seen_ms,
            datasets=count,
            software_version=node.software_version,
            audit_head=heads.get(node.name),
        )
        for node, count in rows
    ]


def node_names(db: Database) -> list[str]:
    """Names of all enrolled nodes, sorted."""
    with db.session() as session:
        return list(session.scalars(select(Node.name).order_by(Node.name)))


def record_audit_head(db: Database, name: str, seq: int, digest: str, now_ms: int) -> None:
    """Keep the first hash a node reported for each chain position, from a task result or
    a heartbeat.

    A head commits to the whole chain up to it, so the latest one alone catches a rewrite
    or a deletion of any entry up to ``seq``; the earlier ones let the node's check name
    where history first disagrees. A row is added only when the head moved (at most one
    per audit entry, however often the node heartbeats), and a later, different report
    for a position already held never replaces what was seen first.
    """
    try:
        with db.session() as session:
            _add_head(session, name, seq, digest, now_ms)
    except IntegrityError:
        pass  # a result and a heartbeat reported the same position at once: first kept


def _add_head(session, name: str, seq: int, digest: str, now_ms: int) -> None:
    """:func:`record_audit_head` inside ``session``'s transaction."""
    if session.get(AuditHead, (name, seq)) is None:
        session.add(AuditHead(node_name=name, seq=seq, hash=digest, received_ms=now_ms))


def audit_heads(db: Database, name: str) -> list[AuditHead]:
    """The heads recorded for node ``name``, by position; the last is the latest."""
    with db.session() as session:
        return list(session.scalars(select(AuditHead).where(AuditHead.node_name == name)
                                    .order_by(AuditHead.seq)).all())
