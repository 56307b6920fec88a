"""The record metrics of the scorecard: documentation (Q7), licence and provenance (Q8)
and currentness (Q11), computed from the catalog record alone."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from packaging.licenses import InvalidLicenseExpression, canonicalize_license_expression
from pydantic import BaseModel

from node.scorecard.data import _physical
from scifed.errors import UserError
from scifed.exports import croissant_with_warnings
from scifed.grading import (
    VALID_PAIRS,
    grade_rank,
    pi_floor,
    requires_approvals,
    requires_grade_assessment,
)
from scifed.record import CatalogRecord
from scifed.scorecard import (
    BANDS,
    MetricResult,
    _result,
    checked,
    joined,
    measured,
    not_applicable,
)
from scifed.sentences import say

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
_PERIOD_DAYS = {
    "CONT": 1.0, "DAILY": 1.0, "WEEKLY": 7.0, "MONTHLY": 30.44, "QUARTERLY": 91.31,
    "ANNUAL": 365.25, "BIENNIAL": 730.5,
}

_Q7A_TEXT = say("qual.and", first=BANDS["Q7a"].text(), second=say("qual.q7a_gate"))


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
    detail = say("qual.q7a.filled", filled=sum(filled.values()), total=len(weights))
    if missing:
        reasons = [f"{n} ({conditional[n]})" if n in conditional else n for n in missing]
        return _result("Q7a", value, "fail", say("qual.q7a.required", detail=detail,
                                                 fields=", ".join(reasons)), _Q7A_TEXT)
    absent = [n for n in _RECOMMENDED if not filled[n]]
    if absent:
        detail = say("qual.q7a.recommended", detail=detail, fields=", ".join(absent))
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
    detail = say("qual.q7b", documented=n - len(lacking), n=n)
    if lacking:
        detail = say("qual.q7b.lacking", detail=detail, fields=", ".join(
            f"{c} ({'/'.join(g)})" for c, g in lacking.items()))
    return measured("Q7b", (n - len(lacking)) / n if n else 0.0, detail)


def _croissant(record: CatalogRecord) -> MetricResult:
    try:
        _, warnings = croissant_with_warnings(record.model_dump(mode="json"))
    except UserError as exc:
        return _result("Q7c", None, "fail", str(exc))
    if warnings:
        return _result("Q7c", float(len(warnings)), "warn", say(
            "qual.q7c.warnings", n=len(warnings), warnings="; ".join(warnings)))
    return _result("Q7c", 0.0, "pass", say("qual.q7c.ok"))


def _licence_problem(licence: str | None) -> str | None:
    """Why a licence does not count (None when it does)."""
    if not licence or not licence.strip():
        return say("qual.q8a.none")
    if licence.startswith(("http://", "https://")):
        return None
    if licence.startswith("LicenseRef-"):
        if re.fullmatch(r"LicenseRef-SDN-[A-Za-z0-9.-]+", licence):
            return None
        return say("qual.q8a.not_network", licence=repr(licence))
    try:
        canonicalize_license_expression(licence)
    except InvalidLicenseExpression:
        return say("qual.q8a.not_spdx", licence=repr(licence))
    return None


def _licence(record: CatalogRecord) -> MetricResult:
    problem = _licence_problem(record.license)
    return checked("Q8a", problem is None, problem or say("qual.q8a.ok",
                                                           licence=record.license))


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
    detail = say("qual.q8b", present=len(items) - len(absent), n=len(items))
    if absent:
        detail = say("qual.q8b.absent", detail=detail, absent=", ".join(absent))
    return measured("Q8b", 1.0 - len(absent) / len(items), detail)


def _governance(record: CatalogRecord, today: dt.date) -> MetricResult:
    grade, category = record.security_grade, record.sharing_category
    problems = []
    if (grade, category) not in VALID_PAIRS:
        problems.append(say("qual.q8c.pair", grade=grade, category=category))
    pi = record.personal_info
    floor = pi_floor(pi.status, pi.sensitive, pi.categories)
    if floor is not None and grade_rank(grade) < grade_rank(floor.grade):
        problems.append(say("qual.q8c.floor", grade=grade, floor=floor.grade,
                            reason=floor.reason))
    if requires_approvals(grade, pi.status) and not record.approvals:
        problems.append(say("qual.q8c.no_approvals"))
    expired = [f"{a.type} {a.ref}" for a in record.approvals if a.expires and a.expires < today]
    if expired:
        problems.append(say("qual.q8c.expired", approvals=", ".join(expired)))
    if problems:
        return checked("Q8c", False, joined(problems))
    return checked("Q8c", True, say("qual.q8c.ok", grade=grade, category=category,
                                    status=pi.status, n=len(record.approvals)))


def _freshness(record: CatalogRecord, now: dt.datetime) -> MetricResult:
    frequency = record.update_frequency
    if frequency not in _PERIOD_DAYS:
        return not_applicable("Q11", say("qual.q11.none", frequency=frequency))
    modified = record.modified
    if not isinstance(modified, dt.datetime):
        modified = dt.datetime.combine(modified, dt.time(), dt.UTC)
    elif modified.tzinfo is None:
        modified = modified.replace(tzinfo=dt.UTC)
    days = (now - modified).total_seconds() / 86_400
    period = _PERIOD_DAYS[frequency]
    return measured("Q11", days / period, say("qual.q11", days=f"{days:.0f}",
                                              frequency=frequency, period=f"{period:g}"))
