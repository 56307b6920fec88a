"""``quality``: the pooled AI-readiness scorecard metrics of a federated group
(governance §3.4) from one encrypted sum: completeness, duplicates, class balance,
schema compatibility and label shift across nodes.

Files: ``spec`` (the ``quality:`` section), ``compute`` (vocabulary, layout, a node's
contribution with its local disclosure control, the release decode), ``view`` (the
researcher's tables). ``compute`` is imported where a method runs, as ``view`` is: it
needs pandas (the scorecard's metrics), which a node imports only for a quality job.
"""

from __future__ import annotations

import numpy as np

from jobs.aggregate import AggregateJob
from jobs.base import Limits, Pooled, Released, Table
from jobs.quality.spec import QualitySpec
from scifed.record import CatalogRecord


class QualityJob(AggregateJob):
    name = "quality"
    Spec = QualitySpec
    family = "agg"
    filter_refusal = "a quality job scores whole datasets"
    guarded = False  # whole datasets: every job reads the same rows

    def wants_vocabulary(self, params: QualitySpec) -> bool:
        return True  # the node list, schema hashes, columns and labels fix the layout

    def vocabulary(self, params: QualitySpec, table: Table,
                   limits: Limits) -> dict[str, list[str]]:
        from jobs.quality import compute

        return compute.vocabulary(table, CatalogRecord.model_validate(limits.record), params)

    def compute(self, params: QualitySpec, table: Table, vocab: dict[str, list[str]],
                limits: Limits) -> np.ndarray:
        from jobs.quality import compute

        return compute.compute(table, CatalogRecord.model_validate(limits.record), params,
                               vocab, k=limits.k)

    def release(self, params: QualitySpec, pooled: Pooled) -> Released:
        from jobs.quality import compute

        return Released(compute.decode(pooled.totals["sum"], params, pooled.vocab, k=pooled.k))

    def view(self, result: dict):
        from jobs.quality.view import QualityResult

        return QualityResult.from_json(result)
