"""The AI-readiness scorecard of one tabular dataset (governance §3.3), computed at its node.

Every metric is computed from the data file and its catalog record only, with fixed seeds,
so the same file and record give the same report; only the report leaves the node.

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

Fast mode runs the permutation test of Q9b with 19 permutations instead of 99; its p
cannot go below 1/20 = 0.05, so there Q9b passes at that floor.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import platform
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import duckdb
import frictionless
import numpy as np
import pandas as pd
from packaging.licenses import InvalidLicenseExpression, canonicalize_license_expression
from pydantic import BaseModel
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import balanced_accuracy_score, r2_score
from sklearn.model_selection import (
    KFold,
    StratifiedKFold,
    cross_val_predict,
    permutation_test_score,
    train_test_split,
)
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sklearn.utils import resample
from threadpoolctl import threadpool_limits

from node.profiling import read_table
from scifed.errors import UserError
from scifed.exports import croissant_with_warnings
from scifed.grading import (
    VALID_PAIRS,
    grade_rank,
    min_cell_count,
    pi_floor,
    requires_approvals,
    requires_grade_assessment,
)
from scifed.record import CatalogRecord, Field

SCORECARD_VERSION = "1.0"
SEED = 0
MAX_ROWS = 20_000  # Q9 trains on a stratified sample of at most this many rows
PERMUTATIONS = {"full": 99, "fast": 19}
FOLDS = 5
LEAKAGE_FOLDS = 3
CLASSIFICATION_MAX_DISTINCT = 20  # a numeric target with more distinct values is regressed
ANONYMIZATION_K = 10  # k-anonymity that backs an "anonymized" claim (governance §2.3)
IDENTIFIER_SHARE = 0.5  # share of values matching a detector that flags a column (Q10b)
IDENTIFIER_SAMPLE = 1_000

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
    "Q2a": ("validity", "schema validity (frictionless)"),
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

_NUMERIC = {"number", "integer"}
_CATEGORICAL = {"string", "boolean"}
_NOT_FEATURES = {"id", "partition", "free_text"}
_PHYSICAL_ROLES = {"feature", "target", "weight"}
_PERIOD_DAYS = {
    "CONT": 1.0, "DAILY": 1.0, "WEEKLY": 7.0, "MONTHLY": 30.44, "QUARTERLY": 91.31,
    "ANNUAL": 365.25, "BIENNIAL": 730.5,
}


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

    def text(self) -> str:
        ok = (">" if self.strict else "≥") if self.higher else ("<" if self.strict else "≤")
        below = ("≤" if self.strict else "<") if self.higher else ("≥" if self.strict else ">")
        parts = [f"pass {ok} {self.good:g}"]
        if self.fair is None:
            parts.append(f"warn {below} {self.good:g} (never fails)")
        elif self.fair == self.good:
            parts.append(f"fail {below} {self.good:g}")
        else:
            worse = "<" if self.higher else ">"
            parts += [f"warn {'≥' if self.higher else '≤'} {self.fair:g}",
                      f"fail {worse} {self.fair:g}"]
        return "; ".join(parts)


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
CHECKS: dict[str, str] = {  # metrics that are a yes/no check
    "Q2b": "pass: the file parses, its header matches the schema and its sha256 matches "
           "the catalog; fail otherwise",
    "Q4c": "pass: every shard has the same schema_hash; fail otherwise",
    "Q7c": "pass: 0 errors and 0 warnings; warn: warnings; fail: any error",
    "Q8a": "pass: a valid SPDX id, a URL or LicenseRef-SDN-*; fail: absent or unknown",
    "Q8c": "pass: valid (grade, category), PI floor met, approvals on file and current",
    "Q10b": "pass: no identifier detected while personal_info.status is none or anonymized",
}


def threshold(metric: str) -> str:
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


def measured(metric: str, value: float, detail: str, band: Band | None = None) -> MetricResult:
    """A metric with a value, graded by its band (or the given one)."""
    band = band or BANDS[metric]
    return _result(metric, value, band.status(value), detail, band.text())


def checked(metric: str, ok: bool, detail: str) -> MetricResult:
    return _result(metric, ok, "pass" if ok else "fail", detail)


def not_applicable(metric: str, reason: str) -> MetricResult:
    return _result(metric, None, "n/a", reason)


# -- reading the data -----------------------------------------------------------------


def read_frame(path: Path, record: CatalogRecord) -> pd.DataFrame:
    """The file as DuckDB reads it for every job, with the record's declared missing-value
    codes (such as -9999) turned into missing values."""
    con = duckdb.connect()
    try:
        frame = con.sql(f"SELECT * FROM {read_table(path)}").df()
    except duckdb.Error as exc:
        # First line only: later lines of a CSV error quote raw rows.
        raise UserError(f"{path.name}: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
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


def _sha256(path: Path) -> str:
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None


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


def _categorical(field: Field) -> bool:
    declared = field.constraints is not None and field.constraints.enum is not None
    return field.type in _CATEGORICAL or (field.type in _NUMERIC and declared)


def _continuous(field: Field) -> bool:
    return field.type in _NUMERIC and not _categorical(field)


def _physical(field: Field) -> bool:
    """A numeric measurement, which needs a unit (Q4b, Q7b); coded classes do not."""
    return _continuous(field) and field.role in _PHYSICAL_ROLES


@dataclass
class _Data:
    frame: pd.DataFrame
    record: CatalogRecord
    fields: dict[str, Field]
    target: str | None
    task: Task | None

    @classmethod
    def of(cls, frame: pd.DataFrame, record: CatalogRecord) -> _Data:
        fields = {f.name: f for f in record.fields if f.name in frame}
        target = next((t for t in record.targets if t in fields), None)
        task = None if target is None else target_task(fields[target], frame[target])
        return cls(frame, record, fields, target, task)

    def features(self) -> tuple[list[str], list[str]]:
        """(numeric, categorical) model inputs: not targets, ids, partitions or free text."""
        usable = [f for f in self.fields.values()
                  if f.name not in self.record.targets and f.role not in _NOT_FEATURES]
        return ([f.name for f in usable if _continuous(f)],
                [f.name for f in usable if _categorical(f)])


# -- Q1–Q6: the data ------------------------------------------------------------------


def _completeness(data: _Data) -> dict[str, MetricResult]:
    frame = data.frame
    n, m = frame.shape
    missing = frame.isna().sum()
    out = {"Q1a": measured("Q1a", 1.0 - missing.sum() / (n * m) if n * m else 0.0,
                           f"{int(missing.sum())} missing of {n * m} cells ({n} rows × "
                           f"{m} columns; null or a declared missing code)")}
    required = [f.name for f in data.fields.values()
                if f.constraints is not None and f.constraints.required]
    if required and n:
        rates = {c: 1.0 - missing[c] / n for c in required}
        worst = min(rates, key=lambda c: rates[c])
        out["Q1b"] = measured("Q1b", rates[worst], f"lowest: {worst} ({int(missing[worst])} "
                              f"missing) among {len(required)} required field(s)")
    else:
        out["Q1b"] = not_applicable("Q1b", "no field declares constraints.required")
    targets = [t for t in data.record.targets if t in frame]
    if targets and n:
        rates = {t: 1.0 - missing[t] / n for t in targets}
        worst = min(rates, key=lambda t: rates[t])
        out["Q1c"] = measured("Q1c", rates[worst],
                              f"target {worst}: {int(missing[worst])} missing of {n}")
    else:
        out["Q1c"] = not_applicable("Q1c", "no target declared")
    return out


def _structure(frame: pd.DataFrame | None, problem: str | None, digest: str,
               record: CatalogRecord) -> MetricResult:
    """Q2b: the file parses, has exactly the declared columns, and is the catalogued file."""
    if frame is None:
        return checked("Q2b", False, f"the file does not parse: {problem}")
    declared = [f.name for f in record.fields]
    missing = [c for c in declared if c not in frame.columns]
    extra = [c for c in frame.columns if c not in declared]
    problems = []
    if missing:
        problems.append(f"columns missing from the file: {', '.join(missing)}")
    if extra:
        problems.append(f"columns not in the schema: {', '.join(extra)}")
    catalogued = [d.sha256 for d in record.distributions]
    if digest not in catalogued:
        problems.append(f"the file changed since it was catalogued: sha256 {digest[:12]}… "
                        f"≠ {', '.join(s[:12] + '…' for s in catalogued) or 'none'}")
    if problems:
        return checked("Q2b", False, "; ".join(problems))
    return checked("Q2b", True, f"the file parses, its {len(declared)} columns match the "
                   "schema and its sha256 matches the catalog")


def _table_schema(fields: Iterable[Field]) -> dict[str, Any]:
    """The record's columns as a Frictionless Table Schema descriptor."""
    out = []
    for f in fields:
        entry: dict[str, Any] = {"name": f.name, "type": f.type}
        if f.constraints is not None:
            constraints = f.constraints.model_dump(exclude_none=True)
            if constraints:
                entry["constraints"] = constraints
        out.append(entry)
    return {"fields": out}


