"""The release node's decode of ``psi``: the pooled count, under the rules of
jobs/psi/disclosure.py; with ``values``, the count and each column's n, sum, mean and
variance over the intersection, decoded from the shares of A and E (jobs/psi/filtering.py):
each pooled sum is A's S + r plus E's −r, both in [0, t), so it is S mod t."""

from __future__ import annotations

import math

from jobs.base import Pooled, Released
from jobs.psi.bfv import PLAIN_MODULUS
from jobs.psi.disclosure import check_pooled, check_pooled_values
from jobs.psi.spec import PsiSpec, PsiValues


def release(params: PsiSpec, pooled: Pooled) -> Released:
    total = pooled.totals["sum"]
    count = int(round(float(total[0])))
    noised = sorted(pooled.dp)
    out = {"on": _on(params, pooled), "normalise": list(params.normalise),
           "noised_at": noised}
    if params.values is not None:
        return Released({"intersection": count, **out,
                         "values": _values(params.values, count, total[1:], pooled.k)})
    if not noised or len(noised) < len(pooled.contributors):
        check_pooled(count, pooled.k)  # an exact share: the threshold applies
    return Released({"intersection": max(count, 0), **out})


def _on(params: PsiSpec, pooled: Pooled) -> dict[str, str]:
    return params.on if isinstance(params.on, dict) else {n: params.on
                                                          for n in pooled.contributors}


def _values(values: PsiValues, count: int, sums, k: int) -> dict:
    if len(sums) != 3 * len(values.columns):
        raise ValueError(f"psi: the pooled vector holds {len(sums)} sums, not 3 for each "
                         f"of {len(values.columns)} columns")
    exact = [int(round(float(s))) % PLAIN_MODULUS for s in sums]
    check_pooled_values(count, exact[0::3], k)
    columns = {}
    for j, c in enumerate(values.columns):
        n, su, su2 = exact[3 * j:3 * j + 3]
        columns[c] = _moments(n, su, su2, values.bounds[c][0], values.step(c))
    return {"node": values.node, "columns": columns,
            "bounds": {c: list(values.bounds[c]) for c in values.columns},
            "resolution": {c: values.step(c) for c in values.columns}}


def _moments(n: int, su: int, su2: int, lo: float, step: float) -> dict:
    """n, Σx, mean, variance (ddof = 1) and std from the fixed-point sums: exact integer
    arithmetic up to the last division."""
    if n == 0:
        return {"n": 0, "sum": 0.0, "mean": None, "variance": None, "std": None}
    total = n * lo + step * su
    var = step * step * (n * su2 - su * su) / (n * (n - 1)) if n > 1 else None
    return {"n": n, "sum": total, "mean": lo + step * su / n, "variance": var,
            "std": None if var is None else math.sqrt(var)}
