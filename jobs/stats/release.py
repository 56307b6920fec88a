"""The release node's side of a ``stats`` job: decode the pooled vector with the
aggregate-level rules, then — where quantiles are asked — run the exact quantile search
round by round (each round one more encrypted sum of counts, see `quantiles.py`)."""

from __future__ import annotations

from jobs.base import NextRound, Pooled, Released
from jobs.stats import compute
from jobs.stats.disclosure import round_to_k_rows, rounding_thresholds, withhold_rare_labels
from jobs.stats.quantiles import QuantileSearch
from jobs.stats.spec import StatsSpec


def release(spec: StatsSpec, pooled: Pooled) -> Released | NextRound:
    total = pooled.totals["sum"]
    if pooled.state is not None and "rounding" in pooled.state:
        return _rounded(pooled)
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
        result["quantile_rounds"] = search.rounds
        if search.refused:
            notes = result.setdefault("suppression", {}).setdefault("notes", [])
            notes += [f"quantiles of {c}: {why}" for c, why in search.refused.items()]
        exact = search.result()
        if pooled.k > 1 and any(exact.values()):
            # one more round: how many values lie near each quantile at each step
            rounding = {c: sorted(v.items()) for c, v in exact.items() if v}
            query = {c: [t for _, q in items for t in rounding_thresholds(q)]
                     for c, items in rounding.items()}
            return NextRound(query=query, state={"result": result, "rounding": rounding,
                                                 "query": query})
        result["quantiles"] = exact
    return _finish(result, pooled)


def _rounded(pooled: Pooled) -> Released:
    """Each quantile at the finest 1-2-5 step at which at least k values share it."""
    state, total = pooled.state, pooled.totals["sum"]
    result, offset = state["result"], 0
    quantiles: dict[str, dict[str, float | None]] = {}
    resolution: dict[str, float] = {}
    for col, thresholds in sorted(state["query"].items()):
        counts = [compute.pooled_count(v, f"count of {col} near a quantile")
                  for v in total[offset:offset + len(thresholds)]]
        offset += len(thresholds)
        per = len(thresholds) // len(state["rounding"][col])
        quantiles[col] = {}
        for i, (p, value) in enumerate(state["rounding"][col]):
            released, step = round_to_k_rows(value, counts[i * per:(i + 1) * per], pooled.k)
            quantiles[col][p] = None if step == float("inf") else released
            resolution[col] = max(resolution.get(col, 0.0), step)
    result["quantiles"] = quantiles
    result["quantile_resolution"] = resolution
    return _finish(result, pooled)


def _finish(result: dict, pooled: Pooled) -> Released:
    withhold_rare_labels(result, pooled.record)
    if pooled.dp:
        result["privacy"] = pooled.dp
    return Released(result)
