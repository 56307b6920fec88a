"""The node's tamper-evident audit log: a SHA-256 hash chain in the node's SQLite.

Each entry's hash covers the previous hash and the entry's canonical JSON, so editing,
deleting or reordering any row breaks the chain from that row on. Deleting or rewriting
the *tail* (and re-hashing it) leaves a chain that is consistent in itself, so the node
also sends its chain head with every heartbeat and every task result and the coordinator
keeps those heads: comparing against them catches a rewrite, a truncation or a wiped
table of anything older than the last heartbeat.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime

from node.store import NodeStore
from scifed.chain import GENESIS, Verification, canonical, entry_hash
from scifed.chain import ChainEntry as AuditEntry
from scifed.errors import UserError
from scifed.wire import now_ms


class AuditLog:
    def __init__(self, store: NodeStore) -> None:
        self.store = store

    @staticmethod
    def append_in(con: sqlite3.Connection, actor: str, action: str, subject: str,
                  details: dict | None = None) -> AuditEntry:
        """Append inside the caller's transaction, so the action and its record commit
        (or roll back) together."""
        last = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
        body = {"seq": seq, "ts_ms": now_ms(), "actor": actor, "action": action,
                "subject": subject, "details": details or {}}
        digest = entry_hash(prev, body)
        con.execute("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?)",
                    (seq, body["ts_ms"], actor, action, subject, canonical(body["details"]),
                     prev, digest))
        return AuditEntry(**body, prev_hash=prev, hash=digest)

    def append(self, actor: str, action: str, subject: str,
               details: dict | None = None) -> AuditEntry:
        with self.store.tx() as con:
            return self.append_in(con, actor, action, subject, details)

    def entries(self, *, since: int = 0, limit: int | None = None) -> list[AuditEntry]:
        with self.store.tx() as con:
            rows = con.execute("SELECT * FROM audit WHERE seq > ? ORDER BY seq"
                               + (" LIMIT ?" if limit else ""),
                               (since, limit) if limit else (since,)).fetchall()
        return [AuditEntry(r["seq"], r["ts_ms"], r["actor"], r["action"], r["subject"],
                           json.loads(r["details"]), r["prev_hash"], r["hash"]) for r in rows]

    def head(self) -> tuple[int, str]:
        with self.store.tx() as con:
            r = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return (r[0], r[1]) if r else (0, GENESIS)

    def verify(self, heads: Iterable[tuple] = ()) -> Verification:
        """Recompute the chain; optionally check heads recorded elsewhere against it.

        ``heads``: (seq, hash) or (seq, hash, received_unix_ms) as the coordinator
        recorded them from heartbeats and results. Each says the chain up to ``seq``
        hashed to ``hash`` then; the problem names the first recorded head the chain
        disagrees with and how far it still agrees.
        """
        prev, expected_seq, by_seq = GENESIS, 1, {}
        entries = self.entries()
        for e in entries:
            if e.seq != expected_seq:
                return Verification(False, len(entries), e.seq, e.hash,
                                    f"entry {expected_seq} is missing or out of order "
                                    f"(found {e.seq})")
            if e.prev_hash != prev:
                return Verification(False, len(entries), e.seq, e.hash,
                                    f"entry {e.seq} does not follow entry {e.seq - 1}")
            if entry_hash(prev, e.body()) != e.hash:
                return Verification(False, len(entries), e.seq, e.hash,
                                    f"entry {e.seq} was altered after it was written")
            by_seq[e.seq] = e.hash
            prev, expected_seq = e.hash, expected_seq + 1
        head_seq = entries[-1].seq if entries else 0
        problem = _disagreement(by_seq, head_seq, sorted(heads))
        if problem:
            return Verification(False, len(entries), head_seq, prev, problem)
        return Verification(True, len(entries), head_seq, prev)

    def export(self, fmt: str) -> str:
        rows = [e.as_dict() for e in self.entries()]
        if fmt == "jsonl":
            return "".join(canonical(r) + "\n" for r in rows)
        if fmt == "csv":
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=["seq", "ts_ms", "actor", "action", "subject",
                                                "details", "prev_hash", "hash"])
            w.writeheader()
            for r in rows:
                w.writerow({**r, "details": canonical(r["details"])})
            return buf.getvalue()
        raise UserError(f"--format {fmt}: choose jsonl or csv")


def _when(head: tuple) -> str:
    if len(head) > 2 and head[2]:
        stamp = datetime.fromtimestamp(head[2] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f" on {stamp}"
    return ""


def _disagreement(by_seq: dict[int, str], head_seq: int, heads: list[tuple]) -> str:
    """'' if every recorded head is in the chain; else what the first that is not says."""
    if heads and not by_seq:
        latest = heads[-1]
        return (f"the coordinator holds a head at seq {latest[0]}{_when(latest)}; the chain "
                "has 0 entries: the audit log was wiped")
    agreed = 0  # the chain is the one the coordinator saw up to this entry
    for head in heads:
        seq, digest = head[0], head[1]
        if by_seq.get(seq) == digest:
            agreed = seq
            continue
        if seq not in by_seq:
            what = (f"entry {seq} is missing: the coordinator recorded the chain head at "
                    f"entry {seq}{_when(head)}, the chain ends at entry {head_seq}")
        else:
            what = (f"entry {seq} differs from the chain head the coordinator recorded"
                    f"{_when(head)}")
        if agreed == seq - 1:
            where = f"entry {seq} is the first that disagrees"
        else:
            where = f"the first entry that disagrees is one of {agreed + 1}-{seq}"
        if agreed:
            where += f"; entries 1-{agreed} agree with the coordinator"
        return f"{what} ({where}): history was rewritten after the fact"
    return ""

