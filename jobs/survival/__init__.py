"""``survival``: Kaplan–Meier curves (overall and per group), their medians and the
log-rank test, from one encrypted sum of every node's event and censoring counts per
(group, declared time bin). The release node merges adjacent bins until each released
bin holds 0 or at least k events and 0 or at least k censorings per group, then
estimates on that grid.

Files: ``spec`` (the ``survival:`` section), ``grid`` (the declared edges, fixed before
any row is read, and the SQL that bins a row), ``compute`` (the vector and its decode),
``disclosure`` (the rules, at the node and at the release node's widening),
``estimate`` (Kaplan–Meier, Greenwood, the log-log band, median, log-rank), ``release``
(the release node's side), ``view`` (tables, plot, files).
"""

from __future__ import annotations

import numpy as np

from jobs.aggregate import AggregateJob
from jobs.base import Limits, Pooled, Released, Table
from jobs.survival import compute, disclosure, grid
from jobs.survival.release import release
from jobs.survival.spec import SurvivalSpec


class SurvivalJob(AggregateJob):
    name = "survival"
    Spec = SurvivalSpec
    family = "agg"

    def wants_vocabulary(self, params: SurvivalSpec) -> bool:
        return params.groups is not None

    def _levels(self, params: SurvivalSpec, table: Table, limits: Limits
                ) -> tuple[list[float], dict[str, int]]:
        """The checks before and at the first read: DP, the dictionary, the grid, the
        columns; then this node's complete rows per level, under the node rules."""
        disclosure.refuse_dp(limits.node, limits.epsilon)
        disclosure.check_group_column(params.groups, limits.record)
        compute.columns(table, params)
        edges = grid.edges(params, limits.record, limits.grid)
        levels = compute.level_counts(table, params)
        disclosure.check_node(limits.node, limits.k, levels,
                              None if params.groups is None else
                              disclosure.declared_levels(limits.record, params.groups))
        return edges, levels

    # -- node ----------------------------------------------------------------------------
    def vocabulary(self, params: SurvivalSpec, table: Table,
                   limits: Limits) -> dict[str, list[str]]:
        _, levels = self._levels(params, table, limits)
        return {params.groups: sorted(levels)} if params.groups else {}

    def compute(self, params: SurvivalSpec, table: Table, vocab: dict[str, list[str]],
                limits: Limits) -> np.ndarray:
        edges, _ = self._levels(params, table, limits)
        return compute.counts(table, params, edges, compute.levels_of(params, vocab))

    def row_sets(self, params: SurvivalSpec, table: Table, vocab: dict[str, list[str]],
                 limits: Limits) -> list[tuple[str, list]]:
        edges = grid.edges(params, limits.record, limits.grid)
        return compute.row_sets(table, params, edges, compute.levels_of(params, vocab))

    # -- release node --------------------------------------------------------------------
    def release(self, params: SurvivalSpec, pooled: Pooled) -> Released:
        return release(params, pooled)

    # -- researcher ----------------------------------------------------------------------
    def view(self, result: dict):
        from jobs.survival.view import SurvivalResult

        return SurvivalResult.from_json(result)