def _validity(data: _Data) -> MetricResult:
    """Q2a: cells breaking the declared type or constraints, by frictionless.

    Rows are handed over as DuckDB read them, with missing codes already set to null, so
    a missing cell is never a type error; `required` on a missing cell is Q1b's business.
    """
    names = list(data.fields)
    part = data.frame[names]
    present = part.notna()
    cells = part.astype(object).where(present, None)
    for name, field in data.fields.items():
        if field.type == "date":
            cells[name] = [v.date() if isinstance(v, pd.Timestamp) else v for v in cells[name]]
        elif field.type == "datetime":
            cells[name] = [v.to_pydatetime() if isinstance(v, pd.Timestamp) else v
                           for v in cells[name]]
    resource = frictionless.Resource(
        data=[names, *cells.itertuples(index=False, name=None)],
        schema=frictionless.Schema.from_descriptor(_table_schema(data.fields.values())),
    )
    report = resource.validate(limit_errors=present.size + 1)
    column = {name: i for i, name in enumerate(names)}
    bad: set[tuple[int, str]] = set()
    kinds: dict[str, int] = {}
    for error in report.tasks[0].errors:
        if error.type not in ("type-error", "constraint-error", "unique-error"):
            continue
        row = error.row_number - 2  # frictionless counts the header as row 1
        if present.iat[row, column[error.field_name]]:
            bad.add((row, error.field_name))
            kinds[error.field_name] = kinds.get(error.field_name, 0) + 1
    total = int(present.to_numpy().sum())
    detail = (f"{len(bad)} of {total} non-missing cells break the declared type or "
              "constraints")
    if kinds:
        detail += ": " + ", ".join(f"{c} {k}" for c, k in sorted(kinds.items()))
    return measured("Q2a", 1.0 - len(bad) / total if total else 1.0, detail)


