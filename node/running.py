"""The jobs this node is computing, so that an ended job stops computing here.

A job ends unreleased when the researcher cancels it, a node times out, or the
coordinator restarts; the coordinator then sends each node a cancel notice. Python
cannot kill a worker thread, but every read of a dataset goes through one DuckDB
connection (:class:`node.data.DataFile`), and DuckDB can interrupt a running query from
another thread. So a notice marks the job ended and interrupts its open reads: the
running query stops at once, every later read of the task refuses, and the task ends
with a refusal before it charges or releases anything (its transaction rolls back).
A task of an ended job that arrives late is refused before it opens the data.

Given the node's store, ended jobs are also kept in node.db (``ended_jobs``), so a
restarted node still refuses a replayed task of a job that ended before the restart
(node/gate.py refuses it as a replay). Stopping the node interrupts its reads without
recording their jobs as ended: a job the node's own stop cut short has not ended.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

from scifed.errors import UserError
from scifed.wire import now_ms

if TYPE_CHECKING:
    from node.store import NodeStore

# Ended job ids remembered in memory; with a store, every one is in node.db too.
_REMEMBER = 4096


class Stopped(UserError):
    """The task's job ended while it ran: not a refusal of the query (it does not count
    toward the researcher's allowance), only the end of the work."""


class Replayed(Stopped):
    """A task the node refuses as a replay of a job (node/gate.py): a task of an ended
    job, or one that would give a second, different answer under the job's id. Not a
    refusal of the query either: the coordinator sent it, the researcher asked nothing."""


class Interruptible(Protocol):
    def interrupt(self, why: str) -> None: ...


class RunningJobs:
    def __init__(self, store: NodeStore | None = None) -> None:
        """``store``: where ended jobs are kept across restarts (None: memory only)."""
        self._lock = threading.Lock()
        self._open: dict[str, set[Interruptible]] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()
        self._store = store

    def ended(self, job_id: str) -> str | None:
        """Why the job ended, if it ended (here, or before this node restarted)."""
        with self._lock:
            why = self._ended.get(job_id)
        if why is None and self._store is not None:
            with self._store.tx() as con:
                r = con.execute("SELECT why FROM ended_jobs WHERE job_id=?",
                                (job_id,)).fetchone()
            why = r["why"] if r else None
        return why

    def refuse_if_ended(self, job_id: str) -> None:
        why = self.ended(job_id)
        if why is not None:
            raise Stopped(f"job {job_id} has ended ({why}): nothing is computed")

    def opened(self, job_id: str, reader: Interruptible) -> None:
        """A task of ``job_id`` opened ``reader``; refuses if the job has ended."""
        with self._lock:
            why = self._ended.get(job_id)
            if why is None:
                self._open.setdefault(job_id, set()).add(reader)
        if why is not None:
            reader.interrupt(why)
            raise Stopped(f"job {job_id} has ended ({why}): nothing is computed")

    def closed(self, job_id: str, reader: Interruptible) -> None:
        with self._lock:
            readers = self._open.get(job_id)
            if readers is not None:
                readers.discard(reader)
                if not readers:
                    del self._open[job_id]

    def end(self, job_id: str, why: str, *, persist: bool = True) -> int:
        """Mark the job ended (in node.db too, unless not ``persist``) and interrupt its
        open reads; how many were interrupted."""
        if persist and self._store is not None:
            with self._store.tx() as con:
                con.execute("INSERT OR IGNORE INTO ended_jobs VALUES (?,?,?)",
                            (job_id, why, now_ms()))
        with self._lock:
            self._ended[job_id] = why
            self._ended.move_to_end(job_id)
            while len(self._ended) > _REMEMBER:
                self._ended.popitem(last=False)
            readers = list(self._open.pop(job_id, ()))
        for reader in readers:
            reader.interrupt(why)
        return len(readers)

    def end_all(self, why: str) -> int:
        """The node is stopping: interrupt every open read (its jobs are not recorded as
        ended in node.db: the node's stop did not end them)."""
        with self._lock:
            jobs = list(self._open)
        return sum(self.end(job_id, why, persist=False) for job_id in jobs)
