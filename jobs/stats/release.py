"""The release node's side of a ``stats`` job: decode the pooled vector with the
aggregate-level rules, then — where quantiles are asked — run the exact quantile search
round by round (each round one more encrypted sum of counts, see `quantiles.py`), and —
where undeclared group labels reached k rows — one last round that reveals them
(`labels.py`)."""

from __future__ import annotations

from jobs.base import NextRound, Pooled, Released
from jobs.stats import compute, labels
from jobs.stats.disclosure import round_to_k_rows, rounding_thresholds, withhold_rare_labels
from jobs.stats.quantiles import QuantileSearch
from jobs.stats.spec import StatsSpec
from scifed.errors import UserError


def release(spec: StatsSpec, pooled: Pooled) -> Released | NextRound:
    total = pooled.totals["sum"]
    if pooled.state is not None and "labels" in pooled.state:
        return _revealed(pooled)
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
        counts, offsets, offset = {}, {}, 0
        for col, thresholds in sorted(search.thresholds().items()):
            counts[col] = [compute.pooled_count(v, f"count of {col} below a threshold")
                           for v in total[offset:offset + len(thresholds)]]
            offset += len(thresholds)
        for col, brackets in sorted(search.brackets().items()):
            offsets[col] = [float(v) for v in total[offset:offset + len(brackets)]]
            offset += len(brackets)
        if offset != total.size:
            raise UserError(f"the round's pooled vector has {total.size} values, the "
                            f"search asked for {offset}")
        search.update(counts, offsets)
    if search is not None and not search.done:
        return NextRound(query=search.query(),
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
            return NextRound(query={"thresholds": query},
                             state={"result": result, "rounding": rounding, "query": query})
        result["quantiles"] = exact
    return _finish(result, pooled)


def _rounded(pooled: Pooled) -> Released | NextRound:
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


def _finish(result: dict, pooled: Pooled) -> Released | NextRound:
    """Ask for the labels behind tags with a released count (so held by at least k
    rows), or release."""
    asked = {col: [v for v, n in zip(g["values"], g["counts"], strict=True)
                   if labels.is_tag(v) and n]
             for col, g in result.get("groups", {}).items()}
    asked = {col: tags for col, tags in asked.items() if tags}
    if asked and not pooled.dp:  # noise can lift a one-row tag to k: never reveal then
        return NextRound(query={"labels": asked}, state={"result": result, "labels": asked})
    return _done(result, pooled)


def _revealed(pooled: Pooled) -> Released:
    """Put each revealed label in its tag's place (merging it with the same label where
    another node declared it)."""
    state, total, offset = pooled.state, pooled.totals["sum"], 0
    result = state["result"]
    for col, tags in sorted(state["labels"].items()):
        size = len(tags) * (labels.LABEL_BYTES + 1)
        try:
            named = dict(zip(tags, labels.decode(total[offset:offset + size], len(tags)),
                             strict=True))
        except ValueError as exc:
            raise UserError(f"groups.{col}: {exc}") from None
        offset += size
        g = result["groups"][col]
        merged: dict[str, int] = {}
        for key in ("values", "counts", "suppressed"):
            g[key] = list(g[key])
        for i, value in enumerate(g["values"]):
            label = named.get(value, value)
            if label in merged:  # the same label, declared at one node and tagged at another
                j = merged[label]
                a, b = g["counts"][j], g["counts"][i]
                g["counts"][j] = None if a is None or b is None else a + b
                g["suppressed"][j] = g["suppressed"][j] or g["suppressed"][i]
                g["values"][i] = None
            else:
                merged[label] = i
                g["values"][i] = label
        keep = [i for i, v in enumerate(g["values"]) if v is not None]
        for key in ("values", "counts", "suppressed"):
            g[key] = [g[key][i] for i in keep]
    return _done(result, pooled)


def _done(result: dict, pooled: Pooled) -> Released:
    withhold_rare_labels(result, pooled.record)
    if pooled.dp:
        result["privacy"] = pooled.dp
    return Released(result)
