"""Noisy sufficient statistics: ``regression`` where a node's policy requires DP.

Only a linear (gaussian) model: its whole fit is one sum (n, Σy, Σy², XᵀX, Xᵀy), so one
noisy contribution per node bounds everything released by the query's ε. A GLM needs an
exact round per IRLS iteration and is refused under DP (in the spec, and at the node).

What the noise must cover decides what may depend on the data (as for ``stats``):

* **values** are clipped to bounds from the job (``regression.dp.bounds``) or the
  dataset's declared constraints, never from the rows;
* **levels** of a categorical predictor are the column's declared enumeration
  (``constraints.enum``), whatever the rows hold; a row with an undeclared level is left
  out like a row with a missing value, and a declared level nobody holds is still a
  column (its coefficient is then noise);
* the node's **data-dependent refusals** (fewer than k rows, a level held by fewer than
  k, too many parameters for the rows, sums too large to encrypt) are not applied:
  whether a node refuses would itself depend on the rows, outside ε. Bounds too wide
  for the encryption are refused from the bounds and the catalogued row count alone
  (:func:`check_capacity`). The pooled rules run on the noisy numbers.

Each entry of the vector is one block (one row moves ``XᵀX[i, j]`` by at most
``|x_i|·|x_j|``, with 1 for the intercept and a dummy), ε split evenly over them. The
standard errors treat the noisy statistics as exact: they leave the noise out, and the
result says so.
"""

from __future__ import annotations

import numpy as np

from jobs import privacy
from jobs.base import Limits
from jobs.privacy import Block, DPRequest, add_laplace, clipping_bounds, magnitude, report
from jobs.regression.design import Layout, Rows
from jobs.regression.formula import Model
from jobs.stats import disclosure as stats_disclosure
from scifed.errors import UserError

NOTE = ("differentially private: the coefficients come from noisy sufficient statistics; "
        "the standard errors, tests and intervals treat them as exact and leave the noise "
        "out")


def bounds(model: Model, request: DPRequest | None,
           record: dict) -> dict[str, tuple[float, float]]:
    """Clipping bounds of the response and every numeric predictor."""
    numeric = [model.response, *(t.column for t in model.terms if not t.categorical)]
    return clipping_bounds(numeric, request, record, "regression.dp.bounds")


def declared_levels(model: Model, record: dict) -> dict[str, list[str]]:
    """Every categorical predictor's declared enumeration (as text labels)."""
    out = {}
    for col in model.factors:
        enum = stats_disclosure.declared_levels(record, col)
        if not enum:
            raise UserError(f"regression: C({col}) under differential privacy needs the "
                            f"column's levels declared (constraints.enum in the dataset's "
                            "metadata): levels read from the rows would leak")
        out[col] = sorted(set(enum))
    return out


def private_rows(rows: Rows, model: Model, clip: dict[str, tuple[float, float]],
                 levels: dict[str, list[str]]) -> Rows:
    """The rows with numeric values clipped and undeclared levels left out."""
    keep = np.ones(rows.n, dtype=bool)
    for col, allowed in levels.items():
        keep &= np.isin(rows.labels[col], allowed)
    numeric = {c: np.clip(v[keep], *clip[c]) for c, v in rows.numeric.items()}
    labels = {c: v[keep] for c, v in rows.labels.items()}
    return Rows(numeric[model.response], numeric, labels)


def blocks(model: Model, layout: Layout, clip: dict[str, tuple[float, float]]) -> list[Block]:
    """One block per entry of the compute vector (``compute.sufficient``'s layout)."""
    by = magnitude(clip[model.response])
    cols = [1.0] if model.intercept else []
    for term in model.terms:
        if term.categorical:
            cols += [1.0] * len(layout.levels[term.column])
        else:
            cols.append(magnitude(clip[term.column]))
    out = [Block("n", [0], 1.0, True), Block("Σy", [1], by, False),
           Block("Σy²", [2], by * by, False)]
    i = 3
    for a, b in zip(*np.triu_indices(len(cols)), strict=True):
        out.append(Block(f"XᵀX[{layout.names[a]}, {layout.names[b]}]", [i],
                         cols[a] * cols[b], False))
        i += 1
    for a, name in enumerate(layout.names):
        out.append(Block(f"Xᵀy[{name}]", [i], cols[a] * by, False))
        i += 1
    return out


def check_capacity(model: Model, clip: dict[str, tuple[float, float]],
                   levels: dict[str, list[str]], limits: Limits) -> None:
    """The sums fit the encryption whatever the rows (jobs.privacy.check_capacity)."""
    assert limits.epsilon is not None
    privacy.check_capacity(blocks(model, Layout.build(model, levels), clip), limits.epsilon,
                           int(limits.record["record_count"]), "regression.dp.bounds")


def add_noise(vec: np.ndarray, model: Model, layout: Layout,
              clip: dict[str, tuple[float, float]], epsilon: float) -> dict:
    """Noise the compute vector in place; the mechanism report."""
    parts = add_laplace(vec, blocks(model, layout, clip), epsilon)
    return report(epsilon, parts, clip)
