"""The vocabulary of the AI-readiness scorecard (governance §3.3), shared by a node's
scorecard and the federated ``quality`` job: its metrics, their thresholds, the report, and
how a report's metrics make its grade.

Scoring. Each metric ends as pass / warn / fail (scored 1 / 0.5 / 0) or "n/a" when it
does not apply to the dataset (no target declared, no quasi-identifiers, no update
period, federated-only metrics Q4c/Q4d). A dimension's score is the mean of its
applicable metrics; a dimension with none is n/a. The score S = 100 · Σ w_d·s_d / Σ w_d
over the weighted dimensions that apply: the weights are renormalised rather than
counting an n/a dimension as 0, so a dataset is not penalised for a metric that cannot
exist for it. A dataset without a target still cannot be graded A, because A requires
Q9a and Q9b to pass (the "AI-ready" label needs a target, governance §1.6).
Identifiability (Q10) and currentness (Q11) are reported with weight 0.

Gates (Q2b, Q7a, Q7c, Q8a, Q8c, Q10a, Q10b) fail with their metric; any failed gate makes
the grade D whatever the score. An officer may override a metric with a written
justification: the metric then counts as pass (its gate too) and the override, with the
status it replaced, is listed in the report.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, model_validator

from scifed.errors import UserError
from scifed.record import NUMERIC_TYPES as _NUMERIC
from scifed.record import CatalogRecord, Field
from scifed.sentences import Said, say, structure

SCORECARD_VERSION = "1.0"
CLASSIFICATION_MAX_DISTINCT = 20  # a numeric target with more distinct values is regressed

Status = Literal["pass", "warn", "fail", "n/a"]
Task = Literal["classification", "regression"]
SCORES: dict[str, float] = {"pass": 1.0, "warn": 0.5, "fail": 0.0}

DIMENSION_WEIGHTS: dict[str, float] = {
    "completeness": 15, "validity": 15, "uniqueness": 10, "consistency": 10, "balance": 10,
    "outliers": 5, "documentation": 10, "licence_provenance": 10, "trainability": 15,
    "identifiability": 0, "currentness": 0,
}
# metric -> (dimension, what it measures)
METRICS: dict[str, tuple[str, str]] = {
    "Q1a": ("completeness", "cell completeness"),
    "Q1b": ("completeness", "required-field completeness"),
    "Q1c": ("completeness", "target completeness"),
    "Q2a": ("validity", "schema validity (the column dictionary)"),
    "Q2b": ("validity", "structural validity"),
    "Q3a": ("uniqueness", "key uniqueness"),
    "Q3b": ("uniqueness", "exact-duplicate rate"),
    "Q4a": ("consistency", "cross-field rule pass rate"),
    "Q4b": ("consistency", "unit coverage"),
    "Q4c": ("consistency", "federated schema compatibility"),
    "Q4d": ("consistency", "label-distribution shift across nodes"),
    "Q5a": ("balance", "normalised label entropy"),
    "Q5b": ("balance", "imbalance ratio"),
    "Q5c": ("balance", "min class support"),
    "Q5d": ("balance", "declared-class coverage"),
    "Q6": ("outliers", "statistical outlier rate"),
    "Q7a": ("documentation", "metadata completeness"),
    "Q7b": ("documentation", "data-dictionary coverage"),
    "Q7c": ("documentation", "Croissant validity"),
    "Q8a": ("licence_provenance", "licence"),
    "Q8b": ("licence_provenance", "provenance completeness"),
    "Q8c": ("licence_provenance", "governance consistency"),
    "Q9a": ("trainability", "trainability lift"),
    "Q9b": ("trainability", "significance (permutation test)"),
    "Q9c": ("trainability", "leakage sentinel"),
    "Q9d": ("trainability", "learning-curve gain"),
    "Q10a": ("identifiability", "k-anonymity on quasi-identifiers"),
    "Q10b": ("identifiability", "undeclared direct identifiers"),
    "Q11": ("currentness", "freshness"),
}
# gate -> the metric whose failure fails it
GATES: dict[str, str] = {
    "structural_validity": "Q2b", "required_metadata": "Q7a", "croissant_validity": "Q7c",
    "licence": "Q8a", "governance": "Q8c", "k_anonymity": "Q10a",
    "direct_identifiers": "Q10b",
}
FEDERATED_ONLY = ("Q4c", "Q4d")



# -- thresholds -----------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """Where a value passes, warns or fails; ``fair`` None means the metric never fails."""

    good: float
    fair: float | None
    higher: bool = True
    strict: bool = False  # pass needs a strict inequality

    def _within(self, value: float, limit: float, strict: bool) -> bool:
        if self.higher:
            return value > limit if strict else value >= limit
        return value < limit if strict else value <= limit

    def status(self, value: float) -> Status:
        if self._within(value, self.good, self.strict):
            return "pass"
        if self.fair is None or self._within(value, self.fair, False):
            return "warn"
        return "fail"

    def text(self) -> Said:
        """The band as a sentence: ``pass ≥ 0.95; warn ≥ 0.8; fail < 0.8``."""
        ok = (">" if self.strict else "≥") if self.higher else ("<" if self.strict else "≤")
        below = ("≤" if self.strict else "<") if self.higher else ("≥" if self.strict else ">")
        good = f"{self.good:g}"
        if self.fair is None:
            return say("qual.band.never", ok=ok, good=good, below=below)
        if self.fair == self.good:
            return say("qual.band.two", ok=ok, good=good, below=below)
        return say("qual.band.three", ok=ok, good=good, at="≥" if self.higher else "≤",
                   fair=f"{self.fair:g}", worse="<" if self.higher else ">")


BANDS: dict[str, Band] = {
    "Q1a": Band(0.95, 0.80),
    "Q1b": Band(1.0, 0.99),
    "Q1c": Band(0.99, 0.95),
    "Q2a": Band(0.999, 0.99),
    "Q3a": Band(1.0, 1.0),
    "Q3b": Band(0.01, 0.05, higher=False),
    "Q4a": Band(0.999, 0.99),
    "Q4b": Band(1.0, 0.8),
    "Q4d": Band(0.3, None, higher=False),
    "Q5a": Band(0.8, 0.5),
    "Q5b": Band(10, 100, higher=False),
    "Q5c": Band(50, 10),
    "Q5d": Band(1.0, 0.9),
    "Q6": Band(0.01, None, higher=False),
    "Q7a": Band(0.85, 0.70),
    "Q7b": Band(0.95, 0.70),
    # The spec's warn limit 0.75 and fail limit 0.5 leave [0.5, 0.75) open: it warns.
    "Q8b": Band(1.0, 0.5),
    "Q9a": Band(0.20, 0.05),
    "Q9b": Band(0.01, 0.05, higher=False),
    "Q9c": Band(0.99, None, higher=False, strict=True),
    "Q9d": Band(0.0, None, strict=True),
    "Q10a": Band(0.0, 0.05, higher=False),
    "Q11": Band(1.5, None, higher=False),
}
CHECKS: dict[str, Said] = {  # metrics that are a yes/no check
    m: say(f"qual.check.{m}") for m in ("Q2b", "Q4c", "Q7c", "Q8a", "Q8c", "Q10b")}


def threshold(metric: str) -> Said:
    """The threshold text reported beside a metric."""
    return BANDS[metric].text() if metric in BANDS else CHECKS[metric]


# -- the report -----------------------------------------------------------------------


class MetricResult(BaseModel):
    """One metric; ``dimension`` and ``title`` make a report readable on its own."""

    dimension: str
    title: str
    value: bool | float | None
    status: Status
    threshold: str
    detail: str
    # the key and fields of ``detail`` and ``threshold`` where they are sentences
    # (scifed/sentences.py), for a console's language; a report scored before has none
    said: dict[str, dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _sentences(cls, data: Any) -> Any:
        """Keep the structure of a text given as a sentence: the model stores text."""
        if isinstance(data, dict):
            made = {k: s for k in ("detail", "threshold") if (s := structure(data.get(k)))}
            if made:
                data = {**data, "said": {**(data.get("said") or {}), **made}}
        return data

    def amended(self, **update: Any) -> MetricResult:
        """A copy with some fields changed; a text changed keeps no stale sentence (a
        changed text given as a sentence brings its own)."""
        said = {k: v for k, v in self.said.items() if k not in update}
        return MetricResult.model_validate({**self.model_dump(), "said": said, **update})


class GateResult(BaseModel):
    metric: str
    passed: bool
    reason: str


class Override(BaseModel):
    metric: str
    justification: str
    original_status: Status
    by: str | None = None


class QualityReport(BaseModel):
    """The scorecard of one dataset file (governance §1.3 #47, §3.3)."""

    scorecard_version: str
    computed_at: dt.datetime
    mode: Literal["fast", "full"]
    record_id: str
    data_sha256: str
    tool_versions: dict[str, str]
    grade: Literal["A", "B", "C", "D"]
    score: float
    gates: dict[str, GateResult]
    metrics: dict[str, MetricResult]
    dimensions: dict[str, float | None]
    overrides: list[Override]


def _result(metric: str, value: bool | float | None, status: Status, detail: str,
            text: str | None = None) -> MetricResult:
    dimension, title = METRICS[metric]
    return MetricResult(dimension=dimension, title=title, value=value, status=status,
                        threshold=text or threshold(metric), detail=detail)


def joined(parts: list[str]) -> str:
    """Problems one after another (``a; b; c``) as one sentence, each keeping its key."""
    out = parts[0]
    for part in parts[1:]:
        out = say("qual.and", first=out, second=part)
    return out


def measured(metric: str, value: float, detail: str, band: Band | None = None) -> MetricResult:
    """A metric with a value, graded by its band (or the given one)."""
    band = band or BANDS[metric]
    return _result(metric, value, band.status(value), detail, band.text())


def checked(metric: str, ok: bool, detail: str) -> MetricResult:
    return _result(metric, ok, "pass" if ok else "fail", detail)


def not_applicable(metric: str, reason: str) -> MetricResult:
    return _result(metric, None, "n/a", reason)


# -- the target ----------------------------------------------------------------------


def target_task(field: Field, values: pd.Series) -> Task:
    """Regression for a numeric target without declared classes and with many values."""
    declared = field.constraints is not None and field.constraints.enum is not None
    if (field.type in _NUMERIC and not declared
            and values.nunique() > CLASSIFICATION_MAX_DISTINCT):
        return "regression"
    return "classification"


def labels_of(values: pd.Series) -> pd.Series:
    """Class labels as text, spelled the same at every node: a whole number read into a
    float column (because the column has gaps) is "1", not "1.0"."""
    present = values.dropna()
    if pd.api.types.is_float_dtype(present) and bool((present == present.round()).all()):
        present = present.astype("int64")
    return present.astype(str)


# -- the grade -----------------------------------------------------------------------


def _check_overrides(overrides: dict[str, str]) -> None:
    for metric, justification in overrides.items():
        if metric not in METRICS:
            raise UserError(f"override of {metric!r}: no such metric (metrics: "
                            f"{', '.join(METRICS)})")
        if not isinstance(justification, str) or not justification.strip():
            raise UserError(f"override of {metric}: a written justification is required "
                            "(governance §3.2)")


def _apply_overrides(metrics: dict[str, MetricResult], overrides: dict[str, str],
                     officer: str | None) -> list[Override]:
    out = []
    for metric, justification in overrides.items():
        result = metrics[metric]
        if result.status == "n/a":
            raise UserError(f"override of {metric}: the metric does not apply to this "
                            f"dataset ({result.detail}); there is nothing to override")
        out.append(Override(metric=metric, justification=justification.strip(),
                            original_status=result.status, by=officer))
        metrics[metric] = result.amended(
            status="pass", detail=f"{result.detail} [overridden from {result.status}: "
                                  f"{justification.strip()}]")
    return out


def _grade(metrics: dict[str, MetricResult], gates: dict[str, GateResult]
           ) -> tuple[Literal["A", "B", "C", "D"], float, dict[str, float | None]]:
    dimensions: dict[str, float | None] = {}
    for dimension in DIMENSION_WEIGHTS:
        scores = [SCORES[r.status] for m, r in metrics.items()
                  if METRICS[m][0] == dimension and r.status != "n/a"]
        dimensions[dimension] = float(np.mean(scores)) if scores else None
    weighted = {d: s for d, s in dimensions.items() if s is not None and DIMENSION_WEIGHTS[d]}
    total = sum(DIMENSION_WEIGHTS[d] for d in weighted)
    score = 100 * sum(DIMENSION_WEIGHTS[d] * s for d, s in weighted.items()) / total \
        if total else 0.0
    if not all(g.passed for g in gates.values()) or score < 50:
        return "D", score, dimensions
    if score >= 85 and metrics["Q9a"].status == "pass" and metrics["Q9b"].status == "pass":
        return "A", score, dimensions
    return ("B" if score >= 70 else "C"), score, dimensions


def mask_missing_codes(frame: pd.DataFrame, record: CatalogRecord) -> pd.DataFrame:
    """The record's declared missing-value codes (such as -9999) read as missing."""
    for field in record.fields:
        if field.missing_values and field.name in frame:
            column = frame[field.name]
            frame[field.name] = column.mask(_is_code(column, field.missing_values))
    return frame


def _is_code(column: pd.Series, codes: list[str]) -> pd.Series:
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        numbers = []
        for code in codes:
            try:
                numbers.append(float(code))
            except ValueError:
                continue
        return column.isin(numbers)
    return column.astype("string").isin(codes).fillna(False).astype(bool)
