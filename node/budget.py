"""The privacy-budget ledger: per dataset and per researcher × dataset, per calendar year.

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

    def charge_and_release(self, *, job_id: str, dataset_id: str, researcher: str,
                           epsilon: float, delta: float, annual_budget: float,
                           researcher_budget: float | None,
                           produce: Callable[[sqlite3.Connection], bytes]) -> bytes:
        """Charge (ε, δ) and return the output `produce(con)` makes, atomically (it runs
        inside the charging transaction, so it may write its own records there too)."""
        if epsilon <= 0:
            raise UserError(f"ε must be positive, got {epsilon}")
        with self.store.tx() as con:
            done = con.execute("SELECT output FROM budget_charges WHERE job_id=? AND "
                               "dataset_id=?", (job_id, dataset_id)).fetchone()
            if done is not None:
                return done["output"]  # a retry: the same answer, no new charge
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
            if con.execute("SELECT 1 FROM budget_charges WHERE job_id=? AND dataset_id=?",
                           (job_id, dataset_id)).fetchone() is None:
                self._refuse_if_over(con, this_year(), dataset_id, researcher, epsilon,
                                     annual_budget, researcher_budget)

    @staticmethod
    def _refuse_if_over(con: sqlite3.Connection, year: int, dataset_id: str,
                        researcher: str, epsilon: float, annual_budget: float,
                        researcher_budget: float | None) -> float:
        """What is left of the dataset's budget before this charge; UserError if the
        dataset's or the researcher's budget cannot pay ε."""
        spent = con.execute("SELECT coalesce(sum(epsilon), 0) FROM budget_charges WHERE "
                            "dataset_id=? AND year=?", (dataset_id, year)).fetchone()[0]
        left = annual_budget - spent
        if epsilon > left + 1e-12:
            raise UserError(f"privacy budget of {dataset_id} exhausted: this job needs "
                            f"ε={epsilon:g}, {max(left, 0):g} of the annual {annual_budget:g} "
                            "is left")
        if researcher_budget is not None:
            mine = con.execute("SELECT coalesce(sum(epsilon), 0) FROM budget_charges "
                               "WHERE dataset_id=? AND researcher=? AND year=?",
                               (dataset_id, researcher, year)).fetchone()[0]
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
