"""The refusal oracle on a filter threshold (disclosure-control §2.4), through the real
pipeline on G2 staff data (k = 5, query auditing).

``salary < t`` leaves out the rows with salary ≥ t. While t is above the top salary it
leaves out nobody and is answered; just below it, it leaves out one to four people at
that node and the auditor refuses it. So answered / refused says on which side of t the
top salary lies, and bisecting t pins it down: before thresholds were coarsened, 23 jobs
pinned it to a few thousandths of a yuan, although no answer ever described fewer than k
people. The grid (the column's declared ``resolution``, here 1000) leaves the attacker
only thresholds on the grid, so what it can learn is an interval of one step at best.
The grid refusal depends on the metadata alone, so it is no oracle itself.
"""

from __future__ import annotations

import re
import time
from decimal import Decimal

from staff import attempt, federation, stats

from harness.approvers import officer_approves

STEP = 1000  # salary's declared resolution in staff.py
JOBS = 23  # the budget, the two jobs of the attacker's prior included
_SUGGESTED = re.compile(r"use (-?[0-9.]+) or (-?[0-9.]+)$")


def _probe(fed, threshold: str) -> tuple[str, list[str]]:
    """Submit ``salary < threshold``; ("answered" | "refused" | "grid", what the
    researcher reads from each node that said something). The worst case for the
    defence: an officer who approves every job that an alert on the researcher's
    refusals holds."""
    job_id = fed.submit(stats(columns=["age"], filter=f"salary < {threshold}"))
    deadline = time.monotonic() + 60
    while True:
        view = fed.job(job_id)
        if view.status.stopped:
            break
        for core in fed.nodes.values():
            for request in core.approvals.list("pending"):
                if request.job_id == job_id:
                    officer_approves(core.approvals, request.approval_id)
        assert time.monotonic() < deadline, view
        time.sleep(0.02)
    said = [t.detail for t in view.tasks if t.detail]
    if view.status == "done":
        return "answered", said
    if any("grid" in text for text in said):
        return "grid", said
    assert any("query auditing" in text for text in said), (view.error, said)
    return "refused", said  # the auditor refused: the oracle's "no"


def _bisect(fed, lo: float, hi: float, jobs: int) -> tuple[float, float, list]:
    """The attacker knows ``salary < lo`` is refused and ``salary < hi`` answered, so the
    top salary is in [lo, hi). Each job halves the interval; a threshold off the grid is
    refused naming the two nearest grid values, and the attacker takes the one inside
    (lo, hi) nearest the midpoint, until none is left. At most ``jobs`` jobs."""
    log: list[tuple[str, str, list[str]]] = []
    while len(log) < jobs:
        mid = (lo + hi) / 2
        threshold = repr(mid)
        outcome, said = _probe(fed, threshold)
        log.append((threshold, outcome, said))
        if outcome == "grid":
            named = [float(v) for v in _SUGGESTED.search(said[0]).groups()]
            inside = sorted((v for v in named if lo < v < hi), key=lambda v: abs(v - mid))
            if not inside or len(log) >= jobs:
                break
            threshold = repr(inside[0])
            outcome, said = _probe(fed, threshold)
            log.append((threshold, outcome, said))
        if outcome == "answered":
            hi = float(threshold)
        else:
            lo = float(threshold)
    return lo, hi, log


def _on_grid(threshold: str) -> bool:
    return Decimal(threshold) % STEP == 0


