"""Disclosure rules of ``crosstab``: which columns may be tabulated, which levels may be
named, and which cells are suppressed.

Before any row is read, from the column dictionary (the rules of ``stats``' group
counts, ``jobs/stats/disclosure.py``): no identifier column, no numeric column unless
its values are a declared enumeration; at each node at most 40 levels per column and
at most 0.33 levels per complete row.

**Levels.** The vocabulary travels sealed for the member nodes (as regression's levels
do), and the levels become the table's labels. A level the column dictionary does not
declare must be held by at least k of the node's complete rows, else the node refuses,
without naming the level or saying how many hold it — a rare label can itself be a
person's value.

**Cells, at each node** (``compute.py``): a cell with 0 < count < k is withheld — it
enters no sum — and flagged.

**Cells, at the release node** (:func:`suppress`), per layer:

1. *primary*: a cell a node withheld, or whose pooled count is 0 < count < k (nodes may
   have different k; the pooled k is the largest), is suppressed;
2. the margins (row totals, column totals, the layer's total) are the sums of the
   contributed cells. A margin of a line holding a withheld cell is not the true total,
   and is suppressed too;
3. *secondary*: the released cells and margins are a system of linear equations in the
   suppressed ones. While any suppressed cell is determined by it (its unit vector lies
   in the row space of the equations' matrix over the unknowns, found from its null
   space), the smallest released non-zero cell in that cell's row is suppressed as
   well — or in its column, or, if the line has none, the line's margin. This covers
   the simple rule (every line with a suppression holds ≥ 2 of them or its margin is
   suppressed) and the cases it misses (a suppressed cell that bridges two blocks of
   suppressions is still determined).

Zeros are released: a structural or sampling zero describes nobody.

**Tests.** The chi-square test of a layer is released only when no cell of that layer
is suppressed. A statistic of the full table, released beside a suppressed cell, is one
more equation in that cell, which solving for it over the few integers the margins
allow can pin down; so it is withheld, and the result says why.

Differential privacy: where a node's policy requires it, that node refuses with one
message before it reads a row.
"""

from __future__ import annotations

import numpy as np

from jobs.crosstab.spec import CrosstabSpec
from jobs.stats.disclosure import check_groupable_columns, check_levels, declared_levels
from scifed.errors import UserError


def check_columns(spec: CrosstabSpec, record: dict, *, dp: bool = False) -> None:
    check_groupable_columns(spec.referenced_columns(), record, dp=dp, field="crosstab",
                            advice="bin it first, or declare its values (constraints.enum)")


def check_node_levels(node: str, k: int, spec: CrosstabSpec, held: dict, rows: int,
                      record: dict) -> None:
    """``held``: column -> Counter of level -> complete rows at this node."""
    for col in spec.referenced_columns():
        check_levels(col, len(held[col]), rows, field="crosstab")
        declared = set(declared_levels(record, col) or ())
        if any(n < k for level, n in held[col].items() if level not in declared):
            raise UserError(f"node {node}: crosstab: a level of {col!r} is held by fewer "
                            f"than k={k} rows here; merge rare levels or filter them out")


def suppress(cells: np.ndarray, primary: np.ndarray,
             withheld_lines: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray,
                                                                     np.ndarray, bool]:
    """One layer's suppression: (cells hidden, row margins hidden, column margins hidden,
    total hidden). ``cells``: R × C pooled counts; ``primary``: R × C cells hidden by
    rule 1; ``withheld_lines``: rows and columns whose margins rule 2 hides."""
    hidden = primary.copy()
    rows_hidden, cols_hidden = withheld_lines[0].copy(), withheld_lines[1].copy()
    total_hidden = bool(rows_hidden.any() or cols_hidden.any())
    while True:
        exposed = determined(hidden, rows_hidden, cols_hidden, total_hidden)
        if exposed is None:
            return hidden, rows_hidden, cols_hidden, total_hidden
        r, c = exposed
        if _hide_partner(cells, hidden, r, c, axis=1) or \
                _hide_partner(cells, hidden, r, c, axis=0):
            continue
        if not rows_hidden[r]:
            rows_hidden[r] = True
        elif not cols_hidden[c]:
            cols_hidden[c] = True
        elif not total_hidden:
            total_hidden = True
        else:  # nothing left to hide beside it: the whole layer is withheld
            hidden[:] = True
            rows_hidden[:] = True
            cols_hidden[:] = True


def _hide_partner(cells: np.ndarray, hidden: np.ndarray, r: int, c: int, axis: int) -> bool:
    """Hide the smallest released non-zero cell in cell (r, c)'s row (axis 1) or column
    (axis 0); False if there is none."""
    line = cells[r] if axis == 1 else cells[:, c]
    mask = hidden[r] if axis == 1 else hidden[:, c]
    options = np.flatnonzero((line > 0) & ~mask)
    if options.size == 0:
        return False
    pick = options[np.argmin(line[options])]
    if axis == 1:
        hidden[r, pick] = True
    else:
        hidden[pick, c] = True
    return True


def determined(hidden: np.ndarray, rows_hidden: np.ndarray, cols_hidden: np.ndarray,
               total_hidden: bool) -> tuple[int, int] | None:
    """The first suppressed cell that the released cells and margins determine, or None.

    Unknowns: the hidden cells, hidden margins and the total if hidden. Equations: each
    row and column sums to its margin, the margins sum to the total. A hidden cell is
    determined iff every vector of the null space of the equations' matrix over the
    unknowns is zero at it."""
    n_r, n_c = hidden.shape
    unknown = [("cell", r, c) for r in range(n_r) for c in range(n_c) if hidden[r, c]]
    if not unknown:
        return None
    unknown += [("row", r, -1) for r in range(n_r) if rows_hidden[r]]
    unknown += [("col", -1, c) for c in range(n_c) if cols_hidden[c]]
    if total_hidden:
        unknown.append(("total", -1, -1))
    where = {u: i for i, u in enumerate(unknown)}
    equations = []
    for r in range(n_r):      # Σ_c cell[r, c] − row[r] = 0
        eq = np.zeros(len(unknown))
        for c in range(n_c):
            if ("cell", r, c) in where:
                eq[where[("cell", r, c)]] = 1.0
        if ("row", r, -1) in where:
            eq[where[("row", r, -1)]] = -1.0
        equations.append(eq)
    for c in range(n_c):
        eq = np.zeros(len(unknown))
        for r in range(n_r):
            if ("cell", r, c) in where:
                eq[where[("cell", r, c)]] = 1.0
        if ("col", -1, c) in where:
            eq[where[("col", -1, c)]] = -1.0
        equations.append(eq)
    for kind in ("row", "col"):
        eq = np.zeros(len(unknown))
        for u, i in where.items():
            if u[0] == kind:
                eq[i] = 1.0
        if total_hidden:
            eq[where[("total", -1, -1)]] = -1.0
        equations.append(eq)
    a = np.array(equations)
    _, s, vt = np.linalg.svd(a)
    rank = int(np.sum(s > 1e-9 * max(1.0, s.max(initial=0.0))))
    null = vt[rank:]
    for u, i in where.items():
        if u[0] == "cell" and (null.size == 0 or np.max(np.abs(null[:, i])) < 1e-9):
            return u[1], u[2]
    return None
