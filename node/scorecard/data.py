"""Reading a dataset file for the scorecard, and its data metrics Q1–Q6 (Q4b from the
record's fields)."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from node.constraints import check_constraints
from node.data import DataFile
from scifed.errors import UserError
from scifed.record import CatalogRecord, Field
from scifed.scorecard import (
    _NUMERIC,
    CLASSIFICATION_MAX_DISTINCT,
    MetricResult,
    Task,
    checked,
    joined,
    labels_of,
    mask_missing_codes,
    measured,
    not_applicable,
    target_task,
)
from scifed.sentences import say

_CATEGORICAL = {"string", "boolean"}
_NOT_FEATURES = {"id", "partition", "free_text"}
_PHYSICAL_ROLES = {"feature", "target", "weight"}


# -- reading the data -----------------------------------------------------------------


def read_frame(path: Path, record: CatalogRecord) -> pd.DataFrame:
    """The file as DuckDB reads it for every job, with the record's declared missing-value
    codes (such as -9999) turned into missing values."""
    with DataFile(path) as data:
        return mask_missing_codes(data.frame(), record)


def _sha256(path: Path) -> str:
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None


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
                           say("qual.q1a", missing=int(missing.sum()), cells=n * m, n=n,
                               m=m))}
    required = [f.name for f in data.fields.values()
                if f.constraints is not None and f.constraints.required]
    if required and n:
        rates = {c: 1.0 - missing[c] / n for c in required}
        worst = min(rates, key=lambda c: rates[c])
        out["Q1b"] = measured("Q1b", rates[worst], say(
            "qual.q1b", worst=worst, missing=int(missing[worst]), n=len(required)))
    else:
        out["Q1b"] = not_applicable("Q1b", say("qual.q1b.none"))
    targets = [t for t in data.record.targets if t in frame]
    if targets and n:
        rates = {t: 1.0 - missing[t] / n for t in targets}
        worst = min(rates, key=lambda t: rates[t])
        out["Q1c"] = measured("Q1c", rates[worst], say(
            "qual.q1c", target=worst, missing=int(missing[worst]), n=n))
    else:
        out["Q1c"] = not_applicable("Q1c", say("qual.no_target"))
    return out


def _structure(frame: pd.DataFrame | None, problem: str | None, digest: str,
               record: CatalogRecord) -> MetricResult:
    """Q2b: the file parses, has exactly the declared columns, and is the catalogued file."""
    if frame is None:
        return checked("Q2b", False, say("qual.q2b.unparsed", problem=problem))
    declared = [f.name for f in record.fields]
    missing = [c for c in declared if c not in frame.columns]
    extra = [c for c in frame.columns if c not in declared]
    problems = []
    if missing:
        problems.append(say("qual.q2b.missing", columns=", ".join(missing)))
    if extra:
        problems.append(say("qual.q2b.extra", columns=", ".join(extra)))
    catalogued = [d.sha256 for d in record.distributions]
    if digest not in catalogued:
        problems.append(say("qual.q2b.changed", digest=digest[:12], catalogued=", ".join(
            s[:12] + "…" for s in catalogued) or "none"))
    if problems:
        return checked("Q2b", False, joined(problems))
    return checked("Q2b", True, say("qual.q2b.ok", n=len(declared)))


def _validity(path: Path, record: CatalogRecord) -> MetricResult:
    """Q2a: present cells breaking the record's type or constraints, counted by the check
    registration makes (:func:`node.constraints.check_constraints`), with the declared
    missing codes read as missing; a missing cell is never a type error, and `required`
    on a missing cell is Q1b's business."""
    check = check_constraints(path, record.fields)
    bad = {c: k for c, k in check.bad_cells.items() if k}
    total = check.present_cells
    detail = (f"{sum(bad.values())} of {total} non-missing cells break the declared type or "
              "constraints")
    if bad:
        detail += ": " + ", ".join(f"{c} {k}" for c, k in sorted(bad.items()))
    if check.problems:
        detail += "; not checked: " + "; ".join(check.problems)
    return measured("Q2a", 1.0 - sum(bad.values()) / total if total else 1.0, detail)


