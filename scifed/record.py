"""Catalog records: what a data officer declares and what a node publishes (governance §1).

`MetadataInput` is the officer's metadata YAML, checked against the grading rules before
anything is stored. `CatalogRecord` adds what only the node can know (row count, column
profile, file digest) and is validated again wherever a record crosses a boundary.
`published_form` decides how much of a record may leave the node.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, Protocol, Self

import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    NonNegativeInt,
    StringConstraints,
    ValidationError,
    model_validator,
)

from scifed.config import parse_yaml_mapping
from scifed.errors import UserError, excerpt, excerpt_repr, join_problems
from scifed.grading import (
    VALID_PAIRS,
    Category,
    DeliveryMethod,
    Grade,
    PICategory,
    PIStatus,
    allowed_categories,
    default_delivery_methods,
    forbidden_delivery_methods,
    grade_rank,
    holds_personal_info,
    pi_floor,
    publication_mode,
    requires_approvals,
    requires_grade_assessment,
)
from scifed.limits import MAX_DOCUMENT_BYTES, MAX_DOCUMENT_DEPTH, MAX_MESSAGE_CHARS

DatasetType = Literal[
    "observational", "experimental", "simulation", "survey", "derived", "synthetic", "annotation"
]
Role = Literal["id", "feature", "target", "partition", "time", "weight", "free_text", "other"]
PIKind = Literal["none", "direct_identifier", "quasi_identifier", "sensitive_attribute"]
TableSchemaType = Literal[
    "string", "number", "integer", "boolean", "date", "datetime", "time", "year",
    "yearmonth", "duration", "geopoint", "geojson", "object", "array", "list", "any",
]
NUMERIC_TYPES = frozenset({"integer", "number"})  # the Table Schema types that hold numbers
SubjectCategory = Literal["personal", "organization", "public_affairs", "natural_object", "mixed"]
LifecycleStage = Literal["planned", "collecting", "active", "archived", "scheduled_for_deletion"]
# EU frequency authority codes (publications.europa.eu/resource/authority/frequency).
UpdateFrequency = Literal[
    "CONT", "DAILY", "WEEKLY", "MONTHLY", "QUARTERLY", "ANNUAL", "BIENNIAL", "IRREG", "NEVER",
    "UNKNOWN",
]
CONDITION_CODES = (
    "research_only", "non_commercial", "cite", "no_reidentification", "ethics_approval",
    "dua_required", "no_onward_transfer", "domestic_only",
)
MORATORIUM = "publication_moratorium"
# Per-column statistics are published only for data graded up to this level.
STATS_PUBLIC_UP_TO = "G1"  # G2 and above: no column summary (min and max are values)
COLUMN_STATS = ("distinct_count", "min", "max", "mean", "std")

STUB_KEYS = (
    "id", "title", "node_id", "platform_id", "subjects", "security_grade", "sharing_category",
)


# -- value checks ---------------------------------------------------------------------


def _matching(pattern: str, what: str) -> AfterValidator:
    """A regex check whose error says what was expected, not which regex failed."""
    regex = re.compile(pattern)

    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


def _orcid(value: str) -> str:
    """Accept a bare ORCID iD or its URL; keep the bare iD after checking its check digit."""
    bare = value.removeprefix("https://orcid.org/")
    if not re.fullmatch(r"\d{4}-\d{4}-\d{4}-\d{3}[\dX]", bare):
        raise ValueError(f"{value!r} is not an ORCID iD such as 0000-0002-1825-0097")
    total = 0
    for digit in bare.replace("-", "")[:-1]:
        total = (total + int(digit)) * 2
    check = (12 - total % 11) % 11
    if bare[-1] != ("X" if check == 10 else str(check)):
        raise ValueError(f"{value!r} has a wrong check digit (ISO 7064 MOD 11-2)")
    return bare


def _license(value: str) -> str:
    """SPDX id, URL, or a licence registered in the network (governance §1.3 #37)."""
    if value.startswith("LicenseRef-"):
        if re.fullmatch(r"LicenseRef-SDN-[A-Za-z0-9.-]+", value):
            return value
        raise ValueError(f"{value!r}: only LicenseRef-SDN-* licences are registered in the network")
    if re.fullmatch(r"https?://\S+|[A-Za-z0-9][A-Za-z0-9.+-]*", value):
        return value
    raise ValueError(
        f"{value!r} is not an SPDX licence id (such as CC-BY-4.0 or CC0-1.0), "
        "a URL, or LicenseRef-SDN-*"
    )


def _condition_code(value: str) -> str:
    if value in CONDITION_CODES:
        return value
    if value.startswith(f"{MORATORIUM}:"):
        try:
            dt.date.fromisoformat(value.removeprefix(f"{MORATORIUM}:"))
        except ValueError:
            raise ValueError(f"{value!r}: write {MORATORIUM}:YYYY-MM-DD") from None
        return value
    codes = ", ".join((*CONDITION_CODES, f"{MORATORIUM}:<date>"))
    raise ValueError(f"{value!r} is not a condition code; use one of {codes}")


_ISO_POINT = re.compile(r"\d{4}(-\d{2}(-\d{2}(T[\d:.]+(Z|[+-]\d{2}:\d{2})?)?)?)?")


def _interval_start(point: str) -> dt.date:
    """The first day an ISO 8601 year, month, date or date-time stands for."""
    padded = {4: f"{point}-01-01", 7: f"{point}-01"}.get(len(point), point)
    return dt.datetime.fromisoformat(padded).date()


def _interval(value: str) -> str:
    """An ISO 8601 interval `start/end` whose start is not after its end."""
    parts = value.split("/")
    message = f"{value!r} is not an ISO 8601 interval such as 2007-11/2009-12"
    if len(parts) != 2 or not all(_ISO_POINT.fullmatch(p) for p in parts):
        raise ValueError(message)
    try:
        start, end = (_interval_start(p) for p in parts)
    except ValueError:
        raise ValueError(message) from None
    if start > end:
        raise ValueError(f"{value!r} ends before it starts")
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{value!r} is not a valid regular expression: {exc}") from None
    return value


def _date_or_datetime(value: Any) -> dt.date | dt.datetime:
    """One type with one error message, instead of pydantic's two union branches."""
    if isinstance(value, dt.date):  # datetime is a date too
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not an ISO 8601 date or date-time")


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Email = Annotated[Text, _matching(r"[^@\s]+@[^@\s]+\.[^@\s]+", "an email address")]
HttpUrl = Annotated[Text, _matching(r"https?://\S+", "an http(s) URL")]
SemVer = Annotated[
    Text,
    _matching(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)", "a MAJOR.MINOR.PATCH version"),
]
Sha256 = Annotated[str, _matching(r"[0-9a-f]{64}", "a lower-case hex sha256 digest")]
# strict: a string (YAML reads "1e3" as one) or True is a typo, not a step
Resolution = Annotated[float, pydantic.Field(gt=0, allow_inf_nan=False, strict=True)]
Orcid = Annotated[Text, AfterValidator(_orcid)]
Uscc = Annotated[
    Text,
    _matching(
        r"[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}", "a unified social credit code"
    ),
]
LanguageTag = Annotated[Text, _matching(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*", "a BCP 47 tag")]
Timestamp = Annotated[
    dt.date | dt.datetime,
    pydantic.PlainValidator(_date_or_datetime, json_schema_input_type=dt.date | dt.datetime),
    pydantic.PlainSerializer(lambda value: value.isoformat(), return_type=str, when_used="json"),
]


class _RuleViolations(ValueError):
    """Several cross-field problems, each with its own field path, raised as one error."""

    def __init__(self, problems: Problems) -> None:
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))
        self.problems = problems


def _raise_if(problems: Problems) -> None:
    if problems:
        raise _RuleViolations(problems)


Problems = list[tuple[str, str]]  # (field path, message) pairs


class _Model(BaseModel):
    """Closed shape: an unknown key is a typo the officer must hear about, not data to drop.

    Numbers become strings where text is expected, because YAML reads a subject code such
    as 180 as an integer.

    Cross-field rules live in :meth:`_rules`, not in validators of their own, so that they
    can also run over the parts of an input that did validate when others did not
    (:func:`unreached_rule_problems`): every problem is reported in one pass.
    """

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    @classmethod
    def _rules(cls, parts: Mapping[str, Any]) -> Problems:
        """Cross-field problems among ``parts``, the fields that validated (by name).

        A field that is missing or invalid is absent from ``parts``, and each rule skips
        when a field it reads is absent: that field's own error is reported instead."""
        return []

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        _raise_if(type(self)._rules(self.__dict__))
        return self


# -- parts of a record ----------------------------------------------------------------


class LangStr(_Model):
    """Text in Chinese and/or English; at least one must be given."""

    zh: Annotated[str, StringConstraints(strip_whitespace=True)] | None = None
    en: Annotated[str, StringConstraints(strip_whitespace=True)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _per_language(cls, data: Any) -> Any:
        if isinstance(data, str):
            raise ValueError("write the text per language, as {zh: ..., en: ...}")
        return data

    @model_validator(mode="after")
    def _one_language(self) -> Self:
        self.zh, self.en = self.zh or None, self.en or None
        if self.zh is None and self.en is None:
            raise ValueError("give the text in zh or en (at least one, non-empty)")
        return self

    def text(self) -> str:
        """The Chinese text when there is one, else the English."""
        return self.zh or self.en or ""


class Agent(_Model):
    name: Text
    orcid: Orcid | None = None
    affiliation: Text | None = None
    type: Literal["person", "organization"] = "person"

    @classmethod
    def _rules(cls, parts: Mapping[str, Any]) -> Problems:
        kind = parts.get("type")
        if kind == "person" and "affiliation" in parts and parts["affiliation"] is None:
            return [("affiliation", "required for a person")]
        if kind == "organization" and parts.get("orcid") is not None:
            return [("orcid", "ORCID iDs identify persons, not organizations")]
        return []


class Organization(_Model):
    name: Text
    uscc: Uscc | None = None


class ContactPoint(_Model):
    name: Text
    email: Email
    phone: Text | None = None


class Officer(_Model):
    name: Text
    email: Email


class Collection(_Model):
    method: Text
    instruments: Text | None = None
    timeframe: Annotated[Text, AfterValidator(_interval)]


class Classification(_Model):
    discipline: Text
    subject_category: SubjectCategory
    domain: Text


class PersonalInfo(_Model):
    """PI profile under PIPL; every listed category is sensitive PI (PIPL Art. 28)."""

    status: PIStatus
    sensitive: bool = False
    categories: list[PICategory] = []
    subjects_count: NonNegativeInt | None = None

    @classmethod
    def _rules(cls, parts: Mapping[str, Any]) -> Problems:
        if not {"status", "sensitive", "categories"} <= parts.keys():
            return []
        status, sensitive, categories = parts["status"], parts["sensitive"], parts["categories"]
        problems = []
        if status == "none":
            if sensitive:
                problems.append(("sensitive", "must be false when status is none"))
            if categories:
                problems.append(("categories", "must be empty when status is none"))
        elif categories and not sensitive:
            listed = ", ".join(categories)
            problems.append(
                ("sensitive", f"must be true: {listed} is sensitive personal information "
                 "(PIPL Art. 28)")
            )
        elif sensitive and not categories:
            problems.append(("categories", "name the kinds of sensitive personal information"))
        return problems


class ConditionOfUse(_Model):
    code: Annotated[Text, AfterValidator(_condition_code)]
    text: Text


class GradeFactors(_Model):
    """The GB/T 43697 grading factors, described in words."""

    domain: Text | None = None
    group: Text | None = None
    region: Text | None = None
    precision: Text | None = None
    scale: Text | None = None
    depth: Text | None = None
    coverage: Text | None = None
    importance: Text | None = None


def _as_identifier(value: Any) -> Any:
    """Accept "national security" for national_security: officers write these as words."""
    return re.sub(r"[\s-]+", "_", value.strip().lower()) if isinstance(value, str) else value


ImpactObject = Literal[
    "national_security", "economic_operation", "social_order", "public_interest",
    "organization_rights", "individual_rights",
]
ImpactDegree = Literal["especially_serious", "serious", "general"]


class GradeAssessment(_Model):
    """The GB/T 43697 grading record (impact on whom, and how badly)."""

    factors: GradeFactors
    impact_object: Annotated[ImpactObject, BeforeValidator(_as_identifier)]
    impact_degree: Annotated[ImpactDegree, BeforeValidator(_as_identifier)]
    rationale: Text
    assessed_by: Text
    assessed_on: dt.date
    next_review: dt.date

    @classmethod
    def _rules(cls, parts: Mapping[str, Any]) -> Problems:
        if {"next_review", "assessed_on"} <= parts.keys() and (
                parts["next_review"] <= parts["assessed_on"]):
            return [("next_review", "must be after assessed_on")]
        return []


class Approval(_Model):
    type: Literal[
        "ethics", "consent_basis", "PIA", "HGR_permit", "important_data_filing",
        "export_assessment",
    ]
    ref: Text
    date: dt.date
    expires: dt.date | None = None

    @classmethod
    def _rules(cls, parts: Mapping[str, Any]) -> Problems:
        if parts.get("expires") is not None and "date" in parts and (
                parts["expires"] <= parts["date"]):
            return [("expires", "must be after date")]
        return []


class DerivedFrom(_Model):
    id_or_url: Text
    relation: Text = "derived_from"


class TemporalCoverage(_Model):
    start: dt.date
    end: dt.date | None = None

    @classmethod
    def _rules(cls, parts: Mapping[str, Any]) -> Problems:
        if parts.get("end") is not None and "start" in parts and parts["end"] < parts["start"]:
            return [("end", "is before start")]
        return []


class SpatialCoverage(_Model):
    place_name: Text
    admin_code: Annotated[Text, _matching(r"\d{6}", "a 6-digit GB/T 2260 code")] | None = None
    bbox_wkt: Text | None = None


class Funding(_Model):
    funder: Text
    award_id: Text | None = None
    programme: Text | None = None


class Processing(_Model):
    preprocessing: Text | None = None
    imputation: Text | None = None
    manipulation: Text | None = None


class Annotation(_Model):
    protocol: Text | None = None
    platform: Text | None = None
    per_item: Text | None = None
    annotator_demographics: Text | None = None
    tools: Text | None = None


class AltIdentifier(_Model):
    scheme: Literal["CSTR", "DOI", "local", "other"]
    value: Text


class Splits(_Model):
    kind: Literal["none", "predefined", "by_partition"]
    field: Text | None = None

    @classmethod
    def _rules(cls, parts: Mapping[str, Any]) -> Problems:
        kind = parts.get("kind")
        if kind not in (None, "none") and "field" in parts and parts["field"] is None:
            return [("field", f"required when kind is {kind}")]
        return []


class FederatedGroup(_Model):
    group_id: Text
    partition_attribute: Text
    partition_value: Text


class Constraints(_Model):
    """Table Schema constraints: the validity contract of a column."""

    required: bool | None = None
    unique: bool | None = None
    minimum: float | str | None = None
    maximum: float | str | None = None
    enum: list[str | int | float] | None = None
    pattern: Annotated[str, AfterValidator(_regex)] | None = None


class _ColumnDescription(_Model):
    """What an officer may say about a column (governance §1.5)."""

    title: LangStr | None = None
    description: Text | None = None
    unit: Text | None = None  # UCUM code
    # The step at which filter thresholds on this numeric column are allowed where the
    # node audits queries (scifed/filters.py): a threshold finer than the values' own
    # precision would let refusals locate one row's value. None: 2 significant digits.
    resolution: Resolution | None = None
    role: Role | None = None  # None: "target" if listed in targets, else "feature"
    pi_kind: PIKind = "none"
    pi_category: PICategory | None = None
    field_grade: Grade | None = None
    constraints: Constraints | None = None
    missing_values: list[str] | None = None


class FieldMeta(_ColumnDescription):
    """A `fields:` entry of the metadata YAML."""

    description: Text
    # The type the officer expects; registration refuses data whose column reads as
    # another (an integer column satisfies number). The record keeps the measured type.
    type: TableSchemaType | None = None


class Field(_ColumnDescription):
    """A column of the record: the officer's description plus what the node measured."""

    name: Text
    type: TableSchemaType
    role: Role
    missing_count: NonNegativeInt
    distinct_count: NonNegativeInt | None = None
    min: float | str | None = None
    max: float | str | None = None
    mean: float | None = None
    std: float | None = None


class ConstraintViolation(_Model):
    """Rows of the data breaking a constraint of the column dictionary, found when the
    dataset was registered anyway (``--accept-violations``). Counts only, never values."""

    column: Text
    constraint: Literal["type", "required", "enum", "minimum", "maximum", "pattern", "unique"]
    # None in a record published above G1, where a count is an unchecked aggregate.
    rows: NonNegativeInt | None = None
    of: NonNegativeInt | None = None


class Distribution(_Model):
    """A file of the dataset, described by digest; its location stays at the node."""

    dist_id: Text
    title: Text | None = None
    media_type: Annotated[Text, _matching(r"[\w.+-]+/[\w.+-]+", "an IANA media type")]
    byte_size: NonNegativeInt
    sha256: Sha256
    access_url: Annotated[
        Text, _matching(r"(?!file:)[a-z][a-z0-9+.-]*://\S+", "a URL (never a file path)")
    ]


# -- the record -----------------------------------------------------------------------


def _default_delivery(data: dict[str, Any]) -> list[DeliveryMethod]:
    """All methods the cell allows; an invalid pair gets none (and its own error)."""
    cell = (data.get("security_grade"), data.get("sharing_category"))
    return default_delivery_methods(*cell) if cell in VALID_PAIRS else []


class DatasetDescription(_Model):
    """Dataset-level fields shared by the officer's input and the published record."""

    title: LangStr
    description: LangStr
    keywords: Annotated[list[Text], pydantic.Field(min_length=3)]
    subjects: Annotated[list[Text], pydantic.Field(min_length=1)]
    dataset_type: DatasetType
    creators: Annotated[list[Agent], pydantic.Field(min_length=1)]
    publisher: Organization
    contact_point: ContactPoint
    data_officer: Officer
    license: Annotated[Text, AfterValidator(_license)]
    version: SemVer
    issued: dt.date
    modified: Timestamp
    collection: Collection
    classification: Classification
    security_grade: Grade
    sharing_category: Category
    personal_info: PersonalInfo
    lifecycle_stage: LifecycleStage
    delivery_methods: list[DeliveryMethod] = pydantic.Field(default_factory=_default_delivery)

    temporal_coverage: TemporalCoverage | None = None
    spatial_coverage: SpatialCoverage | None = None
    languages: list[LanguageTag] = []
    funding: list[Funding] = []
    processing: Processing | None = None
    annotation: Annotation | None = None
    update_frequency: UpdateFrequency | None = None
    maintenance_plan: Text | None = None
    rights_holder: Organization | None = None
    embargo_until: dt.date | None = None
    alt_identifiers: list[AltIdentifier] = []
    landing_page: HttpUrl | None = None
    intended_uses: Text | None = None
    limitations: Text | None = None
    biases: Text | None = None
    social_impact: Text | None = None
    targets: list[Text] = []
    # Cross-field consistency rules (pandas.eval conditions such as
    # "temp_min <= temp_max") that quality metric Q4a checks.
    rules: list[Text] = []
    splits: Splits | None = None
    federated_group: FederatedGroup | None = None

    conditions_of_use: list[ConditionOfUse] = []
    grade_assessment: GradeAssessment | None = None
    approvals: list[Approval] = []
    derived_from: list[DerivedFrom] = []


def _governance_problems(
    parts: Mapping[str, Any], columns: Mapping[str, _ColumnDescription]
) -> Problems:
    """Cross-field rules of governance §1.3 and §2.3–2.6 over the dataset-level ``parts``
    that validated (see :meth:`_Model._rules`) and the ``columns`` that did."""
    grade, category = parts.get("security_grade"), parts.get("sharing_category")
    problems: Problems = []

    if grade is not None and category is not None:
        if (grade, category) not in VALID_PAIRS:
            allowed = " or ".join(allowed_categories(grade))
            problems.append(
                ("sharing_category", f"{category} is not allowed for {grade}; {grade} data "
                 f"may be {allowed} (governance §2.4)")
            )
        elif "delivery_methods" in parts:
            defaults = ", ".join(default_delivery_methods(grade, category)) or "none"
            for method in forbidden_delivery_methods(grade, category, parts["delivery_methods"]):
                problems.append(
                    ("delivery_methods", f"{method} is forbidden for {grade} {category} data; "
                     f"an officer may only narrow the defaults ({defaults}) (governance §2.6)")
                )

    pi = parts.get("personal_info")
    if pi is not None and grade is not None:
        floor = pi_floor(pi.status, pi.sensitive, pi.categories)
        if floor is not None and grade_rank(grade) < grade_rank(floor.grade):
            problems.append(
                ("security_grade", f"{grade} is below the floor {floor.grade} required by "
                 f"{floor.reason} (governance §2.3)")
            )
    if grade is not None:
        for name, column in columns.items():
            if column.field_grade is not None and (
                    grade_rank(column.field_grade) > grade_rank(grade)):
                problems.append(
                    ("security_grade", f"{grade} is below {column.field_grade}, the field_grade "
                     f"of column {name}: a dataset takes its highest column grade (就高从严, "
                     "governance §2.3)")
                )

    if category == "CONDITIONAL" and parts.get("conditions_of_use") == []:
        problems.append(
            ("conditions_of_use", "required when sharing_category is CONDITIONAL "
             "(governance §1.3 #34)")
        )
    if grade is not None and requires_grade_assessment(grade) and "grade_assessment" in parts:
        assessment = parts["grade_assessment"]
        if assessment is None:
            problems.append(
                ("grade_assessment", f"required for {grade}: G3 and above keep the GB/T 43697 "
                 "grading record (governance §1.3 #31)")
            )
        elif assessment.next_review > assessment.assessed_on + dt.timedelta(days=366):
            problems.append(
                ("grade_assessment.next_review", f"must be within a year of assessed_on for "
                 f"{grade} (governance §2.3, review at least yearly for G3 and above)")
            )
    if (grade is not None and pi is not None and parts.get("approvals") == []
            and requires_approvals(grade, pi.status)):
        reason = (
            f"personal_info.status is {pi.status}" if holds_personal_info(pi.status)
            else f"security_grade is {grade}"
        )
        problems.append(
            ("approvals", f"required because {reason}: record the legal basis and approvals "
             "(governance §1.3 #40)")
        )
    if parts.get("dataset_type") == "derived" and parts.get("derived_from") == []:
        problems.append(
            ("derived_from", "required when dataset_type is derived (governance §1.3 #15)")
        )

    if "targets" in parts:
        targets = parts["targets"]
        for name, column in columns.items():
            if column.role == "target" and name not in targets:
                problems.append(
                    (f"fields.{name}.role", "is target, but the column is not in targets"))
            elif name in targets and column.role not in (None, "target"):
                problems.append(
                    (f"fields.{name}.role", f"is {column.role}, but the column is listed in "
                     "targets")
                )
    return problems


class MetadataInput(DatasetDescription):
    """What a data officer writes in a dataset's metadata YAML."""

    fields: dict[str, FieldMeta] = {}

    @classmethod
    def _rules(cls, parts: Mapping[str, Any]) -> Problems:
        # The columns that validated, even when others did not: these rules are per column.
        return _governance_problems(parts, parts.get("fields", {}))


def schema_hash(fields: Iterable[Field]) -> str:
    """sha256 of the canonical column list (name, type, unit, enum).

    Columns and enum values are sorted, so shards that list the same columns in another
    order stay compatible: federated jobs address columns by name.
    """
    canonical = sorted(
        (
            {
                "name": f.name,
                "type": f.type,
                "unit": f.unit,
                "enum": (
                    sorted(f.constraints.enum, key=json.dumps)
                    if f.constraints is not None and f.constraints.enum is not None
                    else None
                ),
            }
            for f in fields
        ),
        key=lambda entry: entry["name"],
    )
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_RECORD_ID = re.compile(
    r"urn:sdn:(?P<node>[A-Za-z0-9][A-Za-z0-9._-]*):ds:[A-Za-z0-9][A-Za-z0-9._-]*"
    r"|CSTR:\S+|doi:10\.\S+"
)


class CatalogRecord(DatasetDescription):
    """A dataset's catalog record: the officer's metadata plus what the node measured."""

    id: Annotated[Text, _matching(_RECORD_ID.pattern, "urn:sdn:{node}:ds:{slug}, CSTR:… or doi:…")]
    node_id: Text
    platform_id: Text
    record_count: NonNegativeInt
    fields: list[Field]
    distributions: list[Distribution]
    schema_hash: Sha256
    stub: bool = False
    quality: dict[str, Any] | None = None
    constraint_violations: list[ConstraintViolation] = []

    @classmethod
    def _rules(cls, parts: Mapping[str, Any]) -> Problems:
        if "fields" not in parts:  # column rules need the whole field list
            return _governance_problems(parts, {})
        fields = parts["fields"]
        columns = {f.name: f for f in fields}
        problems = _governance_problems(parts, columns)
        if len(columns) < len(fields):
            problems.append(("fields", "column names must be unique"))
        problems += [
            ("targets", f"{name!r} is not a column of the dataset")
            for name in parts.get("targets", [])
            if name not in columns
        ]
        if "schema_hash" in parts and parts["schema_hash"] != schema_hash(fields):
            problems.append(("schema_hash", "does not match the field list"))
        match = _RECORD_ID.fullmatch(parts.get("id", ""))
        node_id = parts.get("node_id")
        if match and match["node"] and node_id is not None and match["node"] != node_id:
            problems.append(("id", f"names node {match['node']} but node_id is {node_id}"))
        return problems


# -- error messages -------------------------------------------------------------------


def _path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        part = part if isinstance(part, int) else excerpt(part, 60)  # keys are input
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown key (not a field of the dataset metadata; check the spelling)"
    if kind == "value_error":
        text = str(error["ctx"]["error"])
        value = error.get("input")
        if isinstance(value, str) and len(value) > 60:  # the checks quote the value
            text = text.replace(repr(value), excerpt_repr(value, 60))
        return excerpt(text, 300)
    if kind == "too_short":
        ctx = error["ctx"]
        return f"needs at least {ctx['min_length']} items, got {ctx['actual_length']}"
    if kind in ("literal_error", "enum"):
        return f"{error['msg']}, got {excerpt_repr(error['input'], 60)}"
    return error["msg"]


def validation_problems(exc: ValidationError) -> list[str]:
    """One `field.path: message` line per problem, without pydantic's URLs or types."""
    lines = []
    for error in exc.errors(include_url=False):
        if error["type"] == "default_factory_not_called":
            continue  # a consequence of another error reported in the same list
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, _RuleViolations):
            lines += [f"{_path([*error['loc'], path])}: {msg}" for path, msg in cause.problems]
        else:
            lines.append(f"{_path(error['loc'])}: {_message(error)}")
    return lines


@functools.cache
def _field_model(model: type[_Model], name: str) -> type[_Model]:
    """A model of the one field ``name`` of ``model``, to validate that field alone."""
    info = model.model_fields[name]
    return pydantic.create_model(f"{model.__name__}_{name}", __base__=_Model,
                                 value=(info.annotation, info))


def _nested_models(annotation: Any, value: Any) -> Iterable[tuple[str | int, type[_Model], Any]]:
    """The parts of ``value`` that ``annotation`` (a field's type) declares as models:
    the value itself, or the items of a list or a mapping of models."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, _Model):
        yield "", annotation, value
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is not type(None):
                yield from _nested_models(arg, value)
    elif origin is list and isinstance(value, list):
        for i, item in enumerate(value):
            for _, model, part in _nested_models(args[0], item):
                yield i, model, part
    elif origin is dict and isinstance(value, Mapping):
        for key, item in value.items():
            for _, model, part in _nested_models(args[1], item):
                yield key, model, part


def unreached_rule_problems(model: type[_Model], data: Any) -> Problems:
    """The cross-field problems pydantic did not report because ``data`` failed first.

    pydantic runs a model's rules only once all its fields validated, so an officer who
    fixes one round of errors would meet the rules' problems in the next. This runs the
    rules of every model that failed (at any depth) over the fields of it that did
    validate, each field validated alone (:func:`_field_model`); rules whose fields are
    missing or invalid skip. A mapping of models (the column dictionary) keeps the entries
    that validated, since the rules over it are per entry.
    """
    if not isinstance(data, Mapping):
        return []
    parts: dict[str, Any] = {}
    complete = set(data) <= set(model.model_fields)  # an unknown key fails the model too
    problems: Problems = []
    for name, info in model.model_fields.items():
        if name not in data:
            complete = complete and not info.is_required()
            continue
        try:
            parts[name] = _field_model(model, name).model_validate({"value": data[name]}).value
        except ValidationError:
            complete = False
            kept = {}
            for key, part_model, part in _nested_models(info.annotation, data[name]):
                prefix = name if key == "" else f"{name}.{key}" if isinstance(key, str) \
                    else f"{name}[{key}]"
                problems += [(f"{prefix}.{path}", message)
                             for path, message in unreached_rule_problems(part_model, part)]
                if isinstance(key, str) and key and typing.get_origin(info.annotation) is dict:
                    try:
                        kept[key] = part_model.model_validate(part)
                    except ValidationError:
                        pass
            if kept:
                parts[name] = kept
    if complete:
        return problems  # every field validated: pydantic ran (and reported) the rules
    for name, info in model.model_fields.items():
        if name not in data and not info.is_required():
            parts[name] = info.get_default(call_default_factory=True, validated_data=parts)
    return [*problems, *model._rules(parts)]


def all_problems(model: type[_Model], data: Any, exc: ValidationError) -> list[str]:
    """Every problem of ``data`` as a ``model``, in one pass: pydantic's, then the rules'
    that pydantic did not reach."""
    lines = validation_problems(exc)
    seen = set(lines)
    for path, message in unreached_rule_problems(model, data):
        line = f"{_path(path.split('.'))}: {message}"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return lines


def problem_report(subject: str, lines: Sequence[str], limit: int = MAX_MESSAGE_CHARS) -> str:
    """``subject: N problems`` and one indented line per problem, within ``limit``."""
    noun = "problem" if len(lines) == 1 else "problems"
    head = f"{excerpt(subject, 100)}: {len(lines)} {noun}"
    return head + "\n" + join_problems(lines, limit - len(head), indent="  ")


def _report(subject: str, exc: ValidationError) -> str:
    return problem_report(subject, validation_problems(exc))


# -- entry points ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MetadataCheck:
    """An officer's metadata YAML validated as far as it goes: ``meta`` when it has no
    problem, else the ``problems``; in both cases the column entries that validated and
    the columns it names, so that registration can also check what it says about the data
    (:func:`data_problems`, the column dictionary) in the same pass."""

    meta: MetadataInput | None
    problems: list[str]
    columns: dict[str, FieldMeta]
    column_names: list[str]
    targets: list[str]
    split_field: str | None


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def check_metadata(text: str, source_name: str) -> MetadataCheck:
    """Parse and validate an officer's metadata YAML, collecting every problem.

    Text that is no YAML mapping is one UserError at once. The text is held to
    :data:`scifed.limits.MAX_DOCUMENT_BYTES` and :data:`~scifed.limits.MAX_DOCUMENT_DEPTH`
    before it is parsed further."""
    data = parse_yaml_mapping(text, source_name, "metadata fields", allow_empty=False,
                              max_bytes=MAX_DOCUMENT_BYTES, max_depth=MAX_DOCUMENT_DEPTH)
    try:
        meta = MetadataInput.model_validate(data)
    except ValidationError as exc:
        problems = all_problems(MetadataInput, data, exc)
    except RecursionError:  # parse_yaml_mapping bounds the depth; a net all the same
        raise UserError(f"{excerpt(source_name, 100)}: nested too deeply") from None
    else:
        split = meta.splits.field if meta.splits is not None else None
        return MetadataCheck(meta, [], dict(meta.fields), list(meta.fields), list(meta.targets),
                             split)
    raw = data.get("fields")
    raw = raw if isinstance(raw, Mapping) else {}
    columns = {}
    for name, entry in raw.items():
        try:
            columns[str(name)] = FieldMeta.model_validate(entry)
        except ValidationError:
            pass  # its problems are in the list
    splits = data.get("splits")
    split = splits.get("field") if isinstance(splits, Mapping) else None
    return MetadataCheck(None, problems, columns, [str(n) for n in raw],
                         _strings(data.get("targets")),
                         split if isinstance(split, str) else None)


def load_metadata(text: str, source_name: str) -> MetadataInput:
    """Parse and validate an officer's metadata YAML; any problems are one UserError."""
    checked = check_metadata(text, source_name)
    if checked.meta is None:
        raise UserError(problem_report(source_name, checked.problems))
    return checked.meta


class ColumnStats(Protocol):
    """One column of a data profile (`node.profiling.ColumnProfile`)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def missing(self) -> int: ...
    @property
    def distinct(self) -> int | None: ...
    @property
    def min(self) -> float | str | None: ...
    @property
    def max(self) -> float | str | None: ...
    @property
    def mean(self) -> float | None: ...
    @property
    def std(self) -> float | None: ...


class TableProfile(Protocol):
    """What the node measured in a data file (`node.profiling.DataProfile`)."""

    @property
    def media_type(self) -> str: ...
    @property
    def byte_size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def row_count(self) -> int: ...
    @property
    def columns(self) -> Sequence[ColumnStats]: ...


def _finite(value: float | str | None) -> float | str | None:
    """NaN and infinity (e.g. the std of one value) are "unknown", not numbers to publish."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _field(column: ColumnStats, entry: FieldMeta | None, is_target: bool) -> Field:
    described = entry.model_dump(exclude_none=True, exclude={"type"}) if entry else {}
    described["role"] = described.get("role") or ("target" if is_target else "feature")
    return Field(
        name=column.name,
        type=column.type,
        **described,
        missing_count=column.missing,
        distinct_count=column.distinct,
        min=_finite(column.min),
        max=_finite(column.max),
        mean=_finite(column.mean),
        std=_finite(column.std),
    )


def data_problems(checked: MetadataCheck, profile: TableProfile) -> list[str]:
    """What the metadata says about the data file that the file contradicts: a `fields:`
    entry, target or split column the data lacks, a declared type it does not have."""
    names = [column.name for column in profile.columns]
    known = set(names)
    listed = excerpt(", ".join(excerpt(name, 60) for name in names[:20]), 200)
    problems = [
        f"fields.{excerpt(name, 60)}: no such column in the data (columns: {listed})"
        for name in checked.column_names
        if name not in known
    ]
    problems += [f"targets: {excerpt_repr(name, 60)} is not a column of the data"
                 for name in checked.targets if name not in known]
    measured = {column.name: column.type for column in profile.columns}
    problems += [
        f"fields.{excerpt(name, 60)}.type: declared {entry.type}, but the data's column reads "
        f"as {measured[name]}"
        for name, entry in checked.columns.items()
        if name in measured and entry.type is not None and entry.type != measured[name]
        and not (entry.type == "number" and measured[name] == "integer")
    ]
    if checked.split_field is not None and checked.split_field not in known:
        problems.append(f"splits.field: {excerpt_repr(checked.split_field, 60)} is not a "
                        "column of the data")
    return problems


def record_fields(checked: MetadataCheck, profile: TableProfile) -> list[Field]:
    """The record's columns: the node's profile with the officer's entries that validated."""
    return [_field(column, checked.columns.get(column.name), column.name in checked.targets)
            for column in profile.columns]


def build_record(
    meta: MetadataInput, profile: TableProfile, *, node_id: str, platform_id: str, slug: str
) -> CatalogRecord:
    """Join the officer's metadata with the node's profile of the data file.

    The metadata must describe the file it is registered with: a `fields:` entry, target
    or split column that the data lacks is refused rather than published.
    """
    split = meta.splits.field if meta.splits is not None else None
    checked = MetadataCheck(meta, [], dict(meta.fields), list(meta.fields), list(meta.targets),
                            split)
    problems = data_problems(checked, profile)
    if problems:
        lines = join_problems(problems, indent="  ")
        raise UserError(f"metadata of dataset {slug!r} does not match its data:\n{lines}")

    record_id = f"urn:sdn:{node_id}:ds:{slug}"
    try:
        fields = record_fields(checked, profile)
        return CatalogRecord(
            **meta.model_dump(exclude={"fields"}),
            id=record_id,
            node_id=node_id,
            platform_id=platform_id,
            record_count=profile.row_count,
            fields=fields,
            distributions=[
                Distribution(
                    dist_id=f"{slug}-data",
                    media_type=profile.media_type,
                    byte_size=profile.byte_size,
                    sha256=profile.sha256,
                    access_url=f"sdn://{node_id}/datasets/{slug}",
                )
            ],
            schema_hash=schema_hash(fields),
        )
    except ValidationError as exc:
        raise UserError(_report(f"catalog record {record_id}", exc)) from None


def published_form(record: CatalogRecord) -> dict[str, Any] | None:
    """What the node sends to the coordinator (governance §1.6): nothing for G6, a stub
    for CLOSED, no column dictionary for G5, the whole record otherwise."""
    mode = publication_mode(record.security_grade, record.sharing_category)
    if mode == "none":
        return None
    if mode == "stub":
        return {**record.model_dump(mode="json", include=set(STUB_KEYS)), "stub": True}
    if mode == "coarse":
        return record.model_dump(mode="json", exclude={"fields", "constraint_violations"})
    form = record.model_dump(mode="json")
    if grade_rank(record.security_grade) >= grade_rank(STATS_PUBLIC_UP_TO) + 1:
        # Column extremes are single records' values and moments are unchecked
        # aggregates: above G2 they would bypass the node's k / DP release rules.
        for column in form["fields"]:
            for key in COLUMN_STATS:
                column[key] = None
        # So are the row counts of violations: which constraint a column breaks, no more.
        for violation in form["constraint_violations"]:
            violation["rows"] = violation["of"] = None
    return form
