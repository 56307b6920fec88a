"""Grants and deliveries in the node's database.

A grant is one researcher's access to one dataset by one method (and, for a download,
one column subset and format), as the researcher signed the request and the node
decided it. Its state follows the officer's approval where the cell asks for one
(``node/approvals.py``: the same queue and signed decisions as jobs); the officer may
revoke it at any time. Each manifest, chunk run, answer and offline transfer is a
delivery, kept here and audited in the chain with its recipient and hash.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import asdict, dataclass

from node.store import NodeStore
from scifed.errors import NotFound
from scifed.wire import now_ms

SCHEMA = """
CREATE TABLE IF NOT EXISTS access_grants (
    grant_id     TEXT PRIMARY KEY,
    dataset_id   TEXT NOT NULL,
    record_id    TEXT NOT NULL,
    researcher   TEXT NOT NULL,
    method       TEXT NOT NULL,
    columns      TEXT NOT NULL,
    format       TEXT NOT NULL,
    purpose      TEXT NOT NULL,
    study        TEXT NOT NULL,
    request      TEXT NOT NULL,   -- the signed statement, its signature and seal claim
    state        TEXT NOT NULL,   -- granted | pending | denied | revoked
    reason       TEXT NOT NULL,
    approval_id  TEXT,
    created_ms   INTEGER NOT NULL,
    extract      TEXT,            -- the prepared download's signed manifest (JSON)
    expires_ms   INTEGER          -- the end the officer set (an automatic grant's only one)
);
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id  TEXT PRIMARY KEY,
    grant_id     TEXT,
    dataset_id   TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    kind         TEXT NOT NULL,   -- download | answer | offline
    sha256       TEXT NOT NULL,
    detail       TEXT NOT NULL,
    at_ms        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS access_calls (
    nonce        TEXT PRIMARY KEY,  -- of a researcher's signed call, answered once
    grant_id     TEXT NOT NULL,
    at_ms        INTEGER NOT NULL   -- the time the call was signed
);
"""


@dataclass(frozen=True)
class Grant:
    grant_id: str
    dataset_id: str
    record_id: str
    researcher: str
    method: str
    columns: list[str]
    format: str
    purpose: str
    study: str
    request: dict
    state: str
    reason: str
    approval_id: str | None
    created_ms: int
    extract: dict | None
    expires_ms: int | None = None  # the end the officer set, if any

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("request")
        return out


def _grant(r: sqlite3.Row) -> Grant:
    return Grant(r["grant_id"], r["dataset_id"], r["record_id"], r["researcher"], r["method"],
                 json.loads(r["columns"]), r["format"], r["purpose"], r["study"],
                 json.loads(r["request"]), r["state"], r["reason"], r["approval_id"],
                 r["created_ms"], json.loads(r["extract"]) if r["extract"] else None,
                 r["expires_ms"])


class GrantBook:
    def __init__(self, store: NodeStore) -> None:
        self.store = store
        with store.tx() as con:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            have = {r[1] for r in con.execute("PRAGMA table_info(access_grants)")}
            if "expires_ms" not in have:  # a database older than officer-set expiries
                con.execute("ALTER TABLE access_grants ADD COLUMN expires_ms INTEGER")

    @staticmethod
    def insert(con: sqlite3.Connection, *, dataset_id: str, record_id: str, researcher: str,
               method: str, columns: list[str], fmt: str, purpose: str, study: str,
               request: dict, state: str, reason: str) -> str:
        grant_id = f"gr-{uuid.uuid4().hex[:12]}"
        con.execute("INSERT INTO access_grants (grant_id, dataset_id, record_id, "
                    "researcher, method, columns, format, purpose, study, request, state, "
                    "reason, approval_id, created_ms, extract) VALUES "
                    "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (grant_id, dataset_id, record_id, researcher, method, json.dumps(columns),
                     fmt, purpose, study, json.dumps(request), state, reason, None, now_ms(),
                     None))
        return grant_id

    @staticmethod
    def update(con: sqlite3.Connection, grant_id: str, **fields) -> None:
        for name, value in fields.items():
            if name == "extract":
                value = json.dumps(value)
            con.execute(f"UPDATE access_grants SET {name}=? WHERE grant_id=?",  # noqa: S608
                        (value, grant_id))

    @staticmethod
    def first_call(con: sqlite3.Connection, *, nonce: str, grant_id: str, at_ms: int,
                   forget_before_ms: int) -> bool:
        """Record a signed call's nonce; False if it was seen before (a replay). Nonces
        of calls signed before ``forget_before_ms`` are dropped: such calls are refused
        as too old whatever their nonce, so the table holds one window of calls."""
        con.execute("DELETE FROM access_calls WHERE at_ms < ?", (forget_before_ms,))
        cur = con.execute("INSERT OR IGNORE INTO access_calls VALUES (?,?,?)",
                          (nonce, grant_id, at_ms))
        return cur.rowcount == 1

    def get(self, grant_id: str) -> Grant:
        with self.store.tx() as con:
            r = con.execute("SELECT * FROM access_grants WHERE grant_id=?",
                            (grant_id,)).fetchone()
        if r is None:
            raise NotFound(f"no access grant '{grant_id[:40]}' at this node")
        return _grant(r)

    def list(self, *, researcher: str | None = None, state: str | None = None) -> list[Grant]:
        where, args = [], []
        if researcher is not None:
            where.append("researcher=?")
            args.append(researcher)
        if state:
            where.append("state=?")
            args.append(state)
        sql = "SELECT * FROM access_grants" + (" WHERE " + " AND ".join(where) if where else "")
        with self.store.tx() as con:
            rows = con.execute(sql + " ORDER BY created_ms", args).fetchall()
        return [_grant(r) for r in rows]

    @staticmethod
    def deliver(con: sqlite3.Connection, *, grant_id: str | None, dataset_id: str,
                recipient: str, kind: str, sha256: str, detail: dict) -> str:
        delivery_id = f"dl-{uuid.uuid4().hex[:12]}"
        con.execute("INSERT INTO deliveries VALUES (?,?,?,?,?,?,?,?)",
                    (delivery_id, grant_id, dataset_id, recipient, kind, sha256,
                     json.dumps(detail), now_ms()))
        return delivery_id

    def deliveries(self, grant_id: str | None = None) -> list[dict]:
        sql = "SELECT * FROM deliveries" + (" WHERE grant_id=?" if grant_id else "")
        with self.store.tx() as con:
            rows = con.execute(sql + " ORDER BY at_ms", (grant_id,) if grant_id else ()
                               ).fetchall()
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]