def _uniqueness(data: _Data) -> dict[str, MetricResult]:
    frame = data.frame
    n = len(frame)
    keys = [f.name for f in data.fields.values() if f.role == "id"]
    if keys and n:
        distinct = len(frame[keys].dropna().drop_duplicates())
        q3a = measured("Q3a", distinct / n, f"{distinct} distinct non-missing keys "
                       f"({', '.join(keys)}) in {n} rows")
    else:
        q3a = not_applicable("Q3a", "no key declared (no field with role id)")
    if not n:
        return {"Q3a": q3a, "Q3b": not_applicable("Q3b", "the file has no rows")}
    duplicates = int(frame.duplicated().sum())
    q3b = measured("Q3b", duplicates / n, f"{duplicates} rows repeat an earlier row exactly")
    space = math.prod(int(frame[c].nunique(dropna=False)) for c in frame.columns)
    if q3b.status == "fail" and space <= 10 * n:
        # Few discrete columns: identical rows are expected, not copies (rule †).
        q3b = q3b.model_copy(update={
            "status": "warn",
            "detail": q3b.detail + f"; low-cardinality row space ({space} ≤ 10·n), so "
                      "duplicates only warn"})
    return {"Q3a": q3a, "Q3b": q3b}


_IDENTIFIER = re.compile(r"^[^\W\d]\w*$")


def _rule_columns(rule: str, columns: Iterable[str]) -> list[str]:
    """Columns a pandas.eval rule names, bare or in backticks."""
    found = []
    for name in columns:
        if f"`{name}`" in rule or (_IDENTIFIER.match(name) and re.search(
                rf"(?<![\w.]){re.escape(name)}(?!\w)", rule)):
            found.append(name)
    return found


def _rules(data: _Data, rules: Sequence[str]) -> MetricResult:
    """Q4a: share of rows meeting each declared rule, among rows where it can be judged."""
    if not rules:
        return not_applicable("Q4a", "no cross-field rules declared")
    shares = []
    for rule in rules:
        names = _rule_columns(rule, data.frame.columns)
        if not names:
            raise UserError(f"rule {rule!r} names no column of the data")
        rows = data.frame[data.frame[names].notna().all(axis=1)]
        try:
            result = rows.eval(rule)
        except (SyntaxError, NameError, KeyError, TypeError, ValueError) as exc:
            raise UserError(f"rule {rule!r} cannot be evaluated: {exc}") from None
        if not isinstance(result, pd.Series) or not pd.api.types.is_bool_dtype(result):
            raise UserError(f"rule {rule!r} is not a true/false condition on each row")
        shares.append((rule, float(result.mean()) if len(result) else 1.0, len(result)))
    value = float(np.mean([s for _, s, _ in shares]))
    detail = "; ".join(f"{r}: {s:.4f} of {k} rows" for r, s, k in shares)
    return measured("Q4a", value, detail)