def test_bisecting_a_salary_threshold_learns_no_more_than_one_grid_step(tmp_path):
    fed, table = federation(tmp_path)
    try:
        top = float(table.salary.max())
        # the attacker's prior: pay is capped at 160000, and 150000 is refused
        assert _probe(fed, "160000")[0] == "answered"
        assert _probe(fed, "150000")[0] == "refused"
        lo, hi, log = _bisect(fed, 150000.0, 160000.0, JOBS - 2)
    finally:
        fed.__exit__(None, None, None)
    assert lo <= top < hi  # the oracle is sound: the top salary is where it says
    # what the attacker learns: an interval no narrower than one step of the grid
    assert hi - lo >= STEP, (f"{len(log) + 2} jobs pinned the top salary {top} to "
                             f"[{lo}, {hi}), ±{(hi - lo) / 2:.4f}")
    assert any(not _on_grid(threshold) for threshold, _, _ in log)  # it did try
    for threshold, outcome, said in log:
        if _on_grid(threshold):  # only grid thresholds reach the data
            assert outcome in ("answered", "refused"), (threshold, said)
            continue
        # every threshold off the grid: one clear refusal, from the metadata alone, the
        # same at every node, naming the constant and the grid values either side of it
        low = int(Decimal(threshold) // STEP * STEP)
        assert outcome == "grid", (threshold, outcome, said)
        expected = (f"filter: salary threshold {threshold} is not on the column's grid "
                    f"(steps of {STEP}, its declared resolution); use {low} or {low + STEP}")
        assert said and all(text == expected for text in said), said


def test_a_column_without_resolution_takes_two_significant_digits(staff):
    """``age`` declares no resolution: a threshold may have at most 2 significant digits."""
    result, refusal = attempt(staff, stats(columns=["salary"], filter="age < 65.5"))
    assert result is None
    assert ("filter: age threshold 65.5 is not on the column's grid (at most 2 significant "
            "digits; the column declares no resolution); use 65 or 66") in refusal, refusal
    result, refusal = attempt(staff, stats(columns=["salary"], filter="age < 70"))
    assert result is not None, refusal
    assert result["columns"]["salary"]["count"] == len(staff.table)


def test_histogram_edges_lie_on_the_grid_too(staff):
    """A histogram edge splits rows as ``salary < edge`` does, so the auditor's refusal
    of a bin with 1 to k − 1 rows was the same oracle: a digit-by-digit scan of edges
    recovered one salary to the cent (97503.58 in 34 jobs) while the filter grid held.
    Edges now take the column's grid."""
    result, refusal = attempt(staff, stats(histograms={"salary": [0, 97503.58, 200000]}))
    assert result is None
    assert ("stats.histograms" in refusal or "histogram edge 97503.58 is not on the "
            "column's grid") and "use 97000 or 98000" in refusal, refusal
    result, refusal = attempt(staff, stats(histograms={"salary": [0, 100000, 200000]}))
    assert result is not None, refusal


def test_text_columns_cannot_be_ordered_and_dates_take_whole_months(staff):
    """``office < 'R3'``, ``'R39'``, … found the last office (one person's) in 12 jobs:
    at G2 a text column is compared for equality only, and a date threshold must be the
    first of a month."""
    result, refusal = attempt(staff, stats(columns=["salary"], filter="office < 'R3'"))
    assert result is None and "office is text" in refusal and "not ordered" in refusal
    result, refusal = attempt(staff, stats(columns=["salary"], filter="office != 'R396'"))
    assert "office is text" not in refusal


def test_at_g1_any_threshold_is_answered(tmp_path):
    """G1 does not audit queries: thresholds stay as fine as the researcher likes."""
    fed, table = federation(tmp_path, grade="G1", category="CONDITIONAL")
    try:
        for flt, mask in (("salary > 53217.4", table.salary > 53217.4),
                          ("salary < 157647.375", table.salary < 157647.375),
                          ("age >= 37.25 and salary not in [1.5, 53217.4]",
                           (table.age >= 37.25) & ~table.salary.isin([1.5, 53217.4]))):
            result, refusal = attempt(fed, stats(columns=["age"], filter=flt))
            if not mask.any():
                assert result is not None and "grid" not in refusal, (flt, refusal)
                continue
            assert result is not None, (flt, refusal, [(t.node, t.phase, t.state, t.detail)
                                                       for t in fed.last_view.tasks])
            assert result["columns"]["age"]["count"] == int(mask.sum()), flt
    finally:
        fed.__exit__(None, None, None)
