"""``regression``: exact OLS from one encrypted sum of every node's sufficient statistics
(XᵀX, Xᵀy, yᵀy, n), and logistic / Poisson GLMs by federated Newton / IRLS, one more
encrypted round per iteration.

Files: ``formula`` (the model, parsed without data), ``spec`` (the ``regression:``
section), ``design`` (a node's complete rows and the dummy columns the vocabulary fixes),
``dp`` (noisy sufficient statistics where policy requires DP), ``families`` (IRLS
weights, deviance, likelihood per family), ``compute`` (the vectors and their decode),
``disclosure`` (the rules, at the node and pooled), ``fit`` (the release node's solve and
inference), ``release`` (the rounds), ``view`` (tables, forest plot, files).
"""

from __future__ import annotations

import numpy as np

from jobs.aggregate import AggregateJob
from jobs.base import Limits, NextRound, Pooled, Released, Table
from jobs.regression import compute, design, disclosure, dp
from jobs.regression.families import check_response
from jobs.regression.release import release
from jobs.regression.spec import RegressionSpec
from scifed.errors import UserError
from scifed.he import MAX_ABS_VALUE


class RegressionJob(AggregateJob):
    name = "regression"
    Spec = RegressionSpec
    family = "agg"

    def wants_vocabulary(self, params: RegressionSpec) -> bool:
        return bool(params.model().factors)

    def requested_epsilon(self, params: RegressionSpec) -> float | None:
        return params.dp.epsilon if params.dp else None

    def wants_dp(self, params: RegressionSpec) -> bool:
        # `dp` without an ε lets a node whose policy requires DP answer at its own ε
        return params.dp is not None

    def nonlinear(self, params: RegressionSpec) -> bool:
        # a GLM's deviance and likelihood (Σ y·log y, Σ log y!, ...) are non-linear sums
        return params.family != "gaussian"

    def _rows(self, params: RegressionSpec, table: Table,
              limits: Limits) -> design.Rows:
        """The checks that need no vocabulary, then this node's complete rows (under DP
        clipped, and only those with declared levels: jobs/regression/dp.py)."""
        model = params.model()
        if limits.epsilon is not None and params.family != "gaussian":
            raise UserError(f"node {limits.node}: regression: this node's policy requires "
                            "differential privacy, available for gaussian models only (a "
                            f"{params.family} fit takes one exact round per iteration)")
        disclosure.check_factors(model, limits.record)
        design.check_columns(model, table, params.family)
        private = None
        if limits.epsilon is not None:  # bounds and levels first: refused before a row
            private = (dp.bounds(model, params.dp, limits.record),
                       dp.declared_levels(model, limits.record))
            dp.check_capacity(model, *private, limits)
        rows = design.read(model, table)
        check_response(params.family, rows.y, limits.node)
        return rows if private is None else dp.private_rows(rows, model, *private)

    def _design(self, params: RegressionSpec, table: Table, vocab: dict[str, list[str]],
                limits: Limits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = self._rows(params, table, limits)
        model = params.model()
        try:
            layout = design.Layout.build(model, vocab)
        except ValueError as exc:
            raise UserError(f"node {limits.node}: regression: {exc}") from None
        if limits.epsilon is None:  # under DP a data-dependent refusal would leak
            disclosure.check_node(limits.node, limits.k, rows.n, layout.p, rows.labels,
                                  rows.y if params.family == "binomial" else None)
        return (design.matrix(model, layout, rows), rows.y,
                design.offset(model, rows, limits.node))

    # -- node ----------------------------------------------------------------------------
    def vocabulary(self, params: RegressionSpec, table: Table,
                   limits: Limits) -> dict[str, list[str]]:
        """Each categorical predictor's levels among this node's complete rows; each must
        be held by at least k of them (checked here, before any level leaves). Under DP:
        the declared levels, whatever the rows hold."""
        if limits.epsilon is not None:
            self._rows(params, table, limits)  # the same refusals as compute's
            return dp.declared_levels(params.model(), limits.record)
        rows = self._rows(params, table, limits)
        disclosure.check_node(limits.node, limits.k, rows.n, 0, rows.labels, None)
        return {c: sorted(set(v.tolist())) for c, v in rows.labels.items()}

    def compute(self, params: RegressionSpec, table: Table, vocab: dict[str, list[str]],
                limits: Limits) -> np.ndarray:
        x, y, _ = self._design(params, table, vocab, limits)
        vec = compute.sufficient(x, y)
        # under DP the capacity was checked from the bounds alone (dp.check_capacity): a
        # check of these exact sums would be a refusal that depends on the rows
        return vec if limits.epsilon is not None else _bounded(vec, limits)

    def noise(self, params: RegressionSpec, vec: np.ndarray, vocab: dict[str, list[str]],
              limits: Limits) -> dict:
        assert limits.epsilon is not None
        model = params.model()
        return dp.add_noise(vec, model, design.Layout.build(model, vocab),
                            dp.bounds(model, params.dp, limits.record), limits.epsilon)

    def row_sets(self, params: RegressionSpec, table: Table, vocab: dict[str, list[str]],
                 limits: Limits) -> list[tuple[str, list]]:
        """The complete rows, and within them each coded level (and, binomial, y = 1)."""
        model = params.model()
        cats = set(model.factors)
        complete = " AND ".join(
            f"{table.category(c) if c in cats else table.number(c)} IS NOT NULL"
            for c in model.columns)
        sets: list[tuple[str, list]] = [(complete, [])]
        layout = design.Layout.build(model, vocab)
        for col, levels in layout.levels.items():
            sets += [(f"{complete} AND {table.category(col)} = ?", [v]) for v in levels]
        if params.family == "binomial":
            sets.append((f"{complete} AND {table.number(model.response)} = 1", []))
        return sets

    def round(self, params: RegressionSpec, table: Table, query: dict,
              limits: Limits) -> np.ndarray:
        """One IRLS iteration at the coefficients the release node sent."""
        vocab = query.get("vocab") or {}
        x, y, offset = self._design(params, table, vocab, limits)
        beta = np.asarray(query.get("beta", []), dtype=np.float64)
        if beta.shape != (x.shape[1],) or not np.all(np.isfinite(beta)):
            raise UserError(f"node {limits.node}: regression: the round's coefficients do "
                            "not fit the model")
        mean = query.get("mean")
        vec = compute.iteration(params.family, x, y, beta,
                                None if mean is None else float(mean), offset)
        return _bounded(vec, limits)

    # -- release node --------------------------------------------------------------------
    def release(self, params: RegressionSpec, pooled: Pooled) -> Released | NextRound:
        return release(params, pooled)

    # -- researcher ----------------------------------------------------------------------
    def view(self, result: dict):
        from jobs.regression.view import RegressionResult

        return RegressionResult.from_json(result)


def _bounded(vec: np.ndarray, limits: Limits) -> np.ndarray:
    """Refuse sums the encryption cannot carry exactly, with a message that says why."""
    if not np.all(np.isfinite(vec)) or np.max(np.abs(vec), initial=0.0) > MAX_ABS_VALUE / 100:
        raise UserError(f"node {limits.node}: regression: the sums overflow (values or "
                        "coefficients too large); rescale the columns, or the fit diverged")
    return vec
