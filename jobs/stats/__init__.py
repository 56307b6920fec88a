"""``stats``: count, sum, mean, variance, histograms, exact quantiles, group counts and
correlation, from one encrypted sum of every node's sufficient statistics (plus counting
rounds for quantiles).

Files: ``spec`` (the ``stats:`` section), ``compute`` (the vector layout, a node's
contribution with its local disclosure control, the release decode), ``dp`` (OpenDP
noise per block), ``quantiles`` (the exact search), ``quantile_grid`` (the thresholds
each of its rounds asks), ``release`` (the release node's rounds), ``view`` (the
researcher's tables and plots).
"""

from __future__ import annotations

import numpy as np

from jobs.aggregate import AggregateJob
from jobs.base import Limits, NextRound, Pooled, Released, Table
from jobs.privacy import check_capacity
from jobs.stats import compute, disclosure, dp, labels
from jobs.stats.quantiles import round_vector
from jobs.stats.release import release
from jobs.stats.spec import StatsSpec
from scifed.filters import check_on_grid


class StatsJob(AggregateJob):
    name = "stats"
    Spec = StatsSpec
    family = "agg"

    def wants_vocabulary(self, params: StatsSpec) -> bool:
        return bool(params.group_counts)

    def requested_epsilon(self, params: StatsSpec) -> float | None:
        return params.dp.epsilon if params.dp else None

    def wants_dp(self, params: StatsSpec) -> bool:
        # `dp` without an ε supplies clipping bounds for the nodes whose policy requires
        # DP (at their per-query ε); a node whose policy does not answers exactly.
        return params.dp is not None

    def _checks(self, params: StatsSpec, limits: Limits) -> None:
        """The dictionary-based rules (`disclosure.py`), before any row is read."""
        disclosure.check_groupable(params, limits.record, dp=limits.epsilon is not None)
        disclosure.check_probabilities(params, limits.record.get("security_grade", "G1"))
        if limits.grid is not None:  # an edge splits rows as a filter threshold does
            for col, edges in params.histograms.items():
                for edge in edges:
                    check_on_grid(col, edge, limits.grid, "histogram edge")

    def vocabulary(self, params: StatsSpec, table: Table,
                   limits: Limits) -> dict[str, list[str]]:
        self._checks(params, limits)
        if limits.epsilon is not None:  # under DP labels never come from the data
            return {c: disclosure.declared_levels(limits.record, c) or []
                    for c in params.group_counts}
        values = compute.vocabulary(table, params)
        (rows,), = table.query([], "SELECT count(*) FROM d")
        public = self._public(limits)
        for col, levels in values.items():
            disclosure.check_levels(col, len(levels), int(rows))
            values[col] = sorted(public(col, v) for v in levels)
        return values

    @staticmethod
    def _public(limits: Limits):
        """How this node writes a label into the vocabulary: a declared label as
        itself, any other as its tag, revealed only once k rows hold it (labels.py)."""
        def public(col: str, label: str) -> str:
            return labels.public_form(limits.label_key, col, label,
                                      disclosure.declared_levels(limits.record, col))
        return public

    def _exact_public(self, params: StatsSpec, limits: Limits):
        """How labels were written, where the vocabulary came from the data (None under
        DP: the vocabulary is the declared enumeration itself)."""
        if limits.epsilon is not None or not params.group_counts:
            return None
        return self._public(limits)

    def compute(self, params: StatsSpec, table: Table, vocab: dict[str, list[str]],
                limits: Limits) -> np.ndarray:
        self._checks(params, limits)
        if limits.epsilon is None:
            return compute.compute(table, params, vocab, k=limits.k,
                                   public=self._exact_public(params, limits))
        bounds = dp.clipping_bounds(params, limits.record)
        check_capacity(dp.blocks(compute.Layout.build(params, vocab), params, bounds),
                       limits.epsilon, int(limits.record["record_count"]), "stats.dp.bounds")
        return compute.compute(table, params, vocab, k=limits.k, clip=bounds)

    def row_sets(self, params: StatsSpec, table: Table, vocab: dict[str, list[str]],
                 limits: Limits) -> list[tuple[str, list]]:
        return compute.row_sets(table, params, vocab, self._exact_public(params, limits))

    def noise(self, params: StatsSpec, vec: np.ndarray, vocab: dict[str, list[str]],
              limits: Limits) -> dict:
        assert limits.epsilon is not None
        return dp.add_noise(vec, compute.Layout.build(params, vocab), params,
                            dp.clipping_bounds(params, limits.record), limits.epsilon)

    def round(self, params: StatsSpec, table: Table, query: dict,
              limits: Limits) -> np.ndarray:
        """Counts at thresholds and, for an exact release, key sums over brackets (the
        quantile search, at most MAX_ROUND_THRESHOLDS a round), or the labels behind tags
        the release found held by at least k rows."""
        if "labels" in query:
            public = self._exact_public(params, limits)
            local = compute.local_labels(query["labels"], compute.vocabulary(table, params),
                                         public) if public else {}
            parts = [labels.encode(local.get(col, [None] * len(tags)))
                     for col, tags in sorted(query["labels"].items())]
        else:
            return round_vector(table, params, query, k=limits.k)
        return np.concatenate(parts) if parts else np.zeros(0)

    def release(self, params: StatsSpec, pooled: Pooled) -> Released | NextRound:
        return release(params, pooled)

    def view(self, result: dict):
        from jobs.stats.view import StatsResult

        return StatsResult.from_json(result)
