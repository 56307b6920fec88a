"""``crosstab``: two- and three-way contingency tables of categorical columns from one
encrypted sum of every node's cell counts, after a vocabulary phase for the levels;
primary and secondary cell suppression; the chi-square test of independence and
Cramér's V per layer.

Files: ``spec`` (the ``crosstab:`` section), ``compute`` (the node's levels, cells and
row sets), ``disclosure`` (the rules: columns, levels, suppression), ``release`` (the
pooled table and its tests), ``view`` (tables, heat map, files).
"""

from __future__ import annotations

import numpy as np

from jobs.aggregate import AggregateJob
from jobs.base import Limits, Pooled, Released, Table
from jobs.crosstab import compute, disclosure, dp
from jobs.crosstab.release import release
from jobs.crosstab.spec import CrosstabSpec
from scifed.errors import UserError


class CrosstabJob(AggregateJob):
    name = "crosstab"
    Spec = CrosstabSpec
    family = "agg"

    def wants_vocabulary(self, params: CrosstabSpec) -> bool:
        return True

    def requested_epsilon(self, params: CrosstabSpec) -> float | None:
        return params.dp.epsilon if params.dp else None

    def wants_dp(self, params: CrosstabSpec) -> bool:
        return params.dp is not None  # counts need no bounds: any node may noise them

    def _counts(self, params: CrosstabSpec, table: Table, limits: Limits):
        """The checks before any row is read, this node's cells, then the level rules.
        Under DP (``dp.py``): declared levels only, and no rule that depends on the rows."""
        table.require(params.referenced_columns(), "crosstab", numeric=False)
        disclosure.check_columns(params, limits.record, dp=limits.epsilon is not None)
        found = compute.counts(table, params)
        if limits.epsilon is not None:
            return dp.declared_cells(found, params, limits.record)
        held = compute.levels(found, params)
        rows = sum(found.values())
        if 0 < rows < limits.k:
            raise UserError(f"node {limits.node}: crosstab: fewer than k={limits.k} "
                            "complete rows here; this node does not contribute")
        disclosure.check_node_levels(limits.node, limits.k, params, held, rows,
                                     limits.record)
        return found, held

    # -- node ----------------------------------------------------------------------------
    def vocabulary(self, params: CrosstabSpec, table: Table,
                   limits: Limits) -> dict[str, list[str]]:
        _, held = self._counts(params, table, limits)
        return {col: sorted(levels) for col, levels in held.items()}

    def _layout(self, params: CrosstabSpec, vocab: dict[str, list[str]],
                limits: Limits) -> compute.Layout:
        try:
            return compute.Layout.build(params, vocab)
        except ValueError as exc:
            raise UserError(f"node {limits.node}: crosstab: {exc}") from None

    def compute(self, params: CrosstabSpec, table: Table, vocab: dict[str, list[str]],
                limits: Limits) -> np.ndarray:
        found, _ = self._counts(params, table, limits)
        layout = self._layout(params, vocab, limits)
        if set(found) - set(layout.index()):
            raise UserError(f"node {limits.node}: crosstab: a level outside the agreed "
                            "vocabulary; the data changed during the job")
        # under DP no cell is withheld: the noise covers a small one (dp.py)
        return compute.contribution(found, layout, 1 if limits.epsilon is not None
                                    else limits.k)

    def noise(self, params: CrosstabSpec, vec: np.ndarray, vocab: dict[str, list[str]],
              limits: Limits) -> dict:
        assert limits.epsilon is not None
        return dp.add_noise(vec, self._layout(params, vocab, limits), limits.epsilon)

    def row_sets(self, params: CrosstabSpec, table: Table, vocab: dict[str, list[str]],
                 limits: Limits) -> list[tuple[str, list]]:
        return compute.row_sets(table, params, self._layout(params, vocab, limits))

    # -- release node --------------------------------------------------------------------
    def release(self, params: CrosstabSpec, pooled: Pooled) -> Released:
        return release(params, pooled)

    # -- researcher ----------------------------------------------------------------------
    def view(self, result: dict):
        from jobs.crosstab.view import CrosstabResult

        return CrosstabResult.from_json(result)
