"""``survival``: Kaplan–Meier curves (overall and per group), their medians and the
log-rank test, from one encrypted sum of every node's event and censoring counts per
(group, declared time bin). The release node merges adjacent bins until each released
bin holds 0 or at least k events and 0 or at least k censorings per group, then
estimates on that grid. With ``cox`` covariates it then fits a Cox proportional hazards
model by federated Newton on Breslow's partial likelihood over the released bins, one
more encrypted round of risk-set sums per iteration.

Files: ``spec`` (the ``survival:`` section), ``grid`` (the declared edges, fixed before
any row is read, and the SQL that bins a row), ``compute`` (the vector and its decode),
``disclosure`` (the rules, at the node and at the release node's widening),
``estimate`` (Kaplan–Meier, Greenwood, the log-log band, median, log-rank), ``cox`` (a
node's Cox design and risk-set sums), ``coxfit`` (the release node's Newton fit),
``release`` (the release node's side), ``view`` (tables, plots, files).
"""

from __future__ import annotations

import numpy as np

from jobs.aggregate import AggregateJob
from jobs.base import Limits, NextRound, Pooled, Released, Table
from jobs.regression import disclosure as regression_rules
from jobs.survival import compute, cox, disclosure, dp, grid
from jobs.survival.release import release
from jobs.survival.spec import SurvivalSpec
from scifed.errors import UserError


class SurvivalJob(AggregateJob):
    name = "survival"
    Spec = SurvivalSpec
    family = "agg"

    def wants_vocabulary(self, params: SurvivalSpec) -> bool:
        return params.groups is not None or bool(params.cox and params.cox_model().factors)

    def nonlinear(self, params: SurvivalSpec) -> bool:
        # a Cox fit's risk-set sums of exp(xβ) and its partial likelihood are non-linear
        return params.cox is not None

    def _levels(self, params: SurvivalSpec, table: Table, limits: Limits
                ) -> tuple[list[float], dict[str, int]]:
        """The checks before and at the first read: DP, the dictionary, the grid, the
        columns; then this node's complete rows per level, under the node rules."""
        disclosure.check_group_column(params.groups, limits.record)
        if limits.epsilon is not None:  # declared groups, no rule on the rows (dp.py)
            declared = dp.levels(params, limits.record, limits.node)
            compute.columns(table, params)
            return grid.edges(params, limits.record, limits.grid), declared
        if params.cox is not None:
            regression_rules.check_factors(params.cox_model(), limits.record, "survival.cox")
        compute.columns(table, params)
        edges = grid.edges(params, limits.record, limits.grid)
        levels = compute.level_counts(table, params)
        disclosure.check_node(limits.node, limits.k, levels,
                              None if params.groups is None else
                              disclosure.declared_levels(limits.record, params.groups))
        return edges, levels

    def _cox(self, params: SurvivalSpec, table: Table, right: list[float],
             vocab: dict[str, list[str]] | None, limits: Limits) -> tuple[cox.Design, int]:
        """This node's Cox rows on a grid, under regression's node rules for covariates
        (each level held by at least k complete rows, p ≤ 0.33·n; ``vocab`` None: before
        the vocabulary, so p is not yet known)."""
        design = cox.read(table, params, right)
        p = 0 if vocab is None else len(cox.names(self._layout(params, vocab, limits)))
        regression_rules.check_node(limits.node, limits.k, design.n, p, design.rows.labels,
                                    None, "survival")
        return design, p

    def _layout(self, params: SurvivalSpec, vocab: dict[str, list[str]], limits: Limits):
        try:
            return cox.layout(params, vocab)
        except ValueError as exc:
            raise UserError(f"node {limits.node}: survival: {exc}") from None

    # -- node ----------------------------------------------------------------------------
    def vocabulary(self, params: SurvivalSpec, table: Table,
                   limits: Limits) -> dict[str, list[str]]:
        edges, levels = self._levels(params, table, limits)
        out = {params.groups: sorted(levels)} if params.groups else {}
        if params.cox is not None:
            design, _ = self._cox(params, table, edges[1:], None, limits)
            out |= {c: sorted(set(v.tolist())) for c, v in design.rows.labels.items()}
        return out

    def compute(self, params: SurvivalSpec, table: Table, vocab: dict[str, list[str]],
                limits: Limits) -> np.ndarray:
        edges, _ = self._levels(params, table, limits)
        if params.cox is not None:
            self._cox(params, table, edges[1:], vocab, limits)
        return compute.counts(table, params, edges, compute.levels_of(params, vocab),
                              declared_only=limits.epsilon is not None)

    def requested_epsilon(self, params: SurvivalSpec) -> float | None:
        return params.dp.epsilon if params.dp else None

    def wants_dp(self, params: SurvivalSpec) -> bool:
        return params.dp is not None  # counts need no bounds

    def noise(self, params: SurvivalSpec, vec: np.ndarray, vocab: dict[str, list[str]],
              limits: Limits) -> dict:
        assert limits.epsilon is not None
        edges = grid.edges(params, limits.record, limits.grid)
        return dp.add_noise(vec, len(edges), limits.epsilon)

    def round(self, params: SurvivalSpec, table: Table, query: dict,
              limits: Limits) -> np.ndarray:
        """One Newton round of the Cox fit: the risk-set sums at the query's β on the
        released grid (jobs/survival/cox.py)."""
        if params.cox is None:
            return super().round(params, table, query, limits)
        declared, _ = self._levels(params, table, limits)
        edges = cox.released_edges(query, declared, limits.node)
        vocab = query.get("vocab") or {}
        design, p = self._cox(params, table, edges[1:], vocab, limits)
        beta = np.asarray(query.get("beta", []), dtype=np.float64)
        center = query.get("center")
        if beta.shape != (p,) or not np.all(np.isfinite(beta)) or not (
                isinstance(center, int | float) and np.isfinite(center)):
            raise UserError(f"node {limits.node}: survival: the round's coefficients do not "
                            "fit the Cox model")
        x = cox.design_matrix(params, self._layout(params, vocab, limits), design)
        return cox.sums(x, design, beta, float(center), len(edges) - 1, limits.node)

    def row_sets(self, params: SurvivalSpec, table: Table, vocab: dict[str, list[str]],
                 limits: Limits) -> list[tuple[str, list]]:
        edges = grid.edges(params, limits.record, limits.grid)
        sets = compute.row_sets(table, params, edges, compute.levels_of(params, vocab))
        if params.cox is not None:  # within the complete rows, each coded level's
            complete = compute.columns(table, params).complete()
            lay = cox.layout(params, vocab)
            sets += [(f"{complete} AND {table.category(col)} = ?", [v])
                     for col, levels in lay.levels.items() for v in levels]
        return sets

    # -- release node --------------------------------------------------------------------
    def release(self, params: SurvivalSpec, pooled: Pooled) -> Released | NextRound:
        return release(params, pooled)

    # -- researcher ----------------------------------------------------------------------
    def view(self, result: dict):
        from jobs.survival.view import SurvivalResult

        return SurvivalResult.from_json(result)
