"""The release node's side of a ``stats`` job: decode the pooled vector with the
aggregate-level rules, then — where quantiles are asked — run the exact quantile search
round by round (each round one more encrypted sum of counts on a grid of thresholds, see
`quantiles.py`; where k > 1 the same rounds decide the rounding), and — where undeclared
group labels reached k rows — one last round that reveals them (`labels.py`)."""

from __future__ import annotations

from jobs.base import NextRound, Pooled, Released
from jobs.stats import compute, labels
from jobs.stats.disclosure import withhold_rare_labels
from jobs.stats.quantiles import QuantileSearch
from jobs.stats.spec import CONVENTIONS, StatsSpec
from scifed.errors import UserError


def release(spec: StatsSpec, pooled: Pooled) -> Released | NextRound:
    total = pooled.totals["sum"]
    if pooled.state is not None and "labels" in pooled.state:
        return _revealed(pooled)
    if pooled.state is None:
        result = compute.decode(total, spec, pooled.vocab, k=pooled.k, noisy=bool(pooled.dp))
        search = None
        if spec.quantiles:
            pooled_n = compute.pooled_quantile_n(total, spec, pooled.vocab)
            search = QuantileSearch.start(spec, pooled_n, k=pooled.k, guide=_guide(result))
    else:
        result = pooled.state["result"]
        search = QuantileSearch.from_json(pooled.state["search"])
        search.learn(total)
    if search is not None and not search.done:
        return NextRound(query=search.query(),
                         state={"result": result, "search": search.to_json()})
    if search is not None:
        result["quantile_rounds"] = search.rounds
        if search.refused:
            notes = result.setdefault("suppression", {}).setdefault("notes", [])
            notes += [f"quantiles of {c}: {why}" for c, why in search.refused.items()]
        result["quantiles"] = search.result()
        if pooled.k > 1 and any(result["quantiles"].values()):
            result["quantile_resolution"] = search.resolution()
    return _finish(result, pooled)


def _guide(result: dict) -> dict[str, tuple[float, float]]:
    """(mean, sd) of the columns whose moments this job releases anyway, to aim the
    quantile search's first grid: nothing unreleased steers which thresholds are asked."""
    out = {}
    for col, m in result.get("columns", {}).items():
        sd = m.get("std")
        if sd is None and m.get("variance") is not None:
            sd = m["variance"] ** 0.5
        if m.get("mean") is not None and sd:
            out[col] = (m["mean"], sd)
    return out


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
    result.setdefault("meta", {})["conventions"] = dict(CONVENTIONS)
    if pooled.dp:
        result["privacy"] = pooled.dp
    return Released(result)
