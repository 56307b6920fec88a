"""The release node's side of a ``stats`` job: decode the pooled vector with the
aggregate-level rules, then — where quantiles are asked — run the exact quantile search
round by round (each round one more encrypted sum of counts, see `quantiles.py`)."""

from __future__ import annotations

from jobs.base import NextRound, Pooled, Released
from jobs.stats import compute
from jobs.stats.quantiles import QuantileSearch
from jobs.stats.spec import StatsSpec


def release(spec: StatsSpec, pooled: Pooled) -> Released | NextRound:
    total = pooled.totals["sum"]
    if pooled.state is None:
        result = compute.decode(total, spec, pooled.vocab, k=pooled.k, noisy=bool(pooled.dp))
        search = None
        if spec.quantiles:
            pooled_n = compute.pooled_quantile_n(total, spec, pooled.vocab)
            search = QuantileSearch.start(spec, pooled_n, k=pooled.k)
    else:
        result = pooled.state["result"]
        search = QuantileSearch.from_json(pooled.state["search"])
        counts, offset = {}, 0
        for col, thresholds in sorted(search.thresholds().items()):
            counts[col] = [compute.pooled_count(v, f"count of {col} below a threshold")
                           for v in total[offset:offset + len(thresholds)]]
            offset += len(thresholds)
        search.update(counts)
    if search is not None and not search.done:
        return NextRound(query=search.thresholds(),
                         state={"result": result, "search": search.to_json()})
    if search is not None:
        result["quantiles"] = search.result()
        result["quantile_rounds"] = search.rounds
        if search.refused:
            notes = result.setdefault("suppression", {}).setdefault("notes", [])
            notes += [f"quantiles of {c}: {why}" for c, why in search.refused.items()]
    if pooled.dp:
        result["privacy"] = pooled.dp
    return Released(result)