def _units(record: CatalogRecord) -> MetricResult:
    physical = [f for f in record.fields if _physical(f)]
    if not physical:
        return not_applicable("Q4b", "no numeric measurement fields")
    without = [f.name for f in physical if not f.unit]
    detail = f"{len(physical) - len(without)} of {len(physical)} numeric measurement fields " \
             "declare a unit"
    if without:
        detail += f"; none for: {', '.join(without)}"
    return measured("Q4b", 1.0 - len(without) / len(physical), detail)


def _balance(data: _Data) -> dict[str, MetricResult]:
    metrics = ("Q5a", "Q5b", "Q5c", "Q5d")
    if data.target is None:
        return {m: not_applicable(m, "no target declared") for m in metrics}
    if data.task == "regression":
        reason = (f"target {data.target} is numeric with more than "
                  f"{CLASSIFICATION_MAX_DISTINCT} values (regression)")
        return {m: not_applicable(m, reason) for m in metrics}
    labels = labels_of(data.frame[data.target])
    if labels.empty:
        return {m: not_applicable(m, f"target {data.target} has no values") for m in metrics}
    counts = labels.value_counts()
    p = counts.to_numpy() / counts.sum()
    k = len(counts)
    entropy = float(-(p * np.log(p)).sum() / math.log(k)) if k > 1 else 0.0
    out = {
        "Q5a": measured("Q5a", entropy, f"{k} classes; entropy / ln {k}"),
        "Q5b": measured("Q5b", float(counts.max() / counts.min()),
                        f"largest {counts.index[0]} {counts.iloc[0]}, smallest "
                        f"{counts.index[-1]} {counts.iloc[-1]}"),
        "Q5c": measured("Q5c", float(counts.min()), f"class {counts.index[-1]}"),
    }
    field = data.fields[data.target]
    if field.constraints is not None and field.constraints.enum:
        declared = [str(v) for v in field.constraints.enum]
        absent = [v for v in declared if v not in counts.index]
        detail = f"{len(declared) - len(absent)} of {len(declared)} declared classes occur"
        if absent:
            detail += f"; absent: {', '.join(absent)}"
        out["Q5d"] = measured("Q5d", 1.0 - len(absent) / len(declared), detail)
    else:
        out["Q5d"] = not_applicable("Q5d", f"target {data.target} declares no enum")
    return out


def _outlier_rate(values: pd.Series) -> tuple[float, bool]:
    """Share outside [Q1 − 3·IQR, Q3 + 3·IQR], on log1p for non-negative right-skewed
    values (skewness > 1), where the raw rule would flag the ordinary long tail."""
    x = values.dropna().astype(float)
    if x.empty:
        return 0.0, False
    logged = bool(x.min() >= 0 and x.skew() > 1)
    if logged:
        x = np.log1p(x)
    q1, q3 = x.quantile(0.25), x.quantile(0.75)
    fence = 3 * (q3 - q1)
    return float(((x < q1 - fence) | (x > q3 + fence)).mean()), logged


def _outliers(data: _Data) -> MetricResult:
    numeric, _ = data.features()
    if not numeric:
        return not_applicable("Q6", "no numeric feature")
    rates = {c: _outlier_rate(data.frame[c]) for c in numeric}
    worst = max(rates, key=lambda c: rates[c][0])
    detail = ", ".join(f"{c} {r:.4f}{' (log1p)' if logged else ''}"
                       for c, (r, logged) in sorted(rates.items(), key=lambda i: -i[1][0]))
    return measured("Q6", rates[worst][0], f"max over numeric features: {detail}")


# -- Q7, Q8, Q11: the record -----------------------------------------------------------

_REQUIRED = (
    "id", "title", "description", "keywords", "subjects", "dataset_type", "creators",
    "publisher", "contact_point", "data_officer", "collection", "issued", "modified",
    "version", "classification", "security_grade", "sharing_category", "personal_info",
    "delivery_methods", "license", "lifecycle_stage", "record_count", "fields", "node_id",
    "platform_id", "schema_hash",
)
_RECOMMENDED = (
    "languages", "landing_page", "funding", "processing", "temporal_coverage",
    "spatial_coverage", "maintenance_plan", "rights_holder", "targets", "intended_uses",
    "limitations", "biases", "social_impact",
)


