"""Refusals as a signal: a researcher probing the disclosure rules (a binary search on a
filter threshold, learning from which queries are refused) leaves a trail of refused
queries. Each refused query counts toward the researcher's allowance on the dataset;
exhausting it (the policy's ``refusal_allowance`` refusals in a calendar year), or
``refusal_run`` refusals in a row with no answered query between, raises an alert for
the officer (audited), and from then on the researcher's jobs on that dataset wait for
the officer's approval, which clears it.

Both numbers are policy settings (`node/policy.py`; defaults 10 and 3 in
`scifed/grading.py`), which the caller passes from the dataset's effective policy. An
officer who tightens them holds a researcher already past the new numbers at the next
task. Applies where the dataset's policy audits queries (G2 and above by default).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

from node.audit import AuditLog
from node.store import NodeStore
from scifed.sentences import Said, rebuild, say, structure
from scifed.wire import now_ms


def _year_start_ms() -> int:
    start = dt.datetime(dt.datetime.now(dt.UTC).year, 1, 1, tzinfo=dt.UTC)
    return int(start.timestamp() * 1000)


def _reason(row) -> str:
    """An alert's reason as stored: its sentence where the row keeps its key and fields
    (so a job held for it says it in the officer's language too), else its text."""
    said = rebuild(json.loads(row["reason_said"])) if row["reason_said"] else None
    return said if said is not None else row["reason"]


class RefusalMonitor:
    def __init__(self, store: NodeStore) -> None:
        self.store = store

    def open_alert(self, researcher: str, dataset_id: str, job_id: str, *,
                   allowance: int, run: int) -> str | None:
        """The reason of the open alert on (researcher, dataset), if any — raised now if
        the researcher's refusals already reach the policy's numbers (they were
        tightened since the last refusal)."""
        with self.store.tx() as con:
            r = con.execute("SELECT reason, reason_said FROM alerts WHERE researcher=? AND "
                            "dataset_id=? AND state='open'", (researcher, dataset_id)).fetchone()
            if r is not None:
                return _reason(r)
            return self._raise_if_spent(con, researcher, dataset_id, job_id, allowance, run)

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

    def list(self, state: str | None = None) -> list[dict]:
        """The officer's alerts, newest first (``state``: open or cleared; None: all)."""
        where, args = ("WHERE state=?", (state,)) if state else ("", ())
        with self.store.tx() as con:
            rows = con.execute(f"SELECT * FROM alerts {where} ORDER BY created_ms DESC",
                               args).fetchall()
        return [{**dict(r), "reason_said": json.loads(r["reason_said"])
                 if r["reason_said"] else None} for r in rows]

    def answered(self, researcher: str, dataset_id: str, job_id: str) -> None:
        """An answered query ends a run of refusals (the allowance still counts)."""
        with self.store.tx() as con:
            con.execute("INSERT OR IGNORE INTO query_outcomes (researcher, dataset_id, "
                        "job_id, refused, created_ms) VALUES (?,?,?,0,?)",
                        (researcher, dataset_id, job_id, now_ms()))

    def refused(self, researcher: str, dataset_id: str, job_id: str, *, allowance: int,
                run: int) -> None:
        """Count a refused query; raise the alert when ``allowance`` refusals this year,
        or ``run`` in a row, are reached (the policy's numbers)."""
        with self.store.tx() as con:
            con.execute("INSERT OR REPLACE INTO query_outcomes (researcher, dataset_id, "
                        "job_id, refused, created_ms) VALUES (?,?,?,1,?)",
                        (researcher, dataset_id, job_id, now_ms()))
            if con.execute("SELECT 1 FROM alerts WHERE researcher=? AND dataset_id=? AND "
                           "state='open'", (researcher, dataset_id)).fetchone() is None:
                self._raise_if_spent(con, researcher, dataset_id, job_id, allowance, run)

    @staticmethod
    def _raise_if_spent(con, researcher: str, dataset_id: str, job_id: str, allowance: int,
                        run: int) -> Said | None:
        """Open an alert (audited) if this year's refusals reach ``allowance`` or the
        latest run of them reaches ``run``; its reason, else None."""
        outcomes = [r["refused"] for r in con.execute(
            "SELECT refused FROM query_outcomes WHERE researcher=? AND dataset_id=? AND "
            "created_ms >= ? ORDER BY seq", (researcher, dataset_id, _year_start_ms()))]
        streak = len(outcomes) - (max(i for i, o in enumerate(outcomes) if not o) + 1
                                  if 0 in outcomes else 0)
        total = sum(outcomes)
        reason = (say("alert.allowance", total=total, allowance=allowance)
                  if total >= allowance else
                  say("alert.run", streak=streak, run=run) if streak >= run
                  else None)
        if reason is None:
            return None
        alert_id = f"al-{uuid.uuid4().hex[:10]}"
        con.execute("INSERT INTO alerts (alert_id, researcher, dataset_id, reason, state, "
                    "created_ms, cleared_ms, reason_said) VALUES (?,?,?,?,?,?,?,?)",
                    (alert_id, researcher, dataset_id, reason, "open", now_ms(), None,
                     json.dumps(structure(reason))))
        AuditLog.append_in(con, "policy", "alert.raise", dataset_id,
                           {"alert_id": alert_id, "researcher": researcher,
                            "reason": reason, "job_id": job_id})
        return reason
