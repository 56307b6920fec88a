"""``psi``: the size of the intersection of the nodes' identifier sets (private set
intersection cardinality), by ECDH over X25519, with nothing but that size released.

The nodes exchange blinded identifiers in N steps (the aggregate template's exchange
steps, relayed sealed by the coordinator), then the release node's compute contributes
the count and every other node 0, so the count is summed, noised where policy requires
DP, charged and released by the same path as any aggregate.

With ``values`` (PSI as a filter) the nodes run the same ring with one more step and
release the count and sums of one node's value columns over its rows whose identifier
every other node holds, without any node learning which rows (``filtering``).

Files: ``spec`` (the ``psi:`` section), ``ids`` (reading and normalising identifiers),
``ecdh`` (hashing to the curve, blinding, truncation), ``protocol`` (the ring: what a node
does at each step, and what each party learns), ``filtering`` (the ring as a filter),
``values`` (the values node's rows in fixed point), ``bfv`` (its own encryption),
``disclosure`` (the rules), ``dp`` (OpenDP noise), ``release`` (the decode), ``view``
(tables, plots, files).
"""

from __future__ import annotations

import numpy as np

from jobs.aggregate import AggregateJob
from jobs.base import Exchange, Limits, Pooled, Released, Table
from jobs.psi import disclosure, dp, filtering, protocol
from jobs.psi.release import release
from jobs.psi.spec import PsiSpec


class PsiJob(AggregateJob):
    name = "psi"
    Spec = PsiSpec
    family = "agg"

    def min_nodes(self, params: PsiSpec) -> int:
        return 2

    def requested_epsilon(self, params: PsiSpec) -> float | None:
        return params.dp.epsilon if params.dp else None

    def wants_dp(self, params: PsiSpec) -> bool:
        # a count needs no clipping bounds: any node may noise it at its ε (the filter
        # is exact only, and refused where DP applies: jobs/psi/disclosure.py)
        return params.values is None

    def exchange_steps(self, params: PsiSpec, nodes: int) -> int:
        return nodes if params.values is None else filtering.steps(nodes)

    # -- node ----------------------------------------------------------------------------
    def exchange(self, params: PsiSpec, table: Table, step: Exchange,
                 limits: Limits) -> dict[str, bytes]:
        disclosure.refuse_exact_where_audited(params, limits)
        if params.values is not None:
            return filtering.step(params, table, step, limits)
        return protocol.step(params, table, step, limits)

    def finish(self, params: PsiSpec, table: Table, step: Exchange,
               limits: Limits) -> np.ndarray:
        if params.values is not None:
            return filtering.finish(params, step, limits)
        return protocol.finish(step, limits)

    def row_sets(self, params: PsiSpec, table: Table, vocab: dict[str, list[str]],
                 limits: Limits) -> list[tuple[str, list]]:
        """The selection, and within it the rows holding an identifier (the count sums
        over them); at the values node also those holding each value column (its sums
        run over subsets of them)."""
        column = table.category(params.column(limits.node))
        sets = [("TRUE", []), (f"{column} IS NOT NULL", [])]
        if params.values is not None and params.values.node == limits.node:
            sets += [(f"{column} IS NOT NULL AND {table.number(c)} IS NOT NULL", [])
                     for c in params.values.columns]
        return sets

    def noise(self, params: PsiSpec, vec: np.ndarray, vocab: dict[str, list[str]],
              limits: Limits) -> dict:
        assert limits.epsilon is not None
        return dp.add_noise(vec, limits.epsilon)

    # -- release node --------------------------------------------------------------------
    def release(self, params: PsiSpec, pooled: Pooled) -> Released:
        return release(params, pooled)

    # -- researcher ----------------------------------------------------------------------
    def view(self, result: dict):
        from jobs.psi.view import PsiResult

        return PsiResult.from_json(result)
