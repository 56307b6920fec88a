"""The release node's side of a ``crosstab`` job: the pooled cells, their suppression
(``disclosure.suppress``), and per layer the chi-square test of independence.

The test is Pearson's chi-square without continuity correction, as
``scipy.stats.chi2_contingency(table, correction=False)``, on the layer's table without
its all-zero rows and columns (a level absent from a layer has no expected count):
statistic, degrees of freedom, p-value, the expected counts and Cramér's V
(√(χ² / (n · (min(r, c) − 1)))). It is released only for a layer with no suppressed
cell (see ``disclosure.py``), and not for a table of fewer than two rows or columns.
"""

from __future__ import annotations

import math

import numpy as np

from jobs.base import Pooled, Released
from jobs.crosstab import disclosure
from jobs.crosstab.compute import Layout
from jobs.crosstab.dp import NOTE
from jobs.crosstab.spec import CrosstabSpec
from jobs.stats.compute import pooled_count
from scifed.errors import UserError


def release(spec: CrosstabSpec, pooled: Pooled) -> Released:
    layout = Layout.build(spec, pooled.vocab)
    total = np.asarray(pooled.totals["sum"], dtype=np.float64)
    if total.size != 2 * layout.cells:
        raise UserError(f"crosstab: corrupted aggregate: {total.size} numbers, expected "
                        f"{2 * layout.cells}")
    if pooled.dp:  # noisy counts: a negative one reads as 0 (post-processing)
        total = np.concatenate([np.maximum(np.rint(total[:layout.cells]), 0.0),
                                total[layout.cells:]])
    try:
        cells = np.array([pooled_count(v, "a cell") for v in total[:layout.cells]])
        flags = np.array([pooled_count(v, "a cell's flag") for v in total[layout.cells:]])
    except ValueError as exc:
        raise UserError(f"crosstab: {exc}") from None
    cells, flags = cells.reshape(layout.shape), flags.reshape(layout.shape)
    tables = [_layer(layout, g, cells[i], flags[i], pooled.k)
              for i, g in enumerate(layout.layers)]
    result = {"rows": spec.rows, "columns": spec.columns, "layers": spec.layers,
              "row_levels": layout.rows, "column_levels": layout.columns,
              "tables": tables,
              "suppression": {"k": pooled.k,
                              "cells": int(sum(np.sum(t["suppressed"]) for t in tables)),
                              "withheld_at_nodes": int(np.sum(flags > 0)),
                              "rule": "cells 0 < n < k and cells withheld at a node "
                                      "suppressed; further cells until none can be "
                                      "solved for from the released cells and margins"}}
    if pooled.dp:
        result["privacy"], result["privacy_note"] = pooled.dp, NOTE
    return Released(result)


def _layer(layout: Layout, layer: str | None, cells: np.ndarray, flags: np.ndarray,
           k: int) -> dict:
    primary = (flags > 0) | ((cells > 0) & (cells < k))
    lines = ((flags > 0).any(axis=1), (flags > 0).any(axis=0))
    hidden, rows_hidden, cols_hidden, total_hidden = disclosure.suppress(cells, primary,
                                                                         lines)
    out: dict = {
        "layer": layer,
        "counts": [[None if h else int(v) for v, h in zip(rv, rh, strict=True)]
                   for rv, rh in zip(cells, hidden, strict=True)],
        "suppressed": hidden.tolist(),
        "row_totals": [None if h else int(v)
                       for v, h in zip(cells.sum(axis=1), rows_hidden, strict=True)],
        "column_totals": [None if h else int(v)
                          for v, h in zip(cells.sum(axis=0), cols_hidden, strict=True)],
        "total": None if total_hidden else int(cells.sum()),
    }
    if hidden.any():
        out["test"] = None
        out["test_note"] = ("not released: a cell of this table is suppressed, and a "
                            "statistic of the full table would help solve for it")
    else:
        out["test"], note = chi_square(cells, layout)
        if note:
            out["test_note"] = note
    return out


def chi_square(cells: np.ndarray, layout: Layout) -> tuple[dict | None, str]:
    """The test on the table without all-zero rows and columns; (None, why) if it has
    fewer than two of either."""
    # here, not at the top: scipy.stats costs every node ~50 MB
    from scipy.stats import chi2_contingency

    keep_r, keep_c = cells.sum(axis=1) > 0, cells.sum(axis=0) > 0
    table = cells[np.ix_(keep_r, keep_c)]
    if table.shape[0] < 2 or table.shape[1] < 2:
        return None, "no test: fewer than two non-empty rows or columns"
    stat, p, dof, expected = chi2_contingency(table, correction=False)
    n = float(table.sum())
    v = math.sqrt(stat / (n * (min(table.shape) - 1)))
    return {"statistic": float(stat), "dof": int(dof), "p_value": float(p),
            "cramers_v": v, "n": int(n),
            "rows": [r for r, keep in zip(layout.rows, keep_r, strict=True) if keep],
            "columns": [c for c, keep in zip(layout.columns, keep_c, strict=True) if keep],
            "expected": expected.tolist()}, ""
