"""The Cox model at a node: its design, and one Newton round's sums on the released grid.

The design is regression's (jobs/regression/design.py): the covariates of the complete
rows, a numeric column as it is, a ``C(column)`` as one dummy per level but the
reference, from the vocabulary every node agreed. It is coded with an intercept and the
intercept column dropped, since the baseline hazard absorbs any constant.

Ties follow Breslow on the released bins: every event and censoring of a bin is tied at
the bin's right edge, and a row is at risk at bin j when its own bin is j or later (those
censored at an edge count at risk there, as for Kaplan–Meier). At the coefficients β and
the centre c of the round's query, with w = exp(xβ − c), each node's vector is::

    per released bin j = 1..B:  Σ_{at risk} w
    per released bin, row by row:  Σ_{at risk} x·w                 (p numbers each)
    per released bin, row by row:  Σ_{at risk} x xᵀ·w, upper triangle (p(p+1)/2 each)
    Σ_{events} x                                                    (p numbers)

The events per bin the release node already holds (the compute round's counts). The
centre c = x̄ᵀβ (x̄ the pooled covariate means) cancels in the partial likelihood and keeps
the weights near 1, so the sums keep their digits on the encryption's fixed-point grid.
Nothing here is per row: every number is a sum over a released bin's risk set, a union
of the declared (bin, status) cells the query auditor saw at the compute round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jobs.base import Table
from jobs.regression.compute import untri
from jobs.regression.design import Layout, Rows, matrix
from jobs.survival import grid
from jobs.survival.compute import columns, exprs_of
from jobs.survival.spec import SurvivalSpec
from scifed.errors import UserError
from scifed.he import MAX_ABS_VALUE


def layout(spec: SurvivalSpec, vocab: dict[str, list[str]]) -> Layout:
    """The regression layout of the covariates with an intercept (see :func:`names`)."""
    return Layout.build(spec.cox_model(), vocab)


def names(lay: Layout) -> list[str]:
    """The Cox coefficients: the layout's columns but the intercept."""
    return lay.names[1:]


@dataclass(frozen=True)
class Design:
    """This node's complete rows on a grid: each row's bin, status and covariates."""

    bins: np.ndarray     # 0-based released bin of each row
    events: np.ndarray   # True where the row's status on the grid is an event
    rows: Rows           # the covariates (numeric values, categorical labels)

    @property
    def n(self) -> int:
        return int(self.bins.size)


def read(table: Table, spec: SurvivalSpec, right: list[float]) -> Design:
    """The complete rows binned by the right edges ``right`` (one query; the same SQL as
    the compute round's counts, so a row falls in the same bin)."""
    exprs, d = exprs_of(columns(table, spec))
    bin_sql, bin_params = grid.bin_case(d.time, right)
    status_sql, status_params = grid.status_case(d.time, d.event, right[-1])
    rows = table.query(exprs, f"SELECT {bin_sql}, {status_sql}, {', '.join(d.covariates)} "
                              f"FROM d WHERE {d.complete()}", [*bin_params, *status_params])
    model = spec.cox_model()
    data = list(zip(*rows, strict=True)) if rows else [() for _ in range(2 + len(model.terms))]
    numeric, labels = {}, {}
    for term, values in zip(model.terms, data[2:], strict=True):
        if term.categorical:
            labels[term.column] = np.asarray(values, dtype=object)
        else:
            numeric[term.column] = np.asarray(values, dtype=np.float64)
    bins = np.asarray(data[0], dtype=np.int64)
    return Design(bins, np.asarray(data[1], dtype=np.int64) == 1,
                  Rows(np.zeros(bins.size), numeric, labels))


def design_matrix(spec: SurvivalSpec, lay: Layout, design: Design) -> np.ndarray:
    """The n × p Cox design (regression's, less its intercept column)."""
    return matrix(spec.cox_model(), lay, design.rows)[:, 1:]


def released_edges(query: dict, declared: list[float], node: str) -> list[float]:
    """The round's grid, refused unless it merges the declared bins (a subset of their
    edges with the same ends): only then is each risk set a union of audited cells."""
    edges = query.get("edges")
    ok = isinstance(edges, list) and len(edges) >= 2 and all(
        isinstance(e, int | float) for e in edges)
    if ok:
        edges = [float(e) for e in edges]
        ok = (edges[0] == declared[0] and edges[-1] == declared[-1]
              and set(edges) <= set(declared)
              and all(b > a for a, b in zip(edges, edges[1:], strict=False)))
    if not ok:
        raise UserError(f"node {node}: survival: the round's bins are not a merge of the "
                        "declared bins")
    return edges


def size(bins: int, p: int) -> int:
    return bins * (1 + p + p * (p + 1) // 2) + p


def sums(x: np.ndarray, design: Design, beta: np.ndarray, center: float, bins: int,
         node: str) -> np.ndarray:
    """One round's vector (layout above) at ``beta``, ``center``."""
    n, p = x.shape
    with np.errstate(over="ignore"):
        w = np.exp(x @ beta - center)
    iu = np.triu_indices(p)
    leaving = np.zeros((bins, 1 + p + iu[0].size))
    np.add.at(leaving, design.bins, np.column_stack(
        [w, x * w[:, None], x[:, iu[0]] * x[:, iu[1]] * w[:, None]]) if n else
        np.zeros((0, leaving.shape[1])))
    at_risk = np.cumsum(leaving[::-1], axis=0)[::-1]  # bin j and every later one
    vec = np.concatenate([at_risk[:, 0], at_risk[:, 1:1 + p].ravel(),
                          at_risk[:, 1 + p:].ravel(), x[design.events].sum(axis=0)])
    if not np.all(np.isfinite(vec)) or np.max(np.abs(vec), initial=0.0) > MAX_ABS_VALUE / 100:
        raise UserError(f"node {node}: survival: the Cox sums overflow (covariates or "
                        "coefficients too large); rescale the covariates, or the fit diverged")
    return vec


@dataclass(frozen=True)
class RiskSums:
    """The pooled sums of one round (at the round's β and centre)."""

    s0: np.ndarray      # B
    s1: np.ndarray      # B × p
    s2: np.ndarray      # B × p × p
    events_x: np.ndarray  # p

    @classmethod
    def decode(cls, total: np.ndarray, bins: int, p: int) -> RiskSums:
        if total.size != size(bins, p):
            raise ValueError(f"corrupted aggregate: {total.size} numbers, expected "
                             f"{size(bins, p)}")
        m = p * (p + 1) // 2
        s1 = total[bins:bins * (1 + p)].reshape(bins, p)
        s2 = total[bins * (1 + p):bins * (1 + p + m)].reshape(bins, m)
        return cls(total[:bins].copy(), s1.copy(), np.stack([untri(r, p) for r in s2]),
                   total[bins * (1 + p + m):].copy())

