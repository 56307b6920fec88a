"""Disclosure rules of ``pca``.

What is released: eigenvalues, their ratios, loadings, the column means (and standard
deviations where standardized) and the pooled row count — aggregates of the pooled
covariance. Scores (each row's coordinates on the components) are per row and are never
computed, let alone released. The rules, with regression's (``jobs/regression/
disclosure.py``) as the model, since the covariance is the same kind of sufficient
statistic as XᵀX:

Before any row is read, from the column dictionary:

* every column is numeric (the data check names the first that is not);
* no column identifies people or records (role ``id``, a direct or quasi identifier):
  its mean and its loading would describe an identifier.

At each node, on its own complete rows (every listed column present):

* **rows**: 0 < n < k — the node refuses, with a message that says "fewer than k" and
  never how many;
* **saturation**: p ≤ 0.33·n (regression's ``MAX_DENSITY``, DataSHIELD's
  ``nfilter.glm``): with nearly as many columns as rows, the node's cross-products
  come close to its rows.

At the release node, on the pooled numbers:

* n − 1 > p (a covariance of full rank is possible), and the residual degrees of freedom
  n − 1 − p ≥ max(k, :data:`MIN_RESIDUAL_DF`), as regression's n − p ≥ max(k, 10);
* standardized: a column without variance in the complete rows is refused by name.

Differential privacy: where a node's policy requires it, that node refuses the job with
one message before it reads a row (noisy covariances are not implemented).
"""

from __future__ import annotations

from jobs.regression import disclosure as regression_rules
from jobs.regression.disclosure import MIN_RESIDUAL_DF
from jobs.stats.disclosure import identifies
from scifed.errors import UserError


def check_columns(columns: list[str], record: dict) -> None:
    """The column dictionary's rule above."""
    for col in columns:
        if identifies(record, col):
            raise UserError(f"pca.columns: column {col!r} identifies people or records and "
                            "cannot enter a principal component analysis")


def check_node(node: str, k: int, n: int, p: int) -> None:
    """The rows and saturation rules at a node: regression's, with no categorical."""
    regression_rules.check_node(node, k, n, p, {}, None, "pca")


def check_pooled(n: int, p: int, k: int) -> None:
    if n == 0:
        raise UserError("pca: no complete rows (every listed column present) at any node")
    if n - 1 <= p:
        raise UserError(f"pca: too few complete rows for {p} columns (the rows minus one "
                        "must exceed the columns)")
    need = max(k, MIN_RESIDUAL_DF)
    if n - 1 - p < need:
        raise UserError(f"pca: too few residual degrees of freedom (rows minus one minus the "
                        f"{p} columns); the disclosure rules need at least {need} "
                        f"(max(k, {MIN_RESIDUAL_DF}))")
