"""``pca``: principal components of numeric columns from one encrypted sum of every
node's ``n, Σx, XᵀX`` over its complete rows; the release node forms the pooled
covariance (or correlation) and eigendecomposes it. Nothing per row (no scores) is
released.

Files: ``spec`` (the ``pca:`` section), ``compute`` (the vector and its decode), ``dp``
(noisy sums where policy requires DP),
``disclosure`` (the rules, at the node and pooled), ``release`` (the eigendecomposition
and the result), ``view`` (tables, scree plot, loadings heat map, files).
"""

from __future__ import annotations

import numpy as np

from jobs.aggregate import AggregateJob
from jobs.base import Limits, Pooled, Released, Table
from jobs.pca import compute, disclosure, dp
from jobs.pca.release import release
from jobs.pca.spec import PcaSpec
from scifed.errors import UserError
from scifed.he import MAX_ABS_VALUE


class PcaJob(AggregateJob):
    name = "pca"
    Spec = PcaSpec
    family = "agg"

    def requested_epsilon(self, params: PcaSpec) -> float | None:
        return params.dp.epsilon if params.dp else None

    def wants_dp(self, params: PcaSpec) -> bool:
        # `dp` without an ε lets a node whose policy requires DP answer at its own ε
        return params.dp is not None

    def _checks(self, params: PcaSpec, table: Table, limits: Limits) -> None:
        """Before any row is read: known numeric non-identifying columns; under DP,
        bounds that the encryption carries."""
        table.require(params.columns, "pca.columns", numeric=True)
        disclosure.check_columns(params.columns, limits.record)
        if limits.epsilon is not None:
            dp.check_capacity(params, limits)

    # -- node ----------------------------------------------------------------------------
    def compute(self, params: PcaSpec, table: Table, vocab: dict[str, list[str]],
                limits: Limits) -> np.ndarray:
        self._checks(params, table, limits)
        if limits.epsilon is not None:  # no refusal that depends on the rows (dp.py)
            return compute.contribution(table, params.columns,
                                        dp.bounds(params, limits.record))[1]
        n, vec = compute.contribution(table, params.columns)
        disclosure.check_node(limits.node, limits.k, n, len(params.columns))
        if np.max(np.abs(vec), initial=0.0) > MAX_ABS_VALUE / 100:
            raise UserError(f"node {limits.node}: pca: the sums overflow (values too "
                            "large); rescale the columns")
        return vec

    def noise(self, params: PcaSpec, vec: np.ndarray, vocab: dict[str, list[str]],
              limits: Limits) -> dict:
        """Noise the sums themselves, then split them again for the encryption."""
        assert limits.epsilon is not None
        joined = compute.join(vec)
        out = dp.add_noise(joined, params, limits.record, limits.epsilon)
        vec[:] = compute.split(joined)
        return out

    def row_sets(self, params: PcaSpec, table: Table, vocab: dict[str, list[str]],
                 limits: Limits) -> list[tuple[str, list]]:
        """Every number sums over the complete rows."""
        return [(" AND ".join(f"{table.number(c)} IS NOT NULL" for c in params.columns),
                 [])]

    # -- release node --------------------------------------------------------------------
    def release(self, params: PcaSpec, pooled: Pooled) -> Released:
        return release(params, pooled)

    # -- researcher ----------------------------------------------------------------------
    def view(self, result: dict):
        from jobs.pca.view import PcaResult

        return PcaResult.from_json(result)
