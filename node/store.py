"""The node's own state in SQLite: registered datasets and their catalog records.

Raw data stays in the files under the data directory; this database holds only the
path, the catalog record and bookkeeping. Each transaction takes a connection of its own
from a small pool (safe from the gRPC worker threads; reused, since opening one costs
more than most of the node's transactions). Synchronous stays FULL, SQLite's default:
the budget ledger and the audit chain must survive a power cut.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from scifed.at_rest import AtRestKey, private_dir, private_sqlite
from scifed.errors import UserError
from scifed.wire import now_ms

SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    dataset_id  TEXT PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    path        TEXT NOT NULL,
    record_json TEXT NOT NULL,
    meta_yaml   TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
);
-- Studies this node's officer answered, and the datasets it attached: the node checks
-- every task against this, whatever the coordinator says.
CREATE TABLE IF NOT EXISTS studies (
    study_id    TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    accepted    INTEGER NOT NULL,
    datasets    TEXT NOT NULL,
    answered_ms INTEGER NOT NULL
);
-- The officer's per-dataset policy overrides (node/policy.py), as written, with who set
-- it and why (older databases gain the two columns, empty, when the node next opens them).
CREATE TABLE IF NOT EXISTS policy_overrides (
    dataset_id    TEXT PRIMARY KEY,
    yaml          TEXT NOT NULL,
    source        TEXT NOT NULL,
    updated_ms    INTEGER NOT NULL,
    set_by        TEXT NOT NULL DEFAULT '',
    justification TEXT NOT NULL DEFAULT ''
);
-- Tasks held for a decision (node/approvals.py); one per (job, dataset).
CREATE TABLE IF NOT EXISTS approvals (
    approval_id TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL,
    dataset_id  TEXT NOT NULL,
    study_id    TEXT NOT NULL,
    job_type    TEXT NOT NULL,
    researcher  TEXT NOT NULL,
    grade       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    spec        TEXT NOT NULL,
    state       TEXT NOT NULL,
    decisions   TEXT NOT NULL,
    expires_ms  INTEGER,
    created_ms  INTEGER NOT NULL,
    reason_said TEXT,            -- the reason's key and fields (scifed/sentences.py), JSON
    UNIQUE (job_id, dataset_id)
);
-- The people who decide approvals (node/approvals.py): name, role and Ed25519 public
-- key, who added them and when. A removed approver keeps the row (removed_ms set), so a
-- key is registered once only, ever; one active row per name. Older databases gain the
-- table (and index) when the node next opens them.
CREATE TABLE IF NOT EXISTS approvers (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    added_by    TEXT NOT NULL,
    added_ms    INTEGER NOT NULL,
    removed_by  TEXT,
    removed_ms  INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS approvers_active_name ON approvers (name)
    WHERE removed_ms IS NULL;
-- The privacy-budget ledger (node/budget.py). A charge and the noisy output it paid
-- for are written in one transaction; (job, dataset) is unique, so a retry replays the
-- stored output instead of charging again.
CREATE TABLE IF NOT EXISTS budget_charges (
    job_id      TEXT NOT NULL,
    dataset_id  TEXT NOT NULL,
    researcher  TEXT NOT NULL,
    epsilon     REAL NOT NULL,
    delta       REAL NOT NULL,
    year        INTEGER NOT NULL,
    output      BLOB,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (job_id, dataset_id)
);
-- What this node answered or refused of a researcher's queries on a dataset, in order
-- (node/alerts.py): refusals count toward the allowance; a run of them raises an alert.
CREATE TABLE IF NOT EXISTS query_outcomes (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    researcher  TEXT NOT NULL,
    dataset_id  TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    refused     INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    UNIQUE (researcher, dataset_id, job_id)
);
-- Alerts for the officer; while one is open the researcher's jobs on the dataset wait
-- for the officer's approval, which clears it.
CREATE TABLE IF NOT EXISTS alerts (
    alert_id    TEXT PRIMARY KEY,
    researcher  TEXT NOT NULL,
    dataset_id  TEXT NOT NULL,
    reason      TEXT NOT NULL,
    state       TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    cleared_ms  INTEGER,
    reason_said TEXT             -- the reason's key and fields (scifed/sentences.py), JSON
);
-- ε held for a job at every node before any node computes (node/budget.py): counted
-- against the budget, turned into a charge when the node computes, dropped when the job
-- fails or is cancelled.
CREATE TABLE IF NOT EXISTS budget_reservations (
    job_id      TEXT NOT NULL,
    dataset_id  TEXT NOT NULL,
    researcher  TEXT NOT NULL,
    epsilon     REAL NOT NULL,
    year        INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (job_id, dataset_id)
);
-- The partition of a dataset version's rows into atoms by every released row set
-- (node/guard.py): one atom label per row, in file order.
CREATE TABLE IF NOT EXISTS atom_partitions (
    dataset_id  TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    labels      BLOB NOT NULL,
    releases    INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (dataset_id, sha256)
);
-- Which jobs the partition already holds (a retried task must not refine it twice).
CREATE TABLE IF NOT EXISTS atom_releases (
    job_id      TEXT NOT NULL,
    dataset_id  TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (job_id, dataset_id, sha256)
);
-- DP answers a retried task got again from budget_charges (node/budget.py): such an
-- answer was given before, so a copy of it stranded later is no reason to refund.
CREATE TABLE IF NOT EXISTS budget_replays (
    job_id      TEXT NOT NULL,
    dataset_id  TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (job_id, dataset_id)
);
-- One job id, one answer per node and stage (node/gate.py): stage 'task' binds the job
-- to the task this node first took of it (task_sha256: spec, study, researcher, dataset)
-- and the dataset version it read (sha256); 'compute' and 'release:…' keep what the
-- node answered (answer_sha256, and the reply itself in output), so a retry of the same
-- task on the same version gets the same answer and anything else under the job id is
-- refused. Older databases gain the table when the node next opens them.
CREATE TABLE IF NOT EXISTS job_answers (
    job_id        TEXT NOT NULL,
    dataset_id    TEXT NOT NULL,
    stage         TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    task_sha256   TEXT NOT NULL,
    answer_sha256 TEXT NOT NULL,
    output        BLOB,
    created_ms    INTEGER NOT NULL,
    PRIMARY KEY (job_id, dataset_id, stage)
);
-- DP answers stranded by a coordinator restart (node/runner.py): paid for, never sent.
-- A new coordinator may re-run the job and get the kept answer (then it left, and is a
-- replay); if the job is said to have ended instead, the charge is refunded.
CREATE TABLE IF NOT EXISTS budget_stranded (
    job_id      TEXT NOT NULL,
    dataset_id  TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (job_id, dataset_id)
);
-- Jobs that ended unreleased here (node/running.py: cancelled or failed): their late or
-- replayed tasks are refused, across restarts.
CREATE TABLE IF NOT EXISTS ended_jobs (
    job_id      TEXT PRIMARY KEY,
    why         TEXT NOT NULL,
    ended_ms    INTEGER NOT NULL
);
-- Pooled results held for the officer's output review before they are sealed to the
-- researcher (node/review.py): the signed result exactly as it would be sealed (result,
-- its sha256), the release step and inputs it was made from (step, task_sha256), and
-- the signed decisions. A retry of the release finds it here, across restarts.
CREATE TABLE IF NOT EXISTS output_reviews (
    review_id     TEXT PRIMARY KEY,
    job_id        TEXT NOT NULL,
    dataset_id    TEXT NOT NULL,
    step          TEXT NOT NULL,
    task_sha256   TEXT NOT NULL,
    study_id      TEXT NOT NULL,
    researcher    TEXT NOT NULL,
    job_type      TEXT NOT NULL,
    grade         TEXT NOT NULL,
    category      TEXT NOT NULL,
    why           TEXT NOT NULL,
    spec          TEXT NOT NULL,
    checks        TEXT NOT NULL,
    result        BLOB NOT NULL,
    result_sha256 TEXT NOT NULL,
    state         TEXT NOT NULL,
    decisions     TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    expires_ms    INTEGER NOT NULL,
    decided_ms    INTEGER,
    why_said      TEXT,          -- why's key and fields (scifed/sentences.py), JSON
    UNIQUE (job_id, dataset_id, step)
);
-- What each DP-SGD training round spent (node/local_api.py), so the accountant carries
-- across rounds that each run in a fresh ClientApp process.
CREATE TABLE IF NOT EXISTS training_reports (
    job_id       TEXT NOT NULL,
    dataset_id   TEXT NOT NULL,
    round        INTEGER NOT NULL,
    examples     INTEGER NOT NULL,
    epsilon      REAL NOT NULL,
    delta        REAL NOT NULL,
    history_json TEXT NOT NULL,
    reported_ms  INTEGER NOT NULL,
    PRIMARY KEY (job_id, dataset_id, round)
);
-- The hash-chained audit log (node/audit.py).
CREATE TABLE IF NOT EXISTS audit (
    seq         INTEGER PRIMARY KEY,
    ts_ms       INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    details     TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
-- The newest certificate revocation list of the federation CA this node accepted
-- (node/studies.py:PeerTrust): signature checked, never replaced by a lower number.
CREATE TABLE IF NOT EXISTS crls (
    number         INTEGER PRIMARY KEY,
    this_update_ms INTEGER NOT NULL,
    der            BLOB NOT NULL,
    received_ms    INTEGER NOT NULL,
    via            TEXT NOT NULL
);
-- This node's copies of study keys (BFV secret keys), by version, each encrypted
-- under a key derived from the node's own private key (scifed/at_rest.py).
CREATE TABLE IF NOT EXISTS study_keys (
    study_id    TEXT NOT NULL,
    version     INTEGER NOT NULL,
    secret      BLOB NOT NULL,
    PRIMARY KEY (study_id, version)
);
"""
# Columns added to a table after databases with the table existed: (table, column, type).
ADDED_COLUMNS = (("policy_overrides", "set_by", "TEXT NOT NULL DEFAULT ''"),
                 ("policy_overrides", "justification", "TEXT NOT NULL DEFAULT ''"),
                 # a sentence's key and fields beside its English (scifed/sentences.py)
                 ("approvals", "reason_said", "TEXT"),
                 ("alerts", "reason_said", "TEXT"),
                 ("output_reviews", "why_said", "TEXT"))