_Q7A_TEXT = BANDS["Q7a"].text() + "; fail (gate) if a required field is empty"


def _filled(value: Any) -> bool:
    if isinstance(value, BaseModel):
        return any(_filled(v) for v in value.__dict__.values())
    if isinstance(value, str | list | dict):
        return bool(value.strip() if isinstance(value, str) else value)
    return value is not None


def _conditionally_required(record: CatalogRecord) -> dict[str, str]:
    """The R* fields of governance §1.3 that apply to this record, with the reason."""
    out = {}
    if record.dataset_type == "derived":
        out["derived_from"] = "dataset_type is derived"
    if record.targets:
        out["annotation"] = "targets are declared: say how the labels were made"
    if requires_grade_assessment(record.security_grade):
        out["grade_assessment"] = f"grade {record.security_grade}"
    if record.sharing_category == "CONDITIONAL":
        out["conditions_of_use"] = "sharing_category is CONDITIONAL"
    if requires_approvals(record.security_grade, record.personal_info.status):
        out["approvals"] = "personal information or grade G4 and above"
    return out


def _metadata(record: CatalogRecord) -> MetricResult:
    """Q7a: weighted share of §1.3 fields filled (R and applicable R* weigh 2, Rec 1);
    its gate fails when an R or applicable R* field is empty. Fields the record model
    has no slot for (citation, created, allowed_computations) are not counted."""
    conditional = _conditionally_required(record)
    weights = {**dict.fromkeys(_REQUIRED, 2), **dict.fromkeys(conditional, 2),
               **dict.fromkeys(_RECOMMENDED, 1)}
    filled = {name: _filled(getattr(record, name, None)) for name in weights}
    value = sum(w for name, w in weights.items() if filled[name]) / sum(weights.values())
    missing = [n for n in (*_REQUIRED, *conditional) if not filled[n]]
    detail = f"{sum(filled.values())} of {len(weights)} fields filled"
    if missing:
        reasons = [f"{n} ({conditional[n]})" if n in conditional else n for n in missing]
        return _result("Q7a", value, "fail", f"{detail}; required but empty: "
                       f"{', '.join(reasons)}", _Q7A_TEXT)
    absent = [n for n in _RECOMMENDED if not filled[n]]
    if absent:
        detail += f"; recommended but empty: {', '.join(absent)}"
    return measured("Q7a", value, detail)



def _dictionary(record: CatalogRecord) -> MetricResult:
    lacking = {}
    for f in record.fields:
        gaps = [] if f.description else ["description"]
        if _physical(f) and not f.unit:
            gaps.append("unit")
        if gaps:
            lacking[f.name] = gaps
    n = len(record.fields)
    detail = f"{n - len(lacking)} of {n} fields documented"
    if lacking:
        detail += "; lacking: " + ", ".join(f"{c} ({'/'.join(g)})" for c, g in lacking.items())
    return measured("Q7b", (n - len(lacking)) / n if n else 0.0, detail)


def _croissant(record: CatalogRecord) -> MetricResult:
    try:
        _, warnings = croissant_with_warnings(record.model_dump(mode="json"))
    except UserError as exc:
        return _result("Q7c", None, "fail", str(exc))
    if warnings:
        return _result("Q7c", float(len(warnings)), "warn",
                       f"{len(warnings)} warning(s): {'; '.join(warnings)}")
    return _result("Q7c", 0.0, "pass", "validates with mlcroissant without errors or warnings")


def _licence_problem(licence: str | None) -> str | None:
    """Why a licence does not count (None when it does)."""
    if not licence or not licence.strip():
        return "no licence declared: the data cannot be reused lawfully"
    if licence.startswith(("http://", "https://")):
        return None
    if licence.startswith("LicenseRef-"):
        if re.fullmatch(r"LicenseRef-SDN-[A-Za-z0-9.-]+", licence):
            return None
        return f"{licence!r} is not a registered network licence (LicenseRef-SDN-*)"
    try:
        canonicalize_license_expression(licence)
    except InvalidLicenseExpression:
        return f"{licence!r} is not an SPDX licence identifier"
    return None


def _licence(record: CatalogRecord) -> MetricResult:
    problem = _licence_problem(record.license)
    return checked("Q8a", problem is None, problem or f"licence {record.license}")


