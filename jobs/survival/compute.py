"""A node's counts per (group, declared bin, status) as one vector, and its decode.

Every node fills the same layout, a function of the declared edges and the agreed group
levels only, so the vectors add under encryption::

    e[0], e[1], ..., e[B]                     the node's declared edges (summed, they
                                              must equal the contributors times the
                                              release node's own: one grid for all)
    per group level (sorted; one "all" without groups), per bin j = 1..B:
        events, censored

At-risk counts need nothing more: at the start of bin j, a group's at-risk rows are its
rows less every event and censoring of the bins before. Only complete rows count (time,
event and group all present, and with a Cox model every covariate), as a library drops
incomplete ones: the curves and the Cox fit describe the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jobs.base import Table
from jobs.regression.design import check_terms
from jobs.survival import grid
from jobs.survival.spec import SurvivalSpec
from scifed.errors import UserError

COUNT_TOLERANCE = 0.01  # pooled counts are exact integers under BFV; anything else is corruption
ALL = "all"  # the one "group" of a job without groups


@dataclass(frozen=True)
class Columns:
    """SQL for the job's columns, over the file (``table.number`` ...) or over the CTE
    ``d`` of a query (``c0, c1, c2``)."""

    time: str
    event: str | None
    group: str | None
    covariates: tuple[str, ...] = ()   # the Cox model's columns, in its order

    def complete(self) -> str:
        return " AND ".join(f"{c} IS NOT NULL" for c in (self.time, self.event, self.group,
                                                          *self.covariates) if c is not None)


def columns(table: Table, spec: SurvivalSpec) -> Columns:
    """The job's columns over the file, after refusing unknown or mistyped ones."""
    table.require([spec.time], "survival.time", numeric=True)
    if spec.event is not None:
        table.require([spec.event], "survival.event", numeric=True)
    if spec.groups is not None:
        table.require([spec.groups], "survival.groups", numeric=False)
    covariates: tuple[str, ...] = ()
    if spec.cox is not None:
        model = spec.cox_model()
        table.require([t.column for t in model.terms], "survival.cox", numeric=False)
        check_terms(model, table, "survival.cox")
        covariates = tuple(table.category(t.column) if t.categorical else
                           table.number(t.column) for t in model.terms)
    return Columns(table.number(spec.time),
                   None if spec.event is None else table.number(spec.event),
                   None if spec.groups is None else table.category(spec.groups), covariates)


def exprs_of(cols: Columns) -> tuple[list[str], Columns]:
    """The columns as the expressions of a query, and as its CTE's names (c0, c1, ...)."""
    exprs = [c for c in (cols.time, cols.event, cols.group, *cols.covariates)
             if c is not None]
    names = iter(f"c{i}" for i in range(len(exprs)))
    return exprs, Columns(next(names), next(names) if cols.event else None,
                          next(names) if cols.group else None,
                          tuple(next(names) for _ in cols.covariates))


def level_counts(table: Table, spec: SurvivalSpec) -> dict[str, int]:
    """This node's complete rows per group level ({"all": n} without groups); refuses an
    event column that is not 0/1."""
    exprs, d = exprs_of(columns(table, spec))
    if d.event is not None:
        (bad,), = table.query(exprs, f"SELECT count(*) FROM d WHERE {d.complete()} AND "
                                     f"{d.event} NOT IN (0, 1)")
        if bad:
            raise UserError(f"survival.event: column {spec.event!r} must be 1 (event) or 0 "
                            "(censored)")
    group = d.group or f"'{ALL}'"
    rows = table.query(exprs, f"SELECT {group}, count(*) FROM d WHERE {d.complete()} "
                              "GROUP BY 1")
    return {str(g): int(n) for g, n in rows}


def levels_of(spec: SurvivalSpec, vocab: dict[str, list[str]]) -> list[str]:
    """The group levels of the layout, in sorted order (one "all" without groups)."""
    if spec.groups is None:
        return [ALL]
    return sorted(set(vocab.get(spec.groups, [])))


def size(edges: list[float], levels: list[str]) -> int:
    return len(edges) + 2 * len(levels) * (len(edges) - 1)


def counts(table: Table, spec: SurvivalSpec, edges: list[float],
           levels: list[str], *, declared_only: bool = False) -> np.ndarray:
    """The contribution vector (layout above); ``declared_only`` (under DP): rows of a
    group outside ``levels`` (the declared ones) are left out, not refused."""
    exprs, d = exprs_of(columns(table, spec))
    bin_sql, bin_params = grid.bin_case(d.time, edges[1:])
    status_sql, status_params = grid.status_case(d.time, d.event, edges[-1])
    group = d.group or f"'{ALL}'"
    rows = table.query(exprs, f"SELECT {group}, {bin_sql}, {status_sql}, count(*) FROM d "
                              f"WHERE {d.complete()} GROUP BY ALL",
                       [*bin_params, *status_params])
    bins = len(edges) - 1
    cells = np.zeros((len(levels), bins, 2))
    index = {v: i for i, v in enumerate(levels)}
    for g, j, status, n in rows:
        if str(g) not in index and declared_only:
            continue
        if str(g) not in index:
            raise UserError(f"survival: this node holds a level of {spec.groups!r} the "
                            "job's vocabulary lacks")
        cells[index[str(g)], int(j), 0 if int(status) == 1 else 1] += n
    return np.concatenate([np.asarray(edges, dtype=np.float64), cells.ravel()])


def row_sets(table: Table, spec: SurvivalSpec, edges: list[float],
             levels: list[str]) -> list[tuple[str, list]]:
    """Every row set the vector counts over, as conditions within the filter: the
    selection, the complete rows, each level's, and each (level, bin, status) cell."""
    cols = columns(table, spec)
    complete = cols.complete()
    sets: list[tuple[str, list]] = [("TRUE", []), (complete, [])]
    bin_sql, bin_params = grid.bin_case(cols.time, edges[1:])
    status_sql, status_params = grid.status_case(cols.time, cols.event, edges[-1])
    for level in levels:
        where, params = complete, []
        if cols.group is not None:
            where, params = f"{complete} AND {cols.group} = ?", [level]
            sets.append((where, params))
        for j in range(len(edges) - 1):
            for status in (1, 0):
                sets.append((f"{where} AND ({bin_sql}) = {j} AND ({status_sql}) = {status}",
                             [*params, *bin_params, *status_params]))
    return sets


@dataclass(frozen=True)
class Cells:
    """The pooled counts: events and censored per (level, declared bin)."""

    events: np.ndarray    # levels × bins
    censored: np.ndarray  # levels × bins

    @classmethod
    def decode(cls, total: np.ndarray, edges: list[float], levels: list[str],
               contributors: int, *, noisy: bool = False) -> Cells:
        """``noisy``: DP noise was added to the counts (a negative one reads as 0)."""
        if total.size != size(edges, levels):
            raise ValueError(f"corrupted aggregate: {total.size} numbers, expected "
                             f"{size(edges, levels)}")
        m = len(edges)
        if not np.allclose(total[:m], contributors * np.asarray(edges), rtol=1e-9,
                           atol=1e-6):
            raise UserError("survival: the nodes binned the times on different grids (their "
                            "declared ranges of the time column differ); give survival.bins")
        cells = total[m:].reshape(len(levels), m - 1, 2)
        if noisy:
            cells = np.maximum(np.round(cells), 0.0)
        rounded = np.round(cells)
        if np.any(np.abs(cells - rounded) > COUNT_TOLERANCE) or np.any(rounded < 0):
            raise ValueError("corrupted aggregate: a pooled count is not a count")
        return cls(rounded[:, :, 0], rounded[:, :, 1])
