"""Identifiability (Q10): k-anonymity on the declared quasi-identifiers (Q10a) and
detectors of undeclared direct identifiers (Q10b)."""

from __future__ import annotations

import re

import pandas as pd

from node.scorecard.data import _CATEGORICAL, _Data
from scifed.grading import VALID_PAIRS, min_cell_count
from scifed.scorecard import MetricResult, checked, measured, not_applicable
from scifed.sentences import say

ANONYMIZATION_K = 10  # k-anonymity that backs an "anonymized" claim (governance §2.3)
IDENTIFIER_SHARE = 0.5  # share of values matching a detector that flags a column (Q10b)
IDENTIFIER_SAMPLE = 1_000

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
        return checked("Q10b", True, say("qual.q10b.declared", status=status))
    found = {}
    for name, field in data.fields.items():
        if field.pi_kind == "direct_identifier":
            found[name] = "declared a direct identifier"
        elif field.type in _CATEGORICAL | {"integer"}:
            why = _looks_personal(name, data.frame[name])
            if why:
                found[name] = why
    if found:
        return checked("Q10b", False, say("qual.q10b.found", status=status, found="; ".join(
            f"{c}: {why}" for c, why in found.items())))
    return checked("Q10b", True, say("qual.q10b.ok"))


def _k_anonymity(data: _Data) -> MetricResult:
    record = data.record
    qis = [f.name for f in data.fields.values() if f.pi_kind == "quasi_identifier"]
    if not qis:
        return not_applicable("Q10a", say("qual.q10a.none"))
    anonymized = record.personal_info.status == "anonymized"
    cell = (record.security_grade, record.sharing_category)
    # An invalid cell has no k of its own (Q8c fails it); use the anonymisation k.
    k = min_cell_count(*cell) if cell in VALID_PAIRS else ANONYMIZATION_K
    if anonymized:
        k = max(k, ANONYMIZATION_K)
    frame = data.frame
    sizes = frame.groupby(qis, dropna=False)[qis[0]].transform("size")
    share = float((sizes < k).mean()) if len(frame) else 0.0
    detail = say("qual.q10a.share", k=k, columns=", ".join(qis))
    result = measured("Q10a", share, detail)
    if result.status == "fail" and not anonymized:
        # Only a claim of anonymity can be refuted; identifiable data is graded as such.
        return result.amended(status="warn",
                              detail=say("qual.q10a.only_anonymized", detail=detail))
    return result