def _provenance(record: CatalogRecord) -> MetricResult:
    items = {
        "creators": record.creators, "publisher": record.publisher,
        "collection.method": record.collection.method,
        "collection.timeframe": record.collection.timeframe,
        "processing": record.processing, "version": record.version,
        "sha256": [d.sha256 for d in record.distributions],
    }
    if record.dataset_type == "derived":
        items["derived_from"] = record.derived_from
    absent = [name for name, value in items.items() if not _filled(value)]
    detail = f"{len(items) - len(absent)} of {len(items)} provenance items"
    if absent:
        detail += f"; absent: {', '.join(absent)}"
    return measured("Q8b", 1.0 - len(absent) / len(items), detail)


def _governance(record: CatalogRecord, today: dt.date) -> MetricResult:
    grade, category = record.security_grade, record.sharing_category
    problems = []
    if (grade, category) not in VALID_PAIRS:
        problems.append(f"{grade} {category} is not a valid (grade, category) pair")
    pi = record.personal_info
    floor = pi_floor(pi.status, pi.sensitive, pi.categories)
    if floor is not None and grade_rank(grade) < grade_rank(floor.grade):
        problems.append(f"{grade} is below the floor {floor.grade} set by {floor.reason}")
    if requires_approvals(grade, pi.status) and not record.approvals:
        problems.append("approvals are required but none is on file")
    expired = [f"{a.type} {a.ref}" for a in record.approvals if a.expires and a.expires < today]
    if expired:
        problems.append(f"expired approvals: {', '.join(expired)}")
    if problems:
        return checked("Q8c", False, "; ".join(problems))
    return checked("Q8c", True, f"{grade} {category}; PI {pi.status}; "
                   f"{len(record.approvals)} approval(s) on file")


def _freshness(record: CatalogRecord, now: dt.datetime) -> MetricResult:
    frequency = record.update_frequency
    if frequency not in _PERIOD_DAYS:
        return not_applicable("Q11", f"no update period (update_frequency {frequency})")
    modified = record.modified
    if not isinstance(modified, dt.datetime):
        modified = dt.datetime.combine(modified, dt.time(), dt.UTC)
    elif modified.tzinfo is None:
        modified = modified.replace(tzinfo=dt.UTC)
    days = (now - modified).total_seconds() / 86_400
    period = _PERIOD_DAYS[frequency]
    return measured("Q11", days / period, f"{days:.0f} days since modified; "
                    f"{frequency} period {period:g} days")


# -- Q9: trainability -----------------------------------------------------------------


def _preprocess(numeric: list[str], categorical: list[str]) -> ColumnTransformer:
    """Median impute + standardise numerics; mode impute + one-hot (min_frequency=5)."""
    return ColumnTransformer([
        ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
         numeric),
        ("categorical", make_pipeline(
            SimpleImputer(strategy="most_frequent"),
            OneHotEncoder(min_frequency=5, handle_unknown="infrequent_if_exist")),
         categorical),
    ])


def _model_inputs(frame: pd.DataFrame, numeric: list[str],
                 categorical: list[str]) -> pd.DataFrame:
    """Features as scikit-learn takes them: floats, and text with NaN for missing."""
    out = frame[numeric].astype(float)
    for c in categorical:
        column = frame[c]
        out[c] = column.astype(object).where(column.notna(), np.nan).map(
            lambda v: v if v is np.nan else str(v))
    return out


def _sentinel(x: pd.Series, y: pd.Series, numeric: bool, task: Task) -> float:
    """Cross-validated score of a depth-2 tree on one feature (Q9c)."""
    encode: list[Any] = [SimpleImputer(strategy="median" if numeric else "most_frequent")]
    if not numeric:
        encode.append(OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1))
    if task == "classification":
        tree: Any = DecisionTreeClassifier(max_depth=2, random_state=SEED)
        cv: Any = StratifiedKFold(min(LEAKAGE_FOLDS, int(y.value_counts().min())),
                                  shuffle=True, random_state=SEED)
    else:
        tree, cv = DecisionTreeRegressor(max_depth=2, random_state=SEED), KFold(
            LEAKAGE_FOLDS, shuffle=True, random_state=SEED)
    pred = cross_val_predict(make_pipeline(*encode, tree), x.to_frame(), y, cv=cv)
    return _score(task, y, pred)


def _score(task: Task, y: pd.Series, pred: np.ndarray) -> float:
    if task == "classification":
        return float(balanced_accuracy_score(y, pred))
    return float(r2_score(y, pred))


