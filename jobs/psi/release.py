"""The release node's decode of ``psi``: the pooled count, under the rules of
jobs/psi/disclosure.py."""

from __future__ import annotations

from jobs.base import Pooled, Released
from jobs.psi.disclosure import check_pooled
from jobs.psi.spec import PsiSpec


def release(params: PsiSpec, pooled: Pooled) -> Released:
    (total,) = pooled.totals["sum"]
    count = int(round(float(total)))
    noised = sorted(pooled.dp)
    if not noised or len(noised) < len(pooled.contributors):
        check_pooled(count, pooled.k)  # an exact share: the threshold applies
    on = params.on if isinstance(params.on, dict) else {n: params.on
                                                        for n in pooled.contributors}
    return Released({"intersection": max(count, 0), "on": on,
                     "normalise": list(params.normalise),
                     "noised_at": noised})
