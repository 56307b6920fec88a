"""The privacy-budget ledger: per dataset and per researcher × dataset, per calendar year.

A job's ε is first *reserved* at every node (before any node computes), so two jobs that
together exceed a budget cannot both get part of the federation and spend it for
nothing: the second cannot reserve, and a job that fails or is cancelled releases its
reservations, charged nothing. A reservation becomes a charge when the node computes.

A charge and the noisy output it pays for are written in ONE SQLite transaction taken
with BEGIN IMMEDIATE, which serialises writers: two jobs racing for the last of a
budget cannot both pass the check. The output is stored with the charge, so a retried
task replays it — never charged twice, and never a second noisy answer for one charge —
and a crash before the commit leaves neither charge nor output.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from node.audit import AuditLog
from node.store import NodeStore
from scifed.errors import UserError
from scifed.wire import now_ms


def this_year() -> int:
    return dt.datetime.now(dt.UTC).year


@dataclass(frozen=True)
class Spent:
    dataset_id: str
    researcher: str | None
    epsilon: float
    delta: float
    charges: int


class BudgetLedger:
    def __init__(self, store: NodeStore) -> None:
        self.store = store

    def reserve(self, *, job_id: str, dataset_id: str, researcher: str, epsilon: float,
                annual_budget: float, researcher_budget: float | None) -> None:
        """Hold ε for the job (idempotent); refuse if the budget, less every other
        charge and reservation, cannot pay it."""
        if epsilon <= 0:
            raise UserError(f"ε must be positive, got {epsilon}")
        with self.store.tx() as con:
            if self._held(con, job_id, dataset_id):
                return
            self._refuse_if_over(con, this_year(), dataset_id, researcher, epsilon,
                                 annual_budget, researcher_budget)
            con.execute("INSERT INTO budget_reservations VALUES (?,?,?,?,?,?)",
                        (job_id, dataset_id, researcher, epsilon, this_year(), now_ms()))
            AuditLog.append_in(con, "policy", "budget.reserve", dataset_id,
                               {"job_id": job_id, "researcher": researcher,
                                "epsilon": epsilon})

    def release_reservations(self, job_id: str) -> int:
        """The job failed or was cancelled: its reservations go, nothing is charged."""
        with self.store.tx() as con:
            rows = con.execute("SELECT dataset_id, epsilon FROM budget_reservations WHERE "
                               "job_id=?", (job_id,)).fetchall()
            con.execute("DELETE FROM budget_reservations WHERE job_id=?", (job_id,))
            for r in rows:
                AuditLog.append_in(con, "policy", "budget.unreserve", r["dataset_id"],
                                   {"job_id": job_id, "epsilon": r["epsilon"]})
        return len(rows)

    def strand(self, job_id: str, dataset_id: str) -> None:
        """The job's charged answer here was stranded (never sent): refunded if the job
        is said to end without asking for it again (:meth:`refund_stranded`)."""
        with self.store.tx() as con:
            con.execute("INSERT OR IGNORE INTO budget_stranded VALUES (?,?,?)",
                        (job_id, dataset_id, now_ms()))

    def refund_stranded(self, job_id: str, why: str) -> float:
        """The job ended: refund each of its charges whose answer was stranded and never
        handed out again (:meth:`refund` keeps one replayed since); the ε refunded."""
        with self.store.tx() as con:
            rows = con.execute("SELECT dataset_id FROM budget_stranded WHERE job_id=?",
                               (job_id,)).fetchall()
            con.execute("DELETE FROM budget_stranded WHERE job_id=?", (job_id,))
        return sum(self.refund(job_id, r["dataset_id"], why) for r in rows)

    def refund(self, job_id: str, dataset_id: str, why: str) -> float:
        """Take back a charge whose output provably never left this node (``why`` says
        how that is known); the ε refunded (0 if there was no charge, or if the answer
        was also handed to an earlier or later copy of the task: one of them may have
        left)."""
        with self.store.tx() as con:
            r = con.execute("SELECT epsilon FROM budget_charges WHERE job_id=? AND "
                            "dataset_id=?", (job_id, dataset_id)).fetchone()
            if r is None:
                return 0.0
            if con.execute("SELECT 1 FROM budget_replays WHERE job_id=? AND dataset_id=?",
                           (job_id, dataset_id)).fetchone():
                AuditLog.append_in(con, "policy", "budget.keep", dataset_id,
                                   {"job_id": job_id, "epsilon": r["epsilon"],
                                    "why": "the answer was given to more than one task of "
                                           "the job, so a stranded copy proves nothing"})
                return 0.0
            con.execute("DELETE FROM budget_charges WHERE job_id=? AND dataset_id=?",
                        (job_id, dataset_id))
            AuditLog.append_in(con, "policy", "budget.refund", dataset_id,
                               {"job_id": job_id, "epsilon": r["epsilon"], "why": why})
        return r["epsilon"]

    @staticmethod
    def _held(con: sqlite3.Connection, job_id: str, dataset_id: str) -> bool:
        for table in ("budget_charges", "budget_reservations"):
            if con.execute(f"SELECT 1 FROM {table} WHERE job_id=? AND dataset_id=?",
                           (job_id, dataset_id)).fetchone():
                return True
        return False

    def charge_and_release(self, *, job_id: str, dataset_id: str, researcher: str,
                           epsilon: float, delta: float, annual_budget: float,
                           researcher_budget: float | None,
                           produce: Callable[[sqlite3.Connection], bytes],
                           reserved: bool = False) -> bytes:
        """Charge (ε, δ) and return the output `produce(con)` makes, atomically (it runs
        inside the charging transaction, so it may write its own records there too).
        With ``reserved``, the job must hold a reservation here (else it was released:
        the job failed or was cancelled), which the charge replaces."""
        if epsilon <= 0:
            raise UserError(f"ε must be positive, got {epsilon}")
        with self.store.tx() as con:
            done = con.execute("SELECT output FROM budget_charges WHERE job_id=? AND "
                               "dataset_id=?", (job_id, dataset_id)).fetchone()
            if done is not None:  # a retry: the same answer, no new charge
                con.execute("INSERT OR IGNORE INTO budget_replays VALUES (?,?,?)",
                            (job_id, dataset_id, now_ms()))
                return done["output"]
            if reserved:
                held = con.execute("DELETE FROM budget_reservations WHERE job_id=? AND "
                                   "dataset_id=?", (job_id, dataset_id)).rowcount
                if not held:
                    raise UserError(f"job {job_id} holds no privacy budget here (it "
                                    "failed, was cancelled, or never reserved): nothing "
                                    "is computed or charged")
            year = this_year()
            left = self._refuse_if_over(con, year, dataset_id, researcher, epsilon,
                                        annual_budget, researcher_budget)
            output = produce(con)
            con.execute("INSERT INTO budget_charges VALUES (?,?,?,?,?,?,?,?)",
                        (job_id, dataset_id, researcher, epsilon, delta, year, output,
                         now_ms()))
            AuditLog.append_in(con, "policy", "budget.charge", dataset_id,
                               {"job_id": job_id, "researcher": researcher,
                                "epsilon": epsilon, "delta": delta, "year": year,
                                "left": left - epsilon})
        return output

    def check(self, *, job_id: str, dataset_id: str, researcher: str, epsilon: float,
              annual_budget: float, researcher_budget: float | None) -> None:
        """Refuse, as :meth:`charge_and_release` would, a charge the budget cannot pay;
        charges nothing (a job asks before it starts; it is charged when it computes)."""
        if epsilon <= 0:
            raise UserError(f"ε must be positive, got {epsilon}")
        with self.store.tx() as con:
            if not self._held(con, job_id, dataset_id):
                self._refuse_if_over(con, this_year(), dataset_id, researcher, epsilon,
                                     annual_budget, researcher_budget)

    @staticmethod
    def _refuse_if_over(con: sqlite3.Connection, year: int, dataset_id: str,
                        researcher: str, epsilon: float, annual_budget: float,
                        researcher_budget: float | None) -> float:
        """What is left of the dataset's budget before this charge; UserError if the
        dataset's or the researcher's budget cannot pay ε."""
        spent = sum(con.execute(f"SELECT coalesce(sum(epsilon), 0) FROM {table} WHERE "
                                "dataset_id=? AND year=?", (dataset_id, year)).fetchone()[0]
                    for table in ("budget_charges", "budget_reservations"))
        left = annual_budget - spent
        if epsilon > left + 1e-12:
            raise UserError(f"privacy budget of {dataset_id} exhausted: this job needs "
                            f"ε={epsilon:g}, {max(left, 0):g} of the annual {annual_budget:g} "
                            "is left")
        if researcher_budget is not None:
            mine = sum(con.execute(f"SELECT coalesce(sum(epsilon), 0) FROM {table} "
                                   "WHERE dataset_id=? AND researcher=? AND year=?",
                                   (dataset_id, researcher, year)).fetchone()[0]
                       for table in ("budget_charges", "budget_reservations"))
            if epsilon > researcher_budget - mine + 1e-12:
                raise UserError(f"{researcher}'s privacy budget on {dataset_id} is "
                                f"exhausted: this job needs ε={epsilon:g}, "
                                f"{max(researcher_budget - mine, 0):g} of "
                                f"{researcher_budget:g} is left")
        return left

    def spent(self, dataset_id: str | None = None) -> list[Spent]:
        """What each dataset, and each researcher on it, spent this year."""
        where, args = ("AND dataset_id=?", [dataset_id]) if dataset_id else ("", [])
        sql = ("SELECT dataset_id, {who} AS who, sum(epsilon), sum(delta), count(*) "
               "FROM budget_charges WHERE year=? " + where + " GROUP BY 1, 2 ORDER BY 1, 2")
        with self.store.tx() as con:
            rows = con.execute(sql.format(who="NULL"), [this_year(), *args]).fetchall()
            rows += con.execute(sql.format(who="researcher"), [this_year(), *args]).fetchall()
        return [Spent(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def charges(self, dataset_id: str) -> list[dict]:
        """This year's charges on a dataset in time order (when, who, ε), for the
        officer's chart of spending over time."""
        with self.store.tx() as con:
            rows = con.execute("SELECT created_ms, researcher, epsilon, job_id FROM "
                               "budget_charges WHERE year=? AND dataset_id=? ORDER BY "
                               "created_ms", (this_year(), dataset_id)).fetchall()
        return [{"ts_ms": r[0], "researcher": r[1], "epsilon": r[2], "job_id": r[3]}
                for r in rows]