def _trainability(data: _Data, mode: Literal["fast", "full"],
                  step: Callable[[str], None]) -> dict[str, MetricResult]:
    metrics = ("Q9a", "Q9b", "Q9c", "Q9d")
    if data.target is None or data.task is None:
        return {m: not_applicable(m, "no target declared") for m in metrics}
    numeric, categorical = data.features()
    if not numeric and not categorical:
        return {m: not_applicable(m, "no feature columns (all are ids, partitions, "
                                  "free text or of other types)") for m in metrics}
    task = data.task
    rows = data.frame[data.frame[data.target].notna()]
    x = _model_inputs(rows, numeric, categorical)
    if task == "classification":
        y = labels_of(rows[data.target])
        counts = y.value_counts()
        if len(counts) < 2 or counts.min() < 2:
            reason = ("the target has a single class" if len(counts) < 2 else
                      f"class {counts.index[-1]} has a single row; cross-validation needs two")
            return {m: not_applicable(m, reason) for m in metrics}
        if len(y) > MAX_ROWS:
            x, _, y, _ = train_test_split(x, y, train_size=MAX_ROWS, stratify=y,
                                          random_state=SEED)
        folds = min(FOLDS, int(y.value_counts().min()))
        cv: Any = StratifiedKFold(folds, shuffle=True, random_state=SEED)
        model: Any = LogisticRegression(max_iter=1000)
        scoring = "balanced_accuracy"
    else:
        y = rows[data.target].astype(float)
        if len(y) > MAX_ROWS:
            x, _, y, _ = train_test_split(x, y, train_size=MAX_ROWS, random_state=SEED)
        folds = FOLDS
        cv, model, scoring = KFold(FOLDS, shuffle=True, random_state=SEED), Ridge(), "r2"
    pipeline = Pipeline([("prepare", _preprocess(numeric, categorical)), ("model", model)])
    setting = (f"{len(y)} rows, {folds}-fold CV, seed {SEED}; {len(numeric)} numeric and "
               f"{len(categorical)} categorical features")

    step("trainability: cross-validated baseline")
    pred = cross_val_predict(pipeline, x, y, cv=cv)
    score = _score(task, y, pred)
    if task == "classification":
        k = y.nunique()
        lift = (score - 1 / k) / (1 - 1 / k)
        q9a = measured("Q9a", lift, f"balanced accuracy {score:.4f} over {k} classes "
                       f"(chance {1 / k:.4f}), L2 logistic regression; {setting}")
    else:
        q9a = measured("Q9a", score, f"cross-validated R² of ridge regression; {setting}")

    permutations = PERMUTATIONS[mode]
    step(f"trainability: permutation test ({permutations} permutations)")
    _, _, p = permutation_test_score(pipeline, x, y, cv=cv, n_permutations=permutations,
                                     scoring=scoring, random_state=SEED)
    floor = 1 / (permutations + 1)
    band = Band(max(BANDS["Q9b"].good, floor), BANDS["Q9b"].fair, higher=False)
    q9b = measured("Q9b", float(p), f"{permutations} permutations ({mode} mode), p cannot "
                   f"go below {floor:.4f}", band)

    step("trainability: leakage sentinel")
    best = {c: _sentinel(x[c], y, c in numeric, task) for c in x.columns}
    top = max(best, key=lambda c: best[c])
    unit = "balanced accuracy" if task == "classification" else "R²"
    q9c = measured("Q9c", best[top], f"best single feature {top}: {unit} {best[top]:.4f} "
                   f"(depth-2 tree, {LEAKAGE_FOLDS}-fold)")

    step("trainability: learning curve")
    half = np.empty(len(y), dtype=object if task == "classification" else float)
    for train, test in cv.split(x, y):
        stratify = y.iloc[train] if task == "classification" else None
        sub = resample(train, n_samples=len(train) // 2, replace=False, stratify=stratify,
                       random_state=SEED)
        fitted = pipeline.fit(x.iloc[sub], y.iloc[sub])
        half[test] = fitted.predict(x.iloc[test])
    gain = score - _score(task, y, half)
    q9d = measured("Q9d", gain, f"{unit} with all training rows minus with half of them")
    return {"Q9a": q9a, "Q9b": q9b, "Q9c": q9c, "Q9d": q9d}


# -- Q10: identifiability --------------------------------------------------------------

