"""The AI-readiness scorecard of one tabular dataset (governance §3.3), computed at its node.

Every metric is computed from the data file and its catalog record only, with fixed seeds,
so the same file and record give the same report; only the report leaves the node.
The metrics, thresholds, report and grading are :mod:`scifed.scorecard`.
"""

from __future__ import annotations

import datetime as dt
import platform
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from threadpoolctl import threadpool_limits

from node.scorecard.data import (
    _balance,
    _completeness,
    _Data,
    _outliers,
    _rules,
    _sha256,
    _structure,
    _uniqueness,
    _units,
    _validity,
    read_frame,
)
from node.scorecard.identifiers import _identifiers, _k_anonymity
from node.scorecard.metadata import (
    _croissant,
    _dictionary,
    _freshness,
    _governance,
    _licence,
    _metadata,
    _provenance,
)
from node.scorecard.trainability import _trainability
from scifed.errors import UserError
from scifed.record import CatalogRecord
from scifed.scorecard import (
    DIMENSION_WEIGHTS,
    FEDERATED_ONLY,
    GATES,
    METRICS,
    SCORECARD_VERSION,
    GateResult,
    MetricResult,
    QualityReport,
    _apply_overrides,
    _check_overrides,
    _grade,
    not_applicable,
)
from scifed.sentences import say

__all__ = [
    "DIMENSION_WEIGHTS", "GATES", "METRICS", "QualityReport", "compute_scorecard",
    "quality_summary",
]


def _tool_versions() -> dict[str, str]:
    packages = ("scifed", "pandas", "numpy", "scikit-learn", "mlcroissant",
                "duckdb")
    return {"python": platform.python_version(), **{p: version(p) for p in packages}}


def compute_scorecard(
    path: Path,
    record: CatalogRecord,
    *,
    fast: bool = False,
    overrides: dict[str, str] | None = None,
    now: dt.datetime | None = None,
    progress: Callable[[str], None] | None = None,
    rules: Sequence[str] = (),
    officer: str | None = None,
) -> QualityReport:
    """Score the dataset file ``path`` described by ``record`` (governance §3.3).

    ``rules`` are the cross-field rules of Q4a as ``pandas.eval`` conditions (such as
    ``temp_min <= temp_max``); ``overrides`` maps a metric to the officer's
    justification, and ``officer`` names who signs them. A file that does not parse is
    scored (Q2b fails, data metrics are n/a); a file that cannot be read is a UserError.
    """
    overrides = overrides or {}
    _check_overrides(overrides)
    now = now or dt.datetime.now(dt.UTC)
    step = progress or (lambda _label: None)
    mode: Literal["fast", "full"] = "fast" if fast else "full"

    step("reading the data file")
    digest = _sha256(path)
    try:
        frame: pd.DataFrame | None = read_frame(path, record)
        problem = None
    except UserError as exc:
        frame, problem = None, str(exc)
    metrics: dict[str, MetricResult] = {"Q2b": _structure(frame, problem, digest, record)}
    data_metrics = ("Q1a", "Q1b", "Q1c", "Q2a", "Q3a", "Q3b", "Q4a", "Q5a", "Q5b", "Q5c",
                    "Q5d", "Q6", "Q9a", "Q9b", "Q9c", "Q9d", "Q10a", "Q10b")
    if frame is None:
        metrics |= {m: not_applicable(m, say("qual.na.unparsed")) for m in data_metrics}
    else:
        data = _Data.of(frame, record)
        metrics |= _completeness(data)
        step("checking the column dictionary's constraints")
        metrics["Q2a"] = _validity(path, record)
        metrics |= _uniqueness(data)
        metrics["Q4a"] = _rules(data, rules)
        metrics |= _balance(data)
        metrics["Q6"] = _outliers(data)
        metrics["Q10a"] = _k_anonymity(data)
        metrics["Q10b"] = _identifiers(data)
        # Hundreds of small fits: BLAS threads only contend, badly so on a busy node.
        with threadpool_limits(limits=1):
            metrics |= _trainability(data, mode, step)
    step("checking the metadata and its Croissant export")
    metrics["Q4b"] = _units(record)
    for metric in FEDERATED_ONLY:
        metrics[metric] = not_applicable(metric, say("qual.na.federated"))
    metrics["Q7a"] = _metadata(record)
    metrics["Q7b"] = _dictionary(record)
    metrics["Q7c"] = _croissant(record)
    metrics["Q8a"] = _licence(record)
    metrics["Q8b"] = _provenance(record)
    metrics["Q8c"] = _governance(record, now.date())
    metrics["Q11"] = _freshness(record, now)
    metrics = {m: metrics[m] for m in METRICS}

    applied = _apply_overrides(metrics, overrides, officer)
    gates = {name: GateResult(metric=m, passed=metrics[m].status != "fail",
                              reason=metrics[m].detail) for name, m in GATES.items()}
    grade, score, dimensions = _grade(metrics, gates)
    return QualityReport(
        scorecard_version=SCORECARD_VERSION, computed_at=now, mode=mode, record_id=record.id,
        data_sha256=digest, tool_versions=_tool_versions(), grade=grade, score=score,
        gates=gates, metrics=metrics, dimensions=dimensions, overrides=applied)


def quality_summary(report: QualityReport) -> dict[str, Any]:
    """The part of a report published with the catalog record (and indexed for search)."""
    return {
        "grade": report.grade,
        "score": report.score,
        "gates_passed": all(g.passed for g in report.gates.values()),
        "failed_gates": [name for name, g in report.gates.items() if not g.passed],
        "dimensions": dict(report.dimensions),
        "computed_at": report.computed_at.isoformat(),
        "scorecard_version": report.scorecard_version,
    }