POOL_IDLE = 8  # connections kept open between transactions


@dataclass(frozen=True)
class DatasetRow:
    dataset_id: str
    slug: str
    path: str
    record: dict
    meta_yaml: str
    created_ms: int
    updated_ms: int


class NodeStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        private_dir(self.path.parent)
        private_sqlite(self.path)  # 0600 before WAL: SQLite gives -wal/-shm the db's mode
        con = sqlite3.connect(self.path)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)
            for table, column, kind in ADDED_COLUMNS:
                have = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        finally:
            con.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A transaction: committed on success, rolled back on any error."""
        con = self._take()
        try:
            con.execute("BEGIN IMMEDIATE")
            yield con
            con.execute("COMMIT")
        except BaseException:
            try:
                if con.in_transaction:
                    con.execute("ROLLBACK")
            except BaseException:
                con.close()  # in an unknown state: never handed out again
                raise
            raise
        finally:
            self._give(con)

    def _take(self) -> sqlite3.Connection:
        with self._pool_lock:
            if self._idle:
                return self._idle.pop()
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                              check_same_thread=False)
        con.row_factory = sqlite3.Row
        return con

    def _give(self, con: sqlite3.Connection) -> None:
        """Back to the pool if it is usable and the pool has room; else closed."""
        try:
            usable = not con.in_transaction
        except sqlite3.ProgrammingError:  # closed
            return
        with self._pool_lock:
            if usable and len(self._idle) < POOL_IDLE:
                self._idle.append(con)
                return
        con.close()

    @staticmethod
    def _row(r: sqlite3.Row) -> DatasetRow:
        return DatasetRow(r["dataset_id"], r["slug"], r["path"], json.loads(r["record_json"]),
                          r["meta_yaml"],
                          r["created_ms"], r["updated_ms"])

    # Writers take the caller's transaction so the caller can append the audit entry
    # for the same action inside it.
    @staticmethod
    def insert_dataset(con: sqlite3.Connection, dataset_id: str, slug: str, path: str,
                       record: dict, meta_yaml: str) -> None:
        t = now_ms()
        con.execute("INSERT INTO datasets VALUES (?,?,?,?,?,?,?)",
                    (dataset_id, slug, path, json.dumps(record), meta_yaml, t, t))

    @staticmethod
    def update_dataset(con: sqlite3.Connection, dataset_id: str, path: str, record: dict,
                       meta_yaml: str) -> None:
        con.execute("UPDATE datasets SET path=?, record_json=?, meta_yaml=?, updated_ms=? "
                    "WHERE dataset_id=?", (path, json.dumps(record), meta_yaml, now_ms(),
                                           dataset_id))

    @staticmethod
    def delete_dataset(con: sqlite3.Connection, dataset_id: str) -> bool:
        return con.execute("DELETE FROM datasets WHERE dataset_id=?",
                           (dataset_id,)).rowcount > 0

    def get_dataset(self, key: str) -> DatasetRow | None:
        """By full id (`urn:sdn:...`) or by the short slug the officer typed."""
        with self.tx() as con:
            r = con.execute("SELECT * FROM datasets WHERE dataset_id=? OR slug=?",
                            (key, key)).fetchone()
        return self._row(r) if r else None

    def list_datasets(self) -> list[DatasetRow]:
        with self.tx() as con:
            rows = con.execute("SELECT * FROM datasets ORDER BY slug").fetchall()
        return [self._row(r) for r in rows]

    # -- studies -------------------------------------------------------------------------
    @staticmethod
    def set_study(con: sqlite3.Connection, study_id: str, name: str, accepted: bool,
                  datasets: list[str]) -> None:
        con.execute("INSERT OR REPLACE INTO studies VALUES (?,?,?,?,?)",
                    (study_id, name, int(accepted), json.dumps(datasets), now_ms()))

    def study(self, study_id: str) -> tuple[str, bool, list[str]] | None:
        """(name, accepted, attached dataset ids) as this node's officer answered."""
        with self.tx() as con:
            r = con.execute("SELECT * FROM studies WHERE study_id=?", (study_id,)).fetchone()
        return (r["name"], bool(r["accepted"]), json.loads(r["datasets"])) if r else None

    # -- study keys, encrypted at rest ---------------------------------------------------
    @staticmethod
    def study_key_aad(study_id: str, version: int) -> bytes:
        """What a stored study key is bound to: a row copied to another study or version
        does not open."""
        return f"scifed-study-key-at-rest|{study_id}|{version}".encode()

    def put_study_key(self, study_id: str, version: int, secret: bytes,
                      vault: AtRestKey) -> None:
        blob = vault.encrypt(secret, self.study_key_aad(study_id, version))
        with self.tx() as con:
            con.execute("INSERT OR REPLACE INTO study_keys VALUES (?,?,?)",
                        (study_id, version, blob))

    def study_key(self, study_id: str, version: int, vault: AtRestKey) -> bytes | None:
        """The stored secret, decrypted; None if there is none. A UserError if it does
        not decrypt, or if it was stored in clear (an older version wrote it, and
        :meth:`encrypt_clear_study_keys` has not run since)."""
        with self.tx() as con:
            r = con.execute("SELECT secret FROM study_keys WHERE study_id=? AND version=?",
                            (study_id, version)).fetchone()
        if r is None:
            return None
        if not vault.is_encrypted(r["secret"]):
            raise UserError(f"{self.path}: key version {version} of study {study_id} is "
                            "stored in clear (written by an older scifed); restart the node, "
                            "which encrypts such copies at start")
        return vault.decrypt(r["secret"], self.study_key_aad(study_id, version))

    def encrypt_clear_study_keys(self, vault: AtRestKey) -> list[tuple[str, int]]:
        """Encrypt the study keys an older version stored in clear, in one transaction,
        and wipe the cleartext from the file: freed pages are zeroed (secure_delete) and
        the write-ahead log is checkpointed and truncated. Returns (study, version) of
        each key encrypted."""
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            con.execute("PRAGMA secure_delete=ON")
            con.execute("BEGIN IMMEDIATE")
            try:
                rows = con.execute("SELECT study_id, version, secret FROM study_keys "
                                   "ORDER BY study_id, version").fetchall()
                clear = [(s, v, b) for s, v, b in rows if not vault.is_encrypted(b)]
                for study_id, version, secret in clear:
                    con.execute("UPDATE study_keys SET secret=? WHERE study_id=? AND "
                                "version=?", (vault.encrypt(secret, self.study_key_aad(
                                    study_id, version)), study_id, version))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            if clear:
                con.execute("VACUUM")  # no page of the file keeps the old rows
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()
        return [(s, v) for s, v, _ in clear]

    # -- the federation CA's revocation list ----------------------------------------------
    @staticmethod
    def newest_crl(con: sqlite3.Connection) -> tuple[int, bytes] | None:
        """(number, DER) of the newest CRL this node accepted, or None."""
        r = con.execute("SELECT number, der FROM crls ORDER BY number DESC LIMIT 1").fetchone()
        return (r[0], r[1]) if r else None

    @staticmethod
    def put_crl(con: sqlite3.Connection, number: int, this_update_ms: int, der: bytes,
                via: str) -> None:
        """Keep this CRL as the newest (the caller checked it is newer), dropping older."""
        con.execute("INSERT OR REPLACE INTO crls VALUES (?,?,?,?,?)",
                    (number, this_update_ms, der, now_ms(), via))
        con.execute("DELETE FROM crls WHERE number < ?", (number,))