def _uniqueness(data: _Data) -> dict[str, MetricResult]:
    frame = data.frame
    n = len(frame)
    keys = [f.name for f in data.fields.values() if f.role == "id"]
    if keys and n:
        distinct = len(frame[keys].dropna().drop_duplicates())
        q3a = measured("Q3a", distinct / n, say("qual.q3a", distinct=distinct,
                                                keys=", ".join(keys), n=n))
    else:
        q3a = not_applicable("Q3a", say("qual.q3a.none"))
    if not n:
        return {"Q3a": q3a, "Q3b": not_applicable("Q3b", say("qual.no_rows"))}
    duplicates = int(frame.duplicated().sum())
    q3b = measured("Q3b", duplicates / n, say("qual.q3b", n=duplicates))
    space = math.prod(int(frame[c].nunique(dropna=False)) for c in frame.columns)
    if q3b.status == "fail" and space <= 10 * n:
        # Few discrete columns: identical rows are expected, not copies (rule †).
        q3b = q3b.amended(status="warn", detail=q3b.detail + f"; low-cardinality row "
                          f"space ({space} ≤ 10·n), so duplicates only warn")
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
        return not_applicable("Q4a", say("qual.q4a.none"))
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
        return not_applicable("Q4b", say("qual.q4b.none"))
    without = [f.name for f in physical if not f.unit]
    detail = say("qual.q4b", with_unit=len(physical) - len(without), n=len(physical))
    if without:
        detail = say("qual.q4b.without", detail=detail, fields=", ".join(without))
    return measured("Q4b", 1.0 - len(without) / len(physical), detail)


def _balance(data: _Data) -> dict[str, MetricResult]:
    metrics = ("Q5a", "Q5b", "Q5c", "Q5d")
    if data.target is None:
        return {m: not_applicable(m, say("qual.no_target")) for m in metrics}
    if data.task == "regression":
        reason = say("qual.q5.regression", target=data.target,
                     most=CLASSIFICATION_MAX_DISTINCT)
        return {m: not_applicable(m, reason) for m in metrics}
    labels = labels_of(data.frame[data.target])
    if labels.empty:
        return {m: not_applicable(m, say("qual.q5.empty", target=data.target))
                for m in metrics}
    counts = labels.value_counts()
    p = counts.to_numpy() / counts.sum()
    k = len(counts)
    entropy = float(-(p * np.log(p)).sum() / math.log(k)) if k > 1 else 0.0
    out = {
        "Q5a": measured("Q5a", entropy, say("qual.q5a", k=k)),
        "Q5b": measured("Q5b", float(counts.max() / counts.min()), say(
            "qual.q5b", largest=str(counts.index[0]), most=int(counts.iloc[0]),
            smallest=str(counts.index[-1]), least=int(counts.iloc[-1]))),
        "Q5c": measured("Q5c", float(counts.min()), say("qual.q5c",
                                                        label=str(counts.index[-1]))),
    }
    field = data.fields[data.target]
    if field.constraints is not None and field.constraints.enum:
        declared = [str(v) for v in field.constraints.enum]
        absent = [v for v in declared if v not in counts.index]
        detail = say("qual.q5d", occur=len(declared) - len(absent), n=len(declared))
        if absent:
            detail = say("qual.q5d.absent", detail=detail, absent=", ".join(absent))
        out["Q5d"] = measured("Q5d", 1.0 - len(absent) / len(declared), detail)
    else:
        out["Q5d"] = not_applicable("Q5d", say("qual.q5d.none", target=data.target))
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
        return not_applicable("Q6", say("qual.q6.none"))
    rates = {c: _outlier_rate(data.frame[c]) for c in numeric}
    worst = max(rates, key=lambda c: rates[c][0])
    detail = ", ".join(f"{c} {r:.4f}{' (log1p)' if logged else ''}"
                       for c, (r, logged) in sorted(rates.items(), key=lambda i: -i[1][0]))
    return measured("Q6", rates[worst][0], say("qual.q6", rates=detail))
