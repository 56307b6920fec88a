"""node/store.py's transactions on pooled connections: what one commits every later one
sees, what one rolls back leaves nothing (and the connection it used is clean for the
next), and threads get a connection each."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from node.store import NodeStore


def _ended(store: NodeStore) -> list[str]:
    with store.tx() as con:
        return [r[0] for r in con.execute("SELECT job_id FROM ended_jobs ORDER BY job_id")]


def test_commit_and_rollback_on_reused_connections(tmp_path):
    store = NodeStore(tmp_path / "state" / "node.db")
    with store.tx() as con:
        con.execute("INSERT INTO ended_jobs VALUES ('a', 'x', 1)")
    with pytest.raises(RuntimeError), store.tx() as con:
        con.execute("INSERT INTO ended_jobs VALUES ('b', 'x', 1)")
        raise RuntimeError("the caller's error")
    with pytest.raises(sqlite3.IntegrityError), store.tx() as con:
        con.execute("INSERT INTO ended_jobs VALUES ('c', 'x', 1)")
        con.execute("INSERT INTO ended_jobs VALUES ('a', 'x', 1)")  # a duplicate key
    assert _ended(store) == ["a"]
    # another process's view of the file: what was committed, durably, and nothing else
    other = sqlite3.connect(tmp_path / "state" / "node.db")
    assert other.execute("SELECT job_id FROM ended_jobs").fetchall() == [("a",)]
    assert other.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    other.close()


def test_threads_each_get_their_own_transaction(tmp_path):
    store = NodeStore(tmp_path / "state" / "node.db")
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(20):
                with store.tx() as con:
                    (n,) = con.execute("SELECT count(*) FROM ended_jobs").fetchone()
                    con.execute("INSERT INTO ended_jobs VALUES (?, 'x', ?)", (f"{i}-{j}", n))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with store.tx() as con:
        counts = sorted(r[0] for r in con.execute("SELECT ended_ms FROM ended_jobs"))
    assert counts == list(range(120))  # every transaction saw all the earlier ones
