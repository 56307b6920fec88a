"""Refusals as a signal: a researcher probing the disclosure rules (a binary search on a
filter threshold, learning from which queries are refused) leaves a trail of refused
queries. Each refused query counts toward the researcher's allowance on the dataset;
exhausting it (:data:`ALLOWANCE` a year), or :data:`RUN` refusals in a row with no
answered query between, raises an alert for the officer (audited), and from then on the
researcher's jobs on that dataset wait for the officer's approval, which clears it.

Applies where the dataset's policy audits queries (G2 and above by default).
"""

from __future__ import annotations

import datetime as dt
import uuid

from node.audit import AuditLog
from node.store import NodeStore
from scifed.wire import now_ms

ALLOWANCE = 10  # refused queries per researcher and dataset in a calendar year
RUN = 3         # refused queries in a row


def _year_start_ms() -> int:
    start = dt.datetime(dt.datetime.now(dt.UTC).year, 1, 1, tzinfo=dt.UTC)
    return int(start.timestamp() * 1000)


class RefusalMonitor:
    def __init__(self, store: NodeStore) -> None:
        self.store = store

    def open_alert(self, researcher: str, dataset_id: str) -> str | None:
        """The reason of the open alert on (researcher, dataset), if any."""
        with self.store.tx() as con:
            r = con.execute("SELECT reason FROM alerts WHERE researcher=? AND dataset_id=? "
                            "AND state='open'", (researcher, dataset_id)).fetchone()
        return r["reason"] if r else None

    def clear(self, researcher: str, dataset_id: str, job_id: str) -> None:
        """The officer approved a held job: the alert is cleared (audited), and the
        researcher's count starts again."""
        with self.store.tx() as con:
            rows = con.execute("SELECT alert_id FROM alerts WHERE researcher=? AND "
                               "dataset_id=? AND state='open'",
                               (researcher, dataset_id)).fetchall()
            for r in rows:
                con.execute("UPDATE alerts SET state='cleared', cleared_ms=? WHERE "
                            "alert_id=?", (now_ms(), r["alert_id"]))
                AuditLog.append_in(con, "officer", "alert.clear", dataset_id,
                                   {"alert_id": r["alert_id"], "researcher": researcher,
                                    "job_id": job_id})
            con.execute("DELETE FROM query_outcomes WHERE researcher=? AND dataset_id=?",
                        (researcher, dataset_id))

    def answered(self, researcher: str, dataset_id: str, job_id: str) -> None:
        """An answered query ends a run of refusals (the allowance still counts)."""
        with self.store.tx() as con:
            con.execute("INSERT OR IGNORE INTO query_outcomes (researcher, dataset_id, "
                        "job_id, refused, created_ms) VALUES (?,?,?,0,?)",
                        (researcher, dataset_id, job_id, now_ms()))

    def refused(self, researcher: str, dataset_id: str, job_id: str) -> None:
        """Count a refused query; raise the alert when the allowance or a run is spent."""
        with self.store.tx() as con:
            con.execute("INSERT OR REPLACE INTO query_outcomes (researcher, dataset_id, "
                        "job_id, refused, created_ms) VALUES (?,?,?,1,?)",
                        (researcher, dataset_id, job_id, now_ms()))
            outcomes = [r["refused"] for r in con.execute(
                "SELECT refused FROM query_outcomes WHERE researcher=? AND dataset_id=? AND "
                "created_ms >= ? ORDER BY seq", (researcher, dataset_id, _year_start_ms()))]
            run = len(outcomes) - (max(i for i, o in enumerate(outcomes) if not o) + 1
                                   if 0 in outcomes else 0)
            total = sum(outcomes)
            reason = (f"{total} refused queries this year" if total >= ALLOWANCE
                      else f"{run} refused queries in a row" if run >= RUN else None)
            if reason is None or con.execute(
                    "SELECT 1 FROM alerts WHERE researcher=? AND dataset_id=? AND "
                    "state='open'", (researcher, dataset_id)).fetchone():
                return
            alert_id = f"al-{uuid.uuid4().hex[:10]}"
            con.execute("INSERT INTO alerts VALUES (?,?,?,?,?,?,?)",
                        (alert_id, researcher, dataset_id, reason, "open", now_ms(), None))
            AuditLog.append_in(con, "policy", "alert.raise", dataset_id,
                               {"alert_id": alert_id, "researcher": researcher,
                                "reason": reason, "job_id": job_id})
