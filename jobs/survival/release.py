"""The release node's side of a ``survival`` job: decode the pooled counts per (group,
declared bin), widen the bins until the disclosure rules hold (`disclosure.widen`), and
estimate on the released grid: a Kaplan–Meier curve per group (and overall), the
median, and the log-rank test between the groups. With a Cox model the result waits for
its Newton rounds on that grid (coxfit.py) and is released with the fit."""

from __future__ import annotations

import numpy as np

from jobs.base import NextRound, Pooled, Released
from jobs.survival import coxfit, disclosure, estimate, grid
from jobs.survival.compute import Cells, levels_of
from jobs.survival.dp import NOTE
from jobs.survival.spec import SurvivalSpec
from scifed.errors import UserError

OVERALL = "(all)"


def release(spec: SurvivalSpec, pooled: Pooled) -> Released | NextRound:
    if pooled.state is not None:
        return coxfit.iterate(spec, pooled)
    result, events = kaplan_meier(spec, pooled)
    if spec.cox is None:
        return Released(result)
    return coxfit.start(spec, pooled, result, events,
                        np.asarray(result["curves"][0]["at_risk"], dtype=np.float64))


def kaplan_meier(spec: SurvivalSpec, pooled: Pooled) -> tuple[dict, np.ndarray]:
    """The Kaplan–Meier result, and the events of every released bin (all groups)."""
    edges = grid.edges(spec, pooled.record, None)
    levels = levels_of(spec, pooled.vocab)
    try:
        cells = Cells.decode(pooled.totals["sum"], edges, levels, len(pooled.contributors),
                             noisy=bool(pooled.dp))
    except ValueError as exc:
        raise UserError(f"survival: {exc}") from None
    if cells.events.sum() + cells.censored.sum() == 0:
        raise UserError("survival: no complete rows (time, event and group present) at any "
                        "node")
    # a level whose every holder dropped out has no rows: not named, not a group
    held = (cells.events + cells.censored).sum(axis=1) > 0
    levels = [g for g, h in zip(levels, held, strict=True) if h]
    cells = Cells(cells.events[held], cells.censored[held])
    # under DP the noise protects every cell: the declared grid is released as it is
    ends = disclosure.widen(cells.events, cells.censored, 1 if pooled.dp else pooled.k)
    starts = [0, *[e + 1 for e in ends[:-1]]]

    def merged(a: np.ndarray) -> np.ndarray:
        return np.add.reduceat(a, starts, axis=-1)

    events, censored = merged(cells.events), merged(cells.censored)
    times = [edges[e + 1] for e in ends]
    curves, medians = [], []
    named = [(OVERALL, events.sum(axis=0), censored.sum(axis=0))]
    if spec.groups is not None:
        named += [(g, events[i], censored[i]) for i, g in enumerate(levels)]
    for name, d, c in named:
        curve = estimate.kaplan_meier(d, c, spec.confidence)
        curves.append({"group": name, "rows": int(d.sum() + c.sum()), "time": times,
                       "at_risk": _ints(curve.at_risk), "events": _ints(d),
                       "censored": _ints(c), "survival": _floats(curve.survival),
                       "ci_low": _floats(curve.ci_low), "ci_high": _floats(curve.ci_high)})
        medians.append({"group": name, "median": estimate.median(times, curve.survival),
                        "events": int(d.sum()), "rows": int(d.sum() + c.sum())})
    result = {
        "model": {"time": spec.time, "event": spec.event, "groups": spec.groups,
                  "confidence": spec.confidence, "conf_type": "log-log",
                  "declared_edges": edges, "edges": [edges[0], *times]},
        "curves": curves, "medians": medians, "logrank": None,
        "notes": _notes(spec, edges, times, pooled.k)}
    if pooled.dp:
        result["privacy"] = pooled.dp
        result["notes"] = [*result["notes"], NOTE]
    if spec.groups is not None and len(levels) >= 2:
        try:
            test = estimate.log_rank(events, censored)
        except np.linalg.LinAlgError:
            raise UserError("survival: the log-rank test is undefined here (its covariance "
                            "is singular: a group has no rows at risk at any event)") from None
        result["logrank"] = {"statistic": test.statistic, "df": test.df,
                             "p_value": test.p_value,
                             "groups": [{"group": g, "observed": int(o), "expected": float(e)}
                                        for g, o, e in zip(levels, test.observed,
                                                           test.expected, strict=True)]}
    return result, events.sum(axis=0)


def _notes(spec: SurvivalSpec, edges: list[float], times: list[float], k: int) -> list[str]:
    notes = [f"events and censorings are counted at the right edge of their bin; a time "
             f"beyond {edges[-1]:g} is censored there"]
    dropped = len(edges) - 1 - len(times)
    if dropped:
        notes.append(f"{dropped} of the {len(edges) - 1} declared bins were merged with a "
                     f"neighbour so that every released bin holds 0 or at least k={k} "
                     "events and 0 or at least k censorings per group")
    return notes


def _ints(a: np.ndarray) -> list[int]:
    return [int(round(float(v))) for v in a]


def _floats(a: np.ndarray) -> list[float]:
    return [float(v) for v in a]

