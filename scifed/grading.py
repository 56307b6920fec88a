"""Governance rules as data: grades, sharing categories, PI floors, the policy matrix.

Everything a node decides about a dataset starts from its (grade, category) cell
(governance §2.3–2.6). The rules live here as plain tables so that one file answers
"what does G3 CONDITIONAL allow?"; the policy engine extends `CellPolicy` with job
types, k, node counts and DP budgets rather than adding a second table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, get_args

Grade = Literal["G1", "G2", "G3", "G4", "G5", "G6"]
Category = Literal["OPEN", "CONDITIONAL", "CLOSED"]
DeliveryMethod = Literal["metadata_only", "download", "offline_transfer", "in_node_service"]
PIStatus = Literal["none", "anonymized", "de_identified", "identifiable"]
PICategory = Literal[
    "biometric",
    "religion",
    "specific_identity",
    "medical_health",
    "financial_account",
    "location_track",
    "minor_under_14",
    "genetic",
]
PublicationMode = Literal["none", "stub", "coarse", "full"]

GRADES: tuple[Grade, ...] = get_args(Grade)
CATEGORIES: tuple[Category, ...] = get_args(Category)
DELIVERY_METHODS: tuple[DeliveryMethod, ...] = get_args(DeliveryMethod)


class Access(StrEnum):
    """How a cell admits a method: automatically, after approval, or not at all (§2.6)."""

    AUTO = "A"
    APPROVAL = "R"
    FORBIDDEN = "-"


@dataclass(frozen=True)
class CellPolicy:
    """Defaults of one (grade, category) cell; an officer may only narrow them."""

    delivery: Mapping[DeliveryMethod, Access]


@dataclass(frozen=True)
class GradeFloor:
    """The lowest grade a dataset may carry, and the rule that sets it."""

    grade: Grade
    reason: str


A, R, X = Access.AUTO, Access.APPROVAL, Access.FORBIDDEN

# Governance §2.6, delivery rows. Columns follow DELIVERY_METHODS:
#   metadata_only, download, offline_transfer, in_node_service.
# A pair missing from this table is invalid (§2.4).
_DELIVERY: dict[tuple[Grade, Category], tuple[Access, Access, Access, Access]] = {
    ("G1", "OPEN"): (A, A, A, A),
    ("G1", "CONDITIONAL"): (A, R, R, A),
    ("G1", "CLOSED"): (A, X, X, R),
    ("G2", "OPEN"): (A, A, A, A),  # download only after embargo_until
    ("G2", "CONDITIONAL"): (A, R, R, A),
    ("G2", "CLOSED"): (A, X, X, R),
    ("G3", "CONDITIONAL"): (A, X, R, R),  # offline: de-identified extract + DUA only
    ("G3", "CLOSED"): (A, X, X, X),
    ("G4", "CONDITIONAL"): (A, X, X, R),  # service: enclave with output checking
    ("G4", "CLOSED"): (A, X, X, X),  # metadata network-internal
    ("G5", "CONDITIONAL"): (A, X, X, R),  # metadata coarse, members only; no egress
    ("G5", "CLOSED"): (A, X, X, X),  # metadata stub only
    ("G6", "CLOSED"): (X, X, X, X),  # never registered in the federated catalog
}

POLICY_MATRIX: dict[tuple[Grade, Category], CellPolicy] = {
    cell: CellPolicy(delivery=dict(zip(DELIVERY_METHODS, row, strict=True)))
    for cell, row in _DELIVERY.items()
}
VALID_PAIRS: frozenset[tuple[Grade, Category]] = frozenset(POLICY_MATRIX)

# Governance §2.6, aggregate statistics (AGG / AGG-k / AGG-DP / HE for counts and sums):
# access, and the minimum count k of any released cell (1 = no threshold).
_AGGREGATES: dict[tuple[Grade, Category], tuple[Access, int]] = {
    ("G1", "OPEN"): (A, 1),
    ("G1", "CONDITIONAL"): (A, 3),
    ("G1", "CLOSED"): (R, 3),
    ("G2", "OPEN"): (A, 5),
    ("G2", "CONDITIONAL"): (A, 5),
    ("G2", "CLOSED"): (R, 5),
    ("G3", "CONDITIONAL"): (A, 10),
    ("G3", "CLOSED"): (R, 10),
    ("G4", "CONDITIONAL"): (R, 10),
    ("G4", "CLOSED"): (R, 10),  # HE counts and sums only, with PIA and ethics on file
    ("G5", "CONDITIONAL"): (R, 10),
    ("G5", "CLOSED"): (X, 10),
    ("G6", "CLOSED"): (X, 10),
}


def aggregate_access(grade: Grade, category: Category) -> Access:
    """May federated statistics run on data of this cell: A, after approval, or never."""
    return _AGGREGATES[(grade, category)][0]


def min_cell_count(grade: Grade, category: Category) -> int:
    """The k below which a released count (and what it implies) is suppressed."""
    return _AGGREGATES[(grade, category)][1]


SENSITIVE_PI_GRADE: Grade = "G4"
PI_GRADE: Grade = "G3"
GRADE_ASSESSMENT_FROM: Grade = "G3"
APPROVALS_FROM: Grade = "G4"
_PI_FREE: frozenset[PIStatus] = frozenset({"none", "anonymized"})


def grade_rank(grade: Grade) -> int:
    """Position of a grade, so grades compare as numbers (G1 → 1)."""
    return GRADES.index(grade) + 1


def allowed_categories(grade: Grade) -> list[Category]:
    """Sharing categories a grade may be combined with (§2.4)."""
    return [category for category in CATEGORIES if (grade, category) in VALID_PAIRS]


def cell_policy(grade: Grade, category: Category) -> CellPolicy:
    """The default policy of a cell; an invalid pair is a programming error here."""
    try:
        return POLICY_MATRIX[(grade, category)]
    except KeyError:
        raise ValueError(f"{grade} {category} is not a valid (grade, category) pair") from None


def default_delivery_methods(grade: Grade, category: Category) -> list[DeliveryMethod]:
    """Methods a record gets when its officer lists none: all the cell does not forbid."""
    delivery = cell_policy(grade, category).delivery
    return [method for method in DELIVERY_METHODS if delivery[method] is not Access.FORBIDDEN]


def forbidden_delivery_methods(
    grade: Grade, category: Category, methods: Iterable[DeliveryMethod]
) -> list[DeliveryMethod]:
    """The declared methods the cell forbids: the officer tried to loosen the defaults."""
    delivery = cell_policy(grade, category).delivery
    return [method for method in methods if delivery[method] is Access.FORBIDDEN]


def pi_floor(
    status: PIStatus, sensitive: bool, categories: Iterable[PICategory]
) -> GradeFloor | None:
    """Lowest grade allowed by the personal information a dataset holds (§2.3).

    Human genetic resources information keeps its floor even when anonymised: the HGR
    rules, unlike PIPL, do not end at anonymisation.
    """
    if status not in _PI_FREE and sensitive:
        return GradeFloor(SENSITIVE_PI_GRADE, "sensitive personal information")
    if "genetic" in categories:
        return GradeFloor(SENSITIVE_PI_GRADE, "human genetic resources information")
    if status == "identifiable":
        return GradeFloor(PI_GRADE, "identifiable personal information")
    if status == "de_identified":
        return GradeFloor(PI_GRADE, "de-identified personal information")
    return None


def holds_personal_info(status: PIStatus) -> bool:
    """Whether PIPL still applies: anonymised data is no longer personal information."""
    return status not in _PI_FREE


def requires_grade_assessment(grade: Grade) -> bool:
    """G3 and above must keep the GB/T 43697 assessment on record (§1.3 #31)."""
    return grade_rank(grade) >= grade_rank(GRADE_ASSESSMENT_FROM)


def requires_approvals(grade: Grade, pi_status: PIStatus) -> bool:
    """Personal information or G4 and above need a legal basis on file (§1.3 #40)."""
    return holds_personal_info(pi_status) or grade_rank(grade) >= grade_rank(APPROVALS_FROM)


def publication_mode(grade: Grade, category: Category) -> PublicationMode:
    """How much of a record the node sends to the federated catalog (§1.6, §2.6)."""
    if grade == "G6":
        return "none"
    if category == "CLOSED":
        return "stub"
    if grade == "G5":
        return "coarse"
    return "full"
