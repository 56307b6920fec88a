"""The node's tamper-evident audit log: a SHA-256 hash chain in the node's SQLite.

Each entry's hash covers the previous hash and the entry's canonical JSON, so editing,
deleting or reordering any row breaks the chain from that row on. The node sends its
chain head with every task result and the coordinator keeps those heads, so even a
history rewritten and re-hashed end to end is caught by comparing against them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from dataclasses import dataclass

from node.store import NodeStore
from scifed.errors import UserError
from scifed.wire import now_ms

GENESIS = "0" * 64


def canonical(entry: dict) -> str:
    """One byte-exact JSON form per entry: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(prev_hash: str, entry: dict) -> str:
    return hashlib.sha256((prev_hash + canonical(entry)).encode()).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    ts_ms: int
    actor: str
    action: str
    subject: str
    details: dict
    prev_hash: str
    hash: str

    def body(self) -> dict:
        return {"seq": self.seq, "ts_ms": self.ts_ms, "actor": self.actor,
                "action": self.action, "subject": self.subject, "details": self.details}

    def as_dict(self) -> dict:
        return {**self.body(), "prev_hash": self.prev_hash, "hash": self.hash}


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    problem: str = ""


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

    def verify(self, heads: list[tuple[int, str]] = ()) -> Verification:
        """Recompute the chain; optionally check heads recorded elsewhere against it."""
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
        for seq, digest in heads:
            if by_seq.get(seq) != digest:
                what = "is missing" if seq not in by_seq else "differs"
                return Verification(False, len(entries), head_seq, prev,
                                    f"entry {seq} {what} from the chain head the coordinator "
                                    "recorded: history was rewritten after the fact")
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
