"""Disclosure rules of ``regression`` (DataSHIELD's ``ds.glm`` checks as the reference).

What is released is a coefficient table and fit statistics — never anything per row (no
residuals, fitted values, leverages or the design matrix). The rules:

At each node, before its contribution leaves it (refused there, as other rules are):

* **rows**: a node with 0 < n < k complete rows contributes nothing (it refuses), since
  its sufficient statistics would describe fewer than k records.
* **levels**: every level of every categorical predictor is held by 0 or at least k of
  the node's complete rows (else a dummy column's sums describe fewer than k records);
  for a binomial response, each outcome (0 and 1) likewise. A categorical column that
  identifies people or records (role ``id``, a direct or quasi identifier) is refused,
  and one with more than :data:`MAX_LEVELS` levels at a node.
* **saturation at the node**: p ≤ :data:`MAX_DENSITY` · n (DataSHIELD's
  ``nfilter.glm`` = 0.33): a node's sums with nearly as many parameters as rows come
  close to solving for its rows.

At the release node, on the pooled numbers:

* **no saturated model**: p < n.
* **residual degrees of freedom**: n − p ≥ max(k, :data:`MIN_RESIDUAL_DF`), so that the
  coefficients and their standard errors are never a near-interpolation of few records.
* **singular designs** are refused naming the aliased column (no arbitrary coefficient).

Under differential privacy (``dp.py``) the node-level rules are not applied (a refusal
that depends on the rows would leak outside ε); the pooled rules run on the noisy sums.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from jobs.regression.formula import Model
from scifed.errors import UserError

MIN_RESIDUAL_DF = 10
MAX_DENSITY = 0.33
MAX_LEVELS = 40
_IDENTIFIER_KINDS = {"direct_identifier", "quasi_identifier"}


def check_factors(model: Model, record: dict, job: str = "regression") -> None:
    """Refuse, from the column dictionary, a categorical whose labels identify records
    (``job``: the type whose rule it is, for the message; survival's Cox model uses it)."""
    fields = {f["name"]: f for f in record.get("fields", [])}
    for col in model.factors:
        f = fields.get(col) or {}
        if f.get("role") == "id" or f.get("pi_kind") in _IDENTIFIER_KINDS:
            raise UserError(f"{job}: column {col!r} identifies people or records and "
                            "cannot be a categorical predictor")


def check_node(node: str, k: int, n: int, p: int, labels: dict[str, np.ndarray],
               y: np.ndarray | None, job: str = "regression") -> None:
    """The node-level rules above (``y``: a binomial response, else None)."""
    if n == 0:
        return
    if n < k:
        raise UserError(f"node {node}: {job}: fewer than k={k} complete rows here; "
                        "this node does not contribute")
    if p > MAX_DENSITY * n:
        raise UserError(f"node {node}: {job}: {p} parameters are too many for this "
                        f"node's rows (at most {MAX_DENSITY:.0%} of them); the model is "
                        "nearly saturated here")
    for col, values in labels.items():
        counts = Counter(values.tolist())
        if len(counts) > MAX_LEVELS:
            raise UserError(f"node {node}: {job}: C({col}) has more than {MAX_LEVELS} "
                            "levels here")
        if any(c < k for c in counts.values()):
            raise UserError(f"node {node}: {job}: a level of C({col}) is held by fewer "
                            f"than k={k} rows here; merge rare levels or filter them out")
    if y is not None:
        ones = int(np.sum(y == 1))
        if 0 < ones < k or 0 < n - ones < k:
            raise UserError(f"node {node}: {job}: one outcome of the binomial response "
                            f"is held by fewer than k={k} rows here")


def check_pooled(n: int, p: int, k: int, job: str = "regression") -> None:
    """The pooled rules above; raises UserError naming the rule."""
    if p >= n:
        raise UserError(f"{job}: the model is saturated: its {p} parameters are "
                        "not fewer than the complete rows")
    need = max(k, MIN_RESIDUAL_DF)
    if n - p < need:
        raise UserError(f"{job}: too few residual degrees of freedom (rows minus the "
                        f"{p} parameters); the disclosure rules need at least {need} "
                        f"(max(k, {MIN_RESIDUAL_DF}))")