_NAME_COLUMNS = {
    "name", "full_name", "fullname", "first_name", "last_name", "surname", "given_name",
    "patient_name", "person_name", "姓名", "名字", "联系人",
}
_PERSONAL_WORDS = re.compile(
    r"身份证|手机|电话|住址|邮箱|e_?mail|phone|mobile|passport|id_?card|national_?id|ssn",
    re.IGNORECASE)
_MOBILE = re.compile(r"1[3-9]\d{9}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
_RESIDENT_ID = re.compile(r"\d{17}[\dXx]")
_ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def _resident_id(value: str) -> bool:
    """An 18-digit PRC resident identity number with a valid ISO 7064 MOD 11-2 check."""
    if not _RESIDENT_ID.fullmatch(value):
        return False
    total = sum(int(d) * w for d, w in zip(value[:17], _ID_WEIGHTS, strict=True))
    return "10X98765432"[total % 11] == value[-1].upper()


def _looks_personal(name: str, values: pd.Series) -> str | None:
    """What makes a column look like a direct identifier, if anything."""
    normal = re.sub(r"[\s-]+", "_", name.strip().lower())
    if normal in _NAME_COLUMNS:
        return "column name says personal name"
    if _PERSONAL_WORDS.search(normal):
        return "column name says contact or identity data"
    sample = values.dropna().astype(str).str.strip().head(IDENTIFIER_SAMPLE)
    if sample.empty:
        return None
    for kind, test in (("resident ID numbers", _resident_id),
                       ("mobile numbers", _MOBILE.fullmatch),
                       ("email addresses", _EMAIL.fullmatch)):
        share = float(sample.map(lambda v, t=test: bool(t(v))).mean())
        if share >= IDENTIFIER_SHARE:
            return f"{share:.0%} of values look like {kind}"
    return None


def _identifiers(data: _Data) -> MetricResult:
    status = data.record.personal_info.status
    if status not in ("none", "anonymized"):
        return checked("Q10b", True, f"personal information is declared (status {status})")
    found = {}
    for name, field in data.fields.items():
        if field.pi_kind == "direct_identifier":
            found[name] = "declared a direct identifier"
        elif field.type in _CATEGORICAL | {"integer"}:
            why = _looks_personal(name, data.frame[name])
            if why:
                found[name] = why
    if found:
        return checked("Q10b", False, f"personal_info.status is {status}, but: " + "; ".join(
            f"{c}: {why}" for c, why in found.items()))
    return checked("Q10b", True, "no column looks like a name, ID-card number, phone or "
                   "email")


def _k_anonymity(data: _Data) -> MetricResult:
    record = data.record
    qis = [f.name for f in data.fields.values() if f.pi_kind == "quasi_identifier"]
    if not qis:
        return not_applicable("Q10a", "no quasi-identifiers declared")
    anonymized = record.personal_info.status == "anonymized"
    cell = (record.security_grade, record.sharing_category)
    # An invalid cell has no k of its own (Q8c fails it); use the anonymisation k.
    k = min_cell_count(*cell) if cell in VALID_PAIRS else ANONYMIZATION_K
    if anonymized:
        k = max(k, ANONYMIZATION_K)
    frame = data.frame
    sizes = frame.groupby(qis, dropna=False)[qis[0]].transform("size")
    share = float((sizes < k).mean()) if len(frame) else 0.0
    result = measured("Q10a", share, f"share of rows in classes of fewer than k={k} rows "
                      f"over {', '.join(qis)}")
    if result.status == "fail" and not anonymized:
        # Only a claim of anonymity can be refuted; identifiable data is graded as such.
        return result.model_copy(update={
            "status": "warn", "detail": result.detail + "; gate applies only to data "
            "declared anonymized"})
    return result


# -- putting it together --------------------------------------------------------------


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
        metrics[metric] = result.model_copy(update={
            "status": "pass",
            "detail": f"{result.detail} [overridden from {result.status}: "
                      f"{justification.strip()}]"})
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


def _tool_versions() -> dict[str, str]:
    packages = ("scifed", "pandas", "numpy", "scikit-learn", "frictionless", "mlcroissant",
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
        metrics |= {m: not_applicable(m, "the data file does not parse") for m in data_metrics}
    else:
        data = _Data.of(frame, record)
        metrics |= _completeness(data)
        step("validating against the Table Schema (frictionless)")
        metrics["Q2a"] = _validity(data)
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
        metrics[metric] = not_applicable(metric, "federated metric: computed across nodes by "
                                         "the quality job")
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
