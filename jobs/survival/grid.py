"""The declared time grid, fixed before any row is read, and the SQL that bins a row on it.

Individual event times never leave a node: every node counts its rows per bin of one grid
that depends only on the spec and the catalog record. The edges come from the job
(``bins: [0, 365, 730, ...]``) or from the time column's declared range (its Table Schema
``constraints.minimum`` / ``maximum``), cut into ``bins`` (default 20) equal steps on a
1-2-5 ladder, and on the column's declared ``resolution`` where it has one. Where the node
audits queries an edge must lie on the column's threshold grid, as a filter constant must
(`scifed/filters.py`): an edge splits the rows exactly as ``time <= edge`` does.

Bins are right-closed, ``(e[j-1], e[j]]``; the first also holds every time up to its right
edge (a time at or below the first edge), and a time beyond the last edge is censored at
the last edge (administrative censoring at the end of the grid). So each row falls in
exactly one bin with one status: event, or censored.
"""

from __future__ import annotations

import math

from jobs.survival.spec import DEFAULT_BINS, MAX_BINS, SurvivalSpec
from scifed.errors import UserError
from scifed.filters import check_on_grid

_LADDER = (1, 2, 5)


def _declared(record: dict, column: str) -> dict:
    return next((f for f in record.get("fields", []) if f.get("name") == column), {})


def _step(width: float, resolution: float | None) -> float:
    """The smallest 1-2-5 step (a multiple of the resolution, if any) at least ``width``."""
    if resolution:
        return resolution * max(1, math.ceil(width / resolution - 1e-9))
    exponent = math.floor(math.log10(width))
    for e in (exponent, exponent + 1):
        for m in _LADDER:
            if m * 10.0 ** e >= width * (1 - 1e-12):
                return m * 10.0 ** e
    return 10.0 ** (exponent + 1)  # pragma: no cover - the ladder always reaches it


def edges(spec: SurvivalSpec, record: dict, grid: dict[str, float | None] | None
          ) -> list[float]:
    """The declared edges of this job (refuses with the field to fix)."""
    if isinstance(spec.bins, list):
        out = [float(e) for e in spec.bins]
    else:
        f = _declared(record, spec.time)
        c = f.get("constraints") or {}
        lo, hi = c.get("minimum"), c.get("maximum")
        if lo is None or hi is None or not float(lo) < float(hi):
            raise UserError(f"survival.bins: give the bin edges, or declare "
                            f"constraints.minimum/maximum of {spec.time!r} in the dataset's "
                            "metadata (the grid never comes from the data)")
        n = spec.bins if isinstance(spec.bins, int) else DEFAULT_BINS
        step = _step((float(hi) - float(lo)) / n, f.get("resolution"))
        first = math.floor(float(lo) / step + 1e-9)
        last = math.ceil(float(hi) / step - 1e-9)
        out = [_clean(i * step) for i in range(first, last + 1)]
        if len(out) > MAX_BINS + 1:
            raise UserError(f"survival.bins: the declared range of {spec.time!r} in steps of "
                            f"its resolution needs more than {MAX_BINS} bins; give fewer "
                            "or the edges")
    if grid is not None:
        for e in out:
            check_on_grid(spec.time, e, grid, "bin edge")
    return out


def _clean(value: float) -> float:
    """A grid value without float dust (0.30000000000000004 -> 0.3)."""
    return float(f"{value:.12g}")


def bin_case(time_sql: str, right: list[float]) -> tuple[str, list]:
    """SQL for the 0-based bin of a time, given the right edges ``e[1..B]``: the first bin
    holds every time up to ``e[1]``, the last every time above ``e[B-1]``."""
    if len(right) == 1:
        return "0", []
    whens = " ".join(f"WHEN {time_sql} <= ? THEN {j}" for j in range(len(right) - 1))
    return f"CASE {whens} ELSE {len(right) - 1} END", list(right[:-1])


def status_case(time_sql: str, event_sql: str | None, last: float) -> tuple[str, list]:
    """SQL for a row's status on the grid: 1 an event, 0 censored (by its event column,
    or because its time lies beyond the last edge)."""
    if event_sql is None:
        return f"CASE WHEN {time_sql} > ? THEN 0 ELSE 1 END", [last]
    return f"CASE WHEN {time_sql} > ? THEN 0 ELSE CAST({event_sql} AS INTEGER) END", [last]
